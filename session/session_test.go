package session_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/policy"
	smtpreply "github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/session"
	"github.com/smtpgate/smtpgate/upstream"
)

// The fake MTA is a go-smtp server whose backend records every
// transaction it sees.

type mtaTxn struct {
	From        string
	Rcpts       []string
	DataStarted bool
	Complete    bool // the final dot arrived
	Data        []byte
	Size        int64
	MailOpts    *smtp.MailOptions
	RcptOpts    []*smtp.RcptOptions
}

type fakeMTA struct {
	addr string

	// rcptErr, if set, answers RCPT (nil accepts).
	rcptErr func(to string) error
	// dataHook, if set, takes over DATA.
	dataHook func(c *smtp.Conn, r io.Reader) error
	// discard counts the message instead of keeping it.
	discard bool
	// dsn and smtputf8 make it offer DSN and SMTPUTF8.
	dsn, smtputf8 bool

	mu        sync.Mutex
	conns     int
	active    int
	txns      []*mtaTxn
	loggedOut chan struct{}
}

func startMTA(t testing.TB, configure func(m *fakeMTA)) *fakeMTA {
	t.Helper()
	m := &fakeMTA{loggedOut: make(chan struct{}, 1)}
	if configure != nil {
		configure(m)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.addr = ln.Addr().String()
	srv := smtp.NewServer(m)
	srv.Domain = "mta.test"
	srv.ErrorLog = nopLogger{}
	srv.EnableDSN, srv.EnableSMTPUTF8 = m.dsn, m.smtputf8
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return m
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

func (m *fakeMTA) NewSession(c *smtp.Conn) (smtp.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns++
	m.active++
	return &mtaSession{m: m, c: c}, nil
}

// waitIdle waits until every MTA connection has ended, so that what the
// fake recorded is final.
func (m *fakeMTA) waitIdle(t testing.TB) {
	t.Helper()
	guard := time.After(10 * time.Second) // a hang guard, not a timing assertion
	for {
		m.mu.Lock()
		n := m.active
		m.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-m.loggedOut:
		case <-guard:
			t.Fatalf("fake MTA: %d connections still open", n)
		}
	}
}

func (m *fakeMTA) transactions() []mtaTxn {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]mtaTxn, len(m.txns))
	for i, x := range m.txns {
		out[i] = *x
		out[i].Rcpts = append([]string(nil), x.Rcpts...)
	}
	return out
}

func (m *fakeMTA) connections() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.conns
}

func (m *fakeMTA) completed() int {
	n := 0
	for _, x := range m.transactions() {
		if x.Complete {
			n++
		}
	}
	return n
}

type mtaSession struct {
	m   *fakeMTA
	c   *smtp.Conn
	txn *mtaTxn
}

func (s *mtaSession) Mail(from string, opts *smtp.MailOptions) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.txn = &mtaTxn{From: from, MailOpts: opts}
	s.m.txns = append(s.m.txns, s.txn)
	return nil
}

func (s *mtaSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.m.rcptErr != nil {
		if err := s.m.rcptErr(to); err != nil {
			return err
		}
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.txn.Rcpts = append(s.txn.Rcpts, to)
	s.txn.RcptOpts = append(s.txn.RcptOpts, opts)
	return nil
}

func (s *mtaSession) Data(r io.Reader) error {
	s.m.mu.Lock()
	txn := s.txn
	txn.DataStarted = true
	s.m.mu.Unlock()
	if s.m.dataHook != nil {
		return s.m.dataHook(s.c, r)
	}
	var b []byte
	var n int64
	var err error
	if s.m.discard {
		n, err = io.Copy(io.Discard, r)
	} else {
		b, err = io.ReadAll(r)
		n = int64(len(b))
	}
	if err != nil {
		return err
	}
	s.m.mu.Lock()
	txn.Complete, txn.Data, txn.Size = true, b, n
	s.m.mu.Unlock()
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as 4AbC12"}
}

func (s *mtaSession) Reset() {}

func (s *mtaSession) Logout() error {
	s.m.mu.Lock()
	s.m.active--
	s.m.mu.Unlock()
	select {
	case s.m.loggedOut <- struct{}{}:
	default:
	}
	return nil
}

// The gate: a go-smtp server with session's Backend on a listener whose
// connections carry a session.Peer, as proxy's do.

type peerListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*peerConn
	wg    sync.WaitGroup
}

func (l *peerListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pc := &peerConn{Conn: nc, l: l, peer: &session.Peer{
		ID:    session.NewID(),
		Addr:  nc.RemoteAddr().(*net.TCPAddr).AddrPort(),
		Local: nc.LocalAddr().(*net.TCPAddr).AddrPort(),
		Start: time.Now(),
	}}
	l.mu.Lock()
	l.conns = append(l.conns, pc)
	l.mu.Unlock()
	l.wg.Add(1)
	return pc, nil
}

// shutdown ends every session from its own goroutine (go-smtp's
// Server.Close would call Logout concurrently with a running Data) and
// waits until go-smtp closed each connection.
func (l *peerListener) shutdown() {
	l.Listener.Close()
	l.mu.Lock()
	for _, c := range l.conns {
		c.Conn.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

type peerConn struct {
	net.Conn
	l      *peerListener
	peer   *session.Peer
	closed sync.Once
}

func (c *peerConn) Peer() *session.Peer { return c.peer }

func (c *peerConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.peer.HangingUp() {
		c.Conn.Close()
	}
	return n, err
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.closed.Do(c.l.wg.Done)
	return err
}

type gate struct {
	addr  string
	dials atomic.Int32
	pl    *peerListener
}

type gateOptions struct {
	policy          *policy.Policy
	maxHeaderBytes  int
	maxMessageBytes int64
	delayReject     bool
	mtaAddr         string // overrides the fake MTA's address
	postmaster      string
	// dial, if set, replaces the dial to the MTA.
	dial func(ctx context.Context, ci *upstream.ClientInfo) (*upstream.Conn, error)
	// extensions enables DSN and SMTPUTF8, offered as the MTA does, or
	// as offer says.
	extensions bool
	offer      func(kw string) bool
	// spoolDir and spoolMemoryBytes are limits.spool_dir and
	// limits.spool_memory_bytes.
	spoolDir         string
	spoolMemoryBytes int64
}

func startGate(t testing.TB, m *fakeMTA, o gateOptions) *gate {
	t.Helper()
	g := &gate{}
	mtaAddr := o.mtaAddr
	if mtaAddr == "" {
		mtaAddr = m.addr
	}
	if o.policy == nil {
		o.policy = policy.NewPolicy()
	}
	if o.maxHeaderBytes == 0 {
		o.maxHeaderBytes = 64 << 10
	}
	uo := upstream.Options{Helo: "gate.test", Timeout: 30 * time.Second, ConnectTimeout: 10 * time.Second, XClient: "auto"}
	st := &session.Settings{
		Hostname: "gate.test",
		Policy:   o.policy,
		Dial: func(ctx context.Context, ci *upstream.ClientInfo) (*upstream.Conn, error) {
			g.dials.Add(1)
			if o.dial != nil {
				return o.dial(ctx, ci)
			}
			return upstream.Dial(ctx, mtaAddr, uo, ci)
		},
		MaxHeaderBytes: o.maxHeaderBytes,
		DataTimeout:    time.Minute,
		DelayReject:    o.delayReject,
		Postmaster:     o.postmaster,
		Logger:         slog.New(slog.DiscardHandler),
	}
	st.SpoolDir, st.SpoolMemoryBytes = o.spoolDir, o.spoolMemoryBytes
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	srv := smtp.NewServer(session.NewBackend(st))
	srv.Domain = "gate.test"
	srv.MaxMessageBytes = o.maxMessageBytes
	srv.MaxLineLength = 2000
	srv.EnableSMTPUTF8 = true // as the proxy does
	srv.ErrorLog = nopLogger{}
	if o.extensions {
		srv.EnableDSN, srv.EnableSMTPUTF8 = true, true
		dsn, utf8 := m.dsn, m.smtputf8
		srv.Offer = func(kw string) bool {
			return (kw == "DSN" && dsn) || (kw == "SMTPUTF8" && utf8)
		}
		if o.offer != nil {
			srv.Offer = o.offer
		}
	}
	pl := &peerListener{Listener: ln}
	g.pl = pl
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(pl)
	}()
	t.Cleanup(func() {
		pl.shutdown()
		<-done
	})
	return g
}

// client is a raw SMTP client: it writes exactly the bytes it is given.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

type reply struct {
	code     int
	enhanced string // "5.1.1", "" if absent
	text     string // lines joined with "\n", enhanced codes removed
}

func (r reply) String() string { return fmt.Sprintf("%d %s %q", r.code, r.enhanced, r.text) }

func dialGate(t testing.TB, g *gate) *client {
	t.Helper()
	nc, err := net.Dial("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(60 * time.Second)) // hang guard
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc)}
	c.expect("", 220, "")
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

func (c *client) reply() reply {
	c.t.Helper()
	var rep reply
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("client read: %v (got %q)", err, l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		if len(l) < 3 {
			c.t.Fatalf("malformed reply line %q", l)
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil {
			c.t.Fatalf("malformed reply line %q", l)
		}
		rep.code = code
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		if head, rest, ok := strings.Cut(text, " "); ok && strings.Count(head, ".") == 2 && head[0] >= '2' && head[0] <= '5' {
			rep.enhanced, text = head, rest
		}
		lines = append(lines, text)
		if len(l) == 3 || l[3] == ' ' {
			rep.text = strings.Join(lines, "\n")
			return rep
		}
	}
}

// expect sends line (if not empty, with CRLF) and checks the reply's
// code and enhanced code ("" matches any). It returns the reply.
func (c *client) expect(line string, code int, enhanced string) reply {
	c.t.Helper()
	if line != "" {
		c.send(line + "\r\n")
	}
	rep := c.reply()
	if rep.code != code || (enhanced != "" && rep.enhanced != enhanced) {
		c.t.Fatalf("%q: got %v, want %d %s", line, rep, code, enhanced)
	}
	return rep
}

// envelope says EHLO (once), MAIL and RCPT for each recipient, all accepted.
func (c *client) envelope(from string, rcpts ...string) {
	c.t.Helper()
	c.expect("MAIL FROM:<"+from+">", 250, "2.1.0")
	for _, r := range rcpts {
		c.expect("RCPT TO:<"+r+">", 250, "")
	}
}

// closed reports whether the gate closed the connection (after any
// pending replies were read).
func (c *client) closed() bool {
	c.t.Helper()
	b, err := c.r.ReadByte()
	if err == io.EOF {
		return true
	}
	if err != nil {
		c.t.Fatalf("waiting for the close: %v", err)
	}
	c.t.Errorf("unexpected byte %q after the reply", b)
	return false
}

// stuff dot-stuffs a message with CRLF lines and adds the end of data.
func stuff(msg string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(msg, "\r\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	b.WriteString(".\r\n")
	return b.String()
}

const testMsg = "From: a@example.org\r\nTo: b@example.com\r\nSubject: test\r\n\r\nHello.\r\n"

func TestAcceptedPassesMTAReply(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	rep := c.expect("", 250, "2.0.0")
	if rep.text != "Ok: queued as 4AbC12" {
		t.Errorf("DATA reply text %q, want the MTA's", rep.text)
	}
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 1 || !txns[0].Complete || txns[0].From != "a@example.org" || strings.Join(txns[0].Rcpts, ",") != "b@example.com" {
		t.Fatalf("MTA transactions: %+v", txns)
	}
	if !bytes.HasSuffix(txns[0].Data, []byte(testMsg)) {
		t.Errorf("MTA got %q", txns[0].Data)
	}
}

func TestDotStuffedByteExact(t *testing.T) {
	msg := "From: a@example.org\r\n" +
		"Subject: dots\r\n" +
		"X-Folded: one\r\n\ttwo\r\n" +
		"\r\n" +
		".leading dot\r\n" +
		"..two dots\r\n" +
		".\r\n" +
		"..\r\n" +
		". \r\n" +
		"\r\n" +
		"trailing space \r\n" +
		"8bit: h\xc3\xa9llo\r\n" +
		strings.Repeat("long", 240) + "\r\n" +
		"middle.dot\r\n" +
		".\r\n"
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(msg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 1 || !txns[0].Complete {
		t.Fatalf("MTA transactions: %+v", txns)
	}
	got := string(txns[0].Data)
	trace, rest, ok := strings.Cut(got, msg)
	if !ok || rest != "" {
		t.Fatalf("the message did not arrive byte-exact at the end of:\n%q", got)
	}
	// What comes before it is our Received: field and nothing else.
	if !strings.HasPrefix(trace, "Received: from client.test ([127.0.0.1])\r\n\tby gate.test (smtpgate) with ESMTP id ") {
		t.Errorf("trace field %q", trace)
	}
	lines := strings.Split(strings.TrimSuffix(trace, "\r\n"), "\r\n")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "\t") {
			t.Errorf("trace field has an unfolded line %q", l)
		}
	}
	if !strings.Contains(trace, "\tfor <b@example.com>; ") {
		t.Errorf("trace field without the single recipient: %q", trace)
	}
}

func TestUpstreamRcptRefusalPassedThrough(t *testing.T) {
	m := startMTA(t, func(m *fakeMTA) {
		m.rcptErr = func(to string) error {
			if to == "nobody@example.com" {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table"}
			}
			if to == "full@example.com" {
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
			}
			return nil
		}
	})
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
	rep := c.expect("RCPT TO:<nobody@example.com>", 550, "5.1.1")
	if rep.text != "<nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table" {
		t.Errorf("RCPT reply text %q", rep.text)
	}
	rep = c.expect("RCPT TO:<full@example.com>", 452, "4.2.2")
	if rep.text != "Mailbox full" {
		t.Errorf("RCPT reply text %q", rep.text)
	}
	c.expect("RCPT TO:<b@example.com>", 250, "")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 1 || !txns[0].Complete || strings.Join(txns[0].Rcpts, ",") != "b@example.com" {
		t.Fatalf("MTA transactions: %+v", txns)
	}
	if !strings.Contains(string(txns[0].Data), "\tfor <b@example.com>; ") {
		t.Errorf("Received: does not name the one accepted recipient: %q", txns[0].Data)
	}
}

func TestMTAUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	g := startGate(t, nil, gateOptions{mtaAddr: closed})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
	c.expect("RCPT TO:<b@example.com>", 451, "4.4.1")
	// No recipient was accepted: DATA is refused by go-smtp itself.
	c.expect("DATA", 502, "5.5.1")
	c.expect("QUIT", 221, "")
}

func TestMTADiesMidData(t *testing.T) {
	m := startMTA(t, func(m *fakeMTA) {
		m.dataHook = func(c *smtp.Conn, r io.Reader) error {
			io.CopyN(io.Discard, r, 64<<10)
			c.Conn().Close() // unread data: a reset
			return io.ErrUnexpectedEOF
		}
	})
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send("Subject: big\r\n\r\n")
	line := strings.Repeat("y", 998) + "\r\n"
	c.send(strings.Repeat(line, 2000) + ".\r\n") // 2 MB
	c.expect("", 451, "4.4.2")
	// The session goes on; the next transaction dials again.
	m.dataHook = nil
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 2 || txns[0].Complete || !txns[0].DataStarted || !txns[1].Complete {
		t.Errorf("MTA transactions: first must be started and incomplete, second complete: %+v", txns)
	}
	if n := g.dials.Load(); n != 2 {
		t.Errorf("%d dials, want 2", n)
	}
}

func TestBareNewlineRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		payload string // after DATA's 354, up to and including the end of data
	}{
		{"LF.LF", "Subject: s\r\n\r\nbody\n.\nMAIL FROM:<evil@example.org>\nRCPT TO:<b@example.com>\nDATA\nevil\n.\n\r\n.\r\n"},
		{"CRLF.LF", "Subject: s\r\n\r\nbody\r\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nevil\r\n.\r\n"},
		{"CRLF.CR", "Subject: s\r\n\r\nbody\r\n.\rMAIL FROM:<evil@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nevil\r\n.\r\n"},
		{"CRLF.CRX at the start", "\r\n.\rX\r\n.\r\n"},
		{"LF.CRLF", "Subject: s\r\n\r\nbody\n.\r\nMAIL FROM:<evil@example.org>\r\n.\r\n"},
		{"CR.CRLF", "Subject: s\r\n\r\nbody\r.\r\nMAIL FROM:<evil@example.org>\r\n.\r\n"},
		{"bare LF in the header", "Subject: s\nX-Evil: 1\r\n\r\nbody\r\n.\r\n"},
		{"bare CR in the header", "Subject: s\rX-Evil: 1\r\n\r\nbody\r\n.\r\n"},
		{"CRCRLF", "Subject: s\r\n\r\nbody\r\r\n.\r\n"},
		{"bare LF in a long body", "Subject: s\r\n\r\n" + strings.Repeat("ok line\r\n", 10000) + "bad\n" + strings.Repeat("ok line\r\n", 10) + ".\r\n"},
		{"bare LF as the first body line", "Subject: s\r\n\r\n\nMAIL FROM:<evil@example.org>\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMTA(t, nil)
			g := startGate(t, m, gateOptions{})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			c.expect("DATA", 354, "")
			c.send(tc.payload)
			c.expect("", 550, "5.5.2")
			if !c.closed() {
				t.Error("connection not closed after the bare newline reply")
			}
			m.waitIdle(t)
			for _, x := range m.transactions() {
				if x.Complete || x.From == "evil@example.org" {
					t.Errorf("MTA got a message: %+v", x)
				}
			}
		})
	}
}

func TestHeaderTooLarge(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{maxHeaderBytes: 1024})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send("Subject: long\r\n" + "X-Long: start\r\n" + strings.Repeat("\tcontinued continued continued continued\r\n", 40) + "\r\nbody\r\n.\r\n")
	c.expect("", 552, "5.3.4")
	// Not a reason to hang up: the session goes on.
	c.expect("RSET", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	// Without header checks DATA goes to the MTA before the header is
	// read (one round trip less); the too-large one is then dropped
	// without its final dot, and the next transaction dials again.
	if len(txns) != 2 || txns[0].Complete || !txns[1].Complete {
		t.Errorf("MTA transactions: first must not complete, second must: %+v", txns)
	}
}

func TestMessageTooLarge(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{maxMessageBytes: 100_000})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("z", 98)+"\r\n", 3000) + ".\r\n")
	c.expect("", 552, "5.3.4")
	m.waitIdle(t) // the upstream transaction was dropped
	txns := m.transactions()
	if len(txns) != 1 || !txns[0].DataStarted || txns[0].Complete {
		t.Errorf("MTA transactions: want one started and aborted: %+v", txns)
	}
	// The client can try again with something smaller.
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	if n := m.completed(); n != 1 {
		t.Errorf("%d messages completed at the MTA, want 1", n)
	}
}

func TestUpstreamReusedAcrossTransactions(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("RSET", 250, "")
	c.envelope("c@example.org", "d@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.envelope("e@example.org", "f@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	if n := g.dials.Load(); n != 1 {
		t.Errorf("%d dials, want 1", n)
	}
	if n := m.connections(); n != 1 {
		t.Errorf("%d MTA connections, want 1", n)
	}
	txns := m.transactions()
	if len(txns) != 3 || txns[0].DataStarted || !txns[1].Complete || !txns[2].Complete ||
		txns[1].From != "c@example.org" || txns[2].From != "e@example.org" {
		t.Errorf("MTA transactions: %+v", txns)
	}
}

// Test checks.

var testRefusal = smtpreply.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Refused by test check"}

type rcptCheck struct{ refuse string }

func (rcptCheck) Name() string   { return "rcpt" }
func (mailCheck) Name() string   { return "mail" }
func (headerCheck) Name() string { return "header" }
func (bodyCheck) Name() string   { return "body" }

func (k rcptCheck) CheckRcpt(_ context.Context, _ *policy.Client, _ *policy.Envelope, rcpt string) policy.Result {
	if rcpt == k.refuse {
		return policy.Rejected(smtpreply.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Recipient refused by test check"}, "test")
	}
	return policy.Result{}
}

type mailCheck struct{ refuse string }

func (k mailCheck) CheckMail(_ context.Context, _ *policy.Client, _ *policy.Envelope, from string) policy.Result {
	if from == k.refuse {
		return policy.Rejected(smtpreply.Reply{Code: 553, Enhanced: [3]int{5, 7, 1}, Text: "Sender refused by test check"}, "test")
	}
	return policy.Result{}
}

// headerCheck acts on the first field whose "Name: value" contains match.
type headerCheck struct {
	match  string
	action policy.Action
}

func (k headerCheck) CheckHeader(_ context.Context, _ *policy.Client, _ *policy.Envelope, h *policy.Header) policy.Result {
	if strings.Contains(h.Name+": "+h.Value, k.match) {
		return policy.Result{Action: k.action, Reply: testRefusal, Evidence: "test"}
	}
	return policy.Result{}
}

type bodyCheck struct{ match string }

func (k bodyCheck) CheckBodyLine(_ context.Context, _ *policy.Client, _ *policy.Envelope, line []byte) policy.Result {
	if bytes.Contains(line, []byte(k.match)) {
		return policy.Rejected(testRefusal, "test")
	}
	return policy.Result{}
}

func onePolicy(mode policy.Mode, checker policy.Checker) *policy.Policy {
	return policy.NewPolicy(policy.Check{Mode: mode, Checker: checker})
}

func TestPolicyRcptRefusal(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, rcptCheck{"bad@example.com"})})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
	rep := c.expect("RCPT TO:<bad@example.com>", 550, "5.7.1")
	if rep.text != "Recipient refused by test check" {
		t.Errorf("RCPT reply text %q", rep.text)
	}
	c.expect("DATA", 502, "5.5.1")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	if n := g.dials.Load(); n != 0 {
		t.Errorf("%d dials for a refused recipient, want 0", n)
	}
	if txns := m.transactions(); len(txns) != 0 {
		t.Errorf("MTA transactions: %+v", txns)
	}
}

func TestPolicyWarnMode(t *testing.T) {
	m := startMTA(t, nil)
	p := policy.NewPolicy(
		policy.Check{Mode: policy.Warn, Checker: rcptCheck{"bad@example.com"}},
		policy.Check{Mode: policy.Warn, Checker: headerCheck{"Subject: test", policy.Reject}},
		policy.Check{Mode: policy.Warn, Checker: bodyCheck{"Hello"}},
		policy.Check{Mode: policy.Warn, Checker: headerCheck{"From:", policy.Discard}},
	)
	g := startGate(t, m, gateOptions{policy: p})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "bad@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 1 || !txns[0].Complete || !bytes.HasSuffix(txns[0].Data, []byte(testMsg)) {
		t.Errorf("MTA transactions: %+v", txns)
	}
}

func TestPolicyHeaderRefusal(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, headerCheck{"Subject: buy", policy.Reject})})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff("From: a@example.org\r\nSubject: buy\r\n now\r\n\r\nspam\r\n"))
	rep := c.expect("", 554, "5.7.1")
	if rep.text != testRefusal.Text {
		t.Errorf("DATA reply text %q", rep.text)
	}
	// A clean message afterwards goes through on the same connection.
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 2 || txns[0].DataStarted || !txns[1].Complete {
		t.Errorf("MTA transactions: first must have no DATA: %+v", txns)
	}
}

func TestPolicyBodyRefusal(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, bodyCheck{"EICAR"})})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff("Subject: s\r\n\r\n" + strings.Repeat("fine\r\n", 1000) + "X5O EICAR test\r\nmore\r\n"))
	c.expect("", 554, "5.7.1")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	for _, x := range m.transactions() {
		if x.Complete {
			t.Errorf("MTA completed a refused message: %+v", x)
		}
	}
}

func TestPolicyHeaderDiscard(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, headerCheck{"X-Spam: yes", policy.Discard})})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff("From: a@example.org\r\nX-Spam: yes\r\n\r\nbody\r\n"))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 1 || txns[0].DataStarted {
		t.Errorf("MTA transactions: want RCPT but no DATA: %+v", txns)
	}
}

func TestDelayReject(t *testing.T) {
	for _, delay := range []bool{true, false} {
		t.Run(fmt.Sprintf("delay_reject=%v", delay), func(t *testing.T) {
			m := startMTA(t, nil)
			g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, mailCheck{"spam@example.org"}), delayReject: delay})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			if delay {
				c.expect("MAIL FROM:<spam@example.org>", 250, "")
				rep := c.expect("RCPT TO:<b@example.com>", 553, "5.7.1")
				if rep.text != "Sender refused by test check" {
					t.Errorf("RCPT reply text %q", rep.text)
				}
				c.expect("RCPT TO:<c@example.com>", 553, "5.7.1")
			} else {
				c.expect("MAIL FROM:<spam@example.org>", 553, "5.7.1")
			}
			// A new transaction with another sender is not held to it.
			c.expect("RSET", 250, "")
			c.envelope("a@example.org", "b@example.com")
			c.expect("QUIT", 221, "")
			m.waitIdle(t)
			txns := m.transactions()
			if len(txns) != 1 || txns[0].From != "a@example.org" {
				t.Errorf("MTA transactions: %+v", txns)
			}
		})
	}
}

// countingCheck is a stateful check: it counts the sessions it started
// and closed, and sees every RCPT of a session through the same instance.
type countingCheck struct {
	mu      sync.Mutex
	started int
	rcpts   []int // per instance, in start order
	closed  chan int
}

func (*countingCheck) Name() string { return "counting" }

func (*countingCheck) CheckRcpt(context.Context, *policy.Client, *policy.Envelope, string) policy.Result {
	panic("the session's instance answers")
}

func (k *countingCheck) Start(context.Context, *policy.Client) (policy.Instance, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.started++
	k.rcpts = append(k.rcpts, 0)
	return &countingInstance{k: k, i: len(k.rcpts) - 1}, nil
}

type countingInstance struct {
	k *countingCheck
	i int
}

func (c *countingInstance) CheckRcpt(context.Context, *policy.Client, *policy.Envelope, string) policy.Result {
	c.k.mu.Lock()
	defer c.k.mu.Unlock()
	c.k.rcpts[c.i]++
	return policy.Result{}
}

func (c *countingInstance) Close() error {
	c.k.closed <- c.i
	return nil
}

// A stateful check starts once when the session begins, answers every
// transaction of the session through the same instance, and is closed
// when the session ends.
func TestStatefulCheckLivesForTheSession(t *testing.T) {
	m := startMTA(t, nil)
	k := &countingCheck{closed: make(chan int, 4)}
	g := startGate(t, m, gateOptions{policy: policy.NewPolicy(policy.Check{Mode: policy.Enforce, Checker: k})})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	for _, from := range []string{"a@example.org", "b@example.org"} {
		c.envelope(from, "x@example.com")
		c.expect("RCPT TO:<y@example.com>", 250, "")
		c.expect("DATA", 354, "")
		c.send(stuff(testMsg))
		c.expect("", 250, "2.0.0")
	}
	c.expect("QUIT", 221, "")
	select {
	case i := <-k.closed:
		if i != 0 {
			t.Errorf("closed instance %d", i)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the check's session state was not closed at the end of the session")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.started != 1 || len(k.rcpts) != 1 || k.rcpts[0] != 4 {
		t.Errorf("started %d, RCPTs per instance %v; want 1, [4]", k.started, k.rcpts)
	}
	if got := len(m.transactions()); got != 2 {
		t.Errorf("MTA got %d transactions, want 2", got)
	}
}
