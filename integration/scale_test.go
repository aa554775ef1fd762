package integration

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smtpgate/smtpgate/store/redistest"
)

// startRoundRobin runs haproxy in front of backends (round robin,
// send-proxy-v2) and returns its address once it listens.
func startRoundRobin(t *testing.T, backends ...string) string {
	t.Helper()
	hap, err := exec.LookPath("haproxy")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
			t.Fatalf("haproxy is not installed: apt-get install -y haproxy (the Makefile's deps install it)")
		}
		hap = "/usr/sbin/haproxy"
	}
	hport := freePort()
	var servers strings.Builder
	for i, b := range backends {
		fmt.Fprintf(&servers, "    server gw%d %s send-proxy-v2 source 127.0.0.1\n", i+1, b)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend smtp
    bind 127.0.0.1:%d
    default_backend gates
backend gates
    balance roundrobin
%s`, hport, servers.String())), 0o644)
	hlog := &syncBuffer{}
	cmd := exec.Command(hap, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = hlog, hlog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", hlog.String())
		}
	})
	haddr := fmt.Sprintf("127.0.0.1:%d", hport)
	for i := 0; ; i++ {
		if c, err := netDial(haddr); err == nil {
			c.Close()
			break
		} else if i > 200 {
			t.Fatalf("haproxy did not listen: %s", hlog.String())
		}
		time.Sleep(25 * time.Millisecond) // polling
	}
	return haddr
}

func getURL(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sendEach sends n messages from client (a connection each, so
// round robin spreads them over the nodes) and returns the RCPT replies.
func sendEach(t *testing.T, addr, client string, n int) []string {
	t.Helper()
	var replies []string
	for i := 0; i < n; i++ {
		c := dialFrom(t, addr, client)
		c.must("EHLO client.example.org", 250)
		c.must("MAIL FROM:<sender@example.org>", 250)
		code, text := c.cmd("RCPT TO:<alice@example.com>")
		replies = append(replies, strings.TrimRight(text, "\r\n"))
		if code == 250 {
			c.must("DATA", 354)
			c.send(fmt.Sprintf("Subject: scale %s %d\r\n\r\nhello\r\n.\r\n", client, i))
			c.expect(250)
		}
		c.must("QUIT", 221)
	}
	return replies
}

// TestScaleOutSharedRedis runs two smtpgate nodes behind HAProxy (round
// robin, send-proxy-v2) in front of the real Postfix, sharing a real
// redis-server: a client limited to 10 messages an hour gets exactly 10
// into Postfix's mailbox and the 11th is 450 4.7.1, whichever node it
// lands on; a login locked out on one node is locked out on the other;
// with Redis killed mail keeps flowing (the nodes count locally), the
// log, the metric and /readyz say degraded; with Redis back sharing
// resumes.
func TestScaleOutSharedRedis(t *testing.T) {
	srv := redistest.Start(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("alice-secret"), 4)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	mta.clearMailboxes()
	// timeout 1s: a loaded test machine must not fall back to local
	// counts by accident (the default is 50ms).
	extra := func(metrics string) string {
		return "limits:\n  messages_per_ip: 10/1h\nauth:\n  users_file: " + users + "\n  failures_per_login: 2\n" +
			"metrics:\n  address: " + metrics + "\nstore:\n  redis:\n    address: " + srv.Addr + "\n    timeout: 1s\n"
	}
	var nodes []*gate
	var metrics []string
	for i := 0; i < 2; i++ {
		m := fmt.Sprintf("127.0.0.1:%d", freePort())
		listen := fmt.Sprintf("  - address: 127.0.0.1:%d\n    proxy_protocol: true\n    proxy_protocol_from: [127.0.0.1]\n    auth: {allow_insecure: true}\n", freePort())
		nodes = append(nodes, startGateListen(t, listen, extra(m)))
		metrics = append(metrics, m)
	}
	lb := startRoundRobin(t, nodes[0].addr, nodes[1].addr)

	// 1. One limit over both nodes.
	replies := sendEach(t, lb, "127.0.0.7", 11)
	for i, r := range replies[:10] {
		if !strings.HasPrefix(r, "250 ") {
			t.Fatalf("message %d of 10: RCPT %q", i+1, r)
		}
	}
	if r := replies[10]; r != "450 4.7.1 Error: too much mail from 127.0.0.7, try again later" {
		t.Fatalf("11th message: RCPT %q, want 450 4.7.1", r)
	}
	mta.settle(t)
	if n := len(mta.mailbox("alice")); n != 10 {
		t.Fatalf("Postfix's mailbox holds %d messages, want 10", n)
	}
	for i, g := range nodes {
		if !strings.Contains(g.log.String(), "client=127.0.0.7") {
			t.Fatalf("node %d saw none of the messages: round robin did not spread them", i+1)
		}
	}

	// 2. A lock-out on one node is a lock-out on the other.
	wrong := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00guess"))
	right := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00alice-secret"))
	a := dialFrom(t, lb, "127.0.0.8")
	a.must("EHLO client.example.org", 250)
	a.must(wrong, 535)
	a.must(wrong, 535)
	a.must("QUIT", 221)
	b := dialFrom(t, lb, "127.0.0.8") // round robin: the other node
	b.must("EHLO client.example.org", 250)
	if _, text := b.cmd(right); text != "454 4.7.0 Too many failed authentication attempts, try again later\r\n" {
		t.Fatalf("the right password on the other node after the lock-out: %q, want 454 4.7.0", text)
	}
	b.must("QUIT", 221)

	// 3. Redis killed mid-run: mail keeps flowing on local counts.
	srv.Kill()
	replies = sendEach(t, lb, "127.0.0.9", 4)
	for i, r := range replies {
		if !strings.HasPrefix(r, "250 ") {
			t.Fatalf("Redis down, message %d: RCPT %q (mail must flow)", i+1, r)
		}
	}
	mta.settle(t)
	if n := len(mta.mailbox("alice")); n != 14 {
		t.Fatalf("Redis down: Postfix's mailbox holds %d messages, want 14", n)
	}
	var errs float64
	for i, g := range nodes {
		if n := strings.Count(g.log.String(), "shared state store unavailable"); n != 1 {
			t.Errorf("node %d logged the outage %d times, want once", i+1, n)
		}
		_, body := getURL(t, "http://"+metrics[i]+"/metrics")
		if m := regexp.MustCompile(`smtpgate_store_errors_total\{use="rate_limits"\} (\d+)`).FindStringSubmatch(body); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			errs += v
		}
		if code, body := getURL(t, "http://"+metrics[i]+"/readyz"); code != 200 || !strings.HasPrefix(body, "degraded\n") {
			t.Errorf("node %d /readyz with Redis down: %d %q", i+1, code, body)
		}
	}
	if errs < 4 {
		t.Errorf("smtpgate_store_errors_total{use=\"rate_limits\"} over both nodes: %v, want >= 4", errs)
	}

	// 4. Redis back (empty): sharing resumes.
	srv.Restart()
	for i := range nodes {
		for j := 0; ; j++ {
			code, body := getURL(t, "http://"+metrics[i]+"/readyz")
			if code == 200 && strings.HasPrefix(body, "ok\n") {
				break
			}
			if j > 400 {
				t.Fatalf("node %d /readyz after Redis came back: %d %q", i+1, code, body)
			}
			time.Sleep(50 * time.Millisecond) // polling
		}
	}
	replies = sendEach(t, lb, "127.0.0.10", 1)
	if !strings.HasPrefix(replies[0], "250 ") {
		t.Fatalf("Redis back: RCPT %q", replies[0])
	}
	if r := srv.Do("EXISTS", "smtpgate:{rate:msgs:10/1h0m0s:127.0.0.10/32}"); r != ":1" {
		t.Fatalf("Redis back: the client's bucket is not in Redis (EXISTS %s)", r)
	}
	for i, g := range nodes {
		if strings.Contains(g.log.String(), "shared state store unavailable") && !strings.Contains(g.log.String(), "shared state store reachable again") {
			t.Errorf("node %d did not log the end of the outage", i+1)
		}
	}
	mta.settle(t)
}

// TestScaleOutSharedProbeCache: with recipients.verify: upstream and one
// Redis, the probe node A made for an unknown recipient answers node B
// from the shared cache: 550 5.1.1 on both, and Postfix's log shows one
// probe. (Each node on its own would probe again.)
func TestScaleOutSharedProbeCache(t *testing.T) {
	srv := redistest.Start(t)
	extra := "recipients:\n  verify: upstream\nstore:\n  redis:\n    address: " + srv.Addr + "\n    timeout: 1s\n"
	a := startGate(t, extra)
	b := startGate(t, extra)
	nobody := newToken("nobody") + "@example.com"
	want := "550 5.1.1 <" + nobody + ">: Recipient address rejected: User unknown\r\n"
	probes := 0
	for i, g := range []*gate{a, b} {
		if i == 1 {
			probes = mtaLogCount(t, "<"+nobody+">")
			if probes == 0 {
				t.Fatalf("Postfix's log does not show node A's probe for %s", nobody)
			}
		}
		c := dial(t, g.addr)
		c.must("EHLO client.example.org", 250)
		c.must("MAIL FROM:<someone@example.org>", 250)
		if _, text := c.cmd("RCPT TO:<" + nobody + ">"); text != want {
			t.Fatalf("node %d: RCPT %q, want %q", i+1, text, want)
		}
		c.must("QUIT", 221)
	}
	decision(t, b, "check=unknown_recipient", "rcpt="+nobody, "cached probe")
	if n := mtaLogCount(t, "<"+nobody+">"); n != probes {
		t.Errorf("Postfix's log names %s %d times after node B, %d after node A: node B probed again", nobody, n, probes)
	}
}

// redisRoundTrips counts the round trips smtpgate made to srv, from
// INFO commandstats: one per script (EVALSHA, EVAL), GET, DEL and
// MULTI...EXEC (counted by its EXEC).
func redisRoundTrips(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	stats := srv.Info("commandstats")
	n := 0
	for _, c := range []string{"evalsha", "eval", "get", "del", "exec", "ping"} {
		m := regexp.MustCompile(`calls=(\d+)`).FindStringSubmatch(stats["cmdstat_"+c])
		if m != nil {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// TestScaleOutRedisRoundTrips measures the Redis round trips per accepted
// message with every rate limit on (connection_rate_per_ip,
// messages_per_ip, recipients_per_ip, recipients_per_sender): one per
// bucket, so 4 for a connection with one message to one recipient.
func TestScaleOutRedisRoundTrips(t *testing.T) {
	srv := redistest.Start(t)
	mta.clearMailboxes()
	g := startGate(t, "limits:\n  connection_rate_per_ip: 1000/1m\n  messages_per_ip: 1000/1m\n  recipients_per_ip: 1000/1m\n  recipients_per_sender: 1000/1m\nstore:\n  redis:\n    address: "+srv.Addr+"\n    timeout: 1s\n")
	sendEach(t, g.addr, "127.0.0.11", 1) // the scripts are loaded (EVAL once each)
	const n = 20
	before := redisRoundTrips(t, srv)
	replies := sendEach(t, g.addr, "127.0.0.11", n)
	after := redisRoundTrips(t, srv)
	for i, r := range replies {
		if !strings.HasPrefix(r, "250 ") {
			t.Fatalf("message %d: RCPT %q", i+1, r)
		}
	}
	per := float64(after-before) / n
	t.Logf("Redis round trips per accepted message (every rate limit on, a connection per message, one recipient): %.2f", per)
	if per != 4 {
		t.Errorf("%.2f round trips per message, want 4 (one per bucket)", per)
	}
	mta.settle(t)
}
