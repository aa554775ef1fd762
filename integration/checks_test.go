package integration

// End-to-end tests of every check of the chain (package check): the built binary in
// front of the real Postfix, driven by swaks (and the raw client where
// swaks cannot say it). For each check one refused case (exact reply code
// and enhanced code, what Postfix got: nothing) and one accepted case
// (delivered to the maildir).

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tokenSeq makes unique tokens, so that a test finds its own messages and
// its own addresses in Postfix's log.
var tokenSeq int

func newToken(prefix string) string {
	tokenSeq++
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, tokenSeq)
}

// msg is one swaks run.
type msg struct {
	local string // client source address; default 127.0.0.2
	helo  string // default client.example.org
	from  string // "<>" for the null sender
	to    string
	// data is the whole message (LF line ends); empty means swaks's
	// default message with Subject: token.
	data  string
	token string
	extra []string
}

// send runs swaks for m and returns its transcript and whether swaks
// succeeded.
func (m msg) send(t *testing.T, g *gate) (string, bool) {
	t.Helper()
	local, helo := m.local, m.helo
	if local == "" {
		local = "127.0.0.2"
	}
	if helo == "" {
		helo = "client.example.org"
	}
	args := []string{"--local-interface", local, "--helo", helo, "--from", m.from, "--to", m.to}
	if m.data != "" {
		f := filepath.Join(t.TempDir(), "data.eml")
		if err := os.WriteFile(f, []byte(m.data), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--data", f)
	} else {
		args = append(args, "--header", "Subject: "+m.token)
	}
	args = append(args, m.extra...)
	out, err := swaks(t, g.addr, args...)
	t.Logf("swaks %s:\n%s", strings.Join(args, " "), out)
	return out, err == nil
}

// mustAccept sends m and requires swaks to succeed.
func (m msg) mustAccept(t *testing.T, g *gate) string {
	t.Helper()
	out, ok := m.send(t, g)
	if !ok {
		t.Fatalf("swaks failed, want the message accepted:\n%s", out)
	}
	return out
}

// mustRefuse sends m, requires swaks to fail with the reply line want
// (e.g. "<** 554 5.7.1 ...") after the command cmd ("RCPT TO", "MAIL
// FROM", "DATA" or the end of DATA, "."), and returns the transcript.
func (m msg) mustRefuse(t *testing.T, g *gate, cmd, want string) string {
	t.Helper()
	out, ok := m.send(t, g)
	if ok {
		t.Fatalf("swaks succeeded, want %q:\n%s", want, out)
	}
	if got := replyAfter(out, cmd); !strings.HasPrefix(got, want) {
		t.Fatalf("reply to %s: want %q, got %q; transcript:\n%s", cmd, want, got, out)
	}
	return out
}

// replyAfter returns the first server reply line that follows the client
// line starting with cmd in a swaks transcript ("" if none). For ".", the
// reply to the end of data.
func replyAfter(out, cmd string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "-> "+cmd) {
			continue
		}
		if cmd == "." && l != "-> ." {
			continue
		}
		for _, r := range lines[i+1:] {
			r = strings.TrimSpace(r)
			if strings.HasPrefix(r, "<-") || strings.HasPrefix(r, "<**") {
				return r
			}
		}
		return ""
	}
	return ""
}

// delivered counts the messages in user's mailbox that contain token.
func delivered(t *testing.T, user, token string) int {
	t.Helper()
	n := 0
	for _, m := range mta.messages(t, user) {
		if strings.Contains(m, token) {
			n++
		}
	}
	return n
}

// mtaLog returns Postfix's log.
func mtaLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mta.dir, "maillog"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mtaLogCount counts Postfix log lines naming s, once postlogd wrote all
// that was logged before (mtaLogSync).
func mtaLogCount(t *testing.T, s string) int {
	t.Helper()
	return strings.Count(mtaLogSync(t), s)
}

// mtaLogSync returns Postfix's log once it holds every line logged
// before the call: it has Postfix log a marker (a recipient refused on a
// connection of our own) and polls for it. Postfix logs a refusal before
// it answers, and postlogd writes its socket's datagrams in order.
func mtaLogSync(t *testing.T) string {
	t.Helper()
	marker := newToken("logsync")
	c := dial(t, mta.addr())
	c.must("EHLO logsync.example.org", 250)
	c.must("MAIL FROM:<>", 250)
	c.cmd("RCPT TO:<" + marker + "@" + domain + ">")
	c.cmd("QUIT")
	for i := 0; ; i++ {
		if log := mtaLog(t); strings.Contains(log, marker) {
			return log
		}
		if i > 400 {
			t.Fatalf("Postfix did not log the marker %s", marker)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// decision returns the smtpgate log line that contains every part,
// waiting briefly for it; it fails the test if there is none. Every
// decision line must carry the stage=, check=, mode= and reply= keys.
func decision(t *testing.T, g *gate, parts ...string) string {
	t.Helper()
	for i := 0; ; i++ {
		for _, l := range strings.Split(g.log.String(), "\n") {
			ok := true
			for _, p := range parts {
				if !strings.Contains(l, p) {
					ok = false
					break
				}
			}
			if ok {
				for _, k := range []string{" stage=", " check=", " mode=", " reply="} {
					if !strings.Contains(l, k) {
						t.Errorf("decision log line lacks %q: %s", strings.TrimSpace(k), l)
					}
				}
				return l
			}
		}
		if i > 40 {
			t.Fatalf("no smtpgate log line with %q:\n%s", parts, g.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// noDecision fails if a log line contains every part.
func noDecision(t *testing.T, g *gate, parts ...string) {
	t.Helper()
	for _, l := range strings.Split(g.log.String(), "\n") {
		ok := l != ""
		for _, p := range parts {
			if !strings.Contains(l, p) {
				ok = false
				break
			}
		}
		if ok {
			t.Errorf("unexpected smtpgate log line: %s", l)
		}
	}
}

func TestCheckUnauthDestination(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	foreign := newToken("relay") + "@example.net"
	msg{from: "someone@example.org", to: foreign}.mustRefuse(t, g, "RCPT TO", "<** 554 5.7.1 <"+foreign+">: Relay access denied")
	decision(t, g, "msg=reject", "stage=rcpt", "check=unauth_destination", "mode=enforce", `reply="554 5.7.1 <`+foreign+`>: Relay access denied"`, "rcpt="+foreign)

	tok := newToken("local")
	msg{from: "someone@example.org", to: "alice@example.com", token: tok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", tok); n != 1 {
		t.Errorf("alice has %d copies of the accepted message, want 1", n)
	}
	if n := mtaLogCount(t, foreign); n != 0 {
		t.Errorf("Postfix saw the refused foreign recipient %s (%d log lines)", foreign, n)
	}
}

// Every encoding of a foreign recipient is refused with 5xx by smtpgate
// and none reaches Postfix.
func TestCheckRelayBattery(t *testing.T) {
	mta.clearMailboxes()
	// One session tries every encoding: lift the error limit (limits.max_errors)
	// that would otherwise close it after 10 refusals.
	g := startGate(t, "limits:\n  max_errors: 100\n")
	tok := newToken("rb")
	encodings := []string{
		"%s@example.net",
		"%s%%example.net@example.com",
		"example.net!%s@example.com",
		`"%s@example.net"@example.com`,
		"@example.com:%s@example.net",
		"@example.com,@example.com:%s@example.net",
		"%s@example.net.",
		"%s@EXAMPLE.NET",
		"%s@Example.Net",
		"%s@[192.0.2.1]",
		"%s@[127.0.0.1]",
		"%s@[IPv6:2001:db8::1]",
		"%s@example.com.example.net",
		"%s@sub.example.com",
		"%s%%example.net%%example.com@example.com",
		`"%s%%example.net"@example.com`,
		`"example.net!%s"@example.com`,
		"%s%%example.net@EXAMPLE.COM",
		"@EXAMPLE.COM:%s%%example.net@example.com",
		"%s@example.net@example.com",
		`"%s"@example.net`,
		"%s@127.0.0.1",
		"%s@xn--exmple-cua.net",
		"%s@example.net:25",
		"%s@example.com@example.net",
	}
	c := dialFrom(t, g.addr, "127.0.0.2")
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<sender@example.org>", 250)
	var addrs []string
	for i, enc := range encodings {
		local := fmt.Sprintf("%s-%02d", tok, i)
		addr := fmt.Sprintf(enc, local)
		addrs = append(addrs, local)
		code, text := c.cmd("RCPT TO:<" + addr + ">")
		t.Logf("RCPT TO:<%s> -> %s", addr, strings.TrimSpace(text))
		if code/100 != 5 {
			t.Errorf("RCPT TO:<%s>: want 5xx, got %q", addr, text)
		}
	}
	// No recipient was accepted: there is nothing to send.
	if code, text := c.cmd("DATA"); code/100 == 3 || code/100 == 2 {
		t.Errorf("DATA after only refused recipients: got %q", text)
	}
	// The session is still usable for a local recipient.
	c.must("RSET", 250)
	c.must("MAIL FROM:<sender@example.org>", 250)
	c.must("RCPT TO:<alice@example.com>", 250)
	c.must("DATA", 354)
	okTok := newToken("battery-ok")
	c.send("Subject: " + okTok + "\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	c.must("QUIT", 221)
	mta.settle(t)
	if n := delivered(t, "alice", okTok); n != 1 {
		t.Errorf("alice has %d copies of the message after the battery, want 1", n)
	}
	log := mtaLogSync(t)
	for _, a := range addrs {
		if strings.Contains(log, a) {
			t.Errorf("Postfix saw recipient %s", a)
		}
	}
	if n := strings.Count(g.log.String(), "check=unauth_destination"); n < 15 {
		t.Errorf("only %d unauth_destination decisions logged for %d encodings", n, len(encodings))
	}
}

// A client in relay.networks may relay: smtpgate forwards the foreign
// RCPT and passes Postfix's 250; a client outside still gets 554.
func TestCheckUnauthDestinationRelayNetworks(t *testing.T) {
	g := startGate(t, "relay:\n  networks: [127.0.0.4/32]\n")
	foreign := newToken("relayok") + "@example.net"
	c := dialFrom(t, g.addr, "127.0.0.4")
	c.must("EHLO internal.example.com", 250)
	c.must("MAIL FROM:<app@example.org>", 250)
	c.must("RCPT TO:<"+foreign+">", 250)
	c.must("RSET", 250) // no DATA: Postfix would try to deliver to example.net
	c.must("QUIT", 221)
	noDecision(t, g, "check=unauth_destination", "msg=reject")

	other := dialFrom(t, g.addr, "127.0.0.2")
	other.must("EHLO client.example.org", 250)
	other.must("MAIL FROM:<app@example.org>", 250)
	text := other.must("RCPT TO:<"+foreign+">", 554)
	if !strings.HasPrefix(text, "554 5.7.1 <"+foreign+">: Relay access denied") {
		t.Errorf("client outside relay.networks: got %q", text)
	}
	other.must("QUIT", 221)
	decision(t, g, "check=unauth_destination", "client=127.0.0.2", `reply="554 5.7.1`)
}

func TestCheckUnknownRecipientFiles(t *testing.T) {
	mta.clearMailboxes()
	list := filepath.Join(t.TempDir(), "recipients")
	if err := os.WriteFile(list, []byte("alice@example.com\nbob@example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := startGate(t, "recipients:\n  files: ["+list+"]\n")
	refused := newToken("carol")
	msg{from: "someone@example.org", to: "carol@example.com", token: refused}.mustRefuse(t, g, "RCPT TO",
		"<** 550 5.1.1 <carol@example.com>: Recipient address rejected: User unknown")
	// smtpgate refused it itself, from the list, not Postfix.
	decision(t, g, "msg=reject", "stage=rcpt", "check=unknown_recipient", "mode=enforce", `reply="550 5.1.1 <carol@example.com>: Recipient address rejected: User unknown"`, "not in recipients.files")
	noDecision(t, g, "check=upstream")

	ok := newToken("bob")
	msg{from: "someone@example.org", to: "bob@example.com", token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "bob", ok); n != 1 {
		t.Errorf("bob has %d copies, want 1", n)
	}
	if n := delivered(t, "carol", refused); n != 0 {
		t.Errorf("carol got the refused message")
	}
}

func TestCheckUnknownRecipientVerifyUpstream(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "recipients:\n  verify: upstream\n")
	nobody := newToken("nobody") + "@example.com"
	want := "<** 550 5.1.1 <" + nobody + ">: Recipient address rejected: User unknown"
	msg{from: "someone@example.org", to: nobody, token: newToken("n1")}.mustRefuse(t, g, "RCPT TO", want)
	decision(t, g, "msg=reject", "stage=rcpt", "check=unknown_recipient", "rcpt="+nobody, "evidence=\"probe: 550")
	noDecision(t, g, "check=upstream")
	// The probe reached Postfix once.
	for i := 0; mtaLogCount(t, "<"+nobody+">") < 1; i++ {
		if i > 10 {
			t.Fatalf("Postfix never saw the probe for %s", nobody)
		}
	}
	probes := mtaLogCount(t, "<"+nobody+">")

	// The second attempt is answered from the cache: no new probe.
	msg{from: "someone@example.org", to: nobody, token: newToken("n2")}.mustRefuse(t, g, "RCPT TO", want)
	decision(t, g, "check=unknown_recipient", "rcpt="+nobody, "cached probe")
	if n := mtaLogCount(t, "<"+nobody+">"); n != probes {
		t.Errorf("Postfix log names %s %d times after the cached answer, want %d (no second probe)", nobody, n, probes)
	}

	ok := newToken("alice")
	msg{from: "someone@example.org", to: "alice@example.com", token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("alice has %d copies, want 1", n)
	}
}

func TestCheckNonFQDNSender(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	tok := newToken("nonfqdn")
	out := msg{from: "user@localdomain", to: "alice@example.com", token: tok}.mustRefuse(t, g, "RCPT TO",
		"<** 504 5.5.2 <user@localdomain>: Sender address rejected: need fully-qualified address")
	// delay_reject (the default): MAIL is accepted, the refusal comes at RCPT.
	if r := replyAfter(out, "MAIL FROM"); !strings.HasPrefix(r, "<-  250") {
		t.Errorf("MAIL FROM under delay_reject: want 250, got %q", r)
	}
	decision(t, g, "msg=reject", "stage=mail", "check=non_fqdn_sender", "mode=enforce", `reply="504 5.5.2 <user@localdomain>`, "rcpt=alice@example.com")

	// The null sender is always allowed.
	ok := newToken("null")
	msg{from: "<>", to: "alice@example.com", token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("null-sender message: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", tok); n != 0 {
		t.Errorf("the refused message was delivered")
	}
}

func TestCheckNonFQDNSenderWithoutDelayReject(t *testing.T) {
	g := startGate(t, "delay_reject: false\n")
	msg{from: "user@localdomain", to: "alice@example.com", token: newToken("nodelay")}.mustRefuse(t, g, "MAIL FROM",
		"<** 504 5.5.2 <user@localdomain>: Sender address rejected: need fully-qualified address")
	decision(t, g, "msg=reject", "stage=mail", "check=non_fqdn_sender")
}

func TestCheckUnknownSenderDomain(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	for _, tc := range []struct{ from, want string }{
		{"user@nx.example", "<** 550 5.1.8 <user@nx.example>: Sender address rejected: Domain not found"},
		{"user@nodata.example", "<** 550 5.1.8 <user@nodata.example>: Sender address rejected: Domain not found"},
		{"user@nullmx.example", "<** 550 5.1.8 <user@nullmx.example>: Sender address rejected: Domain does not accept mail"},
		{"user@servfail.example", "<** 450 4.1.8 <user@servfail.example>: Sender address rejected: Domain not found (DNS temporary failure)"},
	} {
		t.Run(tc.from, func(t *testing.T) {
			tok := newToken("usd")
			msg{from: tc.from, to: "alice@example.com", token: tok}.mustRefuse(t, g, "RCPT TO", tc.want)
			reply := strings.TrimPrefix(tc.want, "<** ")
			decision(t, g, "stage=mail", "check=unknown_sender_domain", "mode=enforce", `reply="`+reply+`"`)
			mta.settle(t)
			if n := delivered(t, "alice", tok); n != 0 {
				t.Errorf("refused message delivered")
			}
		})
	}
	ok := newToken("aonly")
	msg{from: "user@aonly.example", to: "alice@example.com", token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("A-only sender domain: alice has %d copies, want 1", n)
	}
}

func TestCheckOwnDomainForgery(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "relay:\n  networks: [127.0.0.4/32]\n")
	refused := newToken("ceo")
	msg{from: "ceo@example.com", to: "alice@example.com", token: refused}.mustRefuse(t, g, "RCPT TO",
		"<** 553 5.7.1 <ceo@example.com>: Sender address rejected: not logged in")
	decision(t, g, "msg=reject", "stage=mail", "check=own_domain_forgery", "mode=enforce", `reply="553 5.7.1 <ceo@example.com>: Sender address rejected: not logged in"`)
	// Relay networks are not exempt unless configured.
	msg{local: "127.0.0.4", from: "ceo@example.com", to: "alice@example.com", token: refused}.mustRefuse(t, g, "RCPT TO",
		"<** 553 5.7.1 <ceo@example.com>: Sender address rejected: not logged in")

	g2 := startGate(t, "relay:\n  networks: [127.0.0.4/32]\nchecks:\n  own_domain_forgery:\n    exempt_relay_networks: true\n")
	ok := newToken("internal")
	msg{local: "127.0.0.4", helo: "internal.example.org", from: "ceo@example.com", to: "alice@example.com", token: ok}.mustAccept(t, g2)
	// Still refused from outside the relay networks.
	msg{from: "ceo@example.com", to: "alice@example.com", token: refused}.mustRefuse(t, g2, "RCPT TO",
		"<** 553 5.7.1 <ceo@example.com>: Sender address rejected: not logged in")
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("exempt relay-network client: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", refused); n != 0 {
		t.Errorf("forged own-domain sender delivered %d times", n)
	}
}

// nonLoopbackAddr returns an IPv4 address of this host that is not
// loopback: clients from loopback are "us" to forged_helo.
func nonLoopbackAddr() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip := n.IP.To4(); ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip.String()
			}
		}
	}
	return ""
}

func TestCheckForgedHelo(t *testing.T) {
	mta.clearMailboxes()
	ext := nonLoopbackAddr()
	if ext == "" {
		// Every loopback client is exempt (check/helo: it is us), so
		// without a non-loopback address the check cannot be reached
		// end to end; check/helo/helo_test.go covers it.
		t.Skip("no non-loopback IPv4 address on this host to connect from")
	}
	g := startGate(t, "")
	for _, helo := range []string{"gw.example.com", "example.com", "[127.0.0.1]"} {
		tok := newToken("forged")
		msg{local: ext, helo: helo, from: "user@aonly.example", to: "alice@example.com", token: tok}.mustRefuse(t, g, "RCPT TO",
			"<** 550 5.7.1 <"+helo+">: Helo command rejected: forged hostname (that is us)")
		decision(t, g, "msg=reject", "stage=helo", "check=forged_helo", "mode=enforce", "client="+ext, "helo="+helo)
	}
	// The same client with its own name is accepted.
	ok := newToken("helo-ok")
	msg{local: ext, helo: "client.example.org", from: "user@aonly.example", to: "alice@example.com", token: ok}.mustAccept(t, g)
	// Loopback clients are us: they may say our name.
	lo := newToken("helo-lo")
	msg{local: "127.0.0.2", helo: "gw.example.com", from: "user@aonly.example", to: "alice@example.com", token: lo}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("honest HELO: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", lo); n != 1 {
		t.Errorf("loopback client with our name: alice has %d copies, want 1", n)
	}
	for _, m := range mta.messages(t, "alice") {
		if strings.Contains(m, "forged-") {
			t.Errorf("a forged-HELO message was delivered:\n%s", m)
		}
	}
}

func TestCheckHeloSyntaxEnforce(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "checks:\n  invalid_helo:\n    mode: enforce\n  non_fqdn_helo:\n    mode: enforce\n")
	bad := newToken("badhelo")
	msg{helo: "bad!host.example", from: "someone@example.org", to: "alice@example.com", token: bad}.mustRefuse(t, g, "RCPT TO",
		"<** 501 5.5.2 <bad!host.example>: Helo command rejected: Invalid name")
	decision(t, g, "msg=reject", "stage=helo", "check=invalid_helo", "mode=enforce", `reply="501 5.5.2`)
	msg{helo: "desktop1234", from: "someone@example.org", to: "alice@example.com", token: bad}.mustRefuse(t, g, "RCPT TO",
		"<** 504 5.5.2 <desktop1234>: Helo command rejected: need fully-qualified hostname")
	decision(t, g, "msg=reject", "stage=helo", "check=non_fqdn_helo", "mode=enforce", `reply="504 5.5.2 <desktop1234>`)

	ok := newToken("goodhelo")
	msg{helo: "client.example.org", from: "someone@example.org", to: "alice@example.com", token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("valid HELO: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", bad); n != 0 {
		t.Errorf("bad-HELO message delivered %d times", n)
	}
}

// invalid_helo and non_fqdn_helo default to warn: logged, mail goes
// through.
func TestCheckHeloSyntaxWarnDefault(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	t1, t2 := newToken("warnhelo"), newToken("warnhelo")
	msg{helo: "desktop1234", from: "someone@example.org", to: "alice@example.com", token: t1}.mustAccept(t, g)
	decision(t, g, `msg="would reject"`, "stage=helo", "check=non_fqdn_helo", "mode=warn", `reply="504 5.5.2 <desktop1234>: Helo command rejected: need fully-qualified hostname"`)
	msg{helo: "bad!host.example", from: "someone@example.org", to: "alice@example.com", token: t2}.mustAccept(t, g)
	decision(t, g, `msg="would reject"`, "stage=helo", "check=invalid_helo", "mode=warn", `reply="501 5.5.2 <bad!host.example>: Helo command rejected: Invalid name"`)
	mta.settle(t)
	if delivered(t, "alice", t1) != 1 || delivered(t, "alice", t2) != 1 {
		t.Errorf("warn mode: messages not delivered (%d, %d)", delivered(t, "alice", t1), delivered(t, "alice", t2))
	}
}

func TestCheckDNSBL(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "checks:\n  dnsbl:\n    zones: [{zone: bl.test}]\n")
	listed := newToken("listed")
	msg{local: "127.0.0.3", from: "someone@example.org", to: "alice@example.com", token: listed}.mustRefuse(t, g, "RCPT TO",
		"<** 554 5.7.1 Service unavailable; client [127.0.0.3] blocked using bl.test")
	decision(t, g, "msg=reject", "stage=connect", "check=dnsbl", "mode=enforce", "client=127.0.0.3", "bl.test")

	ok := newToken("clean")
	msg{local: "127.0.0.2", from: "someone@example.org", to: "alice@example.com", token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("unlisted client: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", listed); n != 0 {
		t.Errorf("listed client's message delivered")
	}
}

// Warn mode in general: the check logs "would reject" with the reply it
// would have sent and the mail goes through.
func TestCheckWarnMode(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "checks:\n  dnsbl:\n    mode: warn\n    zones: [{zone: bl.test}]\n")
	tok := newToken("dnsblwarn")
	msg{local: "127.0.0.3", from: "someone@example.org", to: "alice@example.com", token: tok}.mustAccept(t, g)
	decision(t, g, `msg="would reject"`, "stage=connect", "check=dnsbl", "mode=warn", `reply="554 5.7.1 Service unavailable; client [127.0.0.3] blocked using bl.test"`)
	mta.settle(t)
	if n := delivered(t, "alice", tok); n != 1 {
		t.Errorf("warn mode: alice has %d copies, want 1", n)
	}
}

func contentGate(t *testing.T) *gate {
	return startGate(t, fmt.Sprintf("checks:\n  header_checks:\n    file: %s\n  body_checks:\n    file: %s\n",
		filepath.Join(repoRoot, "examples/header_checks"), filepath.Join(repoRoot, "examples/body_checks")))
}

func TestCheckHeaderChecks(t *testing.T) {
	mta.clearMailboxes()
	g := contentGate(t)
	for _, tc := range []struct {
		name, header, want string
	}{
		{"forged Received", "Received: from example.com (unknown [198.51.100.7])\n\tby mx.example.net with SMTP; Sun, 22 Nov 2026 12:00:00 +0000\n",
			"<** 550 5.7.1 forged client name in Received: header: example.com"},
		{"forged Received HELO", "Received: from mx.example.net (HELO example.com) (198.51.100.7)\n\tby mail.example.net with SMTP; Sun, 22 Nov 2026 12:00:00 +0000\n",
			"<** 550 5.7.1 forged client name in Received: header: example.com"},
		{"forged Message-ID", "Message-ID: <12345@example.com>\n",
			"<** 550 5.7.1 forged domain name in Message-ID: header: example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := newToken("hdr")
			data := tc.header + "From: <someone@example.org>\nTo: <alice@example.com>\nSubject: " + tok + "\n\nbody\n"
			msg{from: "someone@example.org", to: "alice@example.com", data: data, token: tok}.mustRefuse(t, g, ".", tc.want)
			decision(t, g, "msg=reject", "stage=header", "check=header_checks", "mode=enforce", `reply="`+strings.TrimPrefix(tc.want, "<** ")+`"`)
			mta.settle(t)
			if n := delivered(t, "alice", tok); n != 0 {
				t.Errorf("rejected message delivered")
			}
		})
	}

	// A virus-scanner notification is DISCARDed: 250 to the client,
	// nothing delivered, the discard logged.
	virus := newToken("virus")
	data := "From: <scanner@example.org>\nTo: <alice@example.com>\nSubject: Your email contains VIRUSES " + virus + "\n\nwe removed it\n"
	out := msg{from: "scanner@example.org", to: "alice@example.com", data: data, token: virus}.mustAccept(t, g)
	if r := replyAfter(out, "."); !strings.HasPrefix(r, "<-  250") {
		t.Errorf("DISCARD: want 250 to the client, got %q", r)
	}
	decision(t, g, "msg=discard", "check=header_checks", "virus notification")

	// Our own servers' headers pass.
	ok := newToken("clean")
	data = "Received: from mail.example.com (mail.example.com [192.0.2.20])\n\tby mx.example.org with ESMTP; Sun, 22 Nov 2026 12:00:00 +0000\n" +
		"Message-ID: <" + ok + "@mail.example.com>\nFrom: <someone@example.org>\nTo: <alice@example.com>\nSubject: " + ok + "\n\nhello\n"
	msg{from: "someone@example.org", to: "alice@example.com", data: data, token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("clean message: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", virus); n != 0 {
		t.Errorf("discarded virus notification delivered")
	}
}

func TestCheckBodyChecks(t *testing.T) {
	mta.clearMailboxes()
	g := contentGate(t)
	tok := newToken("bounce")
	data := "From: MAILER-DAEMON@example.net\nTo: <alice@example.com>\nSubject: Undelivered Mail " + tok + "\n\n" +
		"This is the mail system.\n\n> Received: from example.com (unknown [198.51.100.7])\n> Message-ID: <999@example.com>\n> Subject: cheap stuff\n"
	msg{from: "<>", to: "alice@example.com", data: data, token: tok}.mustRefuse(t, g, ".",
		"<** 550 5.7.1 forged client name in Received: header: example.com")
	decision(t, g, "msg=reject", "stage=body", "check=body_checks", "mode=enforce", `reply="550 5.7.1 forged client name in Received: header: example.com"`)

	ok := newToken("realbounce")
	data = "From: MAILER-DAEMON@example.net\nTo: <alice@example.com>\nSubject: Undelivered Mail " + ok + "\n\n" +
		"This is the mail system.\n\n> Received: from mail.example.com (mail.example.com [192.0.2.20])\n> Message-ID: <1@mail.example.com>\n"
	msg{from: "<>", to: "alice@example.com", data: data, token: ok}.mustAccept(t, g)
	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("genuine bounce: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", tok); n != 0 {
		t.Errorf("backscatter delivered")
	}
}

func TestCheckSPF(t *testing.T) {
	mta.clearMailboxes()
	// Default: warn.
	g := startGate(t, "")
	warned := newToken("spfwarn")
	msg{from: "user@spffail.example", to: "alice@example.com", token: warned}.mustAccept(t, g)
	decision(t, g, `msg="would reject"`, "stage=mail", "check=spf", "mode=warn", `reply="550 5.7.23 SPF check failed: spffail.example does not designate 127.0.0.2 as permitted sender"`)

	ge := startGate(t, "checks:\n  spf:\n    mode: enforce\n")
	refused := newToken("spffail")
	msg{from: "user@spffail.example", to: "alice@example.com", token: refused}.mustRefuse(t, ge, "RCPT TO",
		"<** 550 5.7.23 SPF check failed: spffail.example does not designate 127.0.0.2 as permitted sender")
	decision(t, ge, "msg=reject", "stage=mail", "check=spf", "mode=enforce", `reply="550 5.7.23`)
	// A pass goes through in enforce mode too.
	pass := newToken("spfpass")
	msg{from: "user@example.org", to: "alice@example.com", token: pass}.mustAccept(t, ge)

	mta.settle(t)
	if n := delivered(t, "alice", warned); n != 1 {
		t.Errorf("SPF fail in warn mode: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", refused); n != 0 {
		t.Errorf("SPF fail in enforce mode delivered")
	}
	if n := delivered(t, "alice", pass); n != 1 {
		t.Errorf("SPF pass in enforce mode: alice has %d copies, want 1", n)
	}
}

// The spf check's result other than fail/temperror goes into a
// Received-SPF: header field (RFC 7208 §9.1) of the delivered message.
func TestCheckSPFReceivedSPFHeader(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	pass := newToken("spfhdr")
	msg{from: "user@example.org", to: "alice@example.com", token: pass}.mustAccept(t, g)
	mta.settle(t)
	var found bool
	for _, m := range mta.messages(t, "alice") {
		if !strings.Contains(m, pass) {
			continue
		}
		found = true
		if !strings.Contains(m, "Received-SPF: pass") {
			t.Errorf("SPF pass message lacks Received-SPF: pass:\n%s", m)
		}
	}
	if !found {
		t.Errorf("SPF pass message not delivered")
	}
}

func TestCheckReplyOverride(t *testing.T) {
	g := startGate(t, "checks:\n  unauth_destination:\n    reply: \"554 5.7.1 Go away\"\n  own_domain_forgery:\n    reply: \"550 5.7.0 Log in first\"\n")
	foreign := newToken("override") + "@example.net"
	msg{from: "someone@example.org", to: foreign, token: newToken("o")}.mustRefuse(t, g, "RCPT TO", "<** 554 5.7.1 Go away")
	decision(t, g, "check=unauth_destination", `reply="554 5.7.1 Go away"`)
	msg{from: "ceo@example.com", to: "alice@example.com", token: newToken("o")}.mustRefuse(t, g, "RCPT TO", "<** 550 5.7.0 Log in first")
	decision(t, g, "check=own_domain_forgery", `reply="550 5.7.0 Log in first"`)
	if n := mtaLogCount(t, foreign); n != 0 {
		t.Errorf("Postfix saw %s", foreign)
	}
}

// Without delay_reject, HELO and connection refusals come at EHLO itself
// (go-smtp opens the session there), and nothing reaches Postfix.
func TestCheckHeloAndDNSBLWithoutDelayReject(t *testing.T) {
	g := startGate(t, "delay_reject: false\nchecks:\n  non_fqdn_helo:\n    mode: enforce\n  dnsbl:\n    zones: [{zone: bl.test}]\n")
	c := dialFrom(t, g.addr, "127.0.0.2")
	code, text := c.cmd("EHLO desktop1234")
	if code != 504 || !strings.HasPrefix(text, "504 5.5.2 <desktop1234>: Helo command rejected: need fully-qualified hostname") {
		t.Errorf("non-FQDN EHLO without delay_reject: got %q", text)
	}
	c.must("EHLO client.example.org", 250)
	c.must("QUIT", 221)
	decision(t, g, "msg=reject", "stage=helo", "check=non_fqdn_helo")

	l := dialFrom(t, g.addr, "127.0.0.3")
	code, text = l.cmd("EHLO client.example.org")
	if code != 554 || !strings.HasPrefix(text, "554 5.7.1 Service unavailable; client [127.0.0.3] blocked using bl.test") {
		t.Errorf("listed client without delay_reject: got %q", text)
	}
	decision(t, g, "msg=reject", "stage=connect", "check=dnsbl", "client=127.0.0.3")
}

func TestCheckOwnDomainHeaderForgery(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "relay:\n  networks: [127.0.0.4/32]\n")
	// The seed attack: a foreign envelope sender, our CEO in From:.
	refused := newToken("hdrceo")
	data := "From: CEO <ceo@example.com>\nTo: <alice@example.com>\nSubject: " + refused + "\n\nwire the money\n"
	want := "<** 550 5.7.1 <ceo@example.com>: From: header address rejected: not logged in"
	msg{from: "x@example.org", to: "alice@example.com", data: data, token: refused}.mustRefuse(t, g, ".", want)
	decision(t, g, "msg=reject", "stage=message", "check=own_domain_header_forgery", "mode=enforce", `reply="`+strings.TrimPrefix(want, "<** ")+`"`)
	// Two From: fields.
	twice := newToken("hdrtwice")
	data = "From: <a@example.org>\nFrom: <ceo@example.com>\nTo: <alice@example.com>\nSubject: " + twice + "\n\nhi\n"
	msg{from: "a@example.org", to: "alice@example.com", data: data, token: twice}.mustRefuse(t, g, ".",
		"<** 550 5.7.1 Message has 2 From: header fields, RFC 5322 allows exactly one")
	// A client in relay.networks may.
	ok := newToken("hdrinternal")
	data = "From: CEO <ceo@example.com>\nTo: <alice@example.com>\nSubject: " + ok + "\n\nhello\n"
	msg{local: "127.0.0.4", helo: "internal.example.org", from: "x@example.org", to: "alice@example.com", data: data, token: ok}.mustAccept(t, g)

	mta.settle(t)
	for _, tok := range []string{refused, twice} {
		if n := delivered(t, "alice", tok); n != 0 {
			t.Errorf("%s: refused message delivered %d times", tok, n)
		}
	}
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("relay-network client: alice has %d copies, want 1", n)
	}
}
