package integration

// The entry checks of EHLO, MAIL and RCPT, and the scoping of the AUTH
// lock-out, against the real Postfix: the exact reply, and what reached
// the mailboxes.

import (
	"crypto/tls"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"
)

// wantReply fails unless the reply starts with code and enhanced code
// ("501 5.5.2").
func wantReply(t *testing.T, what, text, want string) {
	t.Helper()
	if !strings.HasPrefix(text, want+" ") {
		t.Errorf("%s: got %q, want %s", what, strings.TrimSpace(text), want)
	}
	for i := 0; i < len(text); i++ {
		if c := text[i]; c >= 0x7f || (c < 0x20 && c != '\r' && c != '\n') {
			t.Errorf("%s: reply not ASCII: %q", what, text)
			break
		}
	}
}

// tryMessage says MAIL, RCPT and DATA with a message carrying token,
// whatever the replies, and returns the reply to the end of data (or to
// DATA when it was refused).
func (c *client) tryMessage(from, to, token string) string {
	c.t.Helper()
	c.cmd("MAIL FROM:<" + from + ">")
	c.cmd("RCPT TO:<" + to + ">")
	code, text := c.cmd("DATA")
	if code != 354 {
		return text
	}
	c.send("From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: " + token + "\r\n\r\n" + token + "\r\n.\r\n")
	_, text = c.reply()
	return text
}

// Item: EHLO arguments that are not UTF-8, hold control characters or run
// over 255 octets were taken, and the MTA then refused smtpgate's EHLO
// with the client's name: every RCPT got 451 4.4.2, retried forever.
// Now 501 5.5.2 at EHLO, the first or a later one, and nothing of the
// session reaches Postfix until the client greets properly.
func TestEnvelopeHeloSyntax(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	for _, helo := range []string{"\xff\xfe.ext.org", "ctl\x01.ext.org", strings.Repeat("l", 3000) + ".ext.org"} {
		tok := newToken("badhelo")
		c := dialFrom(t, g.addr, "127.0.0.2")
		_, text := c.cmd("EHLO " + helo)
		wantReply(t, "first EHLO", text, "501 5.5.2")
		if r := c.tryMessage("someone@example.org", "alice@example.com", tok); !strings.HasPrefix(r, "502 5.5.1") && !strings.HasPrefix(r, "503 5.5.1") {
			t.Errorf("message after a refused EHLO: %q", r)
		}
		c.must("EHLO client.example.org", 250)
		_, text = c.cmd("EHLO " + helo)
		wantReply(t, "later EHLO", text, "501 5.5.2")
		if r := c.tryMessage("someone@example.org", "alice@example.com", tok); !strings.HasPrefix(r, "502 5.5.1") && !strings.HasPrefix(r, "503 5.5.1") {
			t.Errorf("message after a refused later EHLO: %q", r)
		}
		// Greeting properly again, the client is served.
		c.must("EHLO client.example.org", 250)
		ok := newToken("goodhelo")
		wantReply(t, "message after a good EHLO", c.tryMessage("someone@example.org", "alice@example.com", ok), "250 2.0.0")
		c.cmd("QUIT")
		mta.settle(t)
		if n := delivered(t, "alice", tok); n != 0 {
			t.Errorf("message of a refused EHLO delivered %d times", n)
		}
		if n := delivered(t, "alice", ok); n != 1 {
			t.Errorf("message after a good EHLO delivered %d times, want 1", n)
		}
	}
	decision(t, g, "msg=reject", "stage=helo", "check=helo_syntax", `reply="501 5.5.2`)
	if n := mtaLogCount(t, "ext.org"); n != 0 {
		t.Errorf("Postfix's log names a refused HELO %d times", n)
	}
}

// Item: MAIL inside a transaction was taken, and the log then named the
// second sender for the first envelope. Now 503 5.5.1 (as Postfix); the
// message goes out with the first envelope.
func TestEnvelopeNestedMail(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	tok := newToken("nested")
	c := dialFrom(t, g.addr, "127.0.0.2")
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<first@example.org>", 250)
	c.must("RCPT TO:<alice@example.com>", 250)
	_, text := c.cmd("MAIL FROM:<second@example.org>")
	wantReply(t, "nested MAIL", text, "503 5.5.1")
	c.must("RCPT TO:<bob@example.com>", 250)
	c.must("DATA", 354)
	c.send("Subject: " + tok + "\r\n\r\n" + tok + "\r\n.\r\n")
	c.expect(250)
	// After the message, MAIL opens the next transaction.
	c.must("MAIL FROM:<third@example.org>", 250)
	c.must("QUIT", 221)
	decision(t, g, "msg=reject", "stage=mail", "check=nested_mail", `reply="503 5.5.1 Error: nested MAIL command"`, "from=second@example.org")
	mta.settle(t)
	for _, user := range []string{"alice", "bob"} {
		msgs := mta.messages(t, user)
		n := 0
		for _, m := range msgs {
			if strings.Contains(m, tok) {
				n++
				if !strings.Contains(m, "Return-Path: <first@example.org>") {
					t.Errorf("%s's copy does not come from the first sender:\n%s", user, m)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s has %d copies, want 1", user, n)
		}
	}
}

// Item: RCPT TO:<postmaster> (no domain) got 501 5.5.2; RFC 5321 §4.5.1
// says it MUST be accepted. It goes to the postmaster address.
func TestEnvelopePostmaster(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "postmaster: alice@example.com\n")
	tok := newToken("postmaster")
	c := dialFrom(t, g.addr, "127.0.0.2")
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<someone@example.org>", 250)
	_, text := c.cmd("RCPT TO:<postmaster>")
	wantReply(t, "RCPT TO:<postmaster>", text, "250")
	_, text = c.cmd("RCPT TO:<PostMaster>")
	wantReply(t, "RCPT TO:<PostMaster>", text, "250")
	c.must("DATA", 354)
	c.send("Subject: " + tok + "\r\n\r\n" + tok + "\r\n.\r\n")
	c.expect(250)
	c.must("QUIT", 221)
	mta.settle(t)
	if n := delivered(t, "alice", tok); n != 1 {
		t.Errorf("the postmaster (alice) has %d copies, want 1", n)
	}
}

// Item: local parts over 64 octets and domains over 255 were forwarded;
// non-ASCII addresses without SMTPUTF8 were accepted. Now 501 5.1.7 (MAIL)
// / 501 5.1.3 (RCPT) and 553 5.6.7, and Postfix never hears of them.
func TestEnvelopePathLimits(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	long := newToken(strings.Repeat("l", 60))
	longDomain := strings.Repeat(strings.Repeat("d", 62)+".", 4) + "tail"
	for _, tt := range []struct {
		name       string
		mail, rcpt string // the bad one; the other is good
		want       string
		cmd        string
	}{
		{"sender local part over 64", "<" + long + "@example.org>", "", "501 5.1.7", "MAIL"},
		{"recipient local part over 64", "", "<" + long + "@example.com>", "501 5.1.3", "RCPT"},
		{"sender domain over 255", "<a@" + longDomain + ">", "", "501 5.1.7", "MAIL"},
		{"recipient domain over 255", "", "<a@" + longDomain + ">", "501 5.1.3", "RCPT"},
		{"non-ASCII sender without SMTPUTF8", "<j\u00f6rg-" + long[60:] + "@example.org>", "", "553 5.6.7", "MAIL"},
		{"non-ASCII recipient without SMTPUTF8", "", "<j\u00f6rg-" + long[60:] + "@example.com>", "553 5.6.7", "RCPT"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok := newToken("path")
			c := dialFrom(t, g.addr, "127.0.0.2")
			c.must("EHLO client.example.org", 250)
			mail, rcpt := tt.mail, tt.rcpt
			if mail == "" {
				mail = "<someone@example.org>"
			}
			_, text := c.cmd("MAIL FROM:" + mail)
			if tt.cmd == "MAIL" {
				wantReply(t, "MAIL", text, tt.want)
				_, text = c.cmd("RCPT TO:<alice@example.com>")
				wantReply(t, "RCPT after a refused MAIL", text, "502 5.5.1")
			} else {
				wantReply(t, "MAIL", text, "250")
				_, text = c.cmd("RCPT TO:" + rcpt)
				wantReply(t, "RCPT", text, tt.want)
				_, text = c.cmd("DATA")
				wantReply(t, "DATA without recipients", text, "502 5.5.1")
			}
			c.cmd("QUIT")
			mta.settle(t)
			if n := delivered(t, "alice", tok); n != 0 {
				t.Errorf("delivered %d times", n)
			}
		})
	}
	if n := mtaLogCount(t, long[:60]); n != 0 {
		t.Errorf("Postfix's log names the long local part %d times", n)
	}
	if n := mtaLogCount(t, "dddddddddd"); n != 0 {
		t.Errorf("Postfix's log names the long domain %d times", n)
	}
	// With SMTPUTF8 a UTF-8 sender is taken and delivered.
	tok := newToken("utf8")
	c := dialFrom(t, g.addr, "127.0.0.2")
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<j\u00f6rg@example.org> SMTPUTF8", 250)
	c.must("RCPT TO:<alice@example.com>", 250)
	c.must("DATA", 354)
	c.send("Subject: " + tok + "\r\n\r\n" + tok + "\r\n.\r\n")
	c.expect(250)
	c.cmd("QUIT")
	mta.settle(t)
	if n := delivered(t, "alice", tok); n != 1 {
		t.Errorf("UTF-8 sender with SMTPUTF8: delivered %d times, want 1", n)
	}
}

// Item: MAIL FROM:<x@[our own address]> from a client that did not log in
// passed own_domain_forgery. Now 553 5.7.1, like our domains.
func TestEnvelopeOwnAddressLiteralSender(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	tok := newToken("ownip")
	msg{from: "ceo@[127.0.0.1]", to: "alice@example.com", token: tok}.mustRefuse(t, g, "RCPT TO",
		"<** 553 5.7.1 <ceo@[127.0.0.1]>: Sender address rejected: not logged in")
	decision(t, g, "msg=reject", "stage=mail", "check=own_domain_forgery", `reply="553 5.7.1 <ceo@[127.0.0.1]>`)
	// Someone else's address literal is not ours.
	ok := newToken("otherip")
	msg{from: "someone@[192.0.2.1]", to: "alice@example.com", token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", tok); n != 0 {
		t.Errorf("sender with our address literal delivered %d times", n)
	}
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("sender with a foreign address literal delivered %d times, want 1", n)
	}
}

// dialTLSFrom connects with implicit TLS from a chosen loopback address.
func dialTLSFrom(t *testing.T, addr, local string) *client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: newReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// Item: five wrong passwords for bob from five addresses locked bob out
// everywhere. The per-login count is now per client network (IPv4 /24):
// guesses from other networks, or many from one, do not lock bob out of
// his own, and his mail goes through.
func TestAuthLockoutScopedToNetwork(t *testing.T) {
	mta.clearMailboxes()
	g := startAuthGate(t, "")
	b64 := base64.StdEncoding.EncodeToString
	auth := func(local, pw string) (*client, string) {
		c := dialTLSFrom(t, g.submissions, local)
		c.must("EHLO client.example.org", 250)
		_, text := c.cmd("AUTH PLAIN " + b64([]byte("\x00bob\x00"+pw)))
		return c, text
	}
	// One wrong password from each of five networks (127.0.N.0/24).
	for _, local := range []string{"127.0.1.1", "127.0.2.1", "127.0.3.1", "127.0.4.1", "127.0.5.1"} {
		_, text := auth(local, "wrong")
		wantReply(t, "wrong password from "+local, text, "535 5.7.8")
	}
	// Five from five addresses of one network.
	for _, local := range []string{"127.0.6.1", "127.0.6.2", "127.0.6.3", "127.0.6.4", "127.0.6.5"} {
		auth(local, "wrong")
	}
	_, text := auth("127.0.6.200", "bob-secret")
	wantReply(t, "bob from the guessing network", text, "454 4.7.0")
	decision(t, g.gate, "auth locked out", "check=auth_lockout", "limit=failures_per_login", "login=bob")

	// Bob from his own network logs in and sends.
	tok := newToken("bob")
	c, text := auth("127.0.9.1", "bob-secret")
	wantReply(t, "bob from his own network", text, "235")
	c.must("MAIL FROM:<bob@example.com>", 250)
	c.must("RCPT TO:<alice@example.com>", 250)
	c.must("DATA", 354)
	c.send("Subject: " + tok + "\r\n\r\n" + tok + "\r\n.\r\n")
	c.expect(250)
	c.cmd("QUIT")
	mta.settle(t)
	if n := delivered(t, "alice", tok); n != 1 {
		t.Errorf("bob's message delivered %d times, want 1", n)
	}
}
