package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/smtpgate/smtpgate/config"
)

// lineMTA is a minimal MTA for the proxy's tests: 250 to every command
// (354 to DATA), PIPELINING and the extra EHLO keywords, XCLIENT refused
// as Postfix refuses a host it does not authorise when refuseXCLIENT is
// set; queued counts the messages it took (the final dot answered 250).
// open counts the connections it has (one ends at QUIT, before the 221,
// or when the client goes), maxOpen the most it had at once.
type lineMTA struct {
	ehlo          []string
	refuseXCLIENT bool
	queued        atomic.Int32
	open, maxOpen atomic.Int32
}

// opened counts a new connection; the func it returns uncounts it, once.
func (m *lineMTA) opened() func() {
	n := m.open.Add(1)
	for {
		max := m.maxOpen.Load()
		if n <= max || m.maxOpen.CompareAndSwap(max, n) {
			break
		}
	}
	var once sync.Once
	return func() { once.Do(func() { m.open.Add(-1) }) }
}

func startLineMTA(t *testing.T, m *lineMTA) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ehlo := "250-mta.test\r\n"
	for _, kw := range m.ehlo {
		ehlo += "250-" + kw + "\r\n"
	}
	ehlo += "250 PIPELINING\r\n"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			closed := m.opened()
			go func() {
				defer closed()
				defer c.Close()
				r := bufio.NewReader(c)
				fmt.Fprintf(c, "220 mta.test ESMTP\r\n")
				data := false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(line)
					switch {
					case data:
						if line == ".\r\n" {
							data = false
							m.queued.Add(1)
							fmt.Fprintf(c, "250 2.0.0 Ok: queued as ABC\r\n")
						}
					case strings.HasPrefix(cmd, "EHLO"):
						io.WriteString(c, ehlo)
					case strings.HasPrefix(cmd, "XCLIENT") && m.refuseXCLIENT:
						fmt.Fprintf(c, "550 5.7.0 Error: insufficient authorization\r\n")
					case strings.HasPrefix(cmd, "DATA"):
						data = true
						fmt.Fprintf(c, "354 go ahead\r\n")
					case strings.HasPrefix(cmd, "QUIT"):
						closed()
						fmt.Fprintf(c, "221 bye\r\n")
						return
					default:
						fmt.Fprintf(c, "250 2.0.0 Ok\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// fakeMTA takes every message.
func fakeMTA(t *testing.T) string { return startLineMTA(t, &lineMTA{}) }

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer runs a Server on a loopback port with extra YAML.
func startServer(t *testing.T, listen, extra string) (*Server, string, *logBuf) {
	t.Helper()
	if listen == "" {
		listen = "  - address: 127.0.0.1:0\n"
	}
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
	return s, s.Addrs()[0].String(), logs
}

type tconn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialT(t *testing.T, addr string) *tconn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &tconn{t: t, Conn: c, r: bufio.NewReader(c)}
}

// line reads one reply line ("" at EOF).
func (c *tconn) line() string {
	c.t.Helper()
	s, err := c.r.ReadString('\n')
	if err != nil && s == "" {
		return ""
	}
	return s
}

// reply reads a whole reply and returns its last line.
func (c *tconn) reply() string {
	c.t.Helper()
	for {
		l := c.line()
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

func (c *tconn) cmd(s string) string {
	c.t.Helper()
	if _, err := io.WriteString(c, s+"\r\n"); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

func (c *tconn) expectEOF() {
	c.t.Helper()
	if l, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("want the connection closed, got %q", l)
	}
}

func TestMaxConnectionsPerIPGives421(t *testing.T) {
	const n = 3
	_, addr, _ := startServer(t, "", "limits:\n  max_connections_per_ip: 3\n")
	var open []*tconn
	for i := 0; i < n; i++ {
		c := dialT(t, addr)
		if l := c.line(); !strings.HasPrefix(l, "220 ") {
			t.Fatalf("connection %d: %q", i+1, l)
		}
		open = append(open, c)
	}
	c := dialT(t, addr)
	if l := c.line(); l != "421 4.7.0 Too many connections from 127.0.0.1, try later\r\n" {
		t.Fatalf("connection %d: %q", n+1, l)
	}
	c.expectEOF()
	// A closed connection frees its place.
	open[0].cmd("QUIT")
	open[0].Close()
	for i := 0; ; i++ {
		c := dialT(t, addr)
		if l := c.line(); strings.HasPrefix(l, "220 ") {
			break
		} else if i > 50 {
			t.Fatalf("after a QUIT: %q", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMaxConnectionsGives421(t *testing.T) {
	_, addr, _ := startServer(t, "", "limits:\n  max_connections: 2\n")
	for i := 0; i < 2; i++ {
		if l := dialT(t, addr).line(); !strings.HasPrefix(l, "220 ") {
			t.Fatalf("connection %d: %q", i+1, l)
		}
	}
	c := dialT(t, addr)
	if l := c.line(); l != "421 4.7.0 Too many connections from 127.0.0.1, try later\r\n" {
		t.Fatalf("connection 3: %q", l)
	}
	c.expectEOF()
}

func TestConnectionRateGives421(t *testing.T) {
	_, addr, _ := startServer(t, "", "limits:\n  connection_rate_per_ip: 2/1h\n")
	for i := 0; i < 2; i++ {
		c := dialT(t, addr)
		if l := c.line(); !strings.HasPrefix(l, "220 ") {
			t.Fatalf("connection %d: %q", i+1, l)
		}
		c.cmd("QUIT")
	}
	if l := dialT(t, addr).line(); l != "421 4.7.0 Too many connections from 127.0.0.1, try later\r\n" {
		t.Fatalf("connection 3: %q", l)
	}
}

func TestEarlyTalker(t *testing.T) {
	_, addr, logs := startServer(t, "", "early_talker:\n  wait: 300ms\n")
	// A client that talks at once.
	c := dialT(t, addr)
	io.WriteString(c, "EHLO spambot.example\r\n")
	if l := c.line(); l != "220-gw.example.com ESMTP\r\n" {
		t.Fatalf("teaser: %q", l)
	}
	if l := c.line(); l != "554 5.5.1 Error: you talk too soon\r\n" {
		t.Fatalf("early talker: %q", l)
	}
	c.expectEOF()
	if !strings.Contains(logs.String(), "check=early_talker") {
		t.Errorf("not logged")
	}
	// A client that waits for the greeting (that the wait happens is
	// what refused the early talker above; no clock is read here).
	q := dialT(t, addr)
	if l := q.reply(); !strings.HasPrefix(l, "220 gw.example.com") {
		t.Fatalf("greeting: %q", l)
	}
	if l := q.cmd("EHLO ok.example.org"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("EHLO: %q", l)
	}
}

func TestEarlyTalkerWarn(t *testing.T) {
	_, addr, logs := startServer(t, "", "early_talker:\n  wait: 200ms\n  mode: warn\n")
	c := dialT(t, addr)
	io.WriteString(c, "NOOP\r\n")
	if l := c.reply(); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting: %q", l)
	}
	// The NOOP sent early is answered: warn mode only logs.
	if l := c.reply(); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("NOOP: %q", l)
	}
	if !strings.Contains(logs.String(), "would reject") {
		t.Errorf("not logged")
	}
}

func TestUnauthPipelining(t *testing.T) {
	_, addr, _ := startServer(t, "", "")
	// Commands before the reply to EHLO.
	c := dialT(t, addr)
	c.reply()
	io.WriteString(c, "EHLO bot.example.org\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\n")
	if l := c.reply(); l != "554 5.5.0 Error: SMTP protocol synchronization\r\n" {
		t.Fatalf("pipelined after EHLO: %q", l)
	}
	c.expectEOF()
	// DATA content before 354.
	d := dialT(t, addr)
	d.reply()
	d.cmd("EHLO ok.example.org")
	io.WriteString(d, "MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
	if l := d.reply(); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("MAIL: %q", l)
	}
	if l := d.reply(); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("RCPT: %q", l)
	}
	if l := d.reply(); l != "554 5.5.0 Error: SMTP protocol synchronization\r\n" {
		t.Fatalf("content before 354: %q", l)
	}
	// Pipelining as RFC 2920 allows it passes.
	p := dialT(t, addr)
	p.reply()
	p.cmd("EHLO ok.example.org")
	io.WriteString(p, "MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
	for _, want := range []string{"250 ", "250 ", "354 "} {
		if l := p.reply(); !strings.HasPrefix(l, want) {
			t.Fatalf("allowed pipelining: want %s, got %q", want, l)
		}
	}
	if l := p.cmd("Subject: x\r\n\r\nbody\r\n."); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("end of data: %q", l)
	}
}

func TestTooManyErrors(t *testing.T) {
	_, addr, _ := startServer(t, "", "limits:\n  max_errors: 4\n  max_unknown_commands: 2\n")
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO ok.example.org")
	if l := c.cmd("FOOO x"); !strings.HasPrefix(l, "500 ") {
		t.Fatalf("unknown command: %q", l)
	}
	if l := c.cmd("BARR"); l != "421 4.7.0 Error: too many unknown commands, closing connection\r\n" {
		t.Fatalf("second unknown command: %q", l)
	}
	c.expectEOF()

	e := dialT(t, addr)
	e.reply()
	e.cmd("EHLO ok.example.org")
	e.cmd("MAIL FROM:<a@example.org>")
	for i := 0; i < 3; i++ {
		if l := e.cmd("RCPT TO:<x@elsewhere.example>"); !strings.HasPrefix(l, "554 5.7.1") {
			t.Fatalf("relay attempt %d: %q", i+1, l)
		}
	}
	if l := e.cmd("RCPT TO:<x@elsewhere.example>"); l != "421 4.7.0 Error: too many errors, closing connection\r\n" {
		t.Fatalf("4th error: %q", l)
	}
	e.expectEOF()
}

func TestRecipientRateGives450(t *testing.T) {
	_, addr, _ := startServer(t, "", "limits:\n  recipients_per_ip: 2/1h\n  messages_per_ip: 1/1h\n")
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO ok.example.org")
	c.cmd("MAIL FROM:<a@example.org>")
	for i := 0; i < 2; i++ {
		if l := c.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("rcpt %d: %q", i+1, l)
		}
	}
	if l := c.cmd("RCPT TO:<bob@example.com>"); l != "450 4.7.1 Error: too much mail from 127.0.0.1, try again later\r\n" {
		t.Fatalf("3rd rcpt: %q", l)
	}
	c.cmd("RSET")
	c.cmd("MAIL FROM:<a@example.org>")
	if l := c.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(l, "450 4.7.1") {
		t.Fatalf("2nd message: %q", l)
	}
}

func proxyListen(from string) string {
	return "  - address: 127.0.0.1:0\n    proxy_protocol: true\n    proxy_protocol_from: [" + from + "]\n"
}

func TestProxyProtocol(t *testing.T) {
	for _, version := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			_, addr, logs := startServer(t, proxyListen("127.0.0.1"), "limits:\n  max_connections_per_ip: 1\n")
			src := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}
			send := func() *tconn {
				c := dialT(t, addr)
				h := proxyproto.HeaderProxyFromAddrs(version, src, c.RemoteAddr())
				if _, err := h.WriteTo(c); err != nil {
					t.Fatal(err)
				}
				return c
			}
			c := send()
			if l := c.reply(); !strings.HasPrefix(l, "220 ") {
				t.Fatalf("greeting: %q", l)
			}
			if l := c.cmd("EHLO lb.example.org"); !strings.HasPrefix(l, "250 ") {
				t.Fatalf("EHLO: %q", l)
			}
			if !strings.Contains(logs.String(), "client=192.0.2.7 port=40000") {
				t.Errorf("the header's client is not the session's:\n%s", logs)
			}
			// The per-IP limit counts the header's address, not the
			// balancer's.
			if l := send().line(); l != "421 4.7.0 Too many connections from 192.0.2.7, try later\r\n" {
				t.Fatalf("second connection from 192.0.2.7: %q", l)
			}
			// No header from a trusted source: closed.
			n := dialT(t, addr)
			io.WriteString(n, "EHLO x\r\n")
			n.expectEOF()
		})
	}
}

func TestProxyHeaderFromUntrustedSourceCloses(t *testing.T) {
	_, addr, logs := startServer(t, proxyListen("10.9.9.9"), "")
	c := dialT(t, addr)
	if l := c.reply(); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("greeting: %q", l)
	}
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, c.RemoteAddr())
	h.WriteTo(c)
	c.expectEOF()
	if !strings.Contains(logs.String(), "PROXY header from a source not in proxy_protocol_from") {
		t.Errorf("not logged")
	}
	// The same source without a header is a direct client.
	d := dialT(t, addr)
	d.reply()
	if l := d.cmd("EHLO direct.example.org"); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("direct client: %q", l)
	}
}

func TestMetricsScrapeAndEndpoints(t *testing.T) {
	s, addr, _ := startServer(t, "", "limits:\n  max_connections_per_ip: 1\nmetrics:\n  address: 127.0.0.1:0\n")
	reloaded := 0
	s.ReloadFunc = func() error { reloaded++; return nil }
	base := "http://" + s.MetricsAddr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO ok.example.org")
	c.cmd("MAIL FROM:<a@example.org>")
	c.cmd("RCPT TO:<x@elsewhere.example>")
	c.cmd("RCPT TO:<bob@example.com>")
	c.cmd("DATA")
	c.cmd("Subject: x\r\n\r\nbody\r\n.")
	dialT(t, addr).line() // refused: 421

	_, body := get("/metrics")
	for _, want := range []string{
		`smtpgate_sessions_open 1`,
		`smtpgate_sessions_total 1`,
		`smtpgate_limit_rejections_total{limit="max_connections_per_ip"} 1`,
		`smtpgate_replies_total{check="unauth_destination",class="5xx",stage="rcpt"} 1`,
		`smtpgate_transactions_total{class="2xx"} 1`,
		`smtpgate_upstream_reply_seconds_count{op="dot"} 1`,
		`smtpgate_dns_cache_hits_total`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	if code, b := get("/healthz"); code != 200 || b != "ok\n" {
		t.Errorf("/healthz: %d %q", code, b)
	}
	if code, b := get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, b)
	}
	if code, _ := get("/reload"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /reload: %d", code)
	}
	resp, err := http.Post(base+"/reload", "text/plain", nil)
	if err != nil || resp.StatusCode != 200 || reloaded != 1 {
		t.Errorf("POST /reload: %v %v, reloaded %d", resp, err, reloaded)
	}
}

// A health check (connect, then close or reset without a word, as
// HAProxy's "check" does every 2s) is counted, not logged at info level,
// and its reset is no warning; a client that speaks is logged as before.
func TestSilentConnectionsAreCountedNotLogged(t *testing.T) {
	for _, tc := range []struct{ name, listen, early string }{
		{"early_talker_0s", "", "0s"},
		{"early_talker_2s", "", "2s"},
		// HAProxy's plain "check" sends no PROXY header.
		{"proxy_protocol", proxyListen("127.0.0.1"), "2s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr, logs := startServer(t, tc.listen, "early_talker:\n  wait: "+tc.early+"\nmetrics:\n  address: 127.0.0.1:0\n")
			for i := 0; i < 3; i++ {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				if i%2 == 0 {
					nc.(*net.TCPConn).SetLinger(0) // a reset, not a FIN
				}
				nc.Close()
			}
			for i := 0; !strings.Contains(scrape(t, s), "smtpgate_silent_connections_total 3"); i++ {
				if i > 500 {
					t.Fatalf("silent connections not counted:\n%s", scrape(t, s))
				}
				time.Sleep(10 * time.Millisecond)
			}
			c := dialT(t, addr)
			if tc.listen != "" {
				io.WriteString(c, "PROXY TCP4 192.0.2.9 127.0.0.1 4321 25\r\n")
			}
			if l := c.reply(); !strings.HasPrefix(l, "220 ") {
				t.Fatalf("greeting: %q", l)
			}
			c.cmd("EHLO client.example.org")
			if l := c.cmd("QUIT"); !strings.HasPrefix(l, "221 ") {
				t.Fatalf("QUIT: %q", l)
			}
			c.expectEOF()
			for i := 0; !strings.Contains(logs.String(), "msg=disconnect"); i++ {
				if i > 500 {
					t.Fatal("no disconnect line for the client that spoke")
				}
				time.Sleep(10 * time.Millisecond)
			}
			log := logs.String()
			if n := strings.Count(log, "msg=connect "); n != 1 {
				t.Errorf("%d connect lines, want 1 (the client that spoke):\n%s", n, log)
			}
			if strings.Contains(log, "reset") || strings.Contains(log, "level=WARN") {
				t.Errorf("a health check's reset was logged as a problem:\n%s", log)
			}
		})
	}
}

func scrape(t *testing.T, s *Server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// emfileListener fails its first n Accepts as accept(2) fails when the
// process is out of file descriptors, then accepts for real.
type emfileListener struct {
	net.Listener
	n atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// Out of file descriptors (EMFILE) in the accept loop: the listener backs
// off, logs the burst once (not once per failed accept), serves again
// when accept works again, and says so. Before, go-smtp logged each
// retry ("smtp server" warnings, one per failed accept).
func TestAcceptEMFILEBacksOffAndServes(t *testing.T) {
	yml := "hostname: gw.example.com\ndomains: [example.com]\ndns:\n  servers: [127.0.0.1:1]\n  timeout: 100ms\nupstream:\n  address: " + fakeMTA(t) + "\n  xclient: \"off\"\nchecks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\nlisten:\n  - address: 127.0.0.1:0\n"
	cfg, err := config.Parse([]byte(yml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	const failures = 6
	l := s.lns[0].(*listener)
	el := &emfileListener{Listener: l.Listener}
	el.n.Store(failures)
	l.Listener = el
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	for i := 0; i < 3; i++ {
		c := dialT(t, s.Addrs()[0].String())
		if l := c.reply(); !strings.HasPrefix(l, "220 ") {
			t.Fatalf("connection %d after EMFILE: %q", i+1, l)
		}
		if l := c.cmd("EHLO client.example.org"); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("EHLO: %q", l)
		}
		c.cmd("QUIT")
	}
	if n := el.n.Load(); n >= 0 {
		t.Fatalf("accept failed %d times, want %d", failures-n, failures)
	}
	out := logs.String()
	if n := strings.Count(out, "too many open files"); n != 1 {
		t.Errorf("the EMFILE burst is logged %d times, want once", n)
	}
	if !strings.Contains(out, `level=ERROR msg="accept failed, backing off until it works again"`) {
		t.Errorf("no error line for the failed accepts")
	}
	if !strings.Contains(out, fmt.Sprintf(`msg="accepting again" address=%s errors=%d`, s.Addrs()[0], failures)) {
		t.Errorf("no line saying accept works again after %d errors", failures)
	}
	// Close ends Serve cleanly.
	s.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
}
