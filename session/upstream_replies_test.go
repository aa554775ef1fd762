package session_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/upstream"
)

// rawMTA is a scripted MTA for faults a real one rarely shows: the i-th
// connection runs the i-th script; connections beyond the scripts are
// refused with a 554 greeting.
type rawMTA struct {
	addr string
	// dots counts final dots received, i.e. messages the MTA could
	// have queued.
	mu   sync.Mutex
	dots int
}

type rawConn struct {
	t  testing.TB
	m  *rawMTA
	nc net.Conn
	r  *bufio.Reader
}

func startRawMTA(t testing.TB, scripts ...func(c *rawConn)) *rawMTA {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &rawMTA{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(20 * time.Second)) // hang guard
				c := &rawConn{t: t, m: m, nc: nc, r: bufio.NewReader(nc)}
				if i >= len(scripts) {
					c.send("554 5.3.2 no more connections in this test")
					return
				}
				scripts[i](c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return m
}

func (m *rawMTA) dotCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dots
}

func (c *rawConn) send(lines ...string) {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	io.WriteString(c.nc, b.String())
}

// line reads one command line without CRLF ("" at EOF).
func (c *rawConn) line() string {
	l, _ := c.r.ReadString('\n')
	return strings.TrimSuffix(l, "\r\n")
}

func (c *rawConn) expect(prefix string) {
	if l := c.line(); !strings.HasPrefix(l, prefix) {
		c.t.Errorf("raw MTA got %q, want %q...", l, prefix)
	}
}

// greet sends the greeting and answers EHLO with PIPELINING and the
// keywords given.
func (c *rawConn) greet(keywords ...string) {
	c.send("220 mta.test ESMTP")
	c.expect("EHLO ")
	lines := append([]string{"mta.test", "PIPELINING"}, keywords...)
	for i := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		lines[i] = "250" + sep + lines[i]
	}
	c.send(lines...)
}

// envelope answers the pipelined MAIL and first RCPT with 250s.
func (c *rawConn) envelope() {
	c.expect("MAIL FROM:")
	c.expect("RCPT TO:")
	c.send("250 2.1.0 Ok", "250 2.1.5 Ok")
}

// message answers DATA with 354 and reads the body; it reports whether
// the final dot came.
func (c *rawConn) message() bool {
	c.expect("DATA")
	c.send("354 End data with <CR><LF>.<CR><LF>")
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return false
		}
		if l == ".\r\n" {
			c.m.mu.Lock()
			c.m.dots++
			c.m.mu.Unlock()
			return true
		}
	}
}

// rest answers RSET and QUIT until the gate hangs up.
func (c *rawConn) rest() {
	for {
		switch l := c.line(); {
		case l == "":
			return
		case l == "QUIT":
			c.send("221 2.0.0 Bye")
			return
		case l == "RSET":
			c.send("250 2.0.0 Ok")
		}
	}
}

func sendMessage(c *client) {
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
}

// Item 3: the only positive reply to DATA is 354, and the final reply
// comes after the dot. An MTA that answers DATA with 250, a surplus reply
// that shifts the pipeline, or a 354 to the dot: 451 4.4.2, never 250.
func TestRepliesOutOfTurnNeverBecome250(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(c *rawConn)
	}{
		{"250 to DATA", func(c *rawConn) {
			c.greet()
			c.envelope()
			c.expect("DATA")
			c.send("250 2.0.0 Ok")
			c.rest()
		}},
		{"surplus reply after RCPT", func(c *rawConn) {
			c.greet()
			c.expect("MAIL FROM:")
			c.expect("RCPT TO:")
			c.send("250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok")
			// Whatever comes now is read against the stale reply.
			c.rest()
		}},
		{"354 to the final dot", func(c *rawConn) {
			c.greet()
			c.envelope()
			if c.message() {
				c.send("354 go on")
			}
			c.rest()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startRawMTA(t, tc.script)
			g := startGate(t, nil, gateOptions{mtaAddr: m.addr})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			sendMessage(c)
			c.expect("", 451, "4.4.2")
			c.expect("QUIT", 221, "")
			if n := m.dotCount(); n != 0 && tc.name != "354 to the final dot" {
				t.Errorf("the MTA got %d final dots", n)
			}
		})
	}
}

// Item 16 / any MTA: a 421 (RFC 5321 §3.8), or a 4xx to MAIL on a
// connection that already carried a message (Exim's and OpenSMTPD's
// limits per connection), before anything of the transaction stands:
// the connection is retired and the transaction tried again on a fresh
// one. The client notices nothing.
func TestConnectionDoneRetriedOnFreshConnection(t *testing.T) {
	deliver := func(c *rawConn) {
		c.greet()
		c.envelope()
		if c.message() {
			c.send("250 2.0.0 Ok: queued as FRESH")
		}
		c.rest()
	}
	for _, tc := range []struct {
		name   string
		msgs   int
		script func(c *rawConn)
	}{
		{"421 to MAIL", 1, func(c *rawConn) {
			c.greet()
			c.expect("MAIL FROM:")
			c.expect("RCPT TO:")
			c.send("421 4.0.0 mta.test too many messages in this connection")
		}},
		{"421 to the first RCPT", 1, func(c *rawConn) {
			c.greet()
			c.expect("MAIL FROM:")
			c.expect("RCPT TO:")
			c.send("250 2.1.0 Ok", "421 4.3.2 mta.test Service shutting down")
		}},
		{"452 to MAIL after a message", 2, func(c *rawConn) {
			c.greet()
			c.envelope()
			if c.message() {
				c.send("250 2.0.0 Ok: queued as FIRST")
			}
			c.expect("MAIL FROM:")
			c.expect("RCPT TO:")
			c.send("452 4.5.3 Too many messages sent", "503 5.5.1 Error: need MAIL command")
			c.rest()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startRawMTA(t, tc.script, deliver)
			g := startGate(t, nil, gateOptions{mtaAddr: m.addr})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			for i := 0; i < tc.msgs; i++ {
				c.envelope("a@example.org", "b@example.com")
				sendMessage(c)
				c.expect("", 250, "2.0.0")
			}
			c.expect("QUIT", 221, "")
			if n := g.dials.Load(); n != 2 {
				t.Errorf("%d dials, want 2", n)
			}
		})
	}
}

// A 421 that cannot be retried (recipients already accepted, or at DATA):
// the client gets the 421 and is disconnected, as the MTA did to us; the
// dead connection is never used again.
func TestClosingReplyClosesClient(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script func(c *rawConn)
		drive  func(c *client)
	}{
		{"421 to a later RCPT", func(c *rawConn) {
			c.greet()
			c.envelope()
			c.expect("RCPT TO:")
			c.send("421 4.7.0 mta.test Error: too many errors")
		}, func(c *client) {
			c.envelope("a@example.org", "b@example.com")
			c.expect("RCPT TO:<c@example.com>", 421, "4.7.0")
		}},
		{"421 to DATA", func(c *rawConn) {
			c.greet()
			c.envelope()
			c.expect("DATA")
			c.send("421 4.3.2 mta.test Service shutting down")
		}, func(c *client) {
			c.envelope("a@example.org", "b@example.com")
			sendMessage(c)
			c.expect("", 421, "4.3.2")
		}},
		{"421 to the final dot", func(c *rawConn) {
			c.greet()
			c.envelope()
			if c.message() {
				c.send("421 4.3.2 mta.test Service shutting down")
			}
		}, func(c *client) {
			c.envelope("a@example.org", "b@example.com")
			sendMessage(c)
			c.expect("", 421, "4.3.2")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startRawMTA(t, tc.script)
			g := startGate(t, nil, gateOptions{mtaAddr: m.addr})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			tc.drive(c)
			if !c.closed() {
				t.Error("client connection left open after the MTA's 421")
			}
		})
	}
}

// Item 16: a 250 at the dot with over 4 KiB of text is still the MTA's
// 250 (cut), reply text reaches the client as printable ASCII, and a
// multi-line reply carries its enhanced code on every line.
func TestUpstreamReplyText(t *testing.T) {
	long := "250 2.0.0 Ok: queued as LONG " + strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name     string
		dotReply []string
		want     []string // the client's raw reply lines
	}{
		{"5 KiB line", []string{long}, []string{long[:4+512]}},
		{"control bytes and a bare CR", []string{"250 2.0.0 Ok\x00 \x1b[2J\xff queued\r550 5.0.0 injected"},
			[]string{"250 2.0.0 Ok? ?[2J? queued?550 5.0.0 injected"}},
		{"multi-line", []string{"550-5.7.1 Message rejected", "550-5.7.1 see https://example.com/why", "550 5.7.1 policy"},
			[]string{"550-5.7.1 Message rejected", "550-5.7.1 see https://example.com/why", "550 5.7.1 policy"}},
		{"multi-line without enhanced codes", []string{"554-Rejected", "554 policy"},
			[]string{"554-5.0.0 Rejected", "554 5.0.0 policy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startRawMTA(t, func(c *rawConn) {
				c.greet()
				c.envelope()
				if c.message() {
					c.send(tc.dotReply...)
				}
				c.rest()
			})
			g := startGate(t, nil, gateOptions{mtaAddr: m.addr})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			sendMessage(c)
			for _, want := range tc.want {
				l, err := c.r.ReadString('\n')
				if err != nil {
					t.Fatalf("reading the reply: %v", err)
				}
				if l != want+"\r\n" {
					t.Errorf("reply line %q, want %q", l, want+"\r\n")
				}
			}
			c.expect("QUIT", 221, "")
		})
	}
}

// Items 18 and 19: an MTA that answers XCLIENT with 250 (smtp-sink) is
// fine; one that refuses it gets the mail without it in auto mode (the
// proxy logs and counts that: proxy.TestXCLIENTRefusedAutoFallsBack).
func TestXCLIENTAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
	}{
		{"250", "250 2.0.0 Ok"},
		{"refused", "550 5.7.0 Error: insufficient authorization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startRawMTA(t, func(c *rawConn) {
				c.greet("XCLIENT NAME ADDR PROTO HELO")
				c.expect("XCLIENT ")
				c.send(tc.reply)
				if tc.reply[0] == '2' {
					c.expect("EHLO client.test")
					c.send("250-mta.test", "250 PIPELINING")
				}
				c.envelope()
				if c.message() {
					c.send("250 2.0.0 Ok: queued as XC")
				}
				c.rest()
			})
			g := startGate(t, nil, gateOptions{mtaAddr: m.addr})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			sendMessage(c)
			c.expect("", 250, "2.0.0")
			c.expect("QUIT", 221, "")
		})
	}
}

// Item 18: out of file descriptors is our shortage, not the MTA's.
func TestOutOfFileDescriptors(t *testing.T) {
	g := startGate(t, nil, gateOptions{mtaAddr: "127.0.0.1:1", dial: func(context.Context, *upstream.ClientInfo) (*upstream.Conn, error) {
		return nil, &upstream.Error{Op: "dial", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}}
	}})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.expect("MAIL FROM:<a@example.org>", 250, "")
	rep := c.expect("RCPT TO:<b@example.com>", 451, "4.3.0")
	if !strings.Contains(rep.text, "file descriptors") {
		t.Errorf("reply %v does not say what is wrong", rep)
	}
}

// The MTA connection is lost after the MTA accepted the first recipient:
// a later RCPT must not open a new transaction on a fresh connection,
// which would queue the message for the later recipients only while the
// client was told all of them were accepted. Every later RCPT and the
// message get 451 4.4.2 until RSET, and no message reaches any MTA connection.
func TestLostTransactionIsNotRebuiltWithFewerRecipients(t *testing.T) {
	m := startRawMTA(t,
		func(c *rawConn) {
			c.greet()
			c.envelope()
			c.expect("RCPT TO:")
			// The MTA goes away without answering.
		},
		func(c *rawConn) {
			// Reached only by a fresh transaction: accept it whole.
			c.greet()
			c.envelope()
			for {
				l := c.line()
				switch {
				case strings.HasPrefix(l, "RCPT TO:"):
					c.send("250 2.1.5 Ok")
				case l == "DATA":
					c.send("354 go ahead")
					for {
						b, err := c.r.ReadString('\n')
						if err != nil {
							return
						}
						if b == ".\r\n" {
							c.m.mu.Lock()
							c.m.dots++
							c.m.mu.Unlock()
							c.send("250 2.0.0 Ok: queued as LOST")
							break
						}
					}
				case l == "QUIT", l == "":
					return
				default:
					c.send("250 2.0.0 Ok")
				}
			}
		},
	)
	g := startGate(t, nil, gateOptions{mtaAddr: m.addr})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("RCPT TO:<c@example.com>", 451, "4.4.2")
	c.expect("RCPT TO:<d@example.com>", 451, "4.4.2")
	sendMessage(c)
	c.expect("", 451, "4.4.2")
	c.expect("RSET", 250, "")
	c.expect("QUIT", 221, "")
	if n := m.dotCount(); n != 0 {
		t.Fatalf("%d message(s) reached the MTA with part of the recipients", n)
	}
}
