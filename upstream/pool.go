package upstream

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pool keeps connections to the MTA open between client sessions, so that
// a session costs an XCLIENT and an EHLO (or nothing, without XCLIENT)
// instead of a TCP connect, the greeting, EHLO, XCLIENT, EHLO and QUIT.
// smtp-source style traffic, one message per session, spends most of a
// proxy's time there otherwise.
//
// A connection goes back to the pool from Quit only if it is intact and
// its MTA session carries no login (XCLIENT LOGIN is not reliably
// cleared). XFORWARD connections are reused too: the XFORWARD line is
// sent before every MAIL anyway.
//
// A connection is retired after MaxMessages transactions or MaxAge: an
// MTA's per-connection limits (Exim's smtp_accept_max_per_connection and
// smtp_accept_queue_per_connection, OpenSMTPD's max-mails) and the
// configuration its process read at connect (Postfix keeps a reused smtpd
// on the old restrictions after a reload) must never reach unrelated
// clients.
type Pool struct {
	Addr string
	Opts Options
	// MaxIdle bounds the idle connections kept; each holds one of the
	// MTA's smtpd processes. 0 keeps none: every session dials.
	MaxIdle int
	// IdleTimeout closes connections idle for longer, well before the
	// MTA's own timeout (Postfix smtpd_timeout: 300s).
	IdleTimeout time.Duration
	// MaxMessages retires a connection after that many transactions
	// (MAIL commands); 0 means no bound.
	MaxMessages int
	// MaxAge retires a connection that old; 0 means no bound.
	MaxAge time.Duration

	// now is time.Now; tests replace it.
	now func() time.Time
	// ext is the EHLO keywords of the newest connection to the MTA
	// (Offers).
	ext atomic.Pointer[map[string]string]

	mu     sync.Mutex
	idle   []idleConn
	timer  *time.Timer
	closed bool
}

type idleConn struct {
	c     *Conn
	since time.Time
}

// Get returns a connection presenting client to the MTA: an idle one,
// re-introduced with XCLIENT, or a new one.
func (p *Pool) Get(ctx context.Context, client *ClientInfo) (*Conn, error) {
	for {
		c := p.take()
		if c == nil {
			break
		}
		if err := c.reuse(ctx, client); err != nil {
			// Gone while idle: try the next, then a fresh connection.
			c.Close()
			if ctx.Err() != nil {
				return nil, err
			}
			continue
		}
		return c, nil
	}
	c, err := Dial(ctx, p.Addr, p.Opts, client)
	if err != nil {
		return nil, err
	}
	c.pool = p
	c.born = p.clock()
	p.learn(c)
	return c, nil
}

// Learn connects to the MTA once to learn its EHLO keywords (Offers), as
// at start and after a reload, and says QUIT.
func (p *Pool) Learn(ctx context.Context) error {
	c, err := Dial(ctx, p.Addr, p.Opts, nil)
	if err != nil {
		return err
	}
	p.learn(c)
	c.quit()
	return nil
}

// learn keeps c's EHLO keywords (a map that is never changed after its
// EHLO, so it can be shared).
func (p *Pool) learn(c *Conn) {
	ext := c.ext
	p.ext.Store(&ext)
}

// Offers reports whether the MTA announced the EHLO keyword on the newest
// connection (Learn, or any new one); false while nothing is known.
func (p *Pool) Offers(kw string) bool {
	ext := p.ext.Load()
	if ext == nil {
		return false
	}
	_, ok := (*ext)[strings.ToUpper(kw)]
	return ok
}

func (p *Pool) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// spent reports whether c has done its share: MaxMessages transactions or
// MaxAge.
func (p *Pool) spent(c *Conn) bool {
	if p.MaxMessages > 0 && c.messages >= p.MaxMessages {
		return true
	}
	return p.MaxAge > 0 && p.clock().Sub(c.born) >= p.MaxAge
}

func (p *Pool) take() *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		// Most recently used first: it is the likeliest to be alive, and
		// the old ones age out.
		ic := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(ic.since) < p.IdleTimeout && !p.spent(ic.c) {
			return ic.c
		}
		go ic.c.quit()
	}
	return nil
}

// put keeps c for reuse, or closes it.
func (p *Pool) put(c *Conn) {
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.MaxIdle || p.spent(c) {
		p.mu.Unlock()
		c.quit()
		return
	}
	p.idle = append(p.idle, idleConn{c, time.Now()})
	if p.timer == nil {
		p.timer = time.AfterFunc(p.IdleTimeout, p.sweep)
	}
	p.mu.Unlock()
}

// sweep closes connections idle for IdleTimeout.
func (p *Pool) sweep() {
	p.mu.Lock()
	var old []*Conn
	keep := p.idle[:0]
	for _, ic := range p.idle {
		if time.Since(ic.since) >= p.IdleTimeout {
			old = append(old, ic.c)
		} else {
			keep = append(keep, ic)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.timer = nil
	if len(p.idle) > 0 && !p.closed {
		p.timer = time.AfterFunc(p.IdleTimeout, p.sweep)
	}
	p.mu.Unlock()
	for _, c := range old {
		c.quit()
	}
}

// Close says QUIT to every idle connection; connections in use are
// closed when their sessions end.
func (p *Pool) Close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	for _, ic := range idle {
		ic.c.quit()
	}
}

// Idle returns the number of idle connections.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

var errStale = errors.New("idle connection closed by the MTA")

// reuse makes an idle connection ready for a new client session.
func (c *Conn) reuse(ctx context.Context, client *ClientInfo) error {
	if !c.alive() {
		return errStale
	}
	if c.mode == "xclient" && !c.has("XCLIENT") {
		// Not offered again after the first XCLIENT: the MTA would
		// take the next client for the previous one.
		return errStale
	}
	if c.mode == "xforward" && client != nil {
		c.client = client
		c.xforward(client)
		return nil
	}
	if c.mode != "xclient" || client == nil {
		c.client = client
		return nil
	}
	if c.pendingRset {
		// XCLIENT is not allowed inside a transaction.
		if err := c.cmd(ctx, "rset", "RSET"); err != nil {
			return err
		}
		if rep, err := c.readReply("rset"); err != nil {
			return err
		} else if rep.Code != 250 {
			return &Error{Op: "rset", Err: errors.New("MTA refused RSET: " + rep.String())}
		}
		c.pendingRset, c.txn = false, false
	}
	c.client = client
	return c.xclient(ctx, client)
}

// alive reports whether the MTA has neither closed the idle connection
// nor said anything (a 421 on its shutdown or timeout) since. It peeks
// at the socket without blocking (see alive_unix.go): a read with a
// deadline already past never reaches the socket in Go, so it cannot
// see a close.
func (c *Conn) alive() bool {
	if c.r.Buffered() > 0 {
		return false
	}
	return peekIdle(c.nc)
}

// Spent reports whether c came from a Pool and has done its share
// (Pool.MaxMessages, Pool.MaxAge): a session holding it for many messages
// should Quit it and take a fresh one before the next transaction.
func (c *Conn) Spent() bool {
	return c.pool != nil && c.pool.spent(c)
}

// reusable reports whether c may go back to a pool.
func (c *Conn) reusable() bool {
	if c.pool == nil || c.broken {
		return false
	}
	if c.client != nil && c.client.Login != "" {
		return false
	}
	return c.mode == "xclient" || c.mode == "xforward" || c.mode == "off"
}
