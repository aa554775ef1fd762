package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/config"
)

// refusingMTA announces XCLIENT and refuses it as Postfix does for a host
// not in smtpd_authorized_xclient_hosts; otherwise it takes every message.
func refusingMTA(t *testing.T) string {
	return startLineMTA(t, &lineMTA{ehlo: []string{"XCLIENT NAME ADDR PORT PROTO HELO LOGIN"}, refuseXCLIENT: true})
}

func startServerUpstream(t *testing.T, upstreamYAML string) (*Server, string, *logBuf) {
	t.Helper()
	yml := "hostname: gw.example.com\ndomains: [example.com]\ndns:\n  servers: [127.0.0.1:1]\n  timeout: 100ms\nupstream:\n" + upstreamYAML +
		"checks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\nlisten:\n  - address: 127.0.0.1:0\nmetrics:\n  address: 127.0.0.1:0\n"
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
	return s, s.Addrs()[0].String(), logs
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Item 18: xclient auto and an MTA that announces XCLIENT but refuses it.
// Before: 451 4.4.2 "connection to mail server lost" for every message,
// /readyz ok, nothing counted. Now the mail flows without XCLIENT, one
// error line per MTA connection, a metric, and /readyz says so.
func TestXCLIENTRefusedAutoFallsBack(t *testing.T) {
	s, addr, logs := startServerUpstream(t, "  address: "+refusingMTA(t)+"\n  xclient: auto\n")
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO client.example.org")
	for i := 0; i < 2; i++ {
		c.cmd("MAIL FROM:<a@example.org>")
		if got := c.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("RCPT: %q", got)
		}
		c.cmd("DATA")
		if got := c.cmd("Subject: x\r\n\r\nbody\r\n."); !strings.HasPrefix(got, "250 2.0.0") {
			t.Fatalf("end of data: %q", got)
		}
	}
	c.cmd("QUIT")
	if n := strings.Count(logs.String(), "MTA refused XCLIENT"); n != 1 {
		t.Errorf("%d log lines about the refused XCLIENT, want 1 (one MTA connection)", n)
	}
	if !strings.Contains(logs.String(), "level=ERROR") {
		t.Error("the refusal is not logged as an error")
	}
	base := "http://" + s.MetricsAddr().String()
	if _, body := httpGet(t, base+"/metrics"); !strings.Contains(body, `smtpgate_upstream_identity_degraded_total{mode="off",refused="xclient"} 1`) {
		t.Errorf("/metrics lacks the degraded identity:\n%s", body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 || !strings.Contains(body, "degraded to off: MTA refused XCLIENT (550 5.7.0") {
		t.Errorf("/readyz: %d %q", code, body)
	}
}

// xclient: xclient names XCLIENT explicitly: no fallback, a 451 4.3.5
// that says what is wrong, and /readyz fails.
func TestXCLIENTRefusedExplicitFailsReadiness(t *testing.T) {
	s, addr, logs := startServerUpstream(t, "  address: "+refusingMTA(t)+"\n  xclient: xclient\n")
	c := dialT(t, addr)
	c.reply()
	c.cmd("EHLO client.example.org")
	c.cmd("MAIL FROM:<a@example.org>")
	if got := c.cmd("RCPT TO:<bob@example.com>"); !strings.HasPrefix(got, "451 4.3.5 ") {
		t.Fatalf("RCPT: %q, want 451 4.3.5", got)
	}
	if !strings.Contains(logs.String(), "MTA refused XCLIENT: every message gets 451 4.3.5") {
		t.Error("no error line for the refused XCLIENT")
	}
	base := "http://" + s.MetricsAddr().String()
	if code, body := httpGet(t, base+"/readyz"); code != 503 || !strings.Contains(body, "FAILED: MTA refused XCLIENT") {
		t.Errorf("/readyz: %d %q, want 503", code, body)
	}
	if _, body := httpGet(t, base+"/metrics"); !strings.Contains(body, `smtpgate_upstream_identity_degraded_total{mode="failed",refused="xclient"}`) {
		t.Errorf("/metrics lacks the failed identity")
	}
}

// An MTA that offers neither: one warning per MTA connection, unless
// upstream.xclient is off.
func TestNoIdentityOfferedWarns(t *testing.T) {
	for _, mode := range []string{"auto", "off"} {
		t.Run(mode, func(t *testing.T) {
			_, addr, logs := startServerUpstream(t, "  address: "+fakeMTA(t)+"\n  xclient: "+mode+"\n")
			c := dialT(t, addr)
			c.reply()
			c.cmd("EHLO client.example.org")
			c.cmd("MAIL FROM:<a@example.org>")
			c.cmd("RCPT TO:<bob@example.com>")
			c.cmd("QUIT")
			want := 0
			if mode == "auto" {
				want = 1
			}
			if n := strings.Count(logs.String(), "will not see the real client"); n != want {
				t.Errorf("%d warnings, want %d", n, want)
			}
		})
	}
}

func TestOpenFileWarning(t *testing.T) {
	if w := openFileWarning(1000, 1024); !strings.Contains(w, "limits.max_connections 1000") || !strings.Contains(w, "1024") {
		t.Errorf("1000 connections, 1024 files: %q", w)
	}
	if w := openFileWarning(1000, 1<<20); w != "" {
		t.Errorf("1000 connections, 1M files: %q", w)
	}
}
