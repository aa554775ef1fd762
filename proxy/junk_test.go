package proxy

import (
	"strings"
	"testing"
)

// Postfix's smtpd_junk_command_limit: NOOP, RSET, VRFY and ETRN beyond
// limits.max_junk_commands (default 100) end the session with 421 4.7.0;
// a message accepted starts the count again.
func TestJunkCommandsGive421(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		_, addr, logs := startServer(t, "", "")
		c := dialT(t, addr)
		c.reply()
		c.cmd("EHLO ok.example.org")
		for i := 0; i < 100; i++ {
			if l := c.cmd("NOOP"); !strings.HasPrefix(l, "250 ") {
				t.Fatalf("NOOP %d: %q", i+1, l)
			}
		}
		if l := c.cmd("NOOP"); l != "421 4.7.0 Error: too many junk commands, closing connection\r\n" {
			t.Fatalf("NOOP 101: %q", l)
		}
		c.expectEOF()
		if !strings.Contains(logs.String(), "check=max_junk_commands") || !strings.Contains(logs.String(), `reply="421 4.7.0 Error: too many junk commands, closing connection"`) {
			t.Errorf("not logged:\n%s", logs)
		}
	})
	t.Run("mixed, reset by a message", func(t *testing.T) {
		_, addr, _ := startServer(t, "", "limits:\n  max_junk_commands: 4\n")
		c := dialT(t, addr)
		c.reply()
		c.cmd("EHLO ok.example.org")
		for _, cmd := range []string{"NOOP", "RSET", "VRFY bob", "NOOP"} {
			if l := c.cmd(cmd); !strings.HasPrefix(l, "25") {
				t.Fatalf("%s: %q", cmd, l)
			}
		}
		// A message accepted forgives the junk so far (as Postfix does).
		c.cmd("MAIL FROM:<a@example.org>")
		c.cmd("RCPT TO:<bob@example.com>")
		c.cmd("DATA")
		if l := c.cmd("Subject: x\r\n\r\nbody\r\n."); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("end of data: %q", l)
		}
		for i := 0; i < 4; i++ {
			if l := c.cmd("RSET"); !strings.HasPrefix(l, "250 ") {
				t.Fatalf("RSET %d after the message: %q", i+1, l)
			}
		}
		if l := c.cmd("VRFY bob"); l != "421 4.7.0 Error: too many junk commands, closing connection\r\n" {
			t.Fatalf("5th junk command: %q", l)
		}
		c.expectEOF()
	})
}
