package session_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// noMessage checks that the MTA completed no transaction and never heard
// of the sender evil@example.org, once every client session and then
// every MTA connection has ended.
func noMessage(t *testing.T, g *gate, m *fakeMTA) {
	t.Helper()
	g.pl.wg.Wait() // go-smtp closes a connection when it is done with it
	m.waitIdle(t)
	for _, x := range m.transactions() {
		if x.Complete || x.From == "evil@example.org" {
			t.Errorf("MTA got a message: %+v", x)
		}
	}
}

func TestNULRefused(t *testing.T) {
	for _, tc := range []struct{ name, send string }{
		{"DATA header", "DATA\r\nSubject: a\x00b\r\n\r\nbody\r\n.\r\n"},
		{"DATA body", "DATA\r\nSubject: s\r\n\r\nbody\r\n\x00.\r\n.\r\n"},
		{"DATA long body", "DATA\r\nSubject: s\r\n\r\n" + strings.Repeat("ok line\r\n", 10000) + "n\x00l\r\n.\r\n"},
		{"BDAT LAST", "BDAT 21 LAST\r\nSubject: s\r\n\r\nbo\x00dy\r\n"},
		{"BDAT, not LAST", "BDAT 21\r\nSubject: s\r\n\r\nbo\x00dy\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMTA(t, nil)
			g := startGate(t, m, gateOptions{})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			cmd, rest, _ := strings.Cut(tc.send, "\r\n")
			if cmd == "DATA" {
				c.expect("DATA", 354, "")
				c.send(rest)
			} else {
				c.send(tc.send)
			}
			rep := c.expect("", 550, "5.6.0")
			if rep.text != "Error: NUL character in message content; not accepted" {
				t.Errorf("reply text %q", rep.text)
			}
			if !c.closed() {
				t.Error("connection not closed after the NUL reply")
			}
			noMessage(t, g, m)
		})
	}
}

// Reply text is ASCII (RFC 5321 section 4.2): the bare-newline reply had
// a section sign.
func TestBareNewlineReplyIsASCII(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send("Subject: s\r\n\r\nbody\n\r\n.\r\n")
	line, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	want := "550 5.5.2 Error: bare <CR> or <LF> received; lines must end in <CR><LF> (RFC 5321 section 2.3.8)\r\n"
	if line != want {
		t.Fatalf("got %q, want %q", line, want)
	}
	noMessage(t, g, m)
}

// A session refused and closing is dead for every later stage: a second
// transaction pipelined behind the refused message never reaches the MTA.
func TestNothingAfterRefusalAndHangUp(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send("Subject: s\r\n\r\nbo\ndy\r\n.\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nSubject: evil\r\n\r\nevil\r\n.\r\nQUIT\r\n")
	c.expect("", 550, "5.5.2")
	if !c.closed() {
		t.Error("connection not closed after the bare newline reply")
	}
	noMessage(t, g, m)
}

// A non-LAST BDAT chunk with a bare LF is refused at that chunk (it got
// 250 and the refusal came at the next chunk).
func TestBDATChunkRefusedAtItsChunk(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	chunk := "Subject: s\r\n\r\nline\nsmuggled\r\n"
	c.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk), chunk))
	c.expect("", 550, "5.5.2")
	if !c.closed() {
		t.Error("connection not closed after the bare newline reply")
	}
	noMessage(t, g, m)
}

// A BDAT chunk cut short by the end of the input aborts the transaction
// (RFC 3030 section 2, RFC 5321 section 3.8): 421 4.4.2 after a
// half-close, and nothing at the MTA either way.
func TestBDATTruncatedChunk(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cmd       string
		halfClose bool
	}{
		{"LAST, half-close", "BDAT 1000 LAST", true},
		{"LAST, close", "BDAT 1000 LAST", false},
		{"not LAST, half-close", "BDAT 1000", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMTA(t, nil)
			g := startGate(t, m, gateOptions{})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			c.send(tc.cmd + "\r\nSubject: s\r\n\r\n" + strings.Repeat("x", 54) + "\r\n") // 70 octets
			if !tc.halfClose {
				c.nc.Close()
				noMessage(t, g, m)
				return
			}
			c.nc.(*net.TCPConn).CloseWrite()
			rep := c.expect("", 421, "4.4.2")
			if !strings.Contains(rep.text, "BDAT chunk") {
				t.Errorf("reply text %q", rep.text)
			}
			if !c.closed() {
				t.Error("connection not closed")
			}
			noMessage(t, g, m)
		})
	}
}
