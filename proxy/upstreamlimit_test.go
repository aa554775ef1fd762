package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/session"
	"github.com/smtpgate/smtpgate/upstream"
)

func dialFromT(t *testing.T, addr, local string) *tconn {
	t.Helper()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := &tconn{t: t, Conn: c, r: bufio.NewReader(c)}
	if l := tc.reply(); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting: %q", l)
	}
	return tc
}

// envelope runs EHLO and MAIL and returns the reply to one RCPT.
func (c *tconn) envelope() string {
	c.t.Helper()
	c.cmd("EHLO client.example.org")
	c.cmd("MAIL FROM:<a@example.org>")
	return c.cmd("RCPT TO:<bob@example.com>")
}

// waitSlots polls until the sessions holding an MTA connection are n.
func waitSlots(t *testing.T, s *Server, n int) {
	t.Helper()
	for i := 0; ; i++ {
		if total, _ := s.upLim.inUse(netip.Addr{}); total == n {
			return
		}
		if i > 500 {
			total, _ := s.upLim.inUse(netip.Addr{})
			t.Fatalf("MTA connections held: %d, want %d", total, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Sessions that hold a connection to the MTA are capped in total and per
// client network (upstream.max_connections, upstream.max_connections_per_ip):
// over a cap, RCPT gets 451 4.7.0, logged with the cap's name, and a
// session that ends gives its place back.
func TestUpstreamCapsAtRCPT(t *testing.T) {
	s, addr, logs := startServer(t, "", "")
	// startServer has an upstream: block of its own; the keys are
	// tested end to end in integration/.
	s.upLim.set(3, 2)
	a1, a2, a3 := dialFromT(t, addr, "127.0.0.2"), dialFromT(t, addr, "127.0.0.2"), dialFromT(t, addr, "127.0.0.2")
	for i, c := range []*tconn{a1, a2} {
		if l := c.envelope(); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("127.0.0.2 #%d RCPT: %q", i+1, l)
		}
	}
	if l := a3.envelope(); l != "451 4.7.0 Error: too many connections from 127.0.0.2 to the mail server, try again later\r\n" {
		t.Fatalf("127.0.0.2 #3 RCPT (per-IP cap): %q", l)
	}
	b1, b2 := dialFromT(t, addr, "127.0.0.3"), dialFromT(t, addr, "127.0.0.3")
	if l := b1.envelope(); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("127.0.0.3 #1 RCPT: %q", l)
	}
	if l := b2.envelope(); l != "451 4.7.0 Error: too many connections to the mail server, try again later\r\n" {
		t.Fatalf("127.0.0.3 #2 RCPT (total cap): %q", l)
	}
	for _, want := range []string{
		`check=upstream_max_connections_per_ip reply="451 4.7.0 Error: too many connections from 127.0.0.2 to the mail server, try again later" rcpt=bob@example.com`,
		`check=upstream_max_connections reply="451 4.7.0 Error: too many connections to the mail server, try again later" rcpt=bob@example.com`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	// A session that ends gives its place back; the refused one may try
	// again in the same session.
	a1.cmd("QUIT")
	waitSlots(t, s, 2)
	if l := b2.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("127.0.0.3 #2 RCPT after a QUIT: %q", l)
	}
	if l := b2.cmd("DATA"); !strings.HasPrefix(l, "354 ") {
		t.Fatalf("DATA: %q", l)
	}
	if l := b2.cmd("Subject: x\r\n\r\nbody\r\n."); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("end of data: %q", l)
	}
	// More transactions in the session use the same place.
	b2.cmd("MAIL FROM:<a@example.org>")
	if l := b2.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("second transaction: %q", l)
	}
	if total, perIP := s.upLim.inUse(netip.MustParseAddr("127.0.0.3")); total != 3 || perIP != 2 {
		t.Errorf("held: %d in total, %d for 127.0.0.3; want 3 and 2", total, perIP)
	}
	mfs, err := s.met.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "," + l.GetValue()
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"smtpgate_upstream_connections_held":                              3,
		"smtpgate_limit_rejections_total," + limUpstreamConns:             1,
		"smtpgate_limit_rejections_total," + limUpstreamConnsPerIP:        1,
		"smtpgate_replies_total,upstream_max_connections_per_ip,4xx,rcpt": 1,
	} {
		if got[name] != want {
			t.Errorf("metric %s = %v, want %v", name, got[name], want)
		}
	}
}

// A session that holds a connection to the MTA and goes quiet is cut
// after limits.transaction_idle_timeout (421 4.4.2), not command_timeout,
// and its place is given back.
func TestTransactionIdleTimeout(t *testing.T) {
	s, addr, logs := startServer(t, "", "limits:\n  command_timeout: 5m\n  transaction_idle_timeout: 200ms\n")
	c := dialFromT(t, addr, "127.0.0.2")
	if l := c.envelope(); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("RCPT: %q", l)
	}
	// The test's own read deadline is 10s; without the shorter allowance
	// the session would wait 5m.
	if l := c.line(); l != "421 4.4.2 Idle timeout, bye bye\r\n" {
		t.Fatalf("quiet after RCPT: %q", l)
	}
	c.expectEOF()
	waitSlots(t, s, 0)
	if !strings.Contains(logs.String(), "check=transaction_idle_timeout") {
		t.Errorf("not logged:\n%s", logs)
	}
}

// The limiter itself: a failed dial gives its slot back, a session's
// second dial reuses its slot, relay.networks are exempt from the per-IP
// cap but not from the total, and a reload keeps the slots held.
func TestUpstreamLimiterSlots(t *testing.T) {
	e := config.EdgeLimits{MaxConnections: 10, MaxConnectionsPerIP: 10, IPv4Prefix: 32, IPv6Prefix: 64, MaxTrackedIPs: 100}
	lim := newLimiter(e, trustedFunc([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}))
	u := newUpstreamLimiter(lim)
	u.set(3, 1)
	fail := errors.New("MTA down")
	var dialErr error
	dial := u.wrap(func(ctx context.Context, ci *upstream.ClientInfo) (*upstream.Conn, error) { return nil, dialErr })
	newSession := func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }
	ci := func(ip string) *upstream.ClientInfo { return &upstream.ClientInfo{Addr: ip} }
	check := func(what string, total, perIP int, ip string) {
		t.Helper()
		if gt, gp := u.inUse(netip.MustParseAddr(ip)); gt != total || gp != perIP {
			t.Errorf("%s: held %d in total, %d for %s; want %d and %d", what, gt, gp, ip, total, perIP)
		}
	}
	limitOf := func(err error) string {
		var le *session.LimitError
		if errors.As(err, &le) {
			return le.Check
		}
		return ""
	}

	a, cancelA := newSession()
	dialErr = fail
	if _, err := dial(a, ci("192.0.2.1")); !errors.Is(err, fail) {
		t.Fatalf("failed dial: %v", err)
	}
	check("after a failed dial", 0, 0, "192.0.2.1")
	dialErr = nil
	dial(a, ci("192.0.2.1"))
	dial(a, ci("192.0.2.1")) // the same session dials again
	check("one session, two dials", 1, 1, "192.0.2.1")
	b, cancelB := newSession()
	defer cancelB()
	if _, err := dial(b, ci("192.0.2.1")); limitOf(err) != limUpstreamConnsPerIP {
		t.Errorf("second session from 192.0.2.1: %v", err)
	}
	r1, cancelR1 := newSession()
	defer cancelR1()
	r2, cancelR2 := newSession()
	defer cancelR2()
	dial(r1, ci("10.1.1.1"))
	dial(r2, ci("10.1.1.1")) // relay.networks: no per-IP cap
	check("relay network", 3, 0, "10.1.1.1")
	if _, err := dial(b, ci("192.0.2.2")); limitOf(err) != limUpstreamConns {
		t.Errorf("fourth session: %v", err)
	}
	u.set(4, 1) // a reload
	check("after a reload", 3, 1, "192.0.2.1")
	cancelA()
	for i := 0; ; i++ {
		if total, _ := u.inUse(netip.Addr{}); total == 2 {
			break
		}
		if i > 500 {
			t.Fatalf("the ended session's slot was not given back")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := dial(b, ci("192.0.2.1")); err != nil {
		t.Errorf("after the first session ended: %v", err)
	}
}

// A recipient probe (recipients.verify: upstream) opens an MTA connection
// of its own, so it takes a slot of upstream.max_connections (and of the
// client network's max_connections_per_ip) while it holds it: with the
// cap's N sessions holding MTA connections, a RCPT that needs a probe
// gets the sessions' 451 4.7.0 and the MTA never has more than N
// connections. Before, probes were not counted: the MTA had N+1, and a
// client at its per-IP cap got probes made.
func TestUpstreamCapsCountProbes(t *testing.T) {
	mta := &lineMTA{}
	s, addr, logs := startServerUpstream(t, "  address: "+startLineMTA(t, mta)+"\n  xclient: \"off\"\n  max_connections: 3\n  max_connections_per_ip: 1\n  pool: {enabled: false}\nrecipients:\n  verify: upstream\n")
	rcpt := func(c *tconn, to string) string {
		c.cmd("EHLO client.example.org")
		c.cmd("MAIL FROM:<a@example.org>")
		return c.cmd("RCPT TO:<" + to + ">")
	}
	// Two sessions hold an MTA connection each, after a probe each.
	a, b := dialFromT(t, addr, "127.0.0.2"), dialFromT(t, addr, "127.0.0.3")
	for i, c := range []*tconn{a, b} {
		if l := rcpt(c, "bob@example.com"); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("session %d RCPT: %q", i+1, l)
		}
	}
	waitSlots(t, s, 2)
	// A session's own probe counts in its network's share: dave is not in
	// the probe cache, so his RCPT needs a probe.
	const fromIP = "451 4.7.0 Error: too many connections from 127.0.0.2 to the mail server, try again later\r\n"
	if l := a.cmd("RCPT TO:<dave@example.com>"); l != fromIP {
		t.Fatalf("a probe of 127.0.0.2 over the per-IP cap: %q, want %q", l, fromIP)
	}
	// bob is cached: no probe; this session takes the third place.
	c := dialFromT(t, addr, "127.0.0.4")
	if l := rcpt(c, "bob@example.com"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("session 3 RCPT: %q", l)
	}
	waitSlots(t, s, 3)
	d := dialFromT(t, addr, "127.0.0.5")
	const full = "451 4.7.0 Error: too many connections to the mail server, try again later\r\n"
	if l := rcpt(d, "carol@example.com"); l != full {
		t.Fatalf("a RCPT needing a probe over the total cap: %q, want %q", l, full)
	}
	if n := mta.maxOpen.Load(); n > 3 {
		t.Errorf("the MTA had %d connections at once, the cap is 3", n)
	}
	for _, want := range []string{
		`client=127.0.0.2 stage=rcpt check=unknown_recipient mode=enforce reply="451 4.7.0 Error: too many connections from 127.0.0.2 to the mail server, try again later" evidence="probe not made: upstream_max_connections_per_ip: `,
		`client=127.0.0.5 stage=rcpt check=unknown_recipient mode=enforce reply="451 4.7.0 Error: too many connections to the mail server, try again later" evidence="probe not made: upstream_max_connections: `,
	} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("log has %q %d times, want once", want, n)
		}
	}
	// When a session ends its place is free for a probe again, and the
	// probe gives its own back.
	b.cmd("QUIT")
	waitSlots(t, s, 2)
	if l := d.cmd("RCPT TO:<carol@example.com>"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("a RCPT needing a probe after a QUIT: %q", l)
	}
	waitSlots(t, s, 3)
	if n := mta.maxOpen.Load(); n > 3 {
		t.Errorf("the MTA had %d connections at once, the cap is 3", n)
	}
}
