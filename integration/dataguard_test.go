package integration

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// A refused session is dead: nothing it sent reaches Postfix. Each test
// checks bob's mailbox after a later message to alice was delivered and
// the queue drained, and the refused bytes would have gone to Postfix
// before the client even saw its EOF.

// afterProbe delivers a message to alice through g in a new session and
// waits for it, then for the queue to drain.
func afterProbe(t *testing.T, g *gate) {
	t.Helper()
	token := newToken("probe")
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	c.send("Subject: " + token + "\r\nMessage-ID: <" + token + "@example.org>\r\n\r\nprobe\r\n.\r\n")
	c.expect(250)
	c.must("QUIT", 221)
	for i := 0; delivered(t, "alice", token) == 0; i++ {
		if i > 400 {
			t.Fatalf("probe message %s not delivered", token)
		}
		time.Sleep(25 * time.Millisecond)
	}
	mta.settle(t)
}

// eof reads what is left on the connection and fails unless the server
// closed it without another reply.
func (c *client) eof() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	rest, err := io.ReadAll(c.r)
	if err != nil || len(rest) > 0 {
		c.t.Fatalf("want the connection closed, got %q (%v)", rest, err)
	}
}

// rawLine reads one reply line as it came, CRLF included.
func (c *client) rawLine() string {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v (got %q)", err, l)
	}
	return l
}

func noMail(t *testing.T, g *gate, user string) {
	t.Helper()
	afterProbe(t, g)
	if n := len(mta.mailbox(user)); n != 0 {
		t.Fatalf("%s has %d messages, want 0", user, n)
	}
}

// Item: a transaction pipelined in one write after EHLO, small enough to
// sit whole in go-smtp's read buffer, was refused with 554 5.5.0 at DATA
// and queued all the same.
func TestPipelinedTransactionAfterRefusalNotQueued(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	for _, size := range []int{1024, 3584} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := dial(t, g.addr)
			c.must("EHLO client.example.org", 250)
			body := strings.Repeat(strings.Repeat("x", 62)+"\r\n", size/64)
			c.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: pipelined\r\n\r\n" + body + ".\r\nQUIT\r\n")
			c.expect(250)
			c.expect(250)
			if l := c.rawLine(); l != "554 5.5.0 Error: SMTP protocol synchronization\r\n" {
				t.Fatalf("DATA: got %q, want 554 5.5.0", l)
			}
			c.eof()
		})
	}
	noMail(t, g, "bob")
	if n := strings.Count(g.log.String(), "check=unauth_pipelining"); n != 2 {
		t.Errorf("%d refusals logged, want 2", n)
	}
}

// Item: a BDAT LAST chunk cut short (70 of 1000 octets), then a half-close
// or a close, was queued truncated (and after the half-close answered
// 250). Now 421 4.4.2 and nothing queued.
func TestBDATTruncatedChunkNotQueued(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	chunk := "Subject: cut\r\n\r\n" + strings.Repeat("y", 52) + "\r\n" // 70 octets
	for _, half := range []bool{true, false} {
		t.Run(fmt.Sprintf("half-close=%v", half), func(t *testing.T) {
			c := dial(t, g.addr)
			c.envelope("sender@example.org", "bob@example.com")
			c.send("BDAT 1000 LAST\r\n" + chunk)
			if !half {
				c.conn.Close()
				return
			}
			c.conn.(*net.TCPConn).CloseWrite()
			if l := c.rawLine(); l != "421 4.4.2 Error: input ended inside a BDAT chunk; message not accepted, closing connection\r\n" {
				t.Fatalf("truncated chunk: got %q, want 421 4.4.2", l)
			}
			c.eof()
		})
	}
	noMail(t, g, "bob")
	if !strings.Contains(g.log.String(), "check=bdat_chunk") {
		t.Errorf("the truncated chunk was not logged")
	}
}

// Item: NUL in DATA or BDAT went to the MTA unchanged. Now 550 5.6.0, the
// connection closed, nothing queued.
func TestNULRefusedNotQueued(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	for name, send := range map[string]string{
		`DATA \r\n\x00.\r\n`: "Subject: nul\r\n\r\nbody\r\n\x00.\r\nmore\r\n.\r\n",
		"DATA header":        "Subject: n\x00l\r\n\r\nbody\r\n.\r\n",
		"BDAT LAST":          "BDAT 22 LAST\r\nSubject: nul\r\n\r\nb\x00dy\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := dial(t, g.addr)
			c.envelope("sender@example.org", "bob@example.com")
			if strings.HasPrefix(name, "DATA") {
				c.must("DATA", 354)
			}
			c.send(send)
			if l := c.rawLine(); l != "550 5.6.0 Error: NUL character in message content; not accepted\r\n" {
				t.Fatalf("got %q, want 550 5.6.0", l)
			}
			c.eof()
		})
	}
	noMail(t, g, "bob")
	if !strings.Contains(g.log.String(), "check=nul_character") {
		t.Errorf("the NUL refusals were not logged")
	}
}

// Item: a failed STARTTLS handshake left the session in plain text with
// the pipelining guard off, and a pipelined transaction was accepted. Now
// the connection is closed (RFC 3207 section 4.1).
func TestFailedSTARTTLSHandshakeClosesConnection(t *testing.T) {
	mta.clearMailboxes()
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	g := startGateListen(t, "  - address: "+addr+"\n    tls: starttls\n", fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\n", cert, key))
	c := dial(t, g.addr)
	c.must("EHLO client.example.org", 250)
	c.must("STARTTLS", 220)
	c.send("\x16\x03\x01\x00\x05hello") // a handshake record with garbage inside
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var after strings.Builder
	for {
		l, err := c.r.ReadString('\n')
		after.WriteString(l)
		if err != nil {
			break
		}
		if strings.Contains(l, "Handshake error") {
			c.send("MAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: plain\r\n\r\nplain\r\n.\r\nQUIT\r\n")
		}
	}
	if strings.Contains(after.String(), "Handshake error") || strings.Contains(after.String(), "250 ") {
		t.Errorf("the session went on in plain text: %q", after.String())
	}
	noMail(t, g, "bob")
	if !strings.Contains(g.log.String(), "check=tls_handshake") {
		t.Errorf("the failed handshake was not logged")
	}
}

const bareNewlineReply = "550 5.5.2 Error: bare <CR> or <LF> received; lines must end in <CR><LF> (RFC 5321 section 2.3.8)\r\n"

// Item: reply text is ASCII (RFC 5321 section 4.2); the bare-newline
// reply had a section sign.
func TestBareNewlineReplyIsASCII(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "bob@example.com")
	c.must("DATA", 354)
	c.send("Subject: bare\r\n\r\nbare\nLF\r\n.\r\n")
	if l := c.rawLine(); l != bareNewlineReply {
		t.Fatalf("DATA: got %q, want %q", l, bareNewlineReply)
	}
	c.eof()
	noMail(t, g, "bob")
}

// Item: a non-LAST BDAT chunk with a bare LF is refused at that chunk (it
// got 250 and the refusal came at the next chunk).
func TestBDATChunkRefusedAtItsChunk(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	d := dial(t, g.addr)
	d.envelope("sender@example.org", "bob@example.com")
	chunk := "Subject: chunk\r\n\r\nline\nsmuggled\r\n"
	d.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk), chunk))
	if l := d.rawLine(); !strings.HasPrefix(l, "550 5.5.2 ") {
		t.Fatalf("BDAT chunk: got %q, want 550 5.5.2", l)
	}
	d.eof()
	noMail(t, g, "bob")
}

// The same with BDAT after HELO (no pipelining allowed at all): the BDAT
// line in the read buffer used to switch the guard off before it answered
// the MAIL pipelined in front of it, and the message was queued.
func TestPipelinedBDATAfterHELONotQueued(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	c := dial(t, g.addr)
	c.must("HELO client.example.org", 250)
	msg := "Subject: pipelined bdat\r\n\r\nbody\r\n"
	c.send(fmt.Sprintf("MAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@example.com>\r\nBDAT %d LAST\r\n%sQUIT\r\n", len(msg), msg))
	if l := c.rawLine(); l != "554 5.5.0 Error: SMTP protocol synchronization\r\n" {
		t.Fatalf("MAIL: got %q, want 554 5.5.0", l)
	}
	c.eof()
	noMail(t, g, "bob")
}
