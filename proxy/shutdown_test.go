package proxy

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// Shutdown runs on its own goroutine while sessions read and write: the
// 421 4.3.2 it sends and the disconnect it logs must not race with them
// (go test -race).
func TestShutdownDuringTrafficIsRaceFree(t *testing.T) {
	// NOOPs until the end: no junk command limit here.
	s, addr, _ := startServer(t, "", "limits:\n  max_junk_commands: 100000000\n")
	const n = 8
	var wg sync.WaitGroup
	ready := make(chan struct{}, n)
	byes := make(chan string, n)
	for i := 0; i < n; i++ {
		c := dialT(t, addr)
		c.reply()
		if l := c.cmd("EHLO ok.example.org"); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("EHLO: %q", l)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready <- struct{}{}
			// Keep the session writing replies until the server goes.
			for {
				if _, err := io.WriteString(c, "NOOP\r\n"); err != nil {
					byes <- ""
					return
				}
				l, err := c.r.ReadString('\n')
				if err != nil {
					byes <- ""
					return
				}
				if strings.HasPrefix(l, "421 ") {
					byes <- l
					return
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		<-ready
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	close(byes)
	got := 0
	for l := range byes {
		if l == "" {
			continue
		}
		got++
		if l != "421 4.3.2 Service shutting down, try again later\r\n" {
			t.Errorf("goodbye: %q", l)
		}
	}
	if got == 0 {
		t.Errorf("no session was told 421 4.3.2")
	}
}
