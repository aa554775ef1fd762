package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Sessions from different clients, one after the other, reuse one MTA
// connection (upstream.Pool) and Postfix still sees each real client,
// because XCLIENT is sent again for each.
func TestPooledConnectionPresentsEachClient(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	before, _ := os.ReadFile(filepath.Join(mta.dir, "maillog"))
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		c := dialFrom(t, g.addr, ip)
		c.must(fmt.Sprintf("EHLO client%d.example.org", i), 250)
		c.must("MAIL FROM:<sender@example.org>", 250)
		c.must("RCPT TO:<alice@example.com>", 250)
		c.must("DATA", 354)
		c.send(fmt.Sprintf("Message-ID: <pool-%d@example.org>\r\nSubject: pool\r\n\r\nbody\r\n.\r\n", i))
		c.expect(250)
		c.must("QUIT", 221)
	}
	mta.settle(t)
	after, _ := os.ReadFile(filepath.Join(mta.dir, "maillog"))
	log := string(after[len(before):])
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		if !strings.Contains(log, "client=unknown["+ip+"]") {
			t.Errorf("Postfix did not log client %s:\n%s", ip, log)
		}
	}
	if n := len(regexp.MustCompile(`smtpd\[\d+\]: connect from`).FindAllString(log, -1)); n != 1 {
		t.Errorf("%d MTA connections for 3 sessions, want 1 (pooled)", n)
	}
	for _, m := range mta.messages(t, "alice") {
		if !regexp.MustCompile(`Received: from client\d\.example\.org \(unknown \[127\.0\.0\.\d\]\)\n\tby mta`).MatchString(m) {
			t.Errorf("Postfix's Received: lacks the real client:\n%s", m)
		}
	}
}
