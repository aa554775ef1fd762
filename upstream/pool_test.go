package upstream

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/reply"
)

// limitedMTA is a small in-process MTA that serves any number of
// connections and, like Exim's smtp_accept_max_per_connection, answers the
// MAIL after maxPerConn messages on one connection with a 421 and closes.
type limitedMTA struct {
	addr       string
	maxPerConn int
	// closeAfterDot makes the MTA close each connection after its reply
	// to the final dot, as an MTA does when stopped or restarted; closed
	// is told when it has.
	closeAfterDot bool
	closed        chan struct{}
	conns         atomic.Int32
	quits         atomic.Int32
	wg            sync.WaitGroup
}

func startLimitedMTA(t *testing.T, maxPerConn int) *limitedMTA {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &limitedMTA{addr: ln.Addr().String(), maxPerConn: maxPerConn, closed: make(chan struct{}, 100)}
	var mu sync.Mutex
	var open []net.Conn
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			m.conns.Add(1)
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				defer nc.Close()
				m.serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		m.wg.Wait()
	})
	return m
}

func (m *limitedMTA) serve(nc net.Conn) {
	r := bufio.NewReader(nc)
	w := func(s string) { fmt.Fprint(nc, s+"\r\n") }
	w("220 mta.test ESMTP")
	messages := 0
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(l + " x")[0])
		switch verb {
		case "EHLO":
			w("250-mta.test\r\n250 PIPELINING")
		case "MAIL":
			messages++
			if messages > m.maxPerConn {
				w("421 4.0.0 mta.test too many messages in this connection")
				return
			}
			w("250 2.1.0 OK")
		case "RCPT":
			w("250 2.1.5 Accepted")
		case "DATA":
			w("354 Enter message")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			w(fmt.Sprintf("250 2.0.0 OK id=%d", messages))
			if m.closeAfterDot {
				nc.Close()
				m.closed <- struct{}{}
				return
			}
		case "RSET":
			w("250 2.0.0 Reset OK")
		case "QUIT":
			m.quits.Add(1)
			w("221 2.0.0 closing connection")
			return
		default:
			w("500 5.5.1 unrecognized command")
		}
	}
}

// send runs one client session's transaction through p.
func sendThrough(t *testing.T, p *Pool) (mail, rcpt, dot *reply.Reply) {
	t.Helper()
	ctx := context.Background()
	c, err := p.Get(ctx, nil)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer c.Quit()
	mail, rcpt, err = c.Begin(ctx, "sender@example.org", nil, "alice@example.com", nil)
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if mail.Code != 250 || rcpt == nil {
		return mail, rcpt, nil
	}
	rep, wr, err := c.Data(ctx)
	if err != nil || rep.Code != 354 {
		t.Fatalf("DATA: %v %v", rep, err)
	}
	wr.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	dot, err = c.End(ctx)
	if err != nil {
		t.Fatalf("End: %v", err)
	}
	return mail, rcpt, dot
}

// A pooled connection is retired after MaxMessages transactions, so an
// MTA's own per-connection limit (here 4, as Exim's 1000 or OpenSMTPD's
// 100) is never reached and no client sees its 421.
func TestPoolRetiresAfterMaxMessages(t *testing.T) {
	m := startLimitedMTA(t, 4)
	p := &Pool{Addr: m.addr, Opts: testOpts, MaxIdle: 4, IdleTimeout: time.Minute, MaxMessages: 3}
	defer p.Close()
	for i := 0; i < 10; i++ {
		mail, rcpt, dot := sendThrough(t, p)
		if mail.Code != 250 || mail.Enhanced != [3]int{2, 1, 0} || rcpt == nil || rcpt.Code != 250 || dot == nil || dot.Code != 250 || dot.Enhanced != [3]int{2, 0, 0} {
			t.Fatalf("message %d: MAIL %v, RCPT %v, dot %v", i+1, mail, rcpt, dot)
		}
	}
	if n := m.conns.Load(); n != 4 {
		t.Errorf("%d MTA connections for 10 messages at 3 per connection, want 4", n)
	}
}

// Without the bound the MTA's limit reaches the fifth client: the case
// the bound is for.
func TestPoolWithoutMaxMessagesHitsMTALimit(t *testing.T) {
	m := startLimitedMTA(t, 4)
	p := &Pool{Addr: m.addr, Opts: testOpts, MaxIdle: 4, IdleTimeout: time.Minute}
	defer p.Close()
	for i := 0; i < 4; i++ {
		if mail, _, _ := sendThrough(t, p); mail.Code != 250 {
			t.Fatalf("message %d: MAIL %v", i+1, mail)
		}
	}
	ctx := context.Background()
	c, err := p.Get(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mail, _, err := c.Begin(ctx, "sender@example.org", nil, "alice@example.com", nil)
	if err == nil && (mail.Code != 421 || mail.Enhanced != [3]int{4, 0, 0}) {
		t.Fatalf("fifth MAIL on one connection: %v, want the fake MTA's 421 4.0.0", mail)
	}
}

// A connection older than MaxAge is not handed out again: an MTA reload
// (new restrictions, a removed XCLIENT authorisation) reaches every client
// within MaxAge.
func TestPoolRetiresAfterMaxAge(t *testing.T) {
	m := startLimitedMTA(t, 1000)
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	p := &Pool{Addr: m.addr, Opts: testOpts, MaxIdle: 4, IdleTimeout: time.Hour, MaxAge: time.Minute,
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }}
	defer p.Close()
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	sendThrough(t, p)
	advance(59 * time.Second)
	sendThrough(t, p)
	if n := m.conns.Load(); n != 1 {
		t.Fatalf("%d connections within max_age, want 1 (reused)", n)
	}
	advance(time.Second)
	if mail, _, dot := sendThrough(t, p); mail.Code != 250 || dot == nil || dot.Code != 250 {
		t.Fatalf("after max_age: MAIL %v, dot %v", mail, dot)
	}
	if n := m.conns.Load(); n != 2 {
		t.Errorf("%d connections after max_age, want 2 (the old one retired)", n)
	}
	// The retired connection said QUIT (asynchronously: poll).
	for i := 0; m.quits.Load() < 1; i++ {
		if i > 500 {
			t.Fatal("the retired connection never said QUIT")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Spent tells a session that holds one connection for many messages to
// take a fresh one before the next transaction.
func TestConnSpent(t *testing.T) {
	m := startLimitedMTA(t, 1000)
	p := &Pool{Addr: m.addr, Opts: testOpts, MaxIdle: 4, IdleTimeout: time.Minute, MaxMessages: 2}
	defer p.Close()
	ctx := context.Background()
	c, err := p.Get(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if c.Spent() {
			t.Fatalf("spent after %d messages", i)
		}
		if _, _, err := c.Begin(ctx, "s@example.org", nil, "alice@example.com", nil); err != nil {
			t.Fatal(err)
		}
		c.Reset()
	}
	if !c.Spent() {
		t.Fatal("not spent after MaxMessages transactions")
	}
	c.Quit()
	if p.Idle() != 0 {
		t.Errorf("a spent connection went back to the pool")
	}
}

// MaxIdle 0 (upstream.pool.enabled: false) keeps nothing: every session
// has a connection of its own.
func TestPoolMaxIdleZeroDialsEverySession(t *testing.T) {
	m := startLimitedMTA(t, 1000)
	p := &Pool{Addr: m.addr, Opts: testOpts, IdleTimeout: time.Minute}
	defer p.Close()
	for i := 0; i < 3; i++ {
		sendThrough(t, p)
	}
	if n := m.conns.Load(); n != 3 {
		t.Errorf("%d connections for 3 sessions, want 3", n)
	}
}

// An idle connection the MTA has closed (stopped, restarted, its own idle
// timeout) is noticed before it is handed out: the next session gets a
// fresh connection, not "connection lost".
func TestPoolSkipsConnectionClosedByMTA(t *testing.T) {
	m := startLimitedMTA(t, 1000)
	m.closeAfterDot = true
	p := &Pool{Addr: m.addr, Opts: testOpts, MaxIdle: 4, IdleTimeout: time.Hour}
	defer p.Close()
	for i := 0; i < 3; i++ {
		mail, rcpt, dot := sendThrough(t, p)
		if mail.Code != 250 || rcpt.Code != 250 || dot == nil || dot.Code != 250 {
			t.Fatalf("message %d: MAIL %v, RCPT %v, dot %v", i+1, mail, rcpt, dot)
		}
		<-m.closed
	}
	if n := m.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
}
