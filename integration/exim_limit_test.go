package integration

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// enhancedRe matches a one-line 4xx reply with an enhanced code.
var enhancedRe = regexp.MustCompile(`^4[0-9][0-9] 4\.[0-9]{1,3}\.[0-9]{1,3} `)

// eximAcceptMax is Exim's smtp_accept_max in these tests: its limit of
// simultaneous SMTP connections (default 20).
const eximAcceptMax = 2

// README (Exim): smtp_accept_max must cover the MTA connections smtpgate
// holds (upstream.max_connections plus upstream.pool.max_idle). Exim with
// smtp_accept_max 2 behind a smtpgate that may hold more: the third
// client holding a transaction gets a 4xx with an enhanced code at RCPT
// (Exim's refusal of the connection, never a 250 and never a 5xx), may
// retry, and no message is lost. With the advice followed
// (max_connections 1, max_idle 1), smtpgate refuses first with its own
// 451 4.7.0 and Exim never refuses a connection.
func TestEximAcceptMax(t *testing.T) {
	m := startTestMTA(t, "exim", fmt.Sprintf("MTA_MAX_CONNS=%d", eximAcceptMax))
	t.Logf("exim %s, smtp_accept_max %d", m.version(), eximAcceptMax)
	tag := fmt.Sprintf("accept-max-%d", time.Now().UnixNano())
	send := func(c *client, id string) {
		t.Helper()
		c.must("DATA", 354)
		c.send("Subject: accept max\r\nMessage-ID: <" + id + ">\r\n\r\nbody\r\n.\r\n")
		c.expect(250)
		c.quitAndWait()
	}
	// rcptUntil250 retries a refused RCPT in the same session (as a
	// client may) until Exim has a place again, bounded.
	rcptUntil250 := func(c *client) {
		t.Helper()
		for i := 0; ; i++ {
			code, text := c.cmd("RCPT TO:<alice@example.com>")
			if code == 250 {
				return
			}
			if code/100 != 4 || i > 200 {
				t.Fatalf("RCPT retried: %q", text)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	t.Run("exim_full", func(t *testing.T) {
		g := gateFor(t, m, "  pool:\n    enabled: false\n", "")
		before := len(m.log())
		a, b, c := dial(t, g.addr), dial(t, g.addr), dial(t, g.addr)
		a.envelope("sender@example.org", "alice@example.com")
		b.envelope("sender@example.org", "alice@example.com")
		c.must("EHLO client.example.org", 250)
		c.must("MAIL FROM:<sender@example.org>", 250)
		code, text := c.cmd("RCPT TO:<alice@example.com>")
		t.Logf("RCPT while Exim is full: %q", text)
		if code/100 != 4 || !enhancedRe.MatchString(strings.TrimSpace(text)) {
			t.Fatalf("RCPT while Exim is full: %q, want a 4xx with an enhanced code", text)
		}
		if !strings.Contains(m.log()[before:], "too many connections") {
			t.Errorf("Exim's log does not show the refused connection:\n%s", tail(m.log()[before:], 2000))
		}
		send(a, tag+"-a@example.org")
		send(b, tag+"-b@example.org")
		rcptUntil250(c)
		send(c, tag+"-c@example.org")
		for _, x := range []string{"a", "b", "c"} {
			m.waitFor(t, "alice", tag+"-"+x+"@example.org")
		}
	})

	t.Run("advice_followed", func(t *testing.T) {
		g := gateFor(t, m, "  max_connections: 1\n  pool:\n    max_idle: 1\n", "")
		before := len(m.log())
		a, b := dial(t, g.addr), dial(t, g.addr)
		a.envelope("sender@example.org", "alice@example.com")
		b.must("EHLO client.example.org", 250)
		b.must("MAIL FROM:<sender@example.org>", 250)
		const want = "451 4.7.0 Error: too many connections to the mail server, try again later"
		if _, text := b.cmd("RCPT TO:<alice@example.com>"); strings.TrimSpace(text) != want {
			t.Fatalf("RCPT over upstream.max_connections: %q, want %q", text, want)
		}
		send(a, tag+"-d@example.org")
		rcptUntil250(b)
		send(b, tag+"-e@example.org")
		for _, x := range []string{"d", "e"} {
			m.waitFor(t, "alice", tag+"-"+x+"@example.org")
		}
		if strings.Contains(m.log()[before:], "too many connections") {
			t.Errorf("Exim refused a connection although smtpgate's caps are within smtp_accept_max:\n%s", tail(m.log()[before:], 2000))
		}
	})
}
