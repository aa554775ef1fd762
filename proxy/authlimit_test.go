package proxy

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func addr(s string) netip.Addr                         { return netip.MustParseAddr(s) }
func netN(i int) netip.Addr                            { return addr(fmt.Sprintf("203.0.%d.7", i)) }
func lockedAs(l *authLimiter, ip, login string) string { return l.Locked(addr(ip), login) }

// Failures for bob from other networks do not lock bob out of his own:
// the per-login count is per (login, client network).
func TestAuthLimiterLoginScopedToNetwork(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	l := newAuthLimiter(5, 5, 50, 10*time.Minute)
	l.now = clk.now
	const home = "198.51.100.20"

	// Five wrong passwords for bob from five networks...
	for i := 1; i <= 5; i++ {
		l.Failed(netN(i), "bob")
	}
	// ...lock nobody out: not bob at home, not bob in those networks.
	if got := lockedAs(l, home, "bob"); got != "" {
		t.Fatalf("bob at home locked out by %s", got)
	}
	if got := l.Locked(netN(1), "bob"); got != "" {
		t.Fatalf("bob from network 1 locked out by %s after one failure there", got)
	}

	// Five from one network (five addresses in one /24) lock bob out of
	// that network only.
	for i := 1; i <= 5; i++ {
		l.Failed(addr(fmt.Sprintf("192.0.2.%d", i)), "bob")
	}
	if got := lockedAs(l, "192.0.2.200", "bob"); got != "failures_per_login" {
		t.Errorf("bob from the guessing network: %q, want failures_per_login", got)
	}
	if got := lockedAs(l, "192.0.2.200", "alice"); got != "" {
		t.Errorf("alice from the guessing network: locked by %s", got)
	}
	if got := lockedAs(l, home, "bob"); got != "" {
		t.Errorf("bob at home locked out by %s", got)
	}

	// One try every two minutes from elsewhere keeps nobody out at home.
	for i := 0; i < 30; i++ {
		clk.advance(2 * time.Minute)
		l.Failed(netN(100+i%3), "bob")
		if got := lockedAs(l, home, "bob"); got != "" {
			t.Fatalf("try %d: bob at home locked out by %s", i, got)
		}
	}
}

// The per-address limit is unchanged: five failures from one address
// lock it out, whatever the logins.
func TestAuthLimiterPerAddress(t *testing.T) {
	l := newAuthLimiter(5, 5, 50, 10*time.Minute)
	for i := 0; i < 5; i++ {
		l.Failed(addr("192.0.2.9"), fmt.Sprintf("user%d", i))
	}
	if got := lockedAs(l, "192.0.2.9", ""); got != "failures_per_ip" {
		t.Errorf("guessing address: %q, want failures_per_ip", got)
	}
	if got := lockedAs(l, "192.0.2.10", "user1"); got != "" {
		t.Errorf("neighbour address: locked by %s", got)
	}
	// IPv6: one /64 is one client.
	for i := 0; i < 5; i++ {
		l.Failed(addr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), "")
	}
	if got := lockedAs(l, "2001:db8:1:2::ffff", ""); got != "failures_per_ip" {
		t.Errorf("same /64: %q, want failures_per_ip", got)
	}
}

// Guessing bob's password from many networks hits the total ceiling:
// bob is locked out of networks he has not used, not out of his own.
func TestAuthLimiterTotalCeiling(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	l := newAuthLimiter(5, 5, 50, 10*time.Minute)
	l.now = clk.now
	const home = "198.51.100.20"
	l.Succeeded(addr(home), "bob")
	for i := 0; i < 50; i++ {
		if got := l.Locked(netN(i), "bob"); got != "" {
			t.Fatalf("failure %d: locked by %s before the ceiling", i, got)
		}
		l.Failed(netN(i), "bob")
	}
	if got := l.Locked(netN(200), "bob"); got != "failures_per_login_total" {
		t.Errorf("bob from a new network: %q, want failures_per_login_total", got)
	}
	if got := lockedAs(l, "198.51.100.99", "bob"); got != "" {
		t.Errorf("bob from his own network: locked by %s", got)
	}
	if got := l.Locked(netN(200), "alice"); got != "" {
		t.Errorf("alice: locked by %s", got)
	}
	// The exemption lasts 30 days after the last login.
	clk.advance(knownNetworkTTL)
	for i := 0; i < 50; i++ {
		l.Failed(netN(i), "bob")
	}
	if got := lockedAs(l, home, "bob"); got != "failures_per_login_total" {
		t.Errorf("bob at home, 30 days after his last login: %q, want failures_per_login_total", got)
	}
}

// While the store of the failure counts fails, Locked fails closed (AUTH
// gets 454 4.7.0); failures and logins that cannot be recorded are
// logged; what was counted before the outage is there after it.
func TestAuthLimiterStoreDown(t *testing.T) {
	l := newAuthLimiter(5, 5, 50, 10*time.Minute)
	logs := &logBuf{}
	l.logger = slog.New(slog.NewTextHandler(logs, nil))
	buckets := &flakyStore{Store: l.buckets}
	known := &flakyStore{Store: l.known}
	l.buckets, l.known = buckets, known
	for i := 0; i < 5; i++ {
		l.Failed(addr("192.0.2.9"), "")
	}

	buckets.down.Store(true)
	for _, login := range []string{"", "bob"} {
		if got := lockedAs(l, "198.51.100.1", login); got != limAuthState {
			t.Errorf("store down, login %q: %q, want %s", login, got, limAuthState)
		}
	}
	l.Failed(addr("198.51.100.1"), "bob")
	if !strings.Contains(logs.String(), "AUTH failure counts unavailable: AUTH refused") || !strings.Contains(logs.String(), "AUTH failure not counted") {
		t.Errorf("store errors not logged:\n%s", logs)
	}

	// The known networks' store alone down: only a login whose total
	// bucket is empty needs it.
	buckets.down.Store(false)
	known.down.Store(true)
	l.Succeeded(addr("198.51.100.1"), "bob")
	if !strings.Contains(logs.String(), "AUTH login network not remembered") {
		t.Errorf("a login not remembered is not logged:\n%s", logs)
	}
	if got := lockedAs(l, "198.51.100.1", "bob"); got != "" {
		t.Errorf("bob with his buckets full: %q", got)
	}
	for i := 0; i < 50; i++ {
		l.Failed(netN(i), "bob")
	}
	if got := lockedAs(l, "198.51.100.1", "bob"); got != limAuthState {
		t.Errorf("bob over the total, known networks unreadable: %q, want %s", got, limAuthState)
	}

	known.down.Store(false)
	if got := lockedAs(l, "192.0.2.9", ""); got != "failures_per_ip" {
		t.Errorf("after the outage: %q, want failures_per_ip", got)
	}
}

// A conversation: AUTH while the failure counts cannot be read is 454
// 4.7.0, the right password included; once the store is back it is 235.
func TestAuthStoreDownGives454(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600)
	var fs *flakyStore
	addr, logs := startServerPrep(t, "  - address: 127.0.0.1:0\n    auth: {allow_insecure: true}\n", "auth:\n  users_file: "+users+"\n", func(s *Server) {
		fs = &flakyStore{Store: s.authLim.buckets}
		fs.down.Store(true)
		s.authLim.buckets = fs
	})
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO ok.example.org")
	plain := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))
	if l := c.cmd(plain); l != "454 4.7.0 Too many failed authentication attempts, try again later\r\n" {
		t.Fatalf("AUTH with the store down: %q", l)
	}
	if !strings.Contains(logs.String(), "AUTH failure counts unavailable: AUTH refused") {
		t.Fatalf("the store error is not logged:\n%s", logs)
	}
	fs.down.Store(false)
	if l := c.cmd(plain); !strings.HasPrefix(l, "235 2.") {
		t.Fatalf("AUTH with the store back: %q", l)
	}
}
