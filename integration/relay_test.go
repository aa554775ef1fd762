package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The body a message is delivered with, after Postfix's and our trace
// fields, must be the body that was sent, byte for byte, dot-stuffing
// undone.
func TestRelayByteExactWithXCLIENT(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	msg := "From: Sender <sender@example.org>\r\n" +
		"To: alice@example.com\r\n" +
		"Subject: byte exact\r\n" +
		"Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n" +
		"Message-ID: <byte-exact-1@example.org>\r\n" +
		"\r\n" +
		"line one\r\n" +
		".a line that starts with a dot\r\n" +
		"..two dots\r\n" +
		".\tdot tab\r\n" +
		"trailing spaces   \r\n" +
		"\r\n" +
		"8bit: gr\xc3\xbc\xc3\x9fe\r\n" +
		"last\r\n"
	stuffed := strings.ReplaceAll("\r\n"+msg, "\r\n.", "\r\n..")[2:]

	c := dialFrom(t, g.addr, "127.0.0.2")
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	c.send(stuffed + ".\r\n")
	text := c.expect(250)
	if !strings.Contains(text, "queued as") {
		t.Errorf("250 should be the MTA's own reply, got %q", text)
	}
	c.must("QUIT", 221)
	mta.settle(t)

	got := mta.messages(t, "alice")
	if len(got) != 1 {
		t.Fatalf("alice has %d messages, want 1", len(got))
	}
	// Postfix's maildir stores LF line ends; compare in that form.
	want := strings.ReplaceAll(msg, "\r\n", "\n")
	m := got[0]
	i := strings.Index(m, "From: Sender")
	if i < 0 || m[i:] != want {
		t.Fatalf("delivered message differs.\nwant:\n%q\ngot:\n%q", want, m)
	}
	trace := m[:i]
	// Postfix's Received: shows the client smtpgate reported by XCLIENT
	// (127.0.0.2), not smtpgate's own address, and the client's HELO.
	if !regexp.MustCompile(`Received: from client\.example\.org \(unknown \[127\.0\.0\.2\]\)\n\tby mta\.example\.com \(Postfix\)`).MatchString(trace) {
		t.Errorf("Postfix's Received: does not show the real client:\n%s", trace)
	}
	if !regexp.MustCompile(`Received: from client\.example\.org \(\[127\.0\.0\.2\]\)\n\tby gw\.example\.com \(smtpgate\) with ESMTP id \S+\n\tfor <alice@example\.com>; `).MatchString(trace) {
		t.Errorf("smtpgate's Received: missing or malformed:\n%s", trace)
	}
	log, _ := os.ReadFile(filepath.Join(mta.dir, "maillog"))
	if !regexp.MustCompile(`client=unknown\[127\.0\.0\.2\]`).Match(log) {
		t.Errorf("Postfix log does not name the XCLIENT address")
	}
	if !strings.Contains(g.log.String(), "msg=accept") || !regexp.MustCompile(`queue_id=[0-9A-F]+`).MatchString(g.log.String()) {
		t.Errorf("accept not logged with the MTA's queue id:\n%s", g.log.String())
	}
}

func TestSwaksDeliversAndUnknownUserGetsMTAReply(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	out, err := swaks(t, g.addr, "--to", "bob@example.com", "--from", "someone@example.org", "--helo", "client.example.org", "--header", "Subject: swaks test")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	out, err = swaks(t, g.addr, "--to", "nobody@example.com", "--from", "someone@example.org")
	if err == nil {
		t.Fatalf("swaks to an unknown user succeeded:\n%s", out)
	}
	if !strings.Contains(out, "<** 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown") {
		t.Errorf("want the MTA's 550 5.1.1 at RCPT, got:\n%s", out)
	}
	mta.settle(t)
	if n := len(mta.mailbox("bob")); n != 1 {
		t.Errorf("bob has %d messages, want 1", n)
	}
}

func TestMTADownGives4xx(t *testing.T) {
	g := startGate(t, "")
	mta.stop()
	defer func() {
		if err := mta.start(); err != nil {
			t.Fatal(err)
		}
	}()
	// The stop is asynchronous; wait for the port to close.
	for i := 0; i < 100; i++ {
		if out, _ := exec.Command("bash", "-c", "exec 3<>/dev/tcp/"+strings.Replace(mta.addr(), ":", "/", 1)).CombinedOutput(); len(out) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := dial(t, g.addr)
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<sender@example.org>", 250)
	code, text := c.cmd("RCPT TO:<alice@example.com>")
	if code != 451 || !strings.Contains(text, "4.4.1") {
		t.Fatalf("MTA down: want 451 4.4.1, got %q", text)
	}
	c.must("DATA", 502) // no recipient was accepted
	c.must("QUIT", 221)
}

// streamingOnly turns off the whole-message checks (on by default), so
// that DATA streams to the MTA while the client sends it.
const streamingOnly = "checks:\n  dkim: {mode: off}\n  own_domain_header_forgery: {mode: off}\n  dmarc: {mode: off}\n  authentication_results: {mode: off}\n"

func TestMTAKilledMidDataGives4xxAndDeliversNothing(t *testing.T) {
	mta.clearMailboxes()
	// Streaming mode: the MTA has part of the body when it dies.
	g := startGate(t, streamingOnly)
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "carol@example.com")
	c.must("DATA", 354)
	c.send("Subject: killed\r\nMessage-ID: <killed-1@example.org>\r\n\r\n")
	for i := 0; i < 200; i++ {
		c.send(strings.Repeat("x", 998) + "\r\n")
	}
	mta.waitIncoming(t, 100000) // the first part reached Postfix
	mta.killSMTPD(t)
	for i := 0; i < 200; i++ {
		c.conn.Write([]byte(strings.Repeat("y", 998) + "\r\n"))
	}
	c.send(".\r\n")
	code, text := c.reply()
	if code/100 != 4 {
		t.Fatalf("MTA killed mid-DATA: want 4xx, got %q", text)
	}
	// The session goes on: the next transaction dials the MTA again.
	c.must("RSET", 250)
	mta.waitGreeting(t)
	mta.settle(t)
	if n := len(mta.mailbox("carol")); n != 0 {
		t.Fatalf("carol has %d messages after the MTA died mid-DATA, want 0", n)
	}
}

func TestClientDisconnectMidDataQueuesNothing(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "carol@example.com")
	c.must("DATA", 354)
	c.send("Subject: half\r\n\r\n")
	for i := 0; i < 100; i++ {
		c.send(strings.Repeat("z", 500) + "\r\n")
	}
	c.conn.Close()
	waitLog(t, g, "msg=abort")
	g.waitSessionsClosed(t)
	mta.settle(t)
	if n := len(mta.mailbox("carol")); n != 0 {
		t.Fatalf("carol has %d messages after the client hung up mid-DATA, want 0", n)
	}
}

// SMTP smuggling (SEC Consult, CVE-2023-51764 family): a message whose
// body holds a bare-LF or bare-CR "end of data" followed by a second
// transaction. Each must be refused with 550 5.5.2 and nothing of it may
// reach the MTA.
func TestSmugglingRefused(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	second := "MAIL FROM:<admin@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
	payloads := map[string]string{
		`\n.\r\n`:     "\n.\r\n",
		`\n.\n`:       "\n.\n",
		`\r.\r`:       "\r.\r",
		`\r.\r\n`:     "\r.\r\n",
		`\r\n.\r`:     "\r\n.\r",
		`\r\n.\n`:     "\r\n.\n",
		`\n.\r`:       "\n.\r",
		`bare LF`:     "\nplain bare LF\r\n",
		`bare CR`:     "\rplain bare CR\r\n",
		`\r\r\n.\r\n`: "\r\r\n.\r\n",
	}
	for name, p := range payloads {
		t.Run(name, func(t *testing.T) {
			c := dial(t, g.addr)
			c.envelope("sender@example.org", "bob@example.com")
			c.must("DATA", 354)
			c.send("Subject: carrier\r\n\r\ncarrier body" + p + second + ".\r\n")
			code, text := c.reply()
			if code != 550 || !strings.Contains(text, "5.5.2") {
				t.Fatalf("payload %s: want 550 5.5.2, got %q", name, text)
			}
		})
	}
	g.waitSessionsClosed(t)
	mta.settle(t)
	if n := len(mta.mailbox("bob")); n != 0 {
		t.Fatalf("bob got %d messages from smuggling payloads, want 0", n)
	}
	if !strings.Contains(g.log.String(), "check=bare_newline") {
		t.Errorf("refusals not logged with check=bare_newline")
	}
}

func TestThousandMessagesOverTwentySessions(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	const total, sessions = 1000, 20
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			c := dial(t, g.addr)
			c.must("EHLO load.example.org", 250)
			for i := 0; i < total/sessions; i++ {
				if code, text := c.cmd("MAIL FROM:<load@example.org>"); code != 250 {
					errs <- fmt.Errorf("MAIL: %s", text)
					return
				}
				if code, text := c.cmd("RCPT TO:<alice@example.com>"); code != 250 {
					errs <- fmt.Errorf("RCPT: %s", text)
					return
				}
				if code, text := c.cmd("DATA"); code != 354 {
					errs <- fmt.Errorf("DATA: %s", text)
					return
				}
				c.send(fmt.Sprintf("Subject: load %d/%d\r\nMessage-ID: <load-%d-%d@example.org>\r\n\r\nbody\r\n.\r\n", s, i, s, i))
				if code, text := c.reply(); code != 250 {
					errs <- fmt.Errorf("end of DATA: %s", text)
					return
				}
			}
			c.cmd("QUIT")
		}(s)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 0; i < 600 && len(mta.mailbox("alice")) < total; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	mta.settle(t)
	got := mta.messages(t, "alice")
	if len(got) != total {
		t.Fatalf("alice has %d messages, want exactly %d", len(got), total)
	}
	seen := map[string]bool{}
	idRe := regexp.MustCompile(`Message-ID: <(load-\d+-\d+)@`)
	for _, m := range got {
		id := idRe.FindStringSubmatch(m)
		if id == nil || seen[id[1]] {
			t.Fatalf("missing or duplicate Message-ID in %q", m[:min(len(m), 300)])
		}
		seen[id[1]] = true
	}
}

func TestSmtpSourceThroughGate(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	out, err := exec.Command("smtp-source", "-s", "5", "-m", "50", "-f", "src@example.org", "-t", "bob@example.com", g.addr).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	for i := 0; i < 600 && len(mta.mailbox("bob")) < 50; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	mta.settle(t)
	if n := len(mta.mailbox("bob")); n != 50 {
		t.Fatalf("bob has %d messages, want 50", n)
	}
}

func TestGracefulShutdown(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	idle := dial(t, g.addr)
	idle.must("EHLO idle.example.org", 250)
	busy := dial(t, g.addr)
	busy.envelope("sender@example.org", "alice@example.com")
	busy.must("DATA", 354)
	busy.send("Subject: in flight\r\n\r\nstarted before SIGTERM\r\n")

	g.cmd.Process.Signal(syscall.SIGTERM)
	// The idle session is told at once.
	code, text := idle.reply()
	if code != 421 || !strings.Contains(text, "4.3.2") {
		t.Fatalf("idle session at shutdown: want 421 4.3.2, got %q", text)
	}
	// New connections are refused (the listener closes right after the
	// idle sessions are told, and the 421 above was read).
	for i := 0; ; i++ {
		c, err := netDial(g.addr)
		if err != nil {
			break
		}
		c.Close()
		if i > 200 {
			t.Errorf("still accepting after SIGTERM")
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	// The one in a transaction finishes.
	busy.send("end\r\n.\r\n")
	busy.expect(250)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("smtpgate did not exit after the drain")
	}
	mta.settle(t)
	if n := len(mta.mailbox("alice")); n != 1 {
		t.Errorf("alice has %d messages, want the in-flight one", n)
	}
}

func TestReloadKeepsConnectionsAndAppliesNewLists(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "recipients")
	os.WriteFile(list, []byte("alice@example.com\n"), 0o644)
	g := startGate(t, "recipients:\n  files: ["+list+"]\n")

	c := dial(t, g.addr)
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<sender@example.org>", 250)
	c.must("RCPT TO:<bob@example.com>", 550) // not in the list

	os.WriteFile(list, []byte("alice@example.com\nbob@example.com\n"), 0o644)
	g.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, g, "msg=reloaded")
	// The session in flight keeps working under its configuration.
	c.must("RSET", 250)
	c.must("MAIL FROM:<sender@example.org>", 250)
	c.must("RCPT TO:<alice@example.com>", 250)
	c.must("QUIT", 221)
	// A new session sees the new list.
	n := dial(t, g.addr)
	n.envelope("sender@example.org", "bob@example.com")
	n.must("QUIT", 221)

	// A broken config is refused and the running one kept.
	os.WriteFile(g.cfg, []byte("hostname: [broken\n"), 0o644)
	g.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, g, "reload refused")
	k := dial(t, g.addr)
	k.envelope("sender@example.org", "bob@example.com")
	k.must("QUIT", 221)
}

func TestCheckFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("hostname: gw.example.com\ndomains: [example.com]\n"), 0o644)
	if out, err := exec.Command(binary, "-config", good, "-check").CombinedOutput(); err != nil {
		t.Fatalf("-check on a good config: %v\n%s", err, out)
	}
	list := filepath.Join(dir, "rcpts")
	os.WriteFile(list, []byte("alice@example.com\nnot an address\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("hostname: gw.example.com\nlimits:\n  max_recipients: 10\n  max_messsage_bytes: 5\nrecipients:\n  files: ["+list+"]\n"), 0o644)
	out, err := exec.Command(binary, "-config", bad, "-check").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("-check on a bad config: want exit 1, got %v\n%s", err, out)
	}
	for _, want := range []string{
		bad + ":4: max_messsage_bytes: unknown key",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-check output lacks %q:\n%s", want, out)
		}
	}
	os.WriteFile(bad, []byte("hostname: gw.example.com\nlimits:\n  max_recipients: 10\nrecipients:\n  files: ["+list+"]\n"), 0o644)
	out, _ = exec.Command(binary, "-config", bad, "-check").CombinedOutput()
	for _, want := range []string{
		bad + ":3: limits.max_recipients: 10 is below the 100",
		list + ":2: \"not an address\"",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("-check output lacks %q:\n%s", want, out)
		}
	}
	if out, err := exec.Command(binary, "-version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "smtpgate ") {
		t.Errorf("-version: %v %q", err, out)
	}
}

func waitLog(t *testing.T, g *gate, s string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if strings.Contains(g.log.String(), s) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("log never said %q:\n%s", s, g.log.String())
}

// CHUNKING (RFC 3030): BDAT chunks take the same streaming path, are
// checked for bare newlines the same way, and a client that abandons a
// BDAT transfer leaves nothing at the MTA.
func TestBDAT(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	msg := "Subject: chunked\r\nMessage-ID: <bdat-1@example.org>\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\n\r\n.first line starts with a dot\r\nsecond\r\n"
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.send(fmt.Sprintf("BDAT %d\r\n%s", 40, msg[:40]))
	c.expect(250)
	// RCPT between chunks is refused, not deadlocked.
	if code, _ := c.cmd("RCPT TO:<bob@example.com>"); code/100 != 5 {
		t.Errorf("RCPT during BDAT: want 5xx, got %d", code)
	}
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)-40, msg[40:]))
	if text := c.expect(250); !strings.Contains(text, "queued as") {
		t.Errorf("BDAT LAST: want the MTA's 250, got %q", text)
	}

	// A bare LF inside a chunk.
	c.envelope("sender@example.org", "alice@example.com")
	bad := "Subject: x\r\n\r\nline\nsmuggled\r\n"
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(bad), bad))
	if code, text := c.reply(); code != 550 || !strings.Contains(text, "5.5.2") {
		t.Errorf("bare LF in BDAT: want 550 5.5.2, got %q", text)
	}

	// RSET in the middle of a chunked transfer.
	d := dial(t, g.addr)
	d.envelope("sender@example.org", "bob@example.com")
	d.send("BDAT 10\r\nSubject: a")
	d.expect(250)
	d.must("RSET", 250)
	d.must("QUIT", 221)

	mta.settle(t)
	got := mta.messages(t, "alice")
	if len(got) != 1 || !strings.HasSuffix(got[0], "\n.first line starts with a dot\nsecond\n") {
		t.Fatalf("alice: want the one BDAT message byte-exact, got %q", got)
	}
	if n := len(mta.mailbox("bob")); n != 0 {
		t.Errorf("bob got %d messages from an abandoned BDAT", n)
	}
	if strings.Contains(g.log.String(), "DATA RACE") {
		t.Errorf("race detected:\n%s", g.log.String())
	}
}
