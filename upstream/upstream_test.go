package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/reply"
)

// fakeMTA is one scripted MTA connection: the script reads what the Conn
// sends, byte for byte, and writes the replies it chooses.
type fakeMTA struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

// startMTA listens on a loopback port and runs script on the first
// connection. The test's cleanup waits for the script to end.
func startMTA(t *testing.T, script func(m *fakeMTA)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		// A guard against a script waiting for bytes that never come,
		// not a timing assertion.
		nc.SetDeadline(time.Now().Add(20 * time.Second))
		script(&fakeMTA{t: t, nc: nc, r: bufio.NewReader(nc)})
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func (m *fakeMTA) send(lines ...string) {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	if _, err := io.WriteString(m.nc, b.String()); err != nil {
		m.t.Errorf("fake MTA: write: %v", err)
	}
}

// line reads one command line, without its CRLF.
func (m *fakeMTA) line() string {
	l, err := m.r.ReadString('\n')
	if err != nil {
		m.t.Errorf("fake MTA: read: %v (got %q)", err, l)
		return ""
	}
	if !strings.HasSuffix(l, "\r\n") {
		m.t.Errorf("fake MTA: command %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

func (m *fakeMTA) expect(want string) bool {
	m.t.Helper()
	if got := m.line(); got != want {
		m.t.Errorf("fake MTA got %q, want %q", got, want)
		return false
	}
	return true
}

// hello greets and answers EHLO <helo> with the keywords given.
func (m *fakeMTA) hello(helo string, keywords ...string) {
	m.send("220 mta.test ESMTP")
	m.expect("EHLO " + helo)
	m.ehloReply(keywords...)
}

func (m *fakeMTA) ehloReply(keywords ...string) {
	lines := []string{"mta.test Hello"}
	lines = append(lines, keywords...)
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		lines[i] = "250" + sep + l
	}
	m.send(lines...)
}

// data reads a DATA body as it is on the wire up to, not including, the
// final ".\r\n".
func (m *fakeMTA) data() string {
	var b strings.Builder
	for {
		l, err := m.r.ReadString('\n')
		if err != nil {
			m.t.Errorf("fake MTA: reading data: %v", err)
			return b.String()
		}
		if l == ".\r\n" {
			return b.String()
		}
		b.WriteString(l)
	}
}

// hang reads until the client goes away, answering nothing.
func (m *fakeMTA) hang() { io.Copy(io.Discard, m.r) }

// quit answers the QUIT of Conn.Quit, if it comes.
func (m *fakeMTA) quit() {
	if l, err := m.r.ReadString('\n'); err == nil && l == "QUIT\r\n" {
		m.send("221 2.0.0 Bye")
	}
}

var testOpts = Options{Helo: "gate.test", Timeout: 5 * time.Second, ConnectTimeout: 5 * time.Second}

func dial(t *testing.T, addr string, opts Options, ci *ClientInfo) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), addr, opts, ci)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	return c
}

func TestEHLOParsing(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING", "SIZE 10240000", "8BITMIME", "xclient NAME ADDR", "AUTH PLAIN LOGIN", "SMTPUTF8")
		m.quit()
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	for _, tc := range []struct {
		kw, params string
		ok         bool
	}{
		{"PIPELINING", "", true},
		{"size", "10240000", true},
		{"8BITMIME", "", true},
		{"XCLIENT", "NAME ADDR", true},
		{"auth", "PLAIN LOGIN", true},
		{"SMTPUTF8", "", true},
		{"CHUNKING", "", false},
		{"mta.test", "", false}, // the first line is the greeting, not a keyword
	} {
		params, ok := c.Extension(tc.kw)
		if ok != tc.ok || params != tc.params {
			t.Errorf("Extension(%q) = %q, %v; want %q, %v", tc.kw, params, ok, tc.params, tc.ok)
		}
	}
}

func TestHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(m *fakeMTA)
		op     string
	}{
		{"greeting 554", func(m *fakeMTA) { m.send("554 5.3.2 not now") }, "greeting"},
		{"EHLO refused", func(m *fakeMTA) {
			m.send("220 mta.test")
			m.expect("EHLO gate.test")
			m.send("550 5.7.1 go away")
		}, "ehlo"},
		{"closed after greeting", func(m *fakeMTA) { m.send("220 mta.test") }, "ehlo"},
		{"garbage greeting", func(m *fakeMTA) { m.send("hello there") }, "greeting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, tc.script)
			_, err := Dial(context.Background(), addr, testOpts, nil)
			var ue *Error
			if !errors.As(err, &ue) || ue.Op != tc.op {
				t.Fatalf("Dial error = %v, want *Error with Op %q", err, tc.op)
			}
		})
	}
}

func TestXCLIENT(t *testing.T) {
	for _, tc := range []struct {
		name     string
		announce string
		ci       ClientInfo
		want     string
		reEHLO   string
	}{
		{
			name:     "only announced attributes",
			announce: "XCLIENT NAME ADDR HELO",
			ci:       ClientInfo{Addr: "192.0.2.7", Port: 40000, Name: "", Helo: "client.example", Proto: "ESMTP", Login: "bob"},
			want:     "XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.7 HELO=client.example",
			reEHLO:   "EHLO client.example",
		},
		{
			name:     "all attributes, IPv6, xtext",
			announce: "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR",
			ci:       ClientInfo{Addr: "2001:db8::1", Port: 2525, Name: "h\xc3\xa9st.example", Helo: "[2001:db8::1]", Proto: "ESMTP", Login: "a+b=c d"},
			want:     "XCLIENT NAME=h+C3+A9st.example ADDR=IPV6:2001:db8::1 PORT=2525 PROTO=ESMTP HELO=[2001:db8::1] LOGIN=a+2Bb+3Dc+20d",
			reEHLO:   "EHLO [2001:db8::1]",
		},
		{
			name:     "HELO not announced: re-EHLO with our name",
			announce: "XCLIENT ADDR",
			ci:       ClientInfo{Addr: "192.0.2.7", Helo: "client.example"},
			want:     "XCLIENT ADDR=192.0.2.7",
			reEHLO:   "EHLO gate.test",
		},
		{
			name:     "lower case announcement, empty login and port left out",
			announce: "xclient login port proto",
			ci:       ClientInfo{Addr: "192.0.2.7", Proto: "SMTP"},
			want:     "XCLIENT PROTO=SMTP",
			reEHLO:   "EHLO gate.test",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				m.hello("gate.test", tc.announce, "8BITMIME")
				m.expect(tc.want)
				m.send("220 mta.test ESMTP")
				m.expect(tc.reEHLO)
				// The MTA's second EHLO reply replaces the first.
				m.ehloReply("PIPELINING", "SIZE 1000")
				m.quit()
			})
			opts := testOpts
			opts.XClient = "auto"
			c := dial(t, addr, opts, &tc.ci)
			defer c.Quit()
			if _, ok := c.Extension("PIPELINING"); !ok {
				t.Error("extensions of the EHLO after XCLIENT not recorded")
			}
			if _, ok := c.Extension("8BITMIME"); ok {
				t.Error("extensions of the EHLO before XCLIENT kept")
			}
		})
	}
}

func TestXCLIENTRefused(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "XCLIENT ADDR")
		m.expect("XCLIENT ADDR=192.0.2.7")
		m.send("550 5.7.0 insufficient authorization")
	})
	opts := testOpts
	opts.XClient = "xclient"
	_, err := Dial(context.Background(), addr, opts, &ClientInfo{Addr: "192.0.2.7"})
	var ue *Error
	if !errors.As(err, &ue) || ue.Op != "xclient" {
		t.Fatalf("Dial error = %v, want *Error with Op xclient", err)
	}
}

func TestXFORWARDFallback(t *testing.T) {
	const xf = "XFORWARD NAME=mail.client.example ADDR=IPV6:2001:db8::25 PROTO=ESMTP HELO=odd+20helo"
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING", "XFORWARD NAME ADDR PROTO HELO SOURCE")
		// No EHLO after XFORWARD; one line with every announced
		// attribute, pipelined with MAIL, before every transaction
		// (Postfix forgets the attributes after each one).
		for _, from := range []string{"a@example.com", "c@example.com"} {
			if !m.expect(xf) {
				return
			}
			m.expect("MAIL FROM:<" + from + ">")
			m.send("250 2.0.0 Ok", "250 2.1.0 Ok")
		}
		m.quit()
	})
	opts := testOpts
	opts.XClient = "auto"
	c := dial(t, addr, opts, &ClientInfo{Addr: "2001:db8::25", Port: 1234, Name: "mail.client.example", Helo: "odd helo", Proto: "ESMTP", Login: "bob"})
	defer c.Quit()
	for _, from := range []string{"a@example.com", "c@example.com"} {
		rep, err := c.Mail(context.Background(), from, nil)
		if err != nil || rep.Code != 250 {
			t.Fatalf("Mail = %v, %v", rep, err)
		}
	}
}

func TestXClientOff(t *testing.T) {
	for _, mode := range []string{"off", ""} {
		t.Run("mode="+mode, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				m.hello("gate.test", "XCLIENT NAME ADDR HELO", "XFORWARD NAME ADDR")
				m.expect("QUIT")
				m.send("221 2.0.0 Bye")
			})
			opts := testOpts
			opts.XClient = mode
			c := dial(t, addr, opts, &ClientInfo{Addr: "192.0.2.7", Helo: "client.example"})
			c.Quit()
		})
	}
}

// An MTA that announces neither gets nothing in auto mode.
func TestXClientAutoNeither(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("QUIT")
		m.send("221 2.0.0 Bye")
	})
	opts := testOpts
	opts.XClient = "auto"
	c := dial(t, addr, opts, &ClientInfo{Addr: "192.0.2.7"})
	c.Quit()
}

func TestBeginPipelined(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		// No reply until both commands are in: a client that waited for
		// the MAIL reply would hang here and time out.
		if !m.expect("MAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME") {
			return
		}
		if m.r.Buffered() == 0 {
			m.t.Error("RCPT did not arrive in the same write as MAIL")
		}
		if !m.expect("RCPT TO:<b@example.net> NOTIFY=NEVER") {
			return
		}
		m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
		m.quit()
	})
	opts := testOpts
	opts.Timeout = 2 * time.Second
	c := dial(t, addr, opts, nil)
	defer c.Quit()
	mail, rcpt, err := c.Begin(context.Background(), "a@example.com", []string{"SIZE=100", "BODY=8BITMIME"}, "b@example.net", []string{"NOTIFY=NEVER"})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if mail.Code != 250 || mail.Enhanced != [3]int{2, 1, 0} || rcpt.Code != 250 || rcpt.Enhanced != [3]int{2, 1, 5} {
		t.Errorf("Begin = %v, %v", mail, rcpt)
	}
}

func TestBeginSequential(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "8BITMIME")
		if !m.expect("MAIL FROM:<a@example.com>") {
			return
		}
		// Without PIPELINING the client must wait for this reply.
		if n := m.r.Buffered(); n != 0 {
			m.t.Errorf("%d bytes sent ahead of the MAIL reply without PIPELINING", n)
		}
		m.send("250 2.1.0 Ok")
		m.expect("RCPT TO:<b@example.net>")
		m.send("250 2.1.5 Ok")
		m.quit()
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	mail, rcpt, err := c.Begin(context.Background(), "a@example.com", nil, "b@example.net", nil)
	if err != nil || mail.Code != 250 || rcpt == nil || rcpt.Code != 250 {
		t.Fatalf("Begin = %v, %v, %v", mail, rcpt, err)
	}
}

func TestBeginMailRefused(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		name := "sequential"
		if pipelining {
			name = "pipelined"
		}
		t.Run(name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				if pipelining {
					m.hello("gate.test", "PIPELINING")
					m.expect("MAIL FROM:<spam@example.com>")
					m.expect("RCPT TO:<b@example.net>")
					m.send("553 5.7.1 <spam@example.com>: Sender address rejected", "503 5.5.1 Error: need MAIL command")
				} else {
					m.hello("gate.test")
					m.expect("MAIL FROM:<spam@example.com>")
					m.send("553 5.7.1 <spam@example.com>: Sender address rejected")
				}
				m.quit()
			})
			c := dial(t, addr, testOpts, nil)
			defer c.Quit()
			mail, rcpt, err := c.Begin(context.Background(), "spam@example.com", nil, "b@example.net", nil)
			if err != nil {
				t.Fatal(err)
			}
			if mail.Code != 553 || mail.Enhanced != [3]int{5, 7, 1} || mail.Text != "<spam@example.com>: Sender address rejected" {
				t.Errorf("mail reply = %v", mail)
			}
			if rcpt != nil {
				t.Errorf("rcpt reply = %v, want nil after a refused MAIL", rcpt)
			}
		})
	}
}

func TestLazyRsetPipelined(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<a@example.com>")
		m.expect("RCPT TO:<b@example.net>")
		m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
		// Reset costs nothing now: RSET comes in front of the next MAIL.
		if !m.expect("RSET") {
			return
		}
		if m.r.Buffered() == 0 {
			m.t.Error("MAIL did not follow RSET in the same write")
		}
		m.expect("MAIL FROM:<c@example.com>")
		m.expect("RCPT TO:<d@example.net>")
		m.send("250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok")
		// QUIT ends an open transaction itself: no RSET is owed then.
		m.expect("QUIT")
		m.send("221 2.0.0 Bye")
	})
	c := dial(t, addr, testOpts, nil)
	ctx := context.Background()
	if _, _, err := c.Begin(ctx, "a@example.com", nil, "b@example.net", nil); err != nil {
		t.Fatal(err)
	}
	c.Reset()
	mail, rcpt, err := c.Begin(ctx, "c@example.com", nil, "d@example.net", nil)
	if err != nil || mail.Code != 250 || rcpt.Code != 250 {
		t.Fatalf("Begin after Reset = %v, %v, %v", mail, rcpt, err)
	}
	c.Reset()
	c.Quit()
}

func TestLazyRsetRefused(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<a@example.com>")
		m.expect("RCPT TO:<b@example.net>")
		m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
		m.expect("RSET")
		m.expect("MAIL FROM:<c@example.com>")
		m.expect("RCPT TO:<d@example.net>")
		m.send("421 4.3.0 going down", "421 4.3.0 going down", "421 4.3.0 going down")
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Close()
	ctx := context.Background()
	if _, _, err := c.Begin(ctx, "a@example.com", nil, "b@example.net", nil); err != nil {
		t.Fatal(err)
	}
	c.Reset()
	_, _, err := c.Begin(ctx, "c@example.com", nil, "d@example.net", nil)
	var ue *Error
	if !errors.As(err, &ue) || ue.Op != "rset" {
		t.Fatalf("Begin after refused RSET: err = %v, want *Error op rset", err)
	}
	if !c.Broken() {
		t.Error("Conn not broken after a refused RSET")
	}
}

// RFC 2920 §3.1: without PIPELINING the client must wait for each reply.
// Mail (and Begin, which uses it) writes the owed RSET and MAIL together
// whatever the MTA announced; Postfix ≥ 3.9 (smtpd_forbid_unauth_pipelining
// = yes) drops such a client.
func TestLazyRsetWithoutPipelining(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "8BITMIME")
		m.expect("MAIL FROM:<a@example.com>")
		m.send("250 2.1.0 Ok")
		m.expect("RSET")
		if n := m.r.Buffered(); n != 0 {
			m.t.Errorf("%d bytes sent ahead of the RSET reply without PIPELINING", n)
		}
		m.send("250 2.0.0 Ok")
		m.expect("MAIL FROM:<c@example.com>")
		m.send("250 2.1.0 Ok")
		m.quit()
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	ctx := context.Background()
	if _, err := c.Mail(ctx, "a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	c.Reset()
	if _, err := c.Mail(ctx, "c@example.com", nil); err != nil {
		t.Fatal(err)
	}
}

func TestReplyParsing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		reply    []string
		code     int
		enhanced [3]int
		lines    []string
	}{
		{"single with enhanced", []string{"250 2.1.5 Ok"}, 250, [3]int{2, 1, 5}, []string{"Ok"}},
		{"single without enhanced", []string{"250 Ok"}, 250, [3]int{}, []string{"Ok"}},
		{"code only", []string{"250"}, 250, [3]int{}, []string{""}},
		{"code and space", []string{"250 "}, 250, [3]int{}, []string{""}},
		{"postfix unknown user", []string{"550 5.1.1 <x@example.com>: Recipient address rejected: User unknown in virtual mailbox table"},
			550, [3]int{5, 1, 1}, []string{"<x@example.com>: Recipient address rejected: User unknown in virtual mailbox table"}},
		{"multi-line, enhanced on each", []string{"550-5.7.1 first", "550-5.7.1 second", "550 5.7.1 third"},
			550, [3]int{5, 7, 1}, []string{"first", "second", "third"}},
		{"multi-line, enhanced on the last only", []string{"451-Try later", "451 4.3.0 really"},
			451, [3]int{4, 3, 0}, []string{"Try later", "really"}},
		{"class mismatch is text", []string{"550 4.1.1 odd"}, 550, [3]int{}, []string{"4.1.1 odd"}},
		{"not an enhanced code", []string{"550 5.1 short"}, 550, [3]int{}, []string{"5.1 short"}},
		{"three digit parts", []string{"452 4.5.300 many"}, 452, [3]int{4, 5, 300}, []string{"many"}},
		{"too long part", []string{"452 4.5.3000 many"}, 452, [3]int{}, []string{"4.5.3000 many"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				m.hello("gate.test")
				m.expect("RCPT TO:<x@example.com>")
				m.send(tc.reply...)
				m.quit()
			})
			c := dial(t, addr, testOpts, nil)
			defer c.Quit()
			rep, err := c.Rcpt(context.Background(), "x@example.com", nil)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Code != tc.code || rep.Enhanced != tc.enhanced || strings.Join(rep.Lines(), "|") != strings.Join(tc.lines, "|") {
				t.Errorf("reply = %d %v %q, want %d %v %q", rep.Code, rep.Enhanced, rep.Lines(), tc.code, tc.enhanced, tc.lines)
			}
		})
	}
}

func TestMalformedReplies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply string
	}{
		{"codes differ between lines", "250-first\r\n251 second\r\n"},
		{"not a number", "2x0 Ok\r\n"},
		{"out of range", "199 Ok\r\n"},
		{"too short", "25\r\n"},
		{"closed mid-reply", "250-first\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				m.hello("gate.test")
				m.expect("RCPT TO:<x@example.com>")
				io.WriteString(m.nc, tc.reply)
			})
			c := dial(t, addr, testOpts, nil)
			defer c.Close()
			rep, err := c.Rcpt(context.Background(), "x@example.com", nil)
			var ue *Error
			if !errors.As(err, &ue) || ue.Op != "rcpt" {
				t.Fatalf("Rcpt = %v, %v; want *Error op rcpt", rep, err)
			}
			if !c.Broken() {
				t.Error("Conn not broken after a malformed reply")
			}
		})
	}
}

// dataConn dials a fake MTA that takes one message and returns what it
// got on the wire (before the final dot) on the channel.
func dataConn(t *testing.T) (*Conn, <-chan string) {
	got := make(chan string, 1)
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<a@example.com>")
		m.expect("RCPT TO:<b@example.net>")
		m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
		m.expect("DATA")
		m.send("354 End data with <CR><LF>.<CR><LF>")
		got <- m.data()
		m.send("250 2.0.0 Ok: queued as 3XyZ")
		m.quit()
	})
	c := dial(t, addr, testOpts, nil)
	mail, rcpt, err := c.Begin(context.Background(), "a@example.com", nil, "b@example.net", nil)
	if err != nil || mail.Code != 250 || rcpt.Code != 250 {
		t.Fatalf("Begin = %v, %v, %v", mail, rcpt, err)
	}
	return c, got
}

func TestDotStuffing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		wire   string
	}{
		{"no dots", []string{"Subject: x\r\n\r\nhello\r\n"}, "Subject: x\r\n\r\nhello\r\n"},
		{"leading dots", []string{"Subject: x\r\n\r\n.hidden\r\n..two\r\n.\r\na.b\r\n. \r\n"},
			"Subject: x\r\n\r\n..hidden\r\n...two\r\n..\r\na.b\r\n.. \r\n"},
		{"first byte is a dot", []string{".\r\n"}, "..\r\n"},
		{"dot at the start of a chunk, mid-line", []string{"ab", ".c\r\n"}, "ab.c\r\n"},
		{"dot at the start of a chunk, new line", []string{"ab\r\n", ".c\r\n"}, "ab\r\n..c\r\n"},
		{"split after CR", []string{"ab\r", "\n.", "\r\n"}, "ab\r\n..\r\n"},
		{"dot after LF in the same chunk", []string{"x\r\n.", "y\r\n"}, "x\r\n..y\r\n"},
		{"many lines in one chunk", []string{"a\r\n.b\r\n\r\n.\r\n..\r\nc\r\n"}, "a\r\n..b\r\n\r\n..\r\n...\r\nc\r\n"},
		{"byte by byte", strings.Split("x\r\n.y\r\n.\r\n", ""), "x\r\n..y\r\n..\r\n"},
		{"empty writes", []string{"", "a\r\n", "", ".b\r\n", ""}, "a\r\n..b\r\n"},
		{"unterminated last line gets a CRLF", []string{"a\r\nb"}, "a\r\nb\r\n"},
		{"a dot mid-line is data", []string{"a.\r\n", "b..\r\n"}, "a.\r\nb..\r\n"},
		{"end of data sequence inside", []string{"a\r\n.\r\nMAIL FROM:<x>\r\n"}, "a\r\n..\r\nMAIL FROM:<x>\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, got := dataConn(t)
			defer c.Quit()
			ctx := context.Background()
			rep, w, err := c.Data(ctx)
			if err != nil || rep.Code != 354 || w == nil {
				t.Fatalf("Data = %v, %v, %v", rep, w, err)
			}
			for _, ch := range tc.chunks {
				n, err := w.Write([]byte(ch))
				if err != nil || n != len(ch) {
					t.Fatalf("Write(%q) = %d, %v", ch, n, err)
				}
			}
			rep, err = c.End(ctx)
			if err != nil || rep.Code != 250 || rep.Enhanced != [3]int{2, 0, 0} || rep.Text != "Ok: queued as 3XyZ" {
				t.Fatalf("End = %v, %v", rep, err)
			}
			if wire := <-got; wire != tc.wire {
				t.Errorf("on the wire:\n%q\nwant\n%q", wire, tc.wire)
			}
		})
	}
}

// Two messages on one connection: the writer's state starts over.
func TestDotStuffingSecondMessage(t *testing.T) {
	got := make(chan string, 2)
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		for i := 0; i < 2; i++ {
			m.expect("MAIL FROM:<a@example.com>")
			m.expect("RCPT TO:<b@example.net>")
			m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
			m.expect("DATA")
			m.send("354 go ahead")
			got <- m.data()
			m.send("250 2.0.0 Ok")
		}
		m.quit()
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	ctx := context.Background()
	for _, msg := range []string{"a\r\nb", ".x\r\n"} {
		if _, _, err := c.Begin(ctx, "a@example.com", nil, "b@example.net", nil); err != nil {
			t.Fatal(err)
		}
		_, w, err := c.Data(ctx)
		if err != nil || w == nil {
			t.Fatal(err)
		}
		io.WriteString(w, msg)
		if rep, err := c.End(ctx); err != nil || rep.Code != 250 {
			t.Fatalf("End = %v, %v", rep, err)
		}
	}
	if a, b := <-got, <-got; a != "a\r\nb\r\n" || b != "..x\r\n" {
		t.Errorf("messages on the wire: %q, %q", a, b)
	}
}

func TestDataRefused(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.expect("DATA")
		m.send("554 5.5.1 Error: no valid recipients")
		m.quit()
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	rep, w, err := c.Data(context.Background())
	if err != nil || w != nil || rep.Code != 554 || rep.Enhanced != [3]int{5, 5, 1} {
		t.Fatalf("Data = %v, %v, %v", rep, w, err)
	}
}

func TestEndRefused(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.expect("DATA")
		m.send("354 go ahead")
		m.data()
		m.send("550-5.7.1 Message content rejected", "550 5.7.1 see https://example.com/why")
		m.quit()
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	ctx := context.Background()
	_, w, err := c.Data(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: x\r\n\r\nbody\r\n")
	rep, err := c.End(ctx)
	if err != nil || rep.Code != 550 || rep.Enhanced != [3]int{5, 7, 1} || rep.Text != "Message content rejected\nsee https://example.com/why" {
		t.Fatalf("End = %v, %v", rep, err)
	}
}

func TestTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(m *fakeMTA)
		op     string
		call   func(c *Conn) error // nil: Dial itself times out
	}{
		{"greeting", (*fakeMTA).hang, "greeting", nil},
		{"ehlo", func(m *fakeMTA) {
			m.send("220 mta.test")
			m.line()
			m.hang()
		}, "ehlo", nil},
		{"rcpt", func(m *fakeMTA) {
			m.hello("gate.test")
			m.line()
			m.hang()
		}, "rcpt", func(c *Conn) error {
			_, err := c.Rcpt(context.Background(), "x@example.com", nil)
			return err
		}},
		{"mail+rcpt pipelined", func(m *fakeMTA) {
			m.hello("gate.test", "PIPELINING")
			m.line()
			m.line()
			m.send("250 2.1.0 Ok") // and then nothing for RCPT
			m.hang()
		}, "rcpt", func(c *Conn) error {
			_, _, err := c.Begin(context.Background(), "a@example.com", nil, "b@example.net", nil)
			return err
		}},
		{"final dot", func(m *fakeMTA) {
			m.hello("gate.test")
			m.line()
			m.send("354 go ahead")
			m.data()
			m.hang()
		}, "dot", func(c *Conn) error {
			_, w, err := c.Data(context.Background())
			if err != nil {
				return err
			}
			io.WriteString(w, "a\r\n")
			_, err = c.End(context.Background())
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, tc.script)
			opts := testOpts
			opts.Timeout = 50 * time.Millisecond
			opts.DataTimeout = 50 * time.Millisecond
			opts.ConnectTimeout = 50 * time.Millisecond
			var err error
			c, derr := Dial(context.Background(), addr, opts, nil)
			if tc.call == nil {
				err = derr
			} else {
				if derr != nil {
					t.Fatal(derr)
				}
				defer c.Close()
				err = tc.call(c)
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.Op != tc.op || !ue.Timeout() {
				t.Fatalf("err = %v, want a timeout *Error op %q", err, tc.op)
			}
			if c != nil && !c.Broken() {
				t.Error("Conn not broken after a timeout")
			}
		})
	}
}

// The context's deadline bounds a command as well as Options.Timeout.
func TestContextDeadline(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.line()
		m.hang()
	})
	c := dial(t, addr, testOpts, nil) // Timeout: 5s
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Rcpt(ctx, "x@example.com", nil)
	var ue *Error
	if !errors.As(err, &ue) || !ue.Timeout() {
		t.Fatalf("err = %v, want a timeout *Error", err)
	}
}

func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Dial(context.Background(), addr, testOpts, nil)
	var ue *Error
	if !errors.As(err, &ue) || ue.Op != "dial" || ue.Timeout() {
		t.Fatalf("err = %v, want a non-timeout *Error op dial", err)
	}
}

func TestDropMidData(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.line()
		m.send("354 go ahead")
		buf := make([]byte, 1000)
		io.ReadFull(m.r, buf)
		// Close with unread data: the kernel answers with a reset.
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Close()
	ctx := context.Background()
	_, w, err := c.Data(ctx)
	if err != nil || w == nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 998) + "\r\n")
	var werr error
	for i := 0; i < 10000 && werr == nil; i++ { // 10 MB at most
		_, werr = w.Write(line)
	}
	rep, err := c.End(ctx)
	if err == nil {
		t.Fatalf("End = %v, want an error after the MTA dropped the connection", rep)
	}
	var ue *Error
	if !errors.As(err, &ue) {
		t.Fatalf("End error %v (%T) is not an *Error", err, err)
	}
	if werr != nil && !errors.As(werr, &ue) {
		t.Errorf("Write error %v (%T) is not an *Error", werr, werr)
	}
	if ue.Timeout() {
		t.Errorf("a dropped connection reported as a timeout: %v", ue)
	}
	if !c.Broken() {
		t.Error("Conn not broken")
	}
}

func TestAbortSendsNoDot(t *testing.T) {
	got := make(chan string, 1)
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.line()
		m.send("354 go ahead")
		b, _ := io.ReadAll(m.r)
		got <- string(b)
	})
	c := dial(t, addr, testOpts, nil)
	ctx := context.Background()
	_, w, err := c.Data(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: x\r\n\r\npartial\r\n")
	c.Abort()
	if !c.Broken() {
		t.Error("Conn not broken after Abort")
	}
	if b := <-got; strings.Contains(b, "\r\n.\r\n") || strings.HasSuffix(b, ".\r\n") {
		t.Errorf("the MTA got an end of data after Abort: %q", b)
	}
}

func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pipelining bool
		rcptReply  string
		code       int
		enhanced   [3]int
	}{
		{"unknown, pipelined", true, "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown", 550, [3]int{5, 1, 1}},
		{"known, pipelined", true, "250 2.1.5 Ok", 250, [3]int{2, 1, 5}},
		{"unknown, sequential", false, "550 5.1.1 no such user", 550, [3]int{5, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				if tc.pipelining {
					m.hello("gate.test", "PIPELINING")
					m.expect("MAIL FROM:<>")
					m.expect("RCPT TO:<nobody@example.com>")
					m.send("250 2.1.0 Ok", tc.rcptReply)
				} else {
					m.hello("gate.test")
					m.expect("MAIL FROM:<>")
					m.send("250 2.1.0 Ok")
					m.expect("RCPT TO:<nobody@example.com>")
					m.send(tc.rcptReply)
				}
				// RSET and its reply before QUIT: the probe leaves no
				// transaction open.
				m.expect("RSET")
				m.send("250 2.0.0 Ok")
				m.expect("QUIT")
				m.send("221 2.0.0 Bye")
			})
			rep, err := Probe(context.Background(), addr, testOpts, "nobody@example.com")
			if err != nil {
				t.Fatal(err)
			}
			if rep.Code != tc.code || rep.Enhanced != tc.enhanced {
				t.Errorf("Probe = %v, want %d %v", rep, tc.code, tc.enhanced)
			}
		})
	}
}

func TestProbeNullSenderRefused(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<>")
		m.expect("RCPT TO:<x@example.com>")
		m.send("550 5.7.1 no bounces here", "503 5.5.1 need MAIL")
		m.quit()
	})
	_, err := Probe(context.Background(), addr, testOpts, "x@example.com")
	var ue *Error
	if !errors.As(err, &ue) || ue.Op != "mail" {
		t.Fatalf("Probe error = %v, want *Error op mail", err)
	}
}

func TestXtext(t *testing.T) {
	for in, want := range map[string]string{
		"plain.example": "plain.example",
		"a b":           "a+20b",
		"a+b=c":         "a+2Bb+3Dc",
		"\x00\x7f~!":    "+00+7F~!",
		"h\xc3\xa9":     "h+C3+A9",
	} {
		if got := XText(in); got != want {
			t.Errorf("xtext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReplyString(t *testing.T) {
	r := &reply.Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "a\nb"}
	if got := r.String(); got != "550 5.1.1 a / b" {
		t.Errorf("String = %q", got)
	}
	if r.Text != "a\nb" || r.Positive() {
		t.Errorf("Text = %q, Positive = %v", r.Text, r.Positive())
	}
	r = &reply.Reply{Code: 354, Text: "go"}
	if got := r.String(); got != "354 go" || !r.Positive() {
		t.Errorf("String = %q, Positive = %v", got, r.Positive())
	}
}
