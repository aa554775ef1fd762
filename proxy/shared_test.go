package proxy

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/store"
	"github.com/smtpgate/smtpgate/store/redistest"
)

// sharedYAML is store.redis on srv (a generous timeout: a loaded test
// machine must not fall back by accident).
func sharedYAML(srv *redistest.Server) string {
	return "store:\n  redis:\n    address: " + srv.Addr + "\n    key_prefix: \"t:\"\n    timeout: 2s\n"
}

// Two nodes with one Redis: the recipients_per_ip bucket spent on node A
// is empty on node B. Each node on its own (no store.redis) would let the
// third recipient through on B.
func TestSharedRateLimitAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	extra := "limits:\n  recipients_per_ip: 2/1h\n" + sharedYAML(srv)
	_, a, _ := startServer(t, "", extra)
	_, b, _ := startServer(t, "", extra)
	ca := dialT(t, a)
	ca.reply()
	ca.cmd("EHLO ok.example.org")
	ca.cmd("MAIL FROM:<a@example.org>")
	for i := 0; i < 2; i++ {
		if l := ca.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("node A, rcpt %d: %q", i+1, l)
		}
	}
	cb := dialT(t, b)
	cb.reply()
	cb.cmd("EHLO ok.example.org")
	cb.cmd("MAIL FROM:<a@example.org>")
	if l := cb.cmd("RCPT TO:<bob@example.com>"); l != "450 4.7.1 Error: too much mail from 127.0.0.1, try again later\r\n" {
		t.Fatalf("node B, 3rd rcpt of the client: %q", l)
	}
}

// A login locked out on node A (failures_per_login) is locked out on
// node B: 454 4.7.0 there for the right password too.
func TestSharedAuthLockoutAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	listen := "  - address: 127.0.0.1:0\n    auth: {allow_insecure: true}\n"
	extra := "auth:\n  users_file: " + users + "\n  failures_per_login: 2\n  max_failures_per_session: 10\n" + sharedYAML(srv)
	_, a, _ := startServer(t, listen, extra)
	_, b, _ := startServer(t, listen, extra)
	wrong := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00guess"))
	right := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	ca := dialT(t, a)
	ca.reply()
	ca.cmd("EHLO ok.example.org")
	for i := 0; i < 2; i++ {
		if l := ca.cmd(wrong); !strings.HasPrefix(l, "535 5.7.8") {
			t.Fatalf("node A, wrong password %d: %q", i+1, l)
		}
	}
	cb := dialT(t, b)
	cb.reply()
	cb.cmd("EHLO ok.example.org")
	if l := cb.cmd(right); l != "454 4.7.0 Too many failed authentication attempts, try again later\r\n" {
		t.Fatalf("node B, right password after the lock-out on A: %q", l)
	}
}

func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// Redis killed: the rate limit still holds, counted on this node (450
// 4.7.1 for the recipient over recipients_per_ip, not a pass), the
// outage is logged once, counted in smtpgate_store_errors_total and
// /readyz says degraded (still 200). Redis back: shared again.
func TestSharedStoreDownFallsBackToLocal(t *testing.T) {
	srv := redistest.Start(t)
	s, addr, logs := startServer(t, "", "limits:\n  recipients_per_ip: 2/1h\nmetrics:\n  address: 127.0.0.1:0\n"+sharedYAML(srv))
	base := "http://" + s.MetricsAddr().String()
	if code, body := httpGet(t, base+"/readyz"); code != 200 || !strings.HasPrefix(body, "ok\n") || !strings.Contains(body, "shared state store (redis): ok") {
		t.Fatalf("/readyz with Redis up: %d %q", code, body)
	}
	srv.Kill()
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO ok.example.org")
	c.cmd("MAIL FROM:<a@example.org>")
	for i := 0; i < 2; i++ {
		if l := c.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("Redis down, rcpt %d: %q (mail must flow)", i+1, l)
		}
	}
	if l := c.cmd("RCPT TO:<bob@example.com>"); l != "450 4.7.1 Error: too much mail from 127.0.0.1, try again later\r\n" {
		t.Fatalf("Redis down, 3rd rcpt: %q (the node's own bucket must limit)", l)
	}
	if n := strings.Count(logs.String(), "shared state store unavailable"); n != 1 {
		t.Fatalf("%d outage warnings, want 1:\n%s", n, logs)
	}
	_, metrics := httpGet(t, base+"/metrics")
	if v := metricValue(t, metrics, `smtpgate_store_errors_total{use="rate_limits"}`); v < 3 {
		t.Fatalf("smtpgate_store_errors_total{use=\"rate_limits\"} = %v, want >= 3", v)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 || !strings.HasPrefix(body, "degraded\n") {
		t.Fatalf("/readyz with Redis down: %d %q", code, body)
	}

	srv.Restart()
	// The cooldown (1s) ends; /readyz's own PING finds Redis again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := httpGet(t, base+"/readyz")
		if code == 200 && strings.HasPrefix(body, "ok\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after Redis came back: %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond) // polling
	}
	c.cmd("RSET")
	c.cmd("MAIL FROM:<a@example.org>")
	if l := c.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("Redis back (empty): rcpt %q, want the shared bucket, full", l)
	}
	if a := srv.Do("EXISTS", "t:{rate:rcpt:2/1h0m0s:127.0.0.1/32}"); a != ":1" {
		t.Fatalf("the bucket is not in Redis after it came back: EXISTS %s", a)
	}
	if !strings.Contains(logs.String(), "shared state store reachable again") {
		t.Fatalf("the end of the outage is not logged:\n%s", logs)
	}
}

// Redis killed: AUTH lock-outs keep counting on the node (the right
// password after two failures is 454 4.7.0 there), instead of refusing
// every AUTH because the counts cannot be read (the fail-closed rule of
// a node's own store, TestAuthStoreDownGives454): a user on another node
// still logs in (235).
func TestSharedStoreDownAuthKeepsLocalLimiter(t *testing.T) {
	srv := redistest.Start(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	listen := "  - address: 127.0.0.1:0\n    auth: {allow_insecure: true}\n"
	extra := "auth:\n  users_file: " + users + "\n  failures_per_login: 2\n  max_failures_per_session: 10\n" + sharedYAML(srv)
	_, a, _ := startServer(t, listen, extra)
	_, b, _ := startServer(t, listen, extra)
	srv.Kill()
	wrong := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00guess"))
	right := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	ca := dialT(t, a)
	ca.reply()
	ca.cmd("EHLO ok.example.org")
	for i := 0; i < 2; i++ {
		if l := ca.cmd(wrong); !strings.HasPrefix(l, "535 5.7.8") {
			t.Fatalf("node A, Redis down, wrong password %d: %q", i+1, l)
		}
	}
	if l := ca.cmd(right); l != "454 4.7.0 Too many failed authentication attempts, try again later\r\n" {
		t.Fatalf("node A, Redis down, right password after 2 failures: %q", l)
	}
	cb := dialT(t, b)
	cb.reply()
	cb.cmd("EHLO ok.example.org")
	if l := cb.cmd(right); !strings.HasPrefix(l, "235 2.") {
		t.Fatalf("node B, Redis down: %q", l)
	}
}

// A reload that adds store.redis moves the rate buckets to Redis for new
// sessions; one that changes it (another key_prefix) makes a new client
// and closes the old one, which a session in flight may still use: that
// is not logged as an outage.
func TestSharedStoreReload(t *testing.T) {
	srv := redistest.Start(t)
	s, a, logs := startServer(t, "", "limits:\n  recipients_per_ip: 1/1h\n")
	cfg := s.cfg.Load()
	next := *cfg
	next.Store.Redis.Address = srv.Addr
	next.Store.Redis.Timeout = config.Duration(2 * time.Second)
	if err := s.Reload(&next); err != nil {
		t.Fatal(err)
	}
	first := s.shared.Load()
	if first == nil {
		t.Fatal("no shared store after the reload")
	}
	c := dialT(t, a)
	c.reply()
	c.cmd("EHLO ok.example.org")
	c.cmd("MAIL FROM:<a@example.org>")
	if l := c.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("rcpt: %q", l)
	}
	if r := srv.Do("EXISTS", "smtpgate:{rate:rcpt:1/1h0m0s:127.0.0.1/32}"); r != ":1" {
		t.Fatalf("the bucket is not in Redis after the reload: EXISTS %s", r)
	}
	again := next
	again.Store.Redis.KeyPrefix = "other:"
	if err := s.Reload(&again); err != nil {
		t.Fatal(err)
	}
	if s.shared.Load() == first {
		t.Fatal("store.redis changed but the client was kept")
	}
	if _, err := first.Take(context.Background(), "k", store.PerPeriod(1, time.Hour), 1); err == nil {
		t.Fatal("the replaced client still answers")
	}
	if first.Health() != nil || strings.Contains(logs.String(), "shared state store unavailable") {
		t.Fatalf("a closed, replaced client was taken for an outage: %v\n%s", first.Health(), logs)
	}
}
