package smtp_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The tests of smtpgate's patches (PATCHES.md 4 and 5).

// refusingListener hands out connections that refuse the first reply
// starting with prefix: the write fails and the connection is closed, as
// smtpgate's protocol guard does.
type refusingListener struct {
	net.Listener
	prefix string
}

func (l refusingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &refusingConn{Conn: c, prefix: l.prefix}, nil
}

type refusingConn struct {
	net.Conn
	prefix string
}

func (c *refusingConn) Write(p []byte) (int, error) {
	if strings.HasPrefix(string(p), c.prefix) {
		c.Conn.Write([]byte("554 5.5.0 Error: refused\r\n"))
		c.Conn.Close()
		return 0, errors.New("refused")
	}
	return c.Conn.Write(p)
}

func serveOn(t *testing.T, wrap func(net.Listener) net.Listener, fn ...serverConfigureFunc) (*backend, *smtp.Server, net.Conn, *bufio.Reader) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := new(backend)
	be.dataErrors = make(chan error, 10)
	s := smtp.NewServer(be)
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	for _, f := range fn {
		f(s)
	}
	go s.Serve(wrap(l))
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return be, s, c, bufio.NewReader(c)
}

// readAll reads replies until EOF.
func readAll(r *bufio.Reader) string {
	b, _ := io.ReadAll(r)
	return string(b)
}

// A reply that cannot be written ends the connection: the pipelined
// message behind a refused 354, already in go-smtp's read buffer, must not
// reach the backend, nor any command after it.
func TestServer_NoDataAfterFailedReply(t *testing.T) {
	be, s, c, r := serveOn(t, func(l net.Listener) net.Listener { return refusingListener{l, "354 "} })
	io.WriteString(c, "EHLO localhost\r\n")
	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\nRCPT TO:<root@gchq.gov.uk>\r\nDATA\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nQUIT\r\n")
	out := readAll(r)
	if !strings.HasSuffix(out, "554 5.5.0 Error: refused\r\n") {
		t.Fatalf("want the refusal and EOF, got %q", out)
	}
	// Shutdown waits for the connection's goroutine to end.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-be.dataErrors:
		t.Fatalf("Data was called after the refused 354 (err %v)", err)
	default:
	}
	if len(be.messages) != 0 || len(be.anonmsgs) != 0 {
		t.Fatalf("backend got %d messages", len(be.messages)+len(be.anonmsgs))
	}
}

// After QUIT nothing buffered behind it is handled (it used to reach
// Session.Mail on a nil session: a recovered panic).
func TestServer_NothingAfterQuit(t *testing.T) {
	var log strings.Builder
	var mu sync.Mutex
	_, s, c, r := serveOn(t, func(l net.Listener) net.Listener { return l }, func(s *smtp.Server) {
		s.ErrorLog = logFunc(func(m string) { mu.Lock(); log.WriteString(m); mu.Unlock() })
	})
	io.WriteString(c, "EHLO localhost\r\nQUIT\r\nMAIL FROM:<root@nsa.gov>\r\nRCPT TO:<root@gchq.gov.uk>\r\n")
	out := readAll(r)
	if !strings.HasSuffix(out, "221 2.0.0 Bye\r\n") {
		t.Fatalf("want 221 and EOF, got %q", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(log.String(), "panic") {
		t.Fatalf("commands after QUIT were handled:\n%s", log.String())
	}
}

type logFunc func(string)

func (f logFunc) Printf(format string, v ...interface{}) { f(format) }
func (f logFunc) Println(v ...interface{})               { f("") }

// A BDAT LAST chunk cut short by a half-close: 421 4.4.2, the backend
// gets ErrChunkTruncated (never EOF, which would complete the message).
func TestServer_Chunking_TruncatedLast(t *testing.T) {
	be, _, c, r := serveOn(t, func(l net.Listener) net.Listener { return l })
	io.WriteString(c, "EHLO localhost\r\nMAIL FROM:<root@nsa.gov>\r\nRCPT TO:<root@gchq.gov.uk>\r\n")
	io.WriteString(c, "BDAT 1000 LAST\r\n"+strings.Repeat("x", 68)+"\r\n")
	c.(*net.TCPConn).CloseWrite()
	out := readAll(r)
	if !strings.HasSuffix(out, "421 4.4.2 Error: input ended inside a BDAT chunk; message not accepted, closing connection\r\n") {
		t.Fatalf("want 421 4.4.2 and EOF, got %q", out)
	}
	if err := <-be.dataErrors; err != smtp.ErrChunkTruncated {
		t.Fatalf("backend got %v, want ErrChunkTruncated", err)
	}
	if len(be.messages)+len(be.anonmsgs) != 0 {
		t.Fatal("the truncated message was delivered")
	}
}

// A backend error about a non-LAST chunk is the reply to that chunk.
func TestServer_Chunking_ErrorAnswersItsChunk(t *testing.T) {
	be, _, c, r := serveOn(t, func(l net.Listener) net.Listener { return l })
	be.dataErr = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "bad chunk"}
	be.dataErrOffset = 8 // the whole chunk is read before the error
	io.WriteString(c, "EHLO localhost\r\nMAIL FROM:<root@nsa.gov>\r\nRCPT TO:<root@gchq.gov.uk>\r\n")
	io.WriteString(c, "BDAT 8\r\nHey <3\r\n")
	var replies []string
	for len(replies) < 5 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", replies, err)
		}
		if line[3] == ' ' {
			replies = append(replies, strings.TrimSpace(line))
		}
	}
	if replies[4] != "550 5.5.2 bad chunk" {
		t.Fatalf("reply to the chunk: %q, want 550 5.5.2 bad chunk", replies[4])
	}
}

func selfSignedConfig(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// A failed STARTTLS handshake closes the connection (RFC 3207 section
// 4.1); it used to answer 550 and go on in plain text.
func TestServer_StartTLSHandshakeFailureCloses(t *testing.T) {
	be, _, c, r := serveOn(t, func(l net.Listener) net.Listener { return l }, func(s *smtp.Server) {
		s.TLSConfig = selfSignedConfig(t)
		s.ErrorLog = logFunc(func(string) {})
	})
	io.WriteString(c, "EHLO localhost\r\nSTARTTLS\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("before 220: %v", err)
		}
		if strings.HasPrefix(line, "220 2.0.0") {
			break
		}
	}
	// A TLS handshake record with garbage inside.
	c.Write([]byte("\x16\x03\x01\x00\x05hello"))
	var after strings.Builder
	for {
		line, err := r.ReadString('\n')
		after.WriteString(line)
		if err != nil {
			break // closed: right
		}
		if strings.Contains(line, "Handshake error") {
			io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\nRCPT TO:<root@gchq.gov.uk>\r\nDATA\r\nSubject: plain\r\n\r\nbody\r\n.\r\nQUIT\r\n")
		}
	}
	if strings.Contains(after.String(), "Handshake error") || strings.Contains(after.String(), "250 ") {
		t.Fatalf("the session went on in plain text after a failed handshake: %q (messages: %d)", after.String(), len(be.messages)+len(be.anonmsgs))
	}
}

// Reply text is ASCII (RFC 5321 section 4.2), whatever the backend says.
func TestServer_ReplyTextASCII(t *testing.T) {
	be, _, c, r := serveOn(t, func(l net.Listener) net.Listener { return l })
	be.userErr = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "see RFC 5321 \u00a72.3.8\r, gr\u00fc\u00dfe"}
	io.WriteString(c, "EHLO localhost\r\nMAIL FROM:<root@nsa.gov>\r\nQUIT\r\n")
	out := readAll(r)
	want := "550 5.7.1 see RFC 5321 ??2.3.8?, gr????e\r\n"
	if !strings.Contains(out, want) {
		t.Fatalf("want %q in %q", want, out)
	}
}

// A Close that comes before Serve has registered its listener: Serve must
// still return (it used to block in Accept forever, and a test's cleanup
// that waits for it hung until the test binary's timeout).
func TestServer_CloseBeforeServe(t *testing.T) {
	s := smtp.NewServer(new(backend))
	s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Close: %v, want nil", err)
		}
	case <-time.After(10 * time.Second): // a hang guard, not a timing assertion
		l.Close()
		t.Fatal("Serve did not return after Close")
	}
	// The listener is closed: nobody is left to accept on it.
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener is still open after Serve returned")
	}
}

// Every refusal the server decides without the session is reported once
// to Server.OnRefusal, with its reason and command; replies the session
// decided (here the backend's 550 to MAIL) and positive replies are not
// (PATCHES.md 13).
func TestServer_OnRefusal(t *testing.T) {
	var mu sync.Mutex
	var got []string
	be, _, c, r := serveOn(t, func(l net.Listener) net.Listener { return l }, func(s *smtp.Server) {
		s.MaxRecipients = 1
		s.OnRefusal = func(_ *smtp.Conn, rf smtp.Refusal, err error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%s %s %d %d.%d.%d %s %v", rf.Reason, rf.Command, rf.Code, rf.EnhancedCode[0], rf.EnhancedCode[1], rf.EnhancedCode[2], rf.Message, err))
		}
	})
	read := func() string {
		t.Helper()
		var last string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read: %v (after %q)", err, last)
			}
			if len(l) < 4 || l[3] != '-' {
				return strings.TrimRight(l, "\r\n")
			}
			last = l
		}
	}
	read() // greeting
	steps := []struct{ cmd, reply string }{
		{"MAIL FROM:<a@example.org>", "502 5.5.1 Please introduce yourself first."},
		{"EHLO client.example.org", "250 LIMITS RCPTMAX=1"},
		{"XYZW bar", "500 5.5.2 Syntax errors, XYZW command unrecognized"},
		{"MAIL FROM:<a@example.org> XYZ=1", "555 5.5.4 Unknown MAIL FROM parameter"},
		{"MAIL TO:<a@example.org>", "501 5.5.2 Was expecting MAIL arg syntax of FROM:<address>"},
		{"RCPT TO:<b@example.com>", "502 5.5.1 Missing MAIL FROM command."},
		{"MAIL FROM:<a@example.org>", "250 2.0.0 Roger, accepting mail from <a@example.org>"},
		{"RCPT TO:<b@example.com> NOTIFY=NEVER", "555 5.5.4 NOTIFY parameter not supported"},
		{"RCPT TO:<b@example.com>", "250 2.0.0 I'll make sure <b@example.com> gets this"},
		{"RCPT TO:<c@example.com>", "452 4.5.3 Maximum limit of 1 recipients reached"},
		{"DATA x", "501 5.5.4 DATA command should not have any arguments"},
		{"RSET", "250 2.0.0 Session reset"},
	}
	for _, st := range steps {
		io.WriteString(c, st.cmd+"\r\n")
		if l := read(); l != st.reply {
			t.Fatalf("%s: %q, want %q", st.cmd, l, st.reply)
		}
	}
	// A refusal the session decides is its own to log.
	be.userErr = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no"}
	io.WriteString(c, "MAIL FROM:<a@example.org>\r\n")
	if l := read(); l != "550 5.7.1 no" {
		t.Fatalf("MAIL refused by the session: %q", l)
	}
	io.WriteString(c, "QUIT\r\n")
	read()
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"bad_sequence MAIL 502 5.5.1 Please introduce yourself first. <nil>",
		"unknown_command XYZW 500 5.5.2 Syntax errors, XYZW command unrecognized <nil>",
		"unknown_parameter MAIL 555 5.5.4 Unknown MAIL FROM parameter <nil>",
		"smtp_syntax MAIL 501 5.5.2 Was expecting MAIL arg syntax of FROM:<address> <nil>",
		"bad_sequence RCPT 502 5.5.1 Missing MAIL FROM command. <nil>",
		"unknown_parameter RCPT 555 5.5.4 NOTIFY parameter not supported <nil>",
		"max_recipients RCPT 452 4.5.3 Maximum limit of 1 recipients reached <nil>",
		"smtp_syntax DATA 501 5.5.4 DATA command should not have any arguments <nil>",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("refusals reported:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// The refusals decided where no command was read: a line that does not
// parse, a line too long, an idle timeout.
func TestServer_OnRefusalWithoutCommand(t *testing.T) {
	var mu sync.Mutex
	var got []string
	_, _, c, r := serveOn(t, func(l net.Listener) net.Listener { return l }, func(s *smtp.Server) {
		s.MaxLineLength = 100
		s.OnRefusal = func(_ *smtp.Conn, rf smtp.Refusal, err error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%s %q %d %d.%d.%d", rf.Reason, rf.Command, rf.Code, rf.EnhancedCode[0], rf.EnhancedCode[1], rf.EnhancedCode[2]))
		}
	})
	r.ReadString('\n')
	io.WriteString(c, "\x00\r\n")
	l, _ := r.ReadString('\n')
	if !strings.HasPrefix(l, "50") {
		t.Fatalf("NUL line: %q", l)
	}
	io.WriteString(c, strings.Repeat("x", 200)+"\r\n")
	if l, _ := r.ReadString('\n'); l != "500 5.4.0 Too long line, closing connection\r\n" {
		t.Fatalf("long line: %q", l)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[1] != `line_too_long "" 500 5.4.0` || !strings.HasPrefix(got[0], "smtp_syntax ") {
		t.Errorf("refusals reported: %q", got)
	}
}
