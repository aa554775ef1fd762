package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/store"
)

// fakeClock is the limiter's clock in tests: time moves only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func testLimiter(t *testing.T, e config.EdgeLimits) (*limiter, *fakeClock) {
	t.Helper()
	if e.MaxConnections == 0 {
		e.MaxConnections = 1000
	}
	if e.MaxConnectionsPerIP == 0 {
		e.MaxConnectionsPerIP = 1000
	}
	if e.IPv4Prefix == 0 {
		e.IPv4Prefix, e.IPv6Prefix = 32, 64
	}
	if e.MaxTrackedIPs == 0 {
		e.MaxTrackedIPs = 100000
	}
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newLimiter(e, nil)
	l.now = clk.now
	return l, clk
}

func mustRate(t *testing.T, s string) config.Rate {
	r, err := config.ParseRate(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestConnectionRatePerIP(t *testing.T) {
	l, clk := testLimiter(t, config.EdgeLimits{ConnectionRatePerIP: mustRate(t, "3/1m")})
	a := netip.MustParseAddr("192.0.2.1")
	for i := 0; i < 3; i++ {
		key, lim := l.admitIP(a)
		if lim != "" {
			t.Fatalf("connection %d refused by %s", i+1, lim)
		}
		l.releaseIP(key)
	}
	if _, lim := l.admitIP(a); lim != limConnRate {
		t.Fatalf("4th connection in the same instant: got %q, want %s", lim, limConnRate)
	}
	// Another address has its own bucket.
	if _, lim := l.admitIP(netip.MustParseAddr("192.0.2.2")); lim != "" {
		t.Fatalf("other address refused by %s", lim)
	}
	// One token comes back every 20s.
	clk.advance(19 * time.Second)
	if _, lim := l.admitIP(a); lim == "" {
		t.Fatalf("admitted after 19s")
	}
	clk.advance(time.Second)
	if _, lim := l.admitIP(a); lim != "" {
		t.Fatalf("refused after 20s: %s", lim)
	}
}

func TestMaxConnectionsPerIPAndIPv6Prefix(t *testing.T) {
	l, _ := testLimiter(t, config.EdgeLimits{MaxConnectionsPerIP: 2})
	a := netip.MustParseAddr("2001:db8:1:2::1")
	b := netip.MustParseAddr("2001:db8:1:2:ffff::9") // same /64
	c := netip.MustParseAddr("2001:db8:1:3::1")      // another /64
	k1, lim1 := l.admitIP(a)
	_, lim2 := l.admitIP(b)
	if lim1 != "" || lim2 != "" {
		t.Fatalf("first two refused: %q %q", lim1, lim2)
	}
	if _, lim := l.admitIP(b); lim != limMaxConnsPerIP {
		t.Fatalf("third from the same /64: got %q", lim)
	}
	if _, lim := l.admitIP(c); lim != "" {
		t.Fatalf("other /64 refused: %s", lim)
	}
	l.releaseIP(k1)
	if _, lim := l.admitIP(b); lim != "" {
		t.Fatalf("after a close: refused by %s", lim)
	}
	// IPv4-mapped addresses count as IPv4.
	m := netip.MustParseAddr("::ffff:192.0.2.1")
	if l.key(m) != netip.MustParsePrefix("192.0.2.1/32") {
		t.Fatalf("key of %s: %s", m, l.key(m))
	}
}

func TestMaxConnectionsGlobal(t *testing.T) {
	l, _ := testLimiter(t, config.EdgeLimits{MaxConnections: 2})
	if !l.admitGlobal() || !l.admitGlobal() {
		t.Fatal("first two refused")
	}
	if l.admitGlobal() {
		t.Fatal("third admitted")
	}
	l.releaseGlobal()
	if !l.admitGlobal() {
		t.Fatal("refused after a close")
	}
}

func TestMessageAndRecipientRates(t *testing.T) {
	l, clk := testLimiter(t, config.EdgeLimits{
		MessagesPerIP:       mustRate(t, "2/1h"),
		RecipientsPerIP:     mustRate(t, "5/1h"),
		RecipientsPerSender: mustRate(t, "3/10m"),
	})
	a := netip.MustParseAddr("198.51.100.7")
	b := netip.MustParseAddr("198.51.100.8")
	if l.AllowMessage(a) != "" || l.AllowMessage(a) != "" {
		t.Fatal("first two messages refused")
	}
	if got := l.AllowMessage(a); got != limMessages {
		t.Fatalf("third message: %q", got)
	}
	// Per sender: 3 recipients, whatever the client's address; case-folded.
	for i, ip := range []netip.Addr{a, b, a} {
		if got := l.AllowRecipient(ip, "Spam@example.org"); got != "" {
			t.Fatalf("recipient %d refused by %s", i+1, got)
		}
	}
	if got := l.AllowRecipient(b, "spam@example.org"); got != limRcptsPerSender {
		t.Fatalf("4th recipient of the sender: %q", got)
	}
	// The null sender is not limited per sender.
	for i := 0; i < 3; i++ {
		if got := l.AllowRecipient(b, ""); got != "" {
			t.Fatalf("bounce %d refused by %s", i, got)
		}
	}
	// a used 2 of its 5 recipient tokens; three more, then refused.
	if l.AllowRecipient(a, "x@example.org") != "" || l.AllowRecipient(a, "y@example.org") != "" || l.AllowRecipient(a, "w@example.org") != "" {
		t.Fatal("recipients 3 to 5 of a refused")
	}
	if got := l.AllowRecipient(a, "z@example.org"); got != limRecipients {
		t.Fatalf("6th recipient of a: %q", got)
	}
	clk.advance(12 * time.Minute) // 12m = one recipient token (5/1h)
	if got := l.AllowRecipient(a, "z@example.org"); got != "" {
		t.Fatalf("after 12m: %q", got)
	}
}

func TestIdleStateIsEvicted(t *testing.T) {
	l, clk := testLimiter(t, config.EdgeLimits{ConnectionRatePerIP: mustRate(t, "10/1m"), MaxTrackedIPs: 1000})
	// A flood from 100,000 addresses, one connection each, all closed:
	// the state never holds more than max_tracked_ips entries.
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := 0; i < 100000; i++ {
		ip := base
		ip[1], ip[2], ip[3] = byte(i>>16), byte(i>>8), byte(i)
		key, lim := l.admitIP(netip.AddrFrom4(ip))
		if lim != "" {
			t.Fatalf("address %d refused by %s", i, lim)
		}
		l.releaseIP(key)
		if n, _ := l.tracked(); n > 1000 {
			t.Fatalf("after %d addresses the limiter holds %d entries", i+1, n)
		}
	}
	// An open connection is never forgotten.
	keep := netip.MustParseAddr("192.0.2.99")
	if _, lim := l.admitIP(keep); lim != "" {
		t.Fatal(lim)
	}
	// Once every bucket is full again, a sweep drops the idle entries.
	clk.advance(2 * time.Minute)
	l.mu.Lock()
	l.sweepIfDue(l.p.Load(), clk.now())
	l.mu.Unlock()
	if n, _ := l.tracked(); n != 1 {
		t.Fatalf("after the refill and a sweep: %d entries, want the open one", n)
	}
}

func TestExemptNetworks(t *testing.T) {
	l, _ := testLimiter(t, config.EdgeLimits{MaxConnectionsPerIP: 1})
	l.set(l.p.Load().EdgeLimits, trustedFunc([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}))
	a := netip.MustParseAddr("10.1.2.3")
	for i := 0; i < 5; i++ {
		if _, lim := l.admitIP(a); lim != "" {
			t.Fatalf("relay network client refused by %s", lim)
		}
	}
}

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.Rate
		bad  bool
	}{
		{"10/1m", config.Rate{N: 10, Per: time.Minute}, false},
		{" 100 / 1h ", config.Rate{N: 100, Per: time.Hour}, false},
		{"0", config.Rate{}, false},
		{"", config.Rate{}, false},
		{"10", config.Rate{}, true},
		{"x/1m", config.Rate{}, true},
		{"10/0s", config.Rate{}, true},
	} {
		got, err := config.ParseRate(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// flakyStore is a store.Store whose calls fail while down is set, as a
// network store's do while its server cannot be reached.
type flakyStore struct {
	store.Store
	down atomic.Bool
}

var errStoreDown = errors.New("dial tcp 192.0.2.53:6379: connect: connection refused")

func (f *flakyStore) Take(ctx context.Context, key string, lim store.Limit, n int) (store.Taken, error) {
	if f.down.Load() {
		return store.Taken{}, errStoreDown
	}
	return f.Store.Take(ctx, key, lim, n)
}

func (f *flakyStore) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if f.down.Load() {
		return 0, errStoreDown
	}
	return f.Store.Incr(ctx, key, delta, ttl)
}

func (f *flakyStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if f.down.Load() {
		return nil, false, errStoreDown
	}
	return f.Store.Get(ctx, key)
}

func (f *flakyStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if f.down.Load() {
		return errStoreDown
	}
	return f.Store.Set(ctx, key, value, ttl)
}

func (f *flakyStore) Delete(ctx context.Context, key string) error {
	if f.down.Load() {
		return errStoreDown
	}
	return f.Store.Delete(ctx, key)
}

// The rate limits fail open while their store fails: every client is
// let through, a warning is logged at most once per storeWarnEvery, and
// the per-process caps (connections open per network) still hold.
func TestRateLimitsFailOpenOnStoreError(t *testing.T) {
	l, clk := testLimiter(t, config.EdgeLimits{
		MaxConnectionsPerIP: 5,
		ConnectionRatePerIP: mustRate(t, "1/1h"),
		MessagesPerIP:       mustRate(t, "1/1h"),
		RecipientsPerIP:     mustRate(t, "1/1h"),
		RecipientsPerSender: mustRate(t, "1/1h"),
	})
	logs := &logBuf{}
	l.logger = slog.New(slog.NewTextHandler(logs, nil))
	fs := &flakyStore{Store: *l.store.Load()}
	var st store.Store = fs
	l.store.Store(&st)
	a := netip.MustParseAddr("192.0.2.1")
	key, lim := l.admitIP(a)
	if lim != "" {
		t.Fatalf("first connection refused by %s", lim)
	}
	l.releaseIP(key)
	if _, lim := l.admitIP(a); lim != limConnRate {
		t.Fatalf("second connection with the store up: %q, want %s", lim, limConnRate)
	}

	fs.down.Store(true)
	var keys []netip.Prefix
	for i := 0; i < 5; i++ {
		key, lim := l.admitIP(a)
		if lim != "" {
			t.Fatalf("store down, connection %d refused by %s", i+1, lim)
		}
		keys = append(keys, key)
		if got := l.AllowMessage(a); got != "" {
			t.Fatalf("store down, message %d refused by %s", i+1, got)
		}
		if got := l.AllowRecipient(a, "x@example.org"); got != "" {
			t.Fatalf("store down, recipient %d refused by %s", i+1, got)
		}
	}
	if _, lim := l.admitIP(a); lim != limMaxConnsPerIP {
		t.Fatalf("6th open connection with the store down: %q, want %s", lim, limMaxConnsPerIP)
	}
	if n := strings.Count(logs.String(), "rate limit state unavailable"); n != 1 {
		t.Fatalf("%d warnings for 20 store errors in one instant, want 1:\n%s", n, logs)
	}
	clk.advance(storeWarnEvery)
	l.AllowMessage(a)
	if !strings.Contains(logs.String(), "suppressed=19") {
		t.Fatalf("the next warning does not count the 19 not logged:\n%s", logs)
	}
	for _, k := range keys {
		l.releaseIP(k)
	}

	// Back up: the buckets are as the outage left them.
	fs.down.Store(false)
	if _, lim := l.admitIP(a); lim != limConnRate {
		t.Fatalf("store up again: %q, want %s", lim, limConnRate)
	}
}

// startServerPrep is startServer with prep run on the Server before it
// serves (to put a failing store in place).
func startServerPrep(t *testing.T, listen, extra string, prep func(*Server)) (string, *logBuf) {
	t.Helper()
	yml := "hostname: gw.example.com\ndomains: [example.com]\ndns:\n  servers: [127.0.0.1:1]\n  timeout: 100ms\nupstream:\n  address: " + fakeMTA(t) + "\n  xclient: off\nchecks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\nlisten:\n" + listen + extra
	cfg, err := config.Parse([]byte(yml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	prep(s)
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return s.Addrs()[0].String(), logs
}

// A conversation while the limits' store is down: the recipient over
// recipients_per_ip (450 4.7.1 with the store up, TestRecipientRateGives450)
// is passed to the MTA, and the outage is logged once.
func TestRecipientRateStoreDownLetsMailThrough(t *testing.T) {
	addr, logs := startServerPrep(t, "  - address: 127.0.0.1:0\n", "limits:\n  recipients_per_ip: 1/1h\n  messages_per_ip: 1/1h\n", func(s *Server) {
		fs := &flakyStore{Store: *s.lim.store.Load()}
		fs.down.Store(true)
		var st store.Store = fs
		s.lim.store.Store(&st)
	})
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO ok.example.org")
	c.cmd("MAIL FROM:<a@example.org>")
	for i := 0; i < 3; i++ {
		if l := c.cmd("RCPT TO:<bob@example.com>"); l != "250 2.0.0 Ok\r\n" {
			t.Fatalf("rcpt %d with the store down: %q, want 250 2.0.0 Ok", i+1, l)
		}
	}
	if n := strings.Count(logs.String(), "rate limit state unavailable"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"rate limit state unavailable: client allowed\" check=messages_per_ip client=127.0.0.1") {
		t.Fatalf("warning without its check and client:\n%s", logs)
	}
}
