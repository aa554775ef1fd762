package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a certificate and key for gw.example.com.
func selfSigned(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gw.example.com"},
		DNSNames:     []string{"gw.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, key
}

type authGate struct {
	*gate
	mx, submission, submissions string
}

// startAuthGate runs smtpgate with an MX listener (STARTTLS), a submission
// listener (587 style) and a submissions listener (465 style), users alice
// and bob, and a sender login map.
func startAuthGate(t *testing.T, extra string) *authGate {
	t.Helper()
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	hash := func(pw string) string {
		// Cost 4: the race-enabled binary makes bcrypt slow.
		cmd := exec.Command(binary, "passwd", "-cost", "4")
		cmd.Stdin = strings.NewReader(pw + "\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("smtpgate passwd: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	users := filepath.Join(dir, "users")
	os.WriteFile(users, []byte("alice:"+hash("alice-secret")+"\nbob:"+hash("bob-secret")+"\n"), 0o600)
	maps := filepath.Join(dir, "sender_login_maps")
	os.WriteFile(maps, []byte("alice@example.com alice\nbob@example.com bob\npostmaster@example.com alice, bob\n"), 0o644)
	a := &authGate{
		mx:          fmt.Sprintf("127.0.0.1:%d", freePort()),
		submission:  fmt.Sprintf("127.0.0.1:%d", freePort()),
		submissions: fmt.Sprintf("127.0.0.1:%d", freePort()),
	}
	listen := fmt.Sprintf("  - address: %s\n    tls: starttls\n  - address: %s\n    mode: submission\n    tls: starttls\n  - address: %s\n    mode: submissions\n", a.mx, a.submission, a.submissions)
	a.gate = startGateListen(t, listen, fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\nauth:\n  users_file: %s\n  sender_login_maps: %s\n%s", cert, key, users, maps, extra))
	return a
}

func TestAuthWithSwaksInFrontOfPostfix(t *testing.T) {
	mta.clearMailboxes()
	g := startAuthGate(t, "")
	tests := []struct {
		name   string
		args   []string
		ok     bool
		expect string
	}{
		{"PLAIN over STARTTLS, own address", []string{"--server", g.submission, "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-secret", "--from", "alice@example.com", "--to", "bob@example.com"}, true, "250 2.0.0 Ok: queued as"},
		{"LOGIN over implicit TLS, own address", []string{"--server", g.submissions, "--tlsc", "--auth", "LOGIN", "--auth-user", "bob", "--auth-password", "bob-secret", "--from", "bob@example.com", "--to", "alice@example.com"}, true, "250 2.0.0 Ok: queued as"},
		{"someone else's address", []string{"--server", g.submission, "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-secret", "--from", "bob@example.com", "--to", "carol@example.com"}, false, "553 5.7.1 <bob@example.com>: Sender address rejected: not owned by user alice"},
		{"no login, our domain, on port 25", []string{"--server", g.mx, "--from", "alice@example.com", "--to", "carol@example.com"}, false, "553 5.7.1 <alice@example.com>: Sender address rejected: not logged in"},
		{"authenticated relay to a foreign domain", []string{"--server", g.mx, "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-secret", "--from", "alice@example.com", "--to", "friend@example.net"}, true, "250 2.0.0 Ok: queued as"},
		{"unauthenticated relay", []string{"--server", g.mx, "--from", "someone@example.org", "--to", "friend@example.net"}, false, "554 5.7.1 <friend@example.net>: Relay access denied"},
		{"wrong password", []string{"--server", g.submission, "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "wrong", "--from", "alice@example.com", "--to", "bob@example.com"}, false, "535 5.7.8 Authentication credentials invalid"},
		{"submission without login", []string{"--server", g.submission, "--tls", "--from", "alice@example.com", "--to", "bob@example.com"}, false, "530 5.7.0 Authentication required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := swaks(t, "", tt.args...)
			if (err == nil) != tt.ok {
				t.Fatalf("swaks ok=%v, want %v:\n%s", err == nil, tt.ok, out)
			}
			if !strings.Contains(out, tt.expect) {
				t.Fatalf("transcript lacks %q:\n%s", tt.expect, out)
			}
			if strings.Contains(out, "alice-secret") && strings.Contains(g.log.String(), "alice-secret") {
				t.Fatalf("the password reached smtpgate's log")
			}
		})
	}
	mta.settle(t)
	if n := len(mta.mailbox("bob")); n != 1 {
		t.Errorf("bob has %d messages, want 1 (alice's)", n)
	}
	if n := len(mta.mailbox("alice")); n != 1 {
		t.Errorf("alice has %d messages, want 1 (bob's)", n)
	}
	if n := len(mta.mailbox("carol")); n != 0 {
		t.Errorf("carol has %d messages, want 0", n)
	}
	// The login reached the MTA (XCLIENT LOGIN=) and our Received: says
	// ESMTPSA.
	msgs := mta.messages(t, "bob")
	if len(msgs) == 1 && !strings.Contains(msgs[0], "with ESMTPSA id") {
		t.Errorf("Received: does not say ESMTPSA:\n%s", msgs[0])
	}
	log, _ := os.ReadFile(filepath.Join(mta.dir, "maillog"))
	if !strings.Contains(string(log), "sasl_username=alice") {
		t.Errorf("Postfix did not see the login via XCLIENT LOGIN=")
	}
	if !strings.Contains(string(log), "to=<friend@example.net>") {
		t.Errorf("the authenticated relay did not reach the MTA")
	}
	if strings.Contains(g.log.String(), "secret") {
		t.Errorf("a password reached smtpgate's log")
	}
}

func TestAuthConversation(t *testing.T) {
	g := startAuthGate(t, "")
	b64 := base64.StdEncoding.EncodeToString

	// Port 25 without TLS: AUTH is not offered, and refused if tried.
	c := dial(t, g.mx)
	if ehlo := c.must("EHLO client.example.org", 250); strings.Contains(ehlo, "AUTH") {
		t.Errorf("AUTH advertised before TLS:\n%s", ehlo)
	}
	if code, text := c.cmd("AUTH PLAIN " + b64([]byte("\x00alice\x00alice-secret"))); code != 538 || !strings.Contains(text, "5.7.11") {
		t.Errorf("AUTH before TLS: want 538 5.7.11, got %q", text)
	}

	tc := dialTLS(t, g.submissions)
	if ehlo := tc.must("EHLO client.example.org", 250); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("AUTH not advertised over TLS:\n%s", ehlo)
	}
	// LOGIN, step by step, with a "*" cancel first.
	if code, text := tc.cmd("AUTH LOGIN"); code != 334 || !strings.Contains(text, b64([]byte("Username:"))) {
		t.Fatalf("AUTH LOGIN: %q", text)
	}
	if code, text := tc.cmd("*"); code != 501 {
		t.Errorf("cancel: want 501, got %q", text)
	}
	// Unknown mechanism.
	if code, text := tc.cmd("AUTH CRAM-MD5"); code != 504 || !strings.Contains(text, "5.5.4") {
		t.Errorf("unknown mechanism: want 504 5.5.4, got %q", text)
	}
	// Bad base64.
	if code, _ := tc.cmd("AUTH PLAIN !!!"); code/100 != 5 && code/100 != 4 {
		t.Errorf("bad base64: want an error, got %d", code)
	}
	// LOGIN with the user name as initial response.
	if code, text := tc.cmd("AUTH LOGIN " + b64([]byte("alice"))); code != 334 || !strings.Contains(text, b64([]byte("Password:"))) {
		t.Fatalf("AUTH LOGIN with initial response: %q", text)
	}
	tc.must(b64([]byte("alice-secret")), 235)
	// AUTH again: already authenticated.
	if code, _ := tc.cmd("AUTH PLAIN " + b64([]byte("\x00alice\x00alice-secret"))); code != 503 {
		t.Errorf("second AUTH: want 503, got %d", code)
	}
	tc.must("MAIL FROM:<alice@example.com>", 250)
	tc.must("RCPT TO:<bob@example.com>", 250)
	tc.must("RSET", 250)

	// AUTH inside a transaction: 503 5.5.1.
	t2 := dialTLS(t, g.submissions)
	t2.must("EHLO client.example.org", 250)
	// PLAIN with "=" (empty initial response) asks for the response.
	if code, text := t2.cmd("AUTH PLAIN ="); code != 501 || !strings.Contains(text, "5.5.2") {
		t.Errorf("AUTH PLAIN = (an empty response): want 501 5.5.2, got %q", text)
	}
	t2.must("MAIL FROM:<someone@example.org>", 530)

	// Port 25 after STARTTLS: AUTH inside a transaction is 503 5.5.1
	// (RFC 4954 §4).
	s := dial(t, g.mx)
	s.must("EHLO client.example.org", 250)
	s.starttls()
	s.must("EHLO client.example.org", 250)
	s.must("MAIL FROM:<someone@example.org>", 250)
	if code, text := s.cmd("AUTH PLAIN " + b64([]byte("\x00alice\x00alice-secret"))); code != 503 || !strings.Contains(text, "5.5.1") {
		t.Errorf("AUTH in a transaction: want 503 5.5.1, got %q", text)
	}
}

func TestAuthLockout(t *testing.T) {
	g := startAuthGate(t, "  max_failures_per_session: 3\n  failures_per_ip: 4\n  failure_window: 10m\n")
	b64 := base64.StdEncoding.EncodeToString
	try := func(c *client, pw string) (int, string) {
		return c.cmd("AUTH PLAIN " + b64([]byte("\x00alice\x00"+pw)))
	}
	c := dialTLS(t, g.submissions)
	c.must("EHLO client.example.org", 250)
	for i := 0; i < 2; i++ {
		if code, text := try(c, "wrong"); code != 535 || !strings.Contains(text, "5.7.8") {
			t.Fatalf("failure %d: want 535 5.7.8, got %q", i+1, text)
		}
	}
	// The third failure in one session closes it.
	if code, text := try(c, "wrong"); code != 421 || !strings.Contains(text, "4.7.0") {
		t.Fatalf("third failure: want 421 4.7.0, got %q", text)
	}
	if code, _ := c.reply(); code != 0 {
		t.Errorf("connection still open after 421")
	}
	// One more failure from this address reaches failures_per_ip...
	c2 := dialTLS(t, g.submissions)
	c2.must("EHLO client.example.org", 250)
	try(c2, "wrong")
	// ...and now even the right password is refused for the window.
	if code, text := try(c2, "alice-secret"); code != 454 || !strings.Contains(text, "4.7.0") {
		t.Fatalf("locked out: want 454 4.7.0, got %q", text)
	}
	waitLog(t, g.gate, "auth locked out")
}

// dialTLS connects with implicit TLS.
func dialTLS(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: newReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// starttls upgrades the connection (RFC 3207).
func (c *client) starttls() {
	c.t.Helper()
	c.must("STARTTLS", 220)
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = newReader(tc)
}

// The visible From: of an authenticated submission must be the user's too
// (sender_header_mismatch): warn by default, refused in enforce mode.
func TestSenderHeaderMismatch(t *testing.T) {
	for _, mode := range []string{"warn", "enforce"} {
		t.Run(mode, func(t *testing.T) {
			mta.clearMailboxes()
			g := startAuthGate(t, "checks:\n  sender_header_mismatch:\n    mode: "+mode+"\n")
			out, err := swaks(t, "", "--server", g.submission, "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-secret",
				"--from", "alice@example.com", "--to", "carol@example.com", "--header", "From: The Boss <bob@example.com>")
			if mode == "warn" {
				if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as") {
					t.Fatalf("warn mode: want delivery, got %v:\n%s", err, out)
				}
				waitLog(t, g.gate, `msg="would reject"`)
				if !strings.Contains(g.log.String(), "check=sender_header_mismatch") {
					t.Errorf("no would-reject line for sender_header_mismatch")
				}
				mta.settle(t)
				if n := len(mta.mailbox("carol")); n != 1 {
					t.Errorf("carol has %d messages, want 1", n)
				}
				return
			}
			if err == nil || !strings.Contains(out, "550 5.7.1 <bob@example.com>: From: header address rejected: not owned by user alice") {
				t.Fatalf("enforce mode: want 550 5.7.1 at end of DATA, got %v:\n%s", err, out)
			}
			mta.settle(t)
			if n := len(mta.mailbox("carol")); n != 0 {
				t.Errorf("carol has %d messages, want 0", n)
			}
		})
	}
}
