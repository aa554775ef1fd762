package integration

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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
		// smtpgate closes after the session ended and gave its MTA
		// connection back: wait for that before the next client.
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c.r)
	}
	mta.settle(t)
	after, _ := os.ReadFile(filepath.Join(mta.dir, "maillog"))
	log := string(after[len(before):])
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		if !strings.Contains(log, "client=unknown["+ip+"]") {
			t.Errorf("Postfix did not log client %s:\n%s", ip, log)
		}
	}
	// Connections that sent no command (postfix.sh's readiness check,
	// logged late) do not count.
	n := len(regexp.MustCompile(`smtpd\[\d+\]: connect from`).FindAllString(log, -1)) -
		len(regexp.MustCompile(`smtpd\[\d+\]: disconnect from .* commands=0/0`).FindAllString(log, -1))
	if n != 1 {
		t.Errorf("%d MTA connections for 3 sessions, want 1 (pooled):\n%s", n, log)
	}
	for _, m := range mta.messages(t, "alice") {
		if !regexp.MustCompile(`Received: from client\d\.example\.org \(unknown \[127\.0\.0\.\d\]\)\n\tby mta`).MatchString(m) {
			t.Errorf("Postfix's Received: lacks the real client:\n%s", m)
		}
	}
}

// A client that leaves after RCPT gives its pooled MTA connection back
// with a transaction open: the next session, on the same connection,
// must not inherit it (an RSET goes first), with and without XCLIENT.
func TestPooledConnectionAfterAbandonedTransaction(t *testing.T) {
	for _, mode := range []string{"xclient", "off"} {
		t.Run(mode, func(t *testing.T) {
			g, _ := startGateConfig(t, mta.addr(), "10s\n  xclient: "+mode, dnsSrv.Addr, "2s", "")
			c := dial(t, g.addr)
			c.envelope("sender@example.org", "alice@example.com")
			c.conn.Close()
			g.waitSessionsClosed(t) // the session ended, its connection went back
			if err := probe(g.addr); err != nil {
				t.Fatal(err)
			}
		})
	}
}
