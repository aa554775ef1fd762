package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/config"
)

// countingMTA takes every message and counts them.
func countingMTA(t *testing.T) (string, *atomic.Int32) {
	m := &lineMTA{}
	return startLineMTA(t, m), &m.queued
}

// startGateMTA is startServer in front of the MTA at mta. It returns a
// function that waits until go-smtp has finished with every connection:
// after it, whatever a session was going to send the MTA has been sent.
func startGateMTA(t *testing.T, mta, listen, extra string) (string, *logBuf, func()) {
	t.Helper()
	yml := "hostname: gw.example.com\ndomains: [example.com]\ndns:\n  servers: [127.0.0.1:1]\n  timeout: 100ms\nupstream:\n  address: " + mta + "\n  xclient: off\nchecks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\nlisten:\n" + listen + extra
	cfg, err := config.Parse([]byte(yml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	// "listening" is logged once the go-smtp server is in s.servers
	// (the log's mutex orders the two).
	for i := 0; !strings.Contains(logs.String(), "msg=listening"); i++ {
		if i > 2000 {
			t.Fatal("the server did not start listening")
		}
		time.Sleep(5 * time.Millisecond)
	}
	finish := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // a hang guard
		defer cancel()
		for _, srv := range s.servers {
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("go-smtp did not finish with its connections: %v", err)
			}
		}
	}
	return s.Addrs()[0].String(), logs, finish
}

// A transaction pipelined after EHLO in one write, small enough to sit in
// go-smtp's read buffer whole: the guard refuses at DATA with 554 5.5.0
// and closes, and the message never reaches the MTA (it was queued: go-smtp
// ignored the failed 354 and handed the buffered message to Data).
func TestPipelinedTransactionAfterRefusalNeverReachesMTA(t *testing.T) {
	for _, size := range []int{1024, 3584} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			mta, queued := countingMTA(t)
			addr, logs, finish := startGateMTA(t, mta, "  - address: 127.0.0.1:0\n", "")
			c := dialT(t, addr)
			c.reply()
			c.cmd("EHLO bot.example.org")
			body := strings.Repeat(strings.Repeat("x", 62)+"\r\n", size/64)
			io.WriteString(c, "MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: pipelined\r\n\r\n"+body+".\r\nQUIT\r\n")
			for _, want := range []string{"250 2.1.0 ", "250 2.", "554 5.5.0 Error: SMTP protocol synchronization\r\n"} {
				if l := c.reply(); !strings.HasPrefix(l, want) {
					t.Fatalf("want %q, got %q", want, l)
				}
			}
			c.expectEOF()
			finish()
			if n := queued.Load(); n != 0 {
				t.Fatalf("the MTA queued %d messages after the refusal", n)
			}
			if strings.Contains(logs.String(), "msg=accept") {
				t.Errorf("an accept was logged after the refusal")
			}
			if got := strings.Count(logs.String(), "check=unauth_pipelining"); got != 1 {
				t.Errorf("the refusal was logged %d times, want once", got)
			}
		})
	}
}

// The same after HELO, where any pipelining is refused (PIPELINING is
// announced only to EHLO), with the message sent by BDAT: the guard
// refuses at the reply to MAIL, and the RCPT and BDAT behind it are not
// handled.
func TestPipelinedBDATAfterHELORefusalNeverReachesMTA(t *testing.T) {
	mta, queued := countingMTA(t)
	addr, _, finish := startGateMTA(t, mta, "  - address: 127.0.0.1:0\n", "")
	c := dialT(t, addr)
	c.reply()
	c.cmd("HELO bot.example.org")
	msg := "Subject: pipelined\r\n\r\nbody\r\n"
	io.WriteString(c, fmt.Sprintf("MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nBDAT %d LAST\r\n%sQUIT\r\n", len(msg), msg))
	if l := c.reply(); l != "554 5.5.0 Error: SMTP protocol synchronization\r\n" {
		t.Fatalf("MAIL: want 554 5.5.0, got %q", l)
	}
	c.expectEOF()
	finish()
	if n := queued.Load(); n != 0 {
		t.Fatalf("the MTA queued %d messages after the refusal", n)
	}
}

// selfSigned writes a certificate and key for gw.example.com to dir.
func selfSigned(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "gw.example.com"},
		DNSNames:     []string{"gw.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, keyFile
}

// A failed STARTTLS handshake closes the connection (RFC 3207 section
// 4.1). It used to answer 550 in plain text and go on without TLS and
// without the pipelining guard, so a pipelined transaction was accepted.
func TestFailedSTARTTLSHandshakeCloses(t *testing.T) {
	mta, queued := countingMTA(t)
	cert, key := selfSigned(t, t.TempDir())
	addr, logs, finish := startGateMTA(t, mta, "  - address: 127.0.0.1:0\n    tls: starttls\n", "tls:\n  cert_file: "+cert+"\n  key_file: "+key+"\n")
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO client.example.org")
	if l := c.cmd("STARTTLS"); !strings.HasPrefix(l, "220 2.0.0 ") {
		t.Fatalf("STARTTLS: %q", l)
	}
	io.WriteString(c, "\x16\x03\x01\x00\x05hello") // a handshake record with garbage inside
	var after strings.Builder
	for {
		l, err := c.r.ReadString('\n')
		after.WriteString(l)
		if err != nil {
			break // closed
		}
		if strings.Contains(l, "Handshake error") {
			io.WriteString(c, "MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: plain\r\n\r\nbody\r\n.\r\nQUIT\r\n")
		}
	}
	finish()
	if strings.Contains(after.String(), "Handshake error") || strings.Contains(after.String(), "250 ") || queued.Load() != 0 {
		t.Fatalf("the session went on in plain text after a failed handshake: %q, %d messages queued", after.String(), queued.Load())
	}
	if !strings.Contains(logs.String(), "stage=starttls check=tls_handshake") {
		t.Errorf("the failed handshake was not logged with the session")
	}
}
