package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The MTA's replies that end a connection, and its timing at the final
// dot, against a real Postfix of the test's own (extra main.cf lines).

// startOwnPostfix starts a private Postfix with extra main.cf lines,
// stopped when the test ends.
func startOwnPostfix(t *testing.T, extra string) *postfix {
	t.Helper()
	tmp, err := os.MkdirTemp("", "smtpgate-it-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	os.Chmod(tmp, 0o755) // Postfix runs as user postfix
	p := &postfix{dir: filepath.Join(tmp, "postfix"), port: freePort()}
	cmd := exec.Command("bash", filepath.Join(repoRoot, "integration/postfix.sh"), "start", p.dir, strconv.Itoa(p.port), domain, "alice", "bob")
	cmd.Env = append(os.Environ(), "POSTFIX_MAIN_CF_EXTRA="+extra)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postfix.sh start: %v\n%s", err, out)
	}
	t.Cleanup(p.stop)
	return p
}

func (p *postfix) log(t *testing.T) string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// expectClosed checks that smtpgate hung up: a NOOP gets no reply.
func (c *client) expectClosed() {
	c.t.Helper()
	c.conn.Write([]byte("NOOP\r\n")) // may fail: closed is what we want
	if code, text := c.reply(); code != 0 {
		c.t.Errorf("client connection still open: NOOP got %q", text)
	}
}

// waitFor polls cond until it holds (bounded: a hang guard).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 600; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// Item 16 and the any-MTA issue: Postfix answers 421 (access(5): "421
// text" replies and disconnects). At the first RCPT nothing of the
// transaction stands: smtpgate retries once on a fresh connection; when
// that is refused too, the client gets the 421 and is disconnected, like
// smtpgate was. At DATA the same. Nothing reaches the mailbox, and the
// next client is served normally.
func TestMTA421ClosesClientNothingQueued(t *testing.T) {
	p := startOwnPostfix(t, `smtpd_sender_restrictions = check_sender_access inline:{{closing@example.org = 421 4.7.0 too many messages in this connection}}
smtpd_data_restrictions = check_sender_access inline:{{closing-data@example.org = 421 4.3.2 closing at DATA}}`)
	g, _ := startGateConfig(t, p.addr(), "10s", dnsSrv.Addr, "2s", "checks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\n")

	c := dial(t, g.addr)
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<closing@example.org>", 250)
	text := c.must("RCPT TO:<alice@example.com>", 421)
	if !strings.HasPrefix(text, "421 4.7.0 ") || !strings.Contains(text, "too many messages in this connection") {
		t.Errorf("RCPT: %q, want the MTA's 421 4.7.0", text)
	}
	c.expectClosed()
	// Postfix logs through postlogd: poll for its lines.
	waitFor(t, "Postfix to log two refusals (the transaction, retried once on a fresh connection)", func() bool {
		return strings.Count(p.log(t), "too many messages in this connection") == 2
	})

	c = dial(t, g.addr)
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<closing-data@example.org>", 250)
	c.must("RCPT TO:<alice@example.com>", 250)
	c.must("DATA", 354)
	text = c.must("Subject: closing at DATA\r\n\r\nbody\r\n.", 421)
	if !strings.HasPrefix(text, "421 4.3.2 ") {
		t.Errorf("end of data: %q, want the MTA's 421 4.3.2", text)
	}
	c.expectClosed()

	// The next client is served, on a connection of its own.
	token := newToken("after421")
	c = dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	c.must("Subject: "+token+"\r\n\r\nbody\r\n.", 250)
	c.must("QUIT", 221)
	p.settle(t)
	msgs := p.messages(t, "alice")
	if len(msgs) != 1 || !strings.Contains(msgs[0], token) {
		t.Errorf("alice's mailbox has %d messages, want only the one after the 421s", len(msgs))
	}
}

// policyServer is a Postfix policy service (SMTPD_POLICY_README) that
// holds its answer at END-OF-MESSAGE until release is closed: an MTA
// that is slow to queue, as with a content filter.
type policyServer struct {
	addr    string
	release chan struct{}
	once    sync.Once
}

func startPolicyServer(t *testing.T) *policyServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &policyServer{addr: ln.Addr().String(), release: make(chan struct{})}
	t.Cleanup(func() {
		ps.open()
		ln.Close()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				state := ""
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					l = strings.TrimRight(l, "\n")
					if l != "" {
						if v, ok := strings.CutPrefix(l, "protocol_state="); ok {
							state = v
						}
						continue
					}
					if state == "END-OF-MESSAGE" {
						<-ps.release
					}
					fmt.Fprint(c, "action=DUNNO\n\n")
				}
			}()
		}
	}()
	return ps
}

func (ps *policyServer) open() { ps.once.Do(func() { close(ps.release) }) }

// Item 17: the reply to the final dot is waited for upstream.data_timeout
// (default 10m, RFC 5321 §4.5.3.2.6), not upstream.timeout. Before, a
// Postfix slower to queue than upstream.timeout gave the client 451 while
// Postfix delivered the message: a duplicate on every retry.
func TestSlowQueueingWaitsDataTimeout(t *testing.T) {
	ps := startPolicyServer(t)
	p := startOwnPostfix(t, "smtpd_end_of_data_restrictions = check_policy_service inet:"+ps.addr)
	const timeout = time.Second
	g, _ := startGateConfig(t, p.addr(), timeout.String(), dnsSrv.Addr, "2s", "checks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\n")

	token := newToken("slowdot")
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	// Provoking, not waiting for correctness: the MTA answers the dot
	// well after upstream.timeout, well within data_timeout.
	time.AfterFunc(3*timeout, ps.open)
	text := c.must("Subject: "+token+"\r\n\r\nbody\r\n.", 250)
	if !strings.HasPrefix(text, "250 2.0.0 Ok: queued as ") {
		t.Errorf("end of data: %q", text)
	}
	c.must("QUIT", 221)
	p.settle(t)
	if n := len(p.messages(t, "alice")); n != 1 {
		t.Errorf("alice has %d messages, want 1", n)
	}
}

// Item 17, the limit: past upstream.data_timeout the client gets 451
// 4.4.1 and the log line says that the MTA may have the message; here it
// does (which is why the default is 10 minutes).
func TestDataTimeoutAtDotSaysMTAMayHaveMessage(t *testing.T) {
	ps := startPolicyServer(t)
	p := startOwnPostfix(t, "smtpd_end_of_data_restrictions = check_policy_service inet:"+ps.addr)
	g, _ := startGateConfig(t, p.addr(), "10s\n  data_timeout: 1s", dnsSrv.Addr, "2s", "checks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\n")

	token := newToken("dottimeout")
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	text := c.must("Subject: "+token+"\r\n\r\nbody\r\n.", 451)
	if !strings.HasPrefix(text, "451 4.4.1 ") {
		t.Errorf("end of data: %q, want 451 4.4.1", text)
	}
	var line string
	waitFor(t, "the tempfail log line", func() bool {
		for _, l := range strings.Split(g.log.String(), "\n") {
			if strings.Contains(l, "msg=tempfail") && strings.Contains(l, "stage=data") {
				line = l
				return true
			}
		}
		return false
	})
	if !strings.Contains(line, "the MTA may have the message") {
		t.Errorf("tempfail line does not say the MTA may have the message: %s", line)
	}
	// The MTA finishes after all: the message is there, and a retry
	// would make a duplicate.
	ps.open()
	waitFor(t, "the late delivery", func() bool { return len(p.mailbox("alice")) == 1 })
}

// Item 19: a Postfix that does not authorise smtpgate for XCLIENT or
// XFORWARD announces neither. With xclient: auto the mail still flows,
// and smtpgate warns once per MTA connection that the MTA does not see
// the real client; /readyz says so.
func TestIdentityNotAuthorisedWarns(t *testing.T) {
	p := startOwnPostfix(t, "smtpd_authorized_xclient_hosts =\nsmtpd_authorized_xforward_hosts =")
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort())
	g, _ := startGateConfig(t, p.addr(), "10s", dnsSrv.Addr, "2s", "checks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\nmetrics:\n  address: "+metrics+"\n")

	token := newToken("noxclient")
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	c.must("Subject: "+token+"\r\n\r\nbody\r\n.", 250)
	c.envelope("sender@example.org", "bob@example.com")
	c.must("DATA", 354)
	c.must("Subject: "+token+"\r\n\r\nbody\r\n.", 250)
	c.must("QUIT", 221)
	if n := strings.Count(g.log.String(), "will not see the real client"); n != 1 {
		t.Errorf("%d warnings about the client identity, want 1 (one MTA connection)", n)
	}
	resp, err := http.Get("http://" + metrics + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "client identity: off") {
		t.Errorf("/readyz: %d %q", resp.StatusCode, body)
	}
	p.settle(t)
	if len(p.messages(t, "alice")) != 1 || len(p.messages(t, "bob")) != 1 {
		t.Errorf("mailboxes: alice %d, bob %d; want 1 each", len(p.messages(t, "alice")), len(p.messages(t, "bob")))
	}
}

// Item 19: Postfix's smtp-sink announces XCLIENT and answers it with 250,
// not 220. Any 2xx is success: before, every RCPT got 451.
func TestSMTPSinkXCLIENTAnswered250(t *testing.T) {
	port := freePort()
	sink := exec.Command("smtp-sink", "-u", "nobody", fmt.Sprintf("127.0.0.1:%d", port), "10")
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sink.Process.Kill()
		sink.Wait()
	})
	waitFor(t, "smtp-sink to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	g, _ := startGateConfig(t, fmt.Sprintf("127.0.0.1:%d", port), "10s", dnsSrv.Addr, "2s", "checks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\n")
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	c.must("Subject: sink\r\n\r\nbody\r\n.", 250)
	c.must("QUIT", 221)
	if strings.Contains(g.log.String(), "refused XCLIENT") {
		t.Error("smtp-sink's 250 to XCLIENT taken for a refusal")
	}
}
