package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHAProxySendProxyV2 puts Debian's haproxy (send-proxy-v2) in front
// of smtpgate: the client's address, 127.0.0.5, must reach Postfix through
// XCLIENT although smtpgate's TCP peer is haproxy (127.0.0.1).
func TestHAProxySendProxyV2(t *testing.T) {
	hap, err := exec.LookPath("haproxy")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
			t.Fatalf("haproxy is not installed: apt-get install -y haproxy (the Makefile's deps install it)")
		}
		hap = "/usr/sbin/haproxy"
	}
	mta.clearMailboxes()
	g := startGateListen(t, fmt.Sprintf("  - address: 127.0.0.1:%d\n    proxy_protocol: true\n    proxy_protocol_from: [127.0.0.1]\n", freePort()), "")
	hport := freePort()
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend smtp
    bind 127.0.0.1:%d
    default_backend gate
backend gate
    server gw %s send-proxy-v2 source 127.0.0.1
`, hport, g.addr)), 0o644)
	hlog := &syncBuffer{}
	cmd := exec.Command(hap, "-db", "-f", cfg)
	cmd.Stdout, cmd.Stderr = hlog, hlog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy:\n%s", hlog.String())
		}
	})
	haddr := fmt.Sprintf("127.0.0.1:%d", hport)
	for i := 0; ; i++ {
		if c, err := netDial(haddr); err == nil {
			c.Close()
			break
		} else if i > 200 {
			t.Fatalf("haproxy did not listen: %s", hlog.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	c := dialFrom(t, haddr, "127.0.0.5")
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<sender@example.org>", 250)
	c.must("RCPT TO:<alice@example.com>", 250)
	c.must("DATA", 354)
	c.send("Subject: through haproxy\r\n\r\nhello\r\n.\r\n")
	c.expect(250)
	c.must("QUIT", 221)
	mta.settle(t)
	log, _ := os.ReadFile(filepath.Join(mta.dir, "maillog"))
	if !regexp.MustCompile(`client=unknown\[127\.0\.0\.5\]`).Match(log) {
		t.Errorf("Postfix log does not name the client behind haproxy (127.0.0.5)")
	}
	if !strings.Contains(g.log.String(), "client=127.0.0.5") {
		t.Errorf("smtpgate did not see 127.0.0.5:\n%s", g.log.String())
	}
	// haproxy's own address may not talk to the listener without a header.
	d, err := netDial(g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetReadDeadline(time.Now().Add(15 * time.Second))
	d.Write([]byte("EHLO direct\r\n"))
	if b, _ := io.ReadAll(d); strings.Contains(string(b), "250") {
		t.Errorf("a headerless connection from a proxy_protocol_from source was served: %q", b)
	}
}

// TestMetricsAndReloadCommand scrapes the running binary's metrics and
// reloads it with "smtpgate reload" (POST /reload), a new recipient list
// applying to new sessions while a live session keeps its own.
func TestMetricsAndReloadCommand(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "recipients")
	os.WriteFile(list, []byte("alice@example.com\n"), 0o644)
	maddr := fmt.Sprintf("127.0.0.1:%d", freePort())
	g := startGate(t, "recipients:\n  files: ["+list+"]\nmetrics:\n  address: "+maddr+"\n")

	live := dial(t, g.addr)
	live.must("EHLO client.example.org", 250)
	live.must("MAIL FROM:<sender@example.org>", 250)
	live.must("RCPT TO:<bob@example.com>", 550)

	os.WriteFile(list, []byte("alice@example.com\nbob@example.com\n"), 0o644)
	out, err := exec.Command(binary, "reload", "-config", g.cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "reloaded") {
		t.Fatalf("smtpgate reload: %v %s", err, out)
	}
	// The live session keeps the configuration it started with.
	live.must("RCPT TO:<bob@example.com>", 550)
	live.must("RCPT TO:<alice@example.com>", 250)
	live.must("QUIT", 221)
	n := dial(t, g.addr)
	n.envelope("sender@example.org", "bob@example.com")
	n.must("QUIT", 221)

	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, re := range []string{
		`smtpgate_sessions_total [2-9]`,
		`smtpgate_replies_total\{check="unknown_recipient",class="5xx",stage="rcpt"\} 2`,
		`smtpgate_reloads_total\{result="ok"\} 1`,
		`smtpgate_upstream_reply_seconds_count\{op="rcpt"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("/metrics does not match %s", re)
		}
	}
	if t.Failed() {
		t.Logf("%s", body)
	}
	// A broken configuration: "smtpgate reload" says why and sends nothing.
	good, _ := os.ReadFile(g.cfg)
	os.WriteFile(g.cfg, append(good, []byte("limits:\n  max_conections: 3\n")...), 0o644)
	out, err = exec.Command(binary, "reload", "-config", g.cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "max_conections: unknown key") {
		t.Errorf("smtpgate reload of a broken config: %v %s", err, out)
	}
}
