package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// HAProxy's "check" (connect, then close without a word) every 100ms
// leaves no line at info level and no warning: the checks are counted in
// smtpgate_silent_connections_total. A real client through the same
// HAProxy is logged as before.
func TestHAProxyHealthChecksAreQuiet(t *testing.T) {
	hap, err := exec.LookPath("haproxy")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/haproxy"); err != nil {
			t.Fatalf("haproxy is not installed: apt-get install -y haproxy (the Makefile's deps install it)")
		}
		hap = "/usr/sbin/haproxy"
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort())
	g := startGateListen(t, fmt.Sprintf("  - address: 127.0.0.1:%d\n    proxy_protocol: true\n    proxy_protocol_from: [127.0.0.1]\n", freePort()), "metrics:\n  address: "+metrics+"\n")
	hport := freePort()
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout check 5s
frontend smtp
    bind 127.0.0.1:%d
    default_backend gate
backend gate
    server gw %s send-proxy-v2 check inter 100ms source 127.0.0.1
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
	silentRe := regexp.MustCompile(`(?m)^smtpgate_silent_connections_total (\d+)`)
	silent := func() int {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if m := silentRe.FindSubmatch(b); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			return n
		}
		return 0
	}
	for i := 0; silent() < 10; i++ {
		if i > 600 {
			t.Fatalf("health checks not counted: %d", silent())
		}
		time.Sleep(50 * time.Millisecond)
	}
	log := g.log.String()
	if strings.Contains(log, "level=WARN") || strings.Contains(log, "msg=connect") || strings.Contains(log, "msg=disconnect") {
		t.Errorf("health checks were logged:\n%s", tail(log, 4000))
	}
	c := dialFrom(t, fmt.Sprintf("127.0.0.1:%d", hport), "127.0.0.6")
	c.must("EHLO client.example.org", 250)
	c.quitAndWait()
	if !strings.Contains(g.log.String(), "msg=connect") || !strings.Contains(g.log.String(), "client=127.0.0.6") {
		t.Errorf("a real client through haproxy was not logged:\n%s", tail(g.log.String(), 4000))
	}
}
