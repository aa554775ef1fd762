package integration

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startSmallPostfix runs a Postfix of the test's own with
// default_process_limit = limit, stopped when the test ends.
func startSmallPostfix(t *testing.T, limit int) *postfix {
	t.Helper()
	dir, err := os.MkdirTemp("", "smtpgate-it-small-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // Postfix runs as user postfix
	p := &postfix{dir: filepath.Join(dir, "postfix"), port: freePort(), env: []string{fmt.Sprintf("PROCESS_LIMIT=%d", limit)}}
	if err := p.start(); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
			t.Logf("postfix log (tail):\n%s", tail(string(b), 4000))
		}
		os.RemoveAll(dir)
	})
	return p
}

// Clients that open a transaction and go quiet each hold one of the MTA's
// smtpd processes. Without a cap, six such clients from three addresses
// take all five processes of this Postfix and a client from a fourth
// address gets 451 4.4.1 after the connect timeout. With
// upstream.max_connections (4) below the process limit and
// upstream.max_connections_per_ip (1), the second client of each address
// gets 451 4.7.0 at RCPT and the fourth address is served.
func TestUpstreamCapsShieldTheMTA(t *testing.T) {
	small := startSmallPostfix(t, 5)
	g, _ := startGateConfig(t, small.addr(), "10s\n  max_connections: 4\n  max_connections_per_ip: 1", dnsSrv.Addr, "2s", "")
	var refused []*client
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.5"} {
		first := dialFrom(t, g.addr, ip)
		first.envelope("sender@example.org", "alice@example.com")
		second := dialFrom(t, g.addr, ip)
		second.must("EHLO client.example.org", 250)
		second.must("MAIL FROM:<sender@example.org>", 250)
		want := "451 4.7.0 Error: too many connections from " + ip + " to the mail server, try again later\r\n"
		if _, text := second.cmd("RCPT TO:<alice@example.com>"); text != want {
			t.Fatalf("second client from %s: %q, want %q", ip, text, want)
		}
		refused = append(refused, second)
	}
	// A refused client's message goes nowhere.
	for _, c := range refused {
		if code, text := c.cmd("DATA"); code == 354 {
			t.Fatalf("DATA without a recipient: %q", text)
		}
	}
	// The client from a fourth address is served.
	p := dialFrom(t, g.addr, "127.0.0.4")
	p.envelope("sender@example.org", "alice@example.com")
	p.must("DATA", 354)
	p.send("Subject: shield\r\nMessage-ID: <shield-probe@example.org>\r\n\r\nprobe\r\n.\r\n")
	p.expect(250)
	p.must("QUIT", 221)
	// The hogs' open transactions keep files in Postfix's incoming
	// queue, so settle would wait for them: poll for the delivery.
	for i := 0; len(small.mailbox("alice")) == 0; i++ {
		if i > 600 {
			t.Fatalf("the probe's message was not delivered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	msgs := small.messages(t, "alice")
	if len(msgs) != 1 || !strings.Contains(msgs[0], "<shield-probe@example.org>") {
		t.Errorf("mailbox: %d messages, want the probe's only", len(msgs))
	}
	if log := g.log.String(); !strings.Contains(log, "check=upstream_max_connections_per_ip") {
		t.Errorf("the refusals are not logged with their check")
	}
}

// SIGTERM while many sessions talk, some idle and some in a transaction:
// the 421 4.3.2 that shutdown writes and the sessions' own replies do not
// race (the binary is built with -race: runGate fails the test on a race
// report), every session ends with 421 4.3.2 or its own reply, and the
// process exits.
func TestShutdownUnderConnectionFlood(t *testing.T) {
	g := startGate(t, "limits:\n  max_junk_commands: 100000000\n")
	const n = 24
	started := make(chan struct{}, n)
	ended := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			c, err := rawDial(g.addr)
			if err != nil {
				started <- struct{}{}
				ended <- "dial: " + err.Error()
				return
			}
			defer c.conn.Close()
			c.cmd("EHLO flood.example.org")
			if i%2 == 0 {
				c.cmd("MAIL FROM:<sender@example.org>")
			}
			started <- struct{}{}
			for {
				code, text, err := c.cmd("NOOP")
				if err != nil || code != 250 {
					ended <- text
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		<-started
	}
	// New connections keep arriving while the server shuts down.
	flooding := make(chan struct{})
	var flood sync.WaitGroup
	for i := 0; i < 4; i++ {
		flood.Add(1)
		go func() {
			defer flood.Done()
			for j := 0; ; j++ {
				c, err := netDial(g.addr)
				if err != nil {
					return // the listener is closed
				}
				if j == 10 && i == 0 {
					close(flooding)
				}
				c.Write([]byte("EHLO flood.example.org\r\n"))
				c.Close()
			}
		}()
	}
	<-flooding
	g.cmd.Process.Signal(syscall.SIGTERM)
	flood.Wait()
	for i := 0; i < n; i++ {
		if text := <-ended; !strings.HasPrefix(text, "421 4.3.2 ") && text != "" {
			t.Errorf("session %d ended with %q, want 421 4.3.2", i, text)
		}
	}
	if err := <-g.done; err != nil {
		t.Errorf("smtpgate exited with %v", err)
	}
	g.done <- nil
}

// 100,000 NOOP, RSET and VRFY pipelined in one session: 100 are answered
// (limits.max_junk_commands), the next gets 421 4.7.0 and the connection
// closes; other clients are served throughout.
func TestJunkCommandFlood(t *testing.T) {
	g := startGate(t, "")
	c, err := rawDial(g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	if code, text, _ := c.cmd("EHLO junk.example.org"); code != 250 {
		t.Fatalf("EHLO: %q", text)
	}
	go func() {
		w := bufio.NewWriter(c.conn)
		junk := []string{"NOOP\r\n", "RSET\r\n", "VRFY alice\r\n"}
		for i := 0; i < 100000; i++ {
			if _, err := w.WriteString(junk[i%3]); err != nil {
				return // closed by smtpgate
			}
		}
		w.Flush()
	}()
	answered := 0
	for {
		code, text, err := c.reply()
		if err != nil {
			t.Fatalf("after %d replies: %v", answered, err)
		}
		if code == 250 || code == 252 {
			answered++
			continue
		}
		if text != "421 4.7.0 Error: too many junk commands, closing connection\r\n" {
			t.Fatalf("after %d replies: %q", answered, text)
		}
		break
	}
	if answered != 100 {
		t.Errorf("%d junk commands answered, want 100", answered)
	}
	if _, _, err := c.reply(); err == nil {
		t.Errorf("the connection is still open after 421")
	}
	mustProbe(t, g.addr, "after a junk command flood")
	waitLog(t, g, "check=max_junk_commands")
}

// A client that holds an MTA connection and goes quiet, here in the
// middle of DATA, is cut after limits.transaction_idle_timeout instead of
// data_timeout: nothing of its message is delivered, and its place under
// upstream.max_connections_per_ip is free for the next client.
func TestQuietTransactionIsCut(t *testing.T) {
	mta.clearMailboxes()
	g, _ := startGateConfig(t, mta.addr(), "10s\n  max_connections_per_ip: 1", dnsSrv.Addr, "2s", "limits:\n  transaction_idle_timeout: 1s\n")
	quiet := dialFrom(t, g.addr, "127.0.0.6")
	quiet.envelope("sender@example.org", "carol@example.com")
	quiet.must("DATA", 354)
	quiet.send("Subject: quiet\r\nMessage-ID: <quiet-cut@example.org>\r\n\r\nfirst part\r\n")
	// No more: the test's read deadline is 30s, data_timeout 10m.
	if _, text := quiet.reply(); text != "421 4.4.2 Idle timeout, bye bye\r\n" {
		t.Fatalf("quiet client mid-DATA: %q", text)
	}
	waitLog(t, g, "check=transaction_idle_timeout")
	g.waitSessionsClosed(t)
	next := dialFrom(t, g.addr, "127.0.0.6")
	next.envelope("sender@example.org", "carol@example.com")
	next.must("DATA", 354)
	next.send("Subject: next\r\nMessage-ID: <quiet-next@example.org>\r\n\r\nbody\r\n.\r\n")
	next.expect(250)
	next.must("QUIT", 221)
	mta.settle(t)
	msgs := mta.messages(t, "carol")
	if len(msgs) != 1 || !strings.Contains(msgs[0], "<quiet-next@example.org>") {
		t.Errorf("carol has %d messages, want only the next client's", len(msgs))
	}
}
