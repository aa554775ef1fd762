// Package redistest runs a real redis-server (Debian's redis-server
// package) for tests: on a free loopback port, in the test's own
// directory, with no persistence. It is for tests only.
package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Server is a running redis-server.
type Server struct {
	// Addr is host:port on loopback.
	Addr string
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	exit chan struct{}
}

// Binary returns the redis-server path, or "" when it is not installed.
func Binary() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		return "/usr/bin/redis-server"
	}
	return ""
}

// Start starts a redis-server, waits until it answers PING and stops it
// when the test ends. The test fails when redis-server is not installed
// (make deps installs it).
func Start(t testing.TB) *Server {
	t.Helper()
	if Binary() == "" {
		t.Fatal("redis-server is not installed: apt-get install -y redis-server (make deps installs it)")
	}
	s := &Server{t: t, dir: t.TempDir()}
	s.Addr = freeAddr(t)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *Server) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.Addr)
	cmd := exec.Command(Binary(), "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log"), "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd, s.exit = cmd, make(chan struct{})
	go func(c *exec.Cmd, exit chan struct{}) { c.Wait(); close(exit) }(cmd, s.exit)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s.Do("PING") == "+PONG" {
			return
		}
		select {
		case <-s.exit:
			s.t.Fatalf("redis-server on %s exited at start", s.Addr)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redis-server on %s does not answer PING", s.Addr)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not a wait for correctness
	}
}

// Kill stops the server at once (SIGKILL), as a crash would; its data
// is gone.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

// Restart starts the server again on the same address (after Kill),
// empty.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Do sends one inline command and returns the first line of the answer
// ("" when the server cannot be reached).
func (s *Server) Do(args ...string) string {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(a), a)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimRight(line, "\r\n")
}

// Info returns INFO section's fields (name → value).
func (s *Server) Info(section string) map[string]string {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return nil
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n", len(section), section)
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, "$") {
		return nil
	}
	var n int
	fmt.Sscanf(head[1:], "%d", &n)
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(buf), "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, "#") {
			m[k] = v
		}
	}
	return m
}
