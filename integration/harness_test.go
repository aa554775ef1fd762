// Package integration runs the built smtpgate binary in front of a real
// Postfix on loopback ports, driven by swaks, smtp-source and a raw SMTP
// client. It needs root (Postfix drops privileges), postfix and swaks:
// without them the tests fail, they do not skip.
package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/dns/dnstest"
)

var (
	binary   string // the smtpgate binary under test
	mta      *postfix
	dnsSrv   *dnstest.Server
	repoRoot string
)

const domain = "example.com"

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	for _, tool := range []string{"postfix", "swaks", "smtp-source"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				fmt.Fprintf(os.Stderr, "integration: %s is not installed: run the README's test command (it installs postfix and swaks)\n", tool)
				return 1
			}
		}
	}
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin")
	wd, _ := os.Getwd()
	repoRoot = filepath.Dir(wd)
	tmp, err := os.MkdirTemp("", "smtpgate-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o755) // Postfix runs as user postfix
	binary = filepath.Join(tmp, "smtpgate")
	build := exec.Command("go", "build", "-race", "-o", binary, "./cmd/smtpgate")
	build.Dir = repoRoot
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: build:", err)
		return 1
	}
	dnsSrv, err = dnstest.Start(testZones...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: dns:", err)
		return 1
	}
	defer dnsSrv.Close()
	mta, err = startPostfix(filepath.Join(tmp, "postfix"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer mta.stop()
	return m.Run()
}

// postfix is a private Postfix instance (integration/postfix.sh).
type postfix struct {
	dir  string
	port int
	mu   sync.Mutex
	env  []string // for postfix.sh (PROCESS_LIMIT=...)
}

func startPostfix(dir string) (*postfix, error) {
	p := &postfix{dir: dir, port: freePort()}
	return p, p.start()
}

func (p *postfix) start() error {
	cmd := exec.Command("bash", filepath.Join(repoRoot, "integration/postfix.sh"), "start", p.dir, strconv.Itoa(p.port), domain, "alice", "bob", "carol")
	cmd.Env = append(os.Environ(), p.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("postfix.sh start: %v\n%s", err, out)
	}
	return nil
}

func (p *postfix) stop() {
	exec.Command("bash", filepath.Join(repoRoot, "integration/postfix.sh"), "stop", p.dir).Run()
}

func (p *postfix) addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// killSMTPD kills every smtpd process of this instance with SIGKILL: the
// connections smtpgate holds die mid-conversation.
func (p *postfix) killSMTPD(t *testing.T) {
	t.Helper()
	pidb, err := os.ReadFile(filepath.Join(p.dir, "queue/pid/master.pid"))
	if err != nil {
		t.Fatalf("master pid: %v", err)
	}
	master := strings.TrimSpace(string(pidb))
	out, _ := exec.Command("pgrep", "-P", master, "smtpd").Output()
	pids := strings.Fields(string(out))
	if len(pids) == 0 {
		t.Fatalf("no smtpd child of master %s", master)
	}
	for _, pid := range pids {
		n, _ := strconv.Atoi(pid)
		syscall.Kill(n, syscall.SIGKILL)
	}
}

// waitGreeting polls until the MTA greets a new connection with 220 (after
// a restart, or after killSMTPD: master may throttle the service).
func (p *postfix) waitGreeting(t *testing.T) {
	t.Helper()
	for i := 0; ; i++ {
		if c, err := net.DialTimeout("tcp", p.addr(), time.Second); err == nil {
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte("QUIT\r\n"))
			c.Close()
			if strings.HasPrefix(line, "220 ") {
				return
			}
		}
		if i > 60 {
			t.Fatalf("the MTA does not greet after a minute")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mailbox lists the messages delivered to user.
func (p *postfix) mailbox(user string) []string {
	var files []string
	for _, sub := range []string{"new", "cur"} {
		m, _ := filepath.Glob(filepath.Join(p.dir, "mail", user, sub, "*"))
		files = append(files, m...)
	}
	return files
}

// messages returns the contents of user's mailbox.
func (p *postfix) messages(t *testing.T, user string) []string {
	var out []string
	for _, f := range p.mailbox(user) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// settle waits until the queue is empty (everything delivered or
// bounced), bounded.
func (p *postfix) settle(t *testing.T) {
	t.Helper()
	for i := 0; i < 600; i++ {
		n := 0
		for _, q := range []string{"incoming", "active", "maildrop"} {
			filepath.Walk(filepath.Join(p.dir, "queue", q), func(path string, info os.FileInfo, err error) error {
				if err == nil && !info.IsDir() {
					n++
				}
				return nil
			})
		}
		if n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("postfix queue did not drain")
}

// waitIncoming polls until Postfix's incoming queue holds at least n
// bytes: a message it is receiving got that far.
func (p *postfix) waitIncoming(t *testing.T, n int64) {
	t.Helper()
	for i := 0; ; i++ {
		var size int64
		filepath.Walk(filepath.Join(p.dir, "queue", "incoming"), func(path string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				size += info.Size()
			}
			return nil
		})
		if size >= n {
			return
		}
		if i > 400 {
			t.Fatalf("Postfix's incoming queue holds %d bytes after 10s, want %d", size, n)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// clearMailboxes removes every delivered message.
func (p *postfix) clearMailboxes() {
	for _, u := range []string{"alice", "bob", "carol"} {
		for _, f := range p.mailbox(u) {
			os.Remove(f)
		}
	}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// gate is a running smtpgate.
type gate struct {
	addr string
	cmd  *exec.Cmd
	cfg  string
	log  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startGate runs smtpgate in front of the test Postfix with extra YAML
// appended to a base configuration.
func startGate(t *testing.T, extra string) *gate {
	t.Helper()
	return startGateListen(t, fmt.Sprintf("  - address: 127.0.0.1:%d\n", freePort()), extra)
}

// startGateListen is startGate with the listen: list given (the first
// listener is the gate's addr).
func startGateListen(t *testing.T, listen string, extra string) *gate {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`hostname: gw.%s
listen:
%s
upstream:
  address: %s
  timeout: 10s
domains: [%s]
dns:
  servers: [%s]
  timeout: 2s
shutdown:
  drain_timeout: 5s
%s`, domain, strings.TrimRight(listen, "\n"), mta.addr(), domain, dnsSrv.Addr, extra)
	first := regexp.MustCompile(`address: "?([0-9.:]+)`).FindStringSubmatch(listen)
	return runGate(t, dir, first[1], cfg)
}

// runGate writes cfg to dir, runs the binary with it (and env added to its
// environment), waits until addr accepts connections, and stops it when
// the test ends. A race report or a panic in its output fails the test.
func runGate(t *testing.T, dir, addr, cfg string, env ...string) *gate {
	t.Helper()
	path := filepath.Join(dir, "smtpgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &gate{addr: addr, cfg: path, log: &syncBuffer{}, done: make(chan error, 1)}
	g.cmd = exec.Command(binary, "-config", path)
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout, g.cmd.Stderr = g.log, g.log
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(10 * time.Second):
			g.cmd.Process.Kill()
		}
		// The binary is built with -race: a race anywhere fails the test.
		if strings.Contains(g.log.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector fired in smtpgate")
		}
		if strings.Contains(g.log.String(), "panic:") {
			t.Errorf("smtpgate panicked")
		}
		if t.Failed() {
			t.Logf("smtpgate log (tail):\n%s", tail(g.log.String(), 8000))
		}
	})
	g.waitListen(t, g.addr)
	return g
}

// waitListen polls until addr (the gate's, or its pprof or metrics
// address) accepts connections; it fails the test if smtpgate exits or
// takes more than 10s.
func (g *gate) waitListen(t *testing.T, addr string) {
	t.Helper()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-g.done:
			g.done <- err
			t.Fatalf("smtpgate exited (%v) before %s listened: %s", err, addr, g.log.String())
		default:
		}
		if i > 400 {
			t.Fatalf("smtpgate did not listen on %s: %s", addr, g.log.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitSessionsClosed polls until every connection smtpgate logged as
// "connect" is logged as "disconnect" too: sessions ended, their MTA
// connections given back or closed.
func (g *gate) waitSessionsClosed(t *testing.T) {
	t.Helper()
	for i := 0; ; i++ {
		log := g.log.String()
		if strings.Count(log, "msg=connect ") == strings.Count(log, "msg=disconnect ") {
			return
		}
		if i > 400 {
			t.Fatalf("sessions still open after 10s:\n%s", tail(log, 4000))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// client is a raw SMTP client: every byte it sends is exactly what the
// test wrote.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	return dialFrom(t, addr, "")
}

// dialFrom connects from a chosen loopback address (127.0.0.2, ...), so
// that the MTA can tell XCLIENT's address from smtpgate's own.
func dialFrom(t *testing.T, addr, local string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// reply reads one reply and returns its code and full text.
func (c *client) reply() (int, string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	var text strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, "read error: " + err.Error()
		}
		text.WriteString(line)
		if len(line) < 4 || line[3] != '-' {
			code, _ := strconv.Atoi(line[:3])
			return code, text.String()
		}
	}
}

func (c *client) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	if got != code {
		c.t.Fatalf("want %d, got %q", code, text)
	}
	return text
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// cmd sends a command line and returns the reply.
func (c *client) cmd(line string) (int, string) {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.reply()
}

func (c *client) must(line string, code int) string {
	c.t.Helper()
	got, text := c.cmd(line)
	if got != code {
		c.t.Fatalf("%s: want %d, got %q", line, code, text)
	}
	return text
}

// envelope runs EHLO, MAIL and RCPT, expecting success.
func (c *client) envelope(from string, to ...string) {
	c.t.Helper()
	c.must("EHLO client.example.org", 250)
	c.must("MAIL FROM:<"+from+">", 250)
	for _, r := range to {
		c.must("RCPT TO:<"+r+">", 250)
	}
}

// swaks runs swaks against addr and returns its transcript.
func swaks(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	all := append([]string{"--timeout", "30"}, args...)
	if addr != "" {
		all = append([]string{"--server", addr}, all...)
	}
	out, err := exec.Command("swaks", all...).CombinedOutput()
	return string(out), err
}

func netDial(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}

func newReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
