package integration

import (
	"errors"
	"fmt"
	"io"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The MTAs smtpgate is tested in front of: Postfix, and Exim 4 and
// OpenSMTPD from Debian's packages (integration/mta.sh fetches and unpacks
// them under the test's directory). Each runs the same core scenarios.
var matrixMTAs = []string{"postfix", "exim", "opensmtpd"}

// matrixMaxPerConn is the MTAs' own limit of messages per connection in
// the matrix (Exim smtp_accept_max_per_connection, OpenSMTPD max-mails),
// small so that a pool that ignores it is caught within a few messages.
const matrixMaxPerConn = 5

// testMTA is one private MTA instance started by integration/mta.sh.
type testMTA struct {
	kind string
	dir  string
	port int
}

// startTestMTA starts kind on a free port (env: mta.sh's MTA_* settings).
// An MTA that cannot be started fails the test, unless mta.sh says this
// machine cannot run it (Exim and OpenSMTPD without root, OpenSMTPD without
// CAP_SYS_ADMIN for its mount namespace): then the test is skipped with
// that reason. Outside CI, SMTPGATE_SKIP_MTAS=exim,opensmtpd skips those
// (never silently: the skip names them).
func startTestMTA(t *testing.T, kind string, env ...string) *testMTA {
	t.Helper()
	if os.Getenv("CI") != "true" && strings.Contains(","+os.Getenv("SMTPGATE_SKIP_MTAS")+",", ","+kind+",") {
		t.Skipf("SKIPPED: %s (SMTPGATE_SKIP_MTAS); CI never skips it", kind)
	}
	dir, err := os.MkdirTemp("", "smtpgate-"+kind+"-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	m := &testMTA{kind: kind, dir: dir, port: freePort()}
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", kind, tail(m.log(), 4000))
		}
		os.RemoveAll(dir)
	})
	m.start(t, env...)
	return m
}

func (m *testMTA) start(t *testing.T, env ...string) {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(repoRoot, "integration/mta.sh"), "start", m.kind, m.dir, strconv.Itoa(m.port), domain, "alice", "bob", "carol")
	cmd.Env = append(append(os.Environ(), "MTA_MAX_PER_CONN="+strconv.Itoa(matrixMaxPerConn)), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == mtaSkip {
		// mta.sh names what this machine lacks (root, CAP_SYS_ADMIN).
		t.Skipf("SKIPPED: %s", strings.TrimSpace(string(out)))
	}
	if err != nil {
		t.Fatalf("mta.sh start %s: %v\n%s", m.kind, err, out)
	}
}

// mtaSkip is mta.sh's exit status for an MTA this machine cannot run.
const mtaSkip = 77

func (m *testMTA) stop() {
	exec.Command("bash", filepath.Join(repoRoot, "integration/mta.sh"), "stop", m.dir).Run()
}

func (m *testMTA) addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

func (m *testMTA) version() string {
	out, _ := exec.Command("bash", filepath.Join(repoRoot, "integration/mta.sh"), "version", m.kind, m.dir).Output()
	return strings.TrimSpace(string(out))
}

// log is the MTA's log so far.
func (m *testMTA) log() string {
	var f string
	switch m.kind {
	case "postfix":
		f = "maillog"
	case "exim":
		f = "log/mainlog"
	default:
		f = "mta.log"
	}
	b, _ := os.ReadFile(filepath.Join(m.dir, f))
	return string(b)
}

// messages returns the contents of user's mailbox.
func (m *testMTA) messages(t *testing.T, user string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(m.dir, "mail", user, sub, "*"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
	}
	return out
}

// queued counts the messages in the MTA's queue.
func (m *testMTA) queued() int {
	var dirs []string
	switch m.kind {
	case "postfix":
		dirs = []string{"queue/incoming", "queue/active", "queue/maildrop", "queue/deferred"}
	case "exim":
		dirs = []string{"spool/input"}
	default:
		dirs = []string{"spool/smtpd/incoming", "spool/smtpd/queue"}
	}
	n := 0
	for _, d := range dirs {
		filepath.Walk(filepath.Join(m.dir, d), func(path string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

// settle waits until the MTA's queue is empty, bounded.
func (m *testMTA) settle(t *testing.T) {
	t.Helper()
	for i := 0; m.queued() > 0; i++ {
		if i > 600 {
			t.Fatalf("%s: queue did not drain", m.kind)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls user's mailbox until a message contains want.
func (m *testMTA) waitFor(t *testing.T, user, want string) string {
	t.Helper()
	for i := 0; ; i++ {
		for _, msg := range m.messages(t, user) {
			if strings.Contains(msg, want) {
				return msg
			}
		}
		if i > 600 {
			t.Fatalf("%s: no message with %q for %s", m.kind, want, user)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mailboxHas reports whether a message with want is in user's mailbox.
func (m *testMTA) mailboxHas(t *testing.T, user, want string) bool {
	for _, msg := range m.messages(t, user) {
		if strings.Contains(msg, want) {
			return true
		}
	}
	return false
}

// gateFor runs smtpgate in front of m; upstreamExtra goes under upstream:,
// extra at the top level.
func gateFor(t *testing.T, m *testMTA, upstreamExtra, extra string) *gate {
	t.Helper()
	port := freePort()
	cfg := fmt.Sprintf(`hostname: gw.%s
listen:
  - address: 127.0.0.1:%d
upstream:
  address: %s
  timeout: 10s
  connect_timeout: 2s
%s
domains: [%s]
dns:
  servers: [%s]
  timeout: 2s
shutdown:
  drain_timeout: 2s
%s`, domain, port, m.addr(), upstreamExtra, domain, dnsSrv.Addr, extra)
	return runGate(t, t.TempDir(), fmt.Sprintf("127.0.0.1:%d", port), cfg)
}

// queueIDRe finds the MTA's queue id in its reply to the final dot:
// Postfix "queued as ID", Exim "id=ID", OpenSMTPD "2.0.0 ID Message accepted".
var queueIDRe = regexp.MustCompile(`queued as ([0-9A-Za-z]+)|id=([0-9A-Za-z-]+)|2\.0\.0 ([0-9a-f]{8}) Message accepted`)

func replyQueueID(reply string) string {
	m := queueIDRe.FindStringSubmatch(reply)
	if m == nil {
		return ""
	}
	return m[1] + m[2] + m[3]
}

// session waits for smtpgate to close the connection after QUIT, so that
// its MTA connection is back in the pool before the next client.
func (c *client) quitAndWait() {
	c.t.Helper()
	c.must("QUIT", 221)
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, c.r)
}

// TestMTAMatrix runs the core scenarios in front of Postfix, Exim and
// OpenSMTPD.
func TestMTAMatrix(t *testing.T) {
	for _, kind := range matrixMTAs {
		t.Run(kind, func(t *testing.T) {
			m := startTestMTA(t, kind)
			t.Logf("%s %s on %s", kind, m.version(), m.addr())
			t.Run("delivery", func(t *testing.T) { matrixDelivery(t, m) })
			t.Run("unknown_user", func(t *testing.T) { matrixUnknownUser(t, m) })
			t.Run("client_address", func(t *testing.T) { matrixClientAddress(t, m) })
			t.Run("per_connection_limit", func(t *testing.T) { matrixPerConnectionLimit(t, m) })
			t.Run("smtputf8", func(t *testing.T) { matrixSMTPUTF8(t, m) })
			t.Run("dsn", func(t *testing.T) { matrixDSN(t, m) })
			t.Run("mta_stopped", func(t *testing.T) { matrixStopped(t, m) })
		})
	}
}

// The message arrives byte-exact, and the client's 250 carries the MTA's
// own queue id, which the MTA logged.
func matrixDelivery(t *testing.T, m *testMTA) {
	g := gateFor(t, m, "", "")
	id := fmt.Sprintf("matrix-delivery-%d@example.org", time.Now().UnixNano())
	body := "From: sender@example.org\r\nTo: alice@example.com\r\nDate: Fri, 04 Dec 2026 12:00:00 +0000\r\nSubject: byte-exact\r\nMessage-ID: <" + id + ">\r\n\r\n" +
		"line one\r\n.a line that starts with a dot\r\n \ttabs and  spaces  \r\n\r\nlast line\r\n"
	c := dial(t, g.addr)
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	c.send(strings.ReplaceAll(body, "\r\n.", "\r\n..") + ".\r\n") // dot-stuffed
	code, text := c.reply()
	if code != 250 || !strings.HasPrefix(text, "250 2.0.0 ") {
		t.Fatalf("end of data: %q, want 250 2.0.0 with the MTA's queue id", text)
	}
	t.Logf("%s end of data: %q", m.kind, text)
	qid := replyQueueID(text)
	if qid == "" {
		t.Fatalf("no queue id in %q", text)
	}
	c.quitAndWait()
	msg := m.waitFor(t, "alice", id)
	if !strings.Contains(m.log(), qid) {
		t.Errorf("queue id %s of the reply %q is not in %s's log", qid, text, m.kind)
	}
	if !strings.Contains(g.log.String(), "queue_id="+qid) {
		t.Errorf("smtpgate's accept line lacks queue_id=%s", qid)
	}
	want := strings.ReplaceAll(body, "\r\n", "\n") // maildir stores LF
	if !strings.HasSuffix(msg, want) {
		t.Errorf("delivered message does not end with what was sent:\n--- got\n%s\n--- want suffix\n%s", msg, want)
	}
	if !strings.Contains(msg, "by gw.example.com") {
		t.Errorf("smtpgate's Received: missing:\n%s", msg)
	}
}

// Without a recipient list the MTA's own refusal reaches the client inline.
func matrixUnknownUser(t *testing.T, m *testMTA) {
	g := gateFor(t, m, "", "")
	want := map[string]string{
		"postfix":   "550 5.1.1 <zed@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
		"exim":      "550 5.1.1 <zed@example.com>: User unknown",
		"opensmtpd": "550 5.0.0 Invalid recipient: <zed@example.com>", // no enhanced code from OpenSMTPD: RFC 3463's X.0.0
	}[m.kind]
	c := dial(t, g.addr)
	c.envelope("sender@example.org")
	_, text := c.cmd("RCPT TO:<zed@example.com>")
	t.Logf("%s unknown user: %q", m.kind, text)
	if strings.TrimRight(text, "\r\n") != want {
		t.Errorf("RCPT of an unknown user: %q, want %q", text, want)
	}
	c.must("RCPT TO:<alice@example.com>", 250)
	c.must("RSET", 250)
	c.quitAndWait()
}

// Where the MTA takes XCLIENT (Postfix) its log names the real client;
// elsewhere it logs smtpgate's address (README: Putting it in front of
// your MTA).
func matrixClientAddress(t *testing.T, m *testMTA) {
	g := gateFor(t, m, "", "")
	before := len(m.log())
	id := fmt.Sprintf("matrix-client-%d@example.org", time.Now().UnixNano())
	c := dialFrom(t, g.addr, "127.0.0.7")
	c.envelope("sender@example.org", "alice@example.com")
	c.must("DATA", 354)
	c.send("Subject: client\r\nMessage-ID: <" + id + ">\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.quitAndWait()
	m.waitFor(t, "alice", id)
	log := m.log()[before:]
	switch m.kind {
	case "postfix":
		if !strings.Contains(log, "client=unknown[127.0.0.7]") {
			t.Errorf("Postfix did not log the real client 127.0.0.7:\n%s", log)
		}
	case "exim":
		if !strings.Contains(log, "[127.0.0.1]") || strings.Contains(log, "127.0.0.7") {
			t.Errorf("Exim 4.96 has no XCLIENT: its log should show smtpgate's 127.0.0.1:\n%s", log)
		}
	case "opensmtpd":
		if !strings.Contains(log, "address=127.0.0.1 ") || strings.Contains(log, "127.0.0.7") {
			t.Errorf("OpenSMTPD has no XCLIENT: its log should show smtpgate's 127.0.0.1:\n%s", log)
		}
	}
}

// The MTA allows matrixMaxPerConn messages per connection; smtpgate
// retires a pooled connection after upstream.pool.max_messages (below
// that), so no client ever sees the MTA's per-connection refusal (Exim's
// 421 4.0.0, OpenSMTPD's 452 4.5.3).
func matrixPerConnectionLimit(t *testing.T, m *testMTA) {
	g := gateFor(t, m, "  pool:\n    max_messages: 3\n", "")
	const n = 3 * matrixMaxPerConn
	tag := fmt.Sprintf("matrix-limit-%d", time.Now().UnixNano())
	for i := 0; i < n; i++ {
		c := dial(t, g.addr)
		c.must("EHLO client.example.org", 250)
		c.must("MAIL FROM:<sender@example.org>", 250)
		code, text := c.cmd("RCPT TO:<bob@example.com>")
		if code != 250 {
			t.Fatalf("message %d: RCPT: %q", i+1, text)
		}
		c.must("DATA", 354)
		c.send(fmt.Sprintf("Subject: limit\r\nMessage-ID: <%s-%d@example.org>\r\n\r\nbody\r\n.\r\n", tag, i))
		if code, text := c.reply(); code != 250 {
			t.Fatalf("message %d: end of data: %q", i+1, text)
		}
		c.quitAndWait()
	}
	// One client sending many messages in one session moves to a fresh
	// MTA connection between transactions.
	c := dial(t, g.addr)
	c.must("EHLO client.example.org", 250)
	for i := n; i < 2*n; i++ {
		c.must("MAIL FROM:<sender@example.org>", 250)
		if code, text := c.cmd("RCPT TO:<bob@example.com>"); code != 250 {
			t.Fatalf("message %d of one session: RCPT: %q", i+1-n, text)
		}
		c.must("DATA", 354)
		c.send(fmt.Sprintf("Subject: limit\r\nMessage-ID: <%s-%d@example.org>\r\n\r\nbody\r\n.\r\n", tag, i))
		if code, text := c.reply(); code != 250 {
			t.Fatalf("message %d of one session: end of data: %q", i+1-n, text)
		}
	}
	c.quitAndWait()
	m.settle(t)
	got := 0
	for _, msg := range m.messages(t, "bob") {
		if strings.Contains(msg, tag) {
			got++
		}
	}
	t.Logf("%s: %d of %d messages delivered over pooled connections", m.kind, got, 2*n)
	if got != 2*n {
		t.Errorf("%d of %d messages delivered", got, 2*n)
	}
}

// MTA stopped: the client gets 451 4.4.1 at RCPT, nothing is queued;
// after the MTA is back, mail flows again.
func matrixStopped(t *testing.T, m *testMTA) {
	g := gateFor(t, m, "", "")
	if err := probe(g.addr); err != nil {
		t.Fatal(err) // a pooled connection is now idle
	}
	m.stop()
	c := dial(t, g.addr)
	c.envelope("sender@example.org")
	_, text := c.cmd("RCPT TO:<alice@example.com>")
	t.Logf("%s stopped: %q", m.kind, text)
	if !strings.HasPrefix(text, "451 4.4.1 ") {
		t.Errorf("RCPT with %s stopped: %q, want 451 4.4.1", m.kind, text)
	}
	c.cmd("QUIT")
	m.start(t)
	if err := probe(g.addr); err != nil {
		t.Fatalf("after %s restarted: %v", m.kind, err)
	}
}

// goSendMail sends with Go's net/smtp, which adds SMTPUTF8 to MAIL
// whenever the server offers it.
func goSendMail(addr, from, to, msg string) error {
	return smtp.SendMail(addr, nil, from, []string{to}, []byte(msg))
}

// mtaOffers reports whether the server at addr announces kw in EHLO.
func mtaOffers(t *testing.T, addr, kw string) bool {
	t.Helper()
	c := dial(t, addr)
	defer c.conn.Close()
	text := c.must("EHLO probe.example.org", 250)
	c.cmd("QUIT")
	return regexp.MustCompile(`(?m)^250[ -]` + kw + `(\s|$)`).MatchString(text)
}

// smtpgate offers SMTPUTF8 exactly where the MTA does; Go's net/smtp
// (which sends SMTPUTF8 with every MAIL where it is offered) gets its mail
// through in front of every MTA, OpenSMTPD 6.8 (no SMTPUTF8) included.
func matrixSMTPUTF8(t *testing.T, m *testMTA) {
	g := gateFor(t, m, "", "")
	want := mtaOffers(t, m.addr(), "SMTPUTF8")
	t.Logf("%s offers SMTPUTF8: %v", m.kind, want)
	if got := mtaOffers(t, g.addr, "SMTPUTF8"); got != want {
		t.Errorf("smtpgate offers SMTPUTF8: %v, %s offers it: %v", got, m.kind, want)
	}
	id := fmt.Sprintf("matrix-utf8-%d@example.org", time.Now().UnixNano())
	if err := goSendMail(g.addr, "sender@example.org", "alice@example.com", "Subject: net/smtp\r\nMessage-ID: <"+id+">\r\n\r\nbody\r\n"); err != nil {
		t.Fatalf("net/smtp through smtpgate to %s: %v", m.kind, err)
	}
	m.waitFor(t, "alice", id)
}

// DSN (RFC 3461) is offered in front of every MTA (all three offer it);
// RET, ENVID, NOTIFY and ORCPT reach the MTA, whose success DSN arrives.
func matrixDSN(t *testing.T, m *testMTA) {
	if !mtaOffers(t, m.addr(), "DSN") {
		t.Fatalf("%s does not offer DSN", m.kind)
	}
	g := gateFor(t, m, "", "checks:\n  own_domain_forgery: {mode: off}\n")
	if !mtaOffers(t, g.addr, "DSN") {
		t.Fatalf("smtpgate does not offer DSN in front of %s", m.kind)
	}
	nonce := time.Now().UnixNano()
	envid := fmt.Sprintf("matrix-envid-%d", nonce)
	msgid := fmt.Sprintf("matrix-dsn-%d@example.com", nonce)
	c := dial(t, g.addr)
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<bob@example.com> RET=HDRS ENVID="+strings.ReplaceAll(envid, "-", "+2D"), 250)
	c.must("RCPT TO:<alice@example.com> NOTIFY=SUCCESS ORCPT=rfc822;alice@example.com", 250)
	c.must("DATA", 354)
	c.send(fmt.Sprintf("Subject: dsn\r\nMessage-ID: <%s>\r\n\r\nbody-%d\r\n.\r\n", msgid, nonce))
	c.expect(250)
	c.quitAndWait()
	m.waitFor(t, "alice", msgid)
	// The success DSN returns the headers (RET=HDRS), so it names msgid.
	dsn := m.waitFor(t, "bob", msgid)
	t.Logf("%s success DSN: %q", m.kind, regexp.MustCompile(`(?im)^(Action|Status|Original-Envelope-Id):.*$`).FindAllString(dsn, -1))
	if !regexp.MustCompile(`(?i)Action: *delivered`).MatchString(dsn) {
		t.Errorf("%s's DSN is not a success DSN:\n%s", m.kind, dsn)
	}
	if strings.Contains(dsn, fmt.Sprintf("body-%d", nonce)) {
		t.Errorf("%s's DSN returned the body despite RET=HDRS:\n%s", m.kind, dsn)
	}
	// OpenSMTPD 6.8 writes no Original-Envelope-Id into its DSNs.
	if m.kind != "opensmtpd" && !regexp.MustCompile(`(?i)Original-Envelope-Id: *`+envid).MatchString(dsn) {
		t.Errorf("%s's DSN lacks Original-Envelope-Id: %s:\n%s", m.kind, envid, dsn)
	}
}

// A restriction added by "postfix reload" reaches every client within
// upstream.pool.max_age, although a pooled connection's smtpd keeps the
// configuration it started with (max_messages is raised here so that
// only max_age retires the connection).
func TestMTAReloadReachesClientsWithinMaxAge(t *testing.T) {
	m := startTestMTA(t, "postfix")
	g := gateFor(t, m, "  pool:\n    max_age: 2s\n    max_messages: 1000\n    idle_timeout: 1h\n", "")
	if err := probe(g.addr); err != nil {
		t.Fatal(err) // a pooled connection to an smtpd with the old configuration
	}
	etc := filepath.Join(m.dir, "etc")
	if err := os.WriteFile(filepath.Join(etc, "closed"), []byte("carol@example.com REJECT carol is closed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("postconf", "-c", etc, "-e",
		"smtpd_recipient_restrictions = check_recipient_access texthash:"+filepath.Join(etc, "closed")+", permit_mynetworks, reject_unauth_destination").CombinedOutput(); err != nil {
		t.Fatalf("postconf: %v\n%s", err, out)
	}
	if out, err := exec.Command("postfix", "-c", etc, "reload").CombinedOutput(); err != nil {
		t.Fatalf("postfix reload: %v\n%s", err, out)
	}
	var replies []string
	for i := 0; ; i++ {
		c := dial(t, g.addr)
		c.must("EHLO client.example.org", 250)
		c.must("MAIL FROM:<sender@example.org>", 250)
		_, text := c.cmd("RCPT TO:<carol@example.com>")
		c.quitAndWait()
		if len(replies) == 0 || replies[len(replies)-1] != text {
			replies = append(replies, text)
		}
		if strings.HasPrefix(text, "554 5.7.1 ") && strings.Contains(text, "carol is closed") {
			t.Logf("after the reload: %q", replies)
			return
		}
		if i > 50 { // many times max_age
			t.Fatalf("the reloaded restriction never reached a client: %q", replies)
		}
		time.Sleep(100 * time.Millisecond) // pacing a poll, not a correctness wait
	}
}

// upstream.pool.enabled: false gives every client session an MTA
// connection of its own; enabled (the default), one connection carries
// them all.
func TestPoolEnabledFalse(t *testing.T) {
	m := startTestMTA(t, "postfix")
	for _, tc := range []struct {
		pool string
		want string // the MAIL counts Postfix logs at disconnect
	}{
		{"  pool:\n    enabled: false\n", "1 1 1"},
		{"", "3"},
	} {
		before := len(m.log())
		g := gateFor(t, m, tc.pool, "")
		for i := 0; i < 3; i++ {
			if err := probe(g.addr); err != nil {
				t.Fatal(err)
			}
		}
		g.cmd.Process.Signal(syscall.SIGTERM) // the pool says QUIT
		err := <-g.done
		g.done <- err // for the cleanup
		mailRe := regexp.MustCompile(`disconnect from .* mail=(\d+) `)
		var got []string
		for i := 0; ; i++ {
			got = got[:0]
			for _, mm := range mailRe.FindAllStringSubmatch(m.log()[before:], -1) {
				got = append(got, mm[1])
			}
			if strings.Join(got, " ") == tc.want || i > 200 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("pool %q: MTA connections carried %q messages, want %q", tc.pool, got, tc.want)
		}
	}
}
