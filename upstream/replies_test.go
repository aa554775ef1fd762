package upstream

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/reply"
)

// Replies that do not fit the command (RFC 5321 §4.3.2) break the
// connection instead of being taken for the answer: a 250 to DATA, a 354
// to the final dot, a surplus reply that would shift every later one.
func TestRepliesOutOfTurn(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		script func(m *fakeMTA)
		call   func(c *Conn) (*reply.Reply, error)
		op     string
	}{
		{"250 to DATA", func(m *fakeMTA) {
			m.hello("gate.test")
			m.expect("DATA")
			m.send("250 2.0.0 Ok")
			m.hang()
		}, func(c *Conn) (*reply.Reply, error) {
			rep, _, err := c.Data(ctx)
			return rep, err
		}, "data"},
		{"surplus reply before DATA", func(m *fakeMTA) {
			m.hello("gate.test", "PIPELINING")
			m.expect("MAIL FROM:<a@example.com>")
			m.expect("RCPT TO:<b@example.net>")
			m.send("250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok")
			m.hang()
		}, func(c *Conn) (*reply.Reply, error) {
			if _, _, err := c.Begin(ctx, "a@example.com", nil, "b@example.net", nil); err != nil {
				return nil, err
			}
			rep, _, err := c.Data(ctx)
			return rep, err
		}, "data"},
		{"354 to the final dot", func(m *fakeMTA) {
			m.hello("gate.test")
			m.expect("DATA")
			m.send("354 go ahead")
			m.data()
			m.send("354 go ahead")
			m.hang()
		}, func(c *Conn) (*reply.Reply, error) {
			_, w, err := c.Data(ctx)
			if err != nil {
				return nil, err
			}
			io.WriteString(w, "a\r\n")
			return c.End(ctx)
		}, "dot"},
		{"two replies to the final dot", func(m *fakeMTA) {
			m.hello("gate.test")
			m.expect("DATA")
			m.send("354 go ahead")
			m.data()
			m.send("250 2.1.5 stale", "550 5.7.1 content rejected")
			m.hang()
		}, func(c *Conn) (*reply.Reply, error) {
			_, w, err := c.Data(ctx)
			if err != nil {
				return nil, err
			}
			io.WriteString(w, "a\r\n")
			return c.End(ctx)
		}, "dot"},
		{"354 to RCPT", func(m *fakeMTA) {
			m.hello("gate.test")
			m.expect("RCPT TO:<x@example.com>")
			m.send("354 go ahead")
			m.hang()
		}, func(c *Conn) (*reply.Reply, error) {
			return c.Rcpt(ctx, "x@example.com", nil)
		}, "rcpt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, tc.script)
			c := dial(t, addr, testOpts, nil)
			defer c.Close()
			rep, err := tc.call(c)
			var ue *Error
			if !errors.As(err, &ue) || ue.Op != tc.op || !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, %v; want an ErrProtocol *Error op %q", rep, err, tc.op)
			}
			if !c.Broken() {
				t.Error("Conn not broken")
			}
		})
	}
}

// The MTA talking during DATA: the dot is not sent, so it queues nothing.
func TestReplyDuringDataSendsNoDot(t *testing.T) {
	got := make(chan string, 1)
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.expect("DATA")
		m.send("354 go ahead", "250 2.0.0 Ok: queued as STALE")
		b, _ := io.ReadAll(m.r)
		got <- string(b)
	})
	c := dial(t, addr, testOpts, nil)
	ctx := context.Background()
	_, w, err := c.Data(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the surplus reply is in: a read of our own.
	if _, err := c.r.Peek(1); err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: x\r\n\r\nbody\r\n")
	rep, err := c.End(ctx)
	if !errors.Is(err, ErrProtocol) || rep != nil {
		t.Fatalf("End = %v, %v; want ErrProtocol", rep, err)
	}
	if wire := <-got; strings.Contains(wire, "\r\n.\r\n") {
		t.Errorf("the final dot was sent: %q", wire)
	}
}

// A 421 to any command leaves the connection broken (RFC 5321 §3.8), and
// the reply is returned for the caller to act on.
func TestClosingReplyBreaks(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.expect("RCPT TO:<x@example.com>")
		m.send("421 4.3.2 mta.test Service shutting down")
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	rep, err := c.Rcpt(context.Background(), "x@example.com", nil)
	if err != nil || rep.Code != 421 || rep.Enhanced != [3]int{4, 3, 2} || !rep.Closing() {
		t.Fatalf("Rcpt = %v, %v", rep, err)
	}
	if !c.Broken() {
		t.Error("Conn not broken after 421")
	}
}

// A reply line over 4 KiB keeps its code and enhanced code, with its
// text cut; the text of every reply is printable ASCII.
func TestReplyTextCutAndSanitised(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		code        int
		enhanced    [3]int
		text        string
	}{
		{"5 KiB line", "250 2.0.0 Ok: queued as 7F " + strings.Repeat("x", 5000), 250, [3]int{2, 0, 0},
			"Ok: queued as 7F " + strings.Repeat("x", maxReplyLineText-len("2.0.0 Ok: queued as 7F "))},
		{"NUL, ESC, 0xFF, bare CR", "250 2.0.0 Ok\x00 \x1b[31mred\xff queued\r550 5.0.0 injected", 250, [3]int{2, 0, 0},
			"Ok? ?[31mred? queued?550 5.0.0 injected"},
		{"tab", "550 5.1.1 no\tsuch user", 550, [3]int{5, 1, 1}, "no such user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				m.hello("gate.test")
				m.expect("DATA")
				m.send("354 go ahead")
				m.data()
				m.send(tc.reply)
				m.quit()
			})
			c := dial(t, addr, testOpts, nil)
			defer c.Quit()
			ctx := context.Background()
			_, w, err := c.Data(ctx)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(w, "a\r\n")
			rep, err := c.End(ctx)
			if err != nil {
				t.Fatalf("End: %v", err)
			}
			if rep.Code != tc.code || rep.Enhanced != tc.enhanced || rep.Text != tc.text {
				t.Errorf("End = %d %v %q, want %d %v %q", rep.Code, rep.Enhanced, rep.Text, tc.code, tc.enhanced, tc.text)
			}
			if c.Broken() {
				t.Error("Conn broken by a long reply line")
			}
		})
	}
}

// The final dot waits for DataTimeout, not for the command Timeout: the
// MTA may take long to queue (content filters), and giving up there
// makes a duplicate when the client retries (RFC 5321 §4.5.3.2.6).
func TestFinalDotWaitsDataTimeout(t *testing.T) {
	opts := testOpts
	opts.Timeout = 50 * time.Millisecond
	opts.DataTimeout = 30 * time.Second
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test")
		m.expect("DATA")
		m.send("354 go ahead")
		m.data()
		// Longer than Timeout (provoking it), far shorter than DataTimeout.
		time.Sleep(10 * opts.Timeout)
		m.send("250 2.0.0 Ok: queued as 9Q")
		m.quit()
	})
	c := dial(t, addr, opts, nil)
	defer c.Quit()
	ctx := context.Background()
	_, w, err := c.Data(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "a\r\n")
	rep, err := c.End(ctx)
	if err != nil || rep.Code != 250 {
		t.Fatalf("End = %v, %v; want 250", rep, err)
	}
	if !c.Reused() {
		t.Error("Reused() false after a transaction ended")
	}
}

// XCLIENT answered with any 2xx is success (smtp-sink answers 250).
func TestXCLIENTAnswered250(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "XCLIENT ADDR HELO")
		m.expect("XCLIENT ADDR=192.0.2.7 HELO=client.example")
		m.send("250 2.0.0 Ok")
		m.expect("EHLO client.example")
		m.ehloReply("PIPELINING")
		m.quit()
	})
	var ids []Identity
	opts := testOpts
	opts.XClient = "auto"
	opts.OnIdentity = func(id Identity) { ids = append(ids, id) }
	c := dial(t, addr, opts, &ClientInfo{Addr: "192.0.2.7", Helo: "client.example"})
	defer c.Quit()
	if len(ids) != 1 || ids[0] != (Identity{Mode: "xclient"}) {
		t.Errorf("identity reports %+v, want one xclient", ids)
	}
}

// auto mode: a refused XCLIENT falls back to XFORWARD, then to nothing,
// and each step is reported; xclient mode gives the connection up.
func TestIdentityFallback(t *testing.T) {
	const refusal = "550 5.7.0 Error: insufficient authorization"
	for _, tc := range []struct {
		name     string
		mode     string
		keywords []string
		script   func(m *fakeMTA)
		want     []Identity
		dialErr  bool
	}{
		{"XCLIENT refused, XFORWARD used", "auto", []string{"PIPELINING", "XCLIENT ADDR", "XFORWARD ADDR"}, func(m *fakeMTA) {
			m.expect("XCLIENT ADDR=192.0.2.7")
			m.send(refusal)
			m.expect("XFORWARD ADDR=192.0.2.7")
			m.expect("MAIL FROM:<a@example.org>")
			m.send("250 2.0.0 Ok", "250 2.1.0 Ok")
			m.quit()
		}, []Identity{{Mode: "xforward", Refused: "XCLIENT", Reply: refusal}}, false},
		{"XCLIENT refused, nothing else", "auto", []string{"PIPELINING", "XCLIENT ADDR"}, func(m *fakeMTA) {
			m.expect("XCLIENT ADDR=192.0.2.7")
			m.send(refusal)
			m.expect("MAIL FROM:<a@example.org>")
			m.send("250 2.1.0 Ok")
			m.quit()
		}, []Identity{{Mode: "off", Refused: "XCLIENT", Reply: refusal}}, false},
		{"XFORWARD refused at MAIL", "auto", []string{"PIPELINING", "XFORWARD ADDR"}, func(m *fakeMTA) {
			m.expect("XFORWARD ADDR=192.0.2.7")
			m.expect("MAIL FROM:<a@example.org>")
			m.send(refusal, "250 2.1.0 Ok")
			m.quit()
		}, []Identity{{Mode: "xforward"}, {Mode: "off", Refused: "XFORWARD", Reply: refusal}}, false},
		{"nothing offered", "auto", []string{"PIPELINING"}, func(m *fakeMTA) {
			m.expect("MAIL FROM:<a@example.org>")
			m.send("250 2.1.0 Ok")
			m.quit()
		}, []Identity{{Mode: "off"}}, false},
		{"xclient mode: refused is fatal", "xclient", []string{"XCLIENT ADDR", "XFORWARD ADDR"}, func(m *fakeMTA) {
			m.expect("XCLIENT ADDR=192.0.2.7")
			m.send(refusal)
		}, []Identity{{Mode: "xclient", Refused: "XCLIENT", Reply: refusal, Failed: true}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				m.hello("gate.test", tc.keywords...)
				tc.script(m)
			})
			var ids []Identity
			opts := testOpts
			opts.XClient = tc.mode
			opts.OnIdentity = func(id Identity) { ids = append(ids, id) }
			c, err := Dial(context.Background(), addr, opts, &ClientInfo{Addr: "192.0.2.7"})
			if tc.dialErr {
				if !errors.Is(err, ErrIdentityRefused) {
					t.Fatalf("Dial error = %v, want ErrIdentityRefused", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				rep, err := c.Mail(context.Background(), "a@example.org", nil)
				if err != nil || rep.Code != 250 {
					t.Fatalf("Mail = %v, %v", rep, err)
				}
				c.Quit()
			}
			if len(ids) != len(tc.want) {
				t.Fatalf("identity reports %+v, want %+v", ids, tc.want)
			}
			for i := range ids {
				if ids[i] != tc.want[i] {
					t.Errorf("identity report %d = %+v, want %+v", i, ids[i], tc.want[i])
				}
			}
		})
	}
}

// A pooled connection whose MTA refuses the next client's XCLIENT still
// presents the previous client: it must not fall back, but be dropped.
func TestXCLIENTRefusedOnReuseDropsConnection(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "XCLIENT ADDR", "XFORWARD ADDR")
		m.expect("XCLIENT ADDR=10.0.0.1")
		m.send("220 mta.test ESMTP")
		m.expect("EHLO gate.test")
		m.ehloReply("XCLIENT ADDR", "XFORWARD ADDR")
		m.expect("XCLIENT ADDR=192.0.2.7")
		m.send("550 5.7.0 Error: insufficient authorization")
		m.hang()
	})
	opts := testOpts
	opts.XClient = "auto"
	c := dial(t, addr, opts, &ClientInfo{Addr: "10.0.0.1"})
	defer c.Close()
	err := c.reuse(context.Background(), &ClientInfo{Addr: "192.0.2.7"})
	if err == nil || !c.Broken() {
		t.Fatalf("reuse = %v, broken %v; want an error and a broken Conn", err, c.Broken())
	}
}
