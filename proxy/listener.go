package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/time/rate"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/session"
)

// listener hands go-smtp connections that carry their session.Peer, and
// for implicit TLS puts TLS on top of that (so that go-smtp sees a
// *tls.Conn and the session still finds its Peer underneath).
//
// go-smtp writes its 220 greeting as soon as it has a connection, so
// everything that must come before the greeting happens here: the
// connection limits (in Accept's own loop, so that a refused connection
// costs one write and no goroutine), and, in the connection's first Read
// or Write (on go-smtp's goroutine), the PROXY header and the early-talker
// test.
type listener struct {
	net.Listener
	s        *Server
	implicit bool
	// proxyFrom are the sources that must send a PROXY header
	// (listen[].proxy_protocol_from); nil when the listener has no PROXY
	// protocol.
	proxyFrom []netip.Prefix
	proxy     bool
	// logRefusal keeps a flood of refusals from flooding the log too.
	logRefusal rate.Sometimes
	cfg        config.Listener

	// closed ends a backoff after an accept error (Close).
	closed    chan struct{}
	closeOnce sync.Once
}

func (s *Server) wrap(ln net.Listener, l config.Listener) net.Listener {
	return &listener{
		Listener:   ln,
		s:          s,
		implicit:   l.TLS == "implicit",
		proxy:      l.ProxyProtocol,
		proxyFrom:  l.ProxyNetworks(),
		logRefusal: rate.Sometimes{First: 10, Interval: time.Second},
		cfg:        l,
		closed:     make(chan struct{}),
	}
}

// Accept returns the next admitted connection. A temporary accept error
// (out of file descriptors: EMFILE, ENFILE; out of buffers) is waited
// out here, backing off from 5ms to 1s as net/http does, and logged once
// per burst with the number of errors and how long it lasted, instead of
// once per retry; any other error ends serving.
func (l *listener) Accept() (net.Conn, error) {
	var (
		delay  time.Duration
		failed int
		since  time.Time
	)
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if !temporaryAcceptError(err) {
				return nil, err
			}
			if failed == 0 {
				since = time.Now()
				l.s.Logger.Error("accept failed, backing off until it works again", "address", l.Addr().String(), "error", err.Error())
			}
			failed++
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.closed:
				t.Stop()
				return nil, net.ErrClosed
			}
			continue
		}
		if failed > 0 {
			l.s.Logger.Info("accepting again", "address", l.Addr().String(), "errors", failed, "duration", time.Since(since).Round(time.Millisecond))
			failed, delay = 0, 0
		}
		if c := l.admit(nc); c != nil {
			return c, nil
		}
	}
}

// temporaryAcceptError reports an accept error that goes away by itself:
// a resource shortage (EMFILE, ENFILE, ENOBUFS, ENOMEM) or any other the
// net package calls temporary.
func temporaryAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}

// Close stops accepting, a backoff included.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// admit applies the connection limits and wraps nc; it returns nil for a
// refused connection, which it has answered and closed.
func (l *listener) admit(nc net.Conn) net.Conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		// Replies are small and go out one by one: Nagle would hold each
		// back for the client's delayed ACK (Go sets NODELAY already; be
		// explicit, it is what -s 1 latency depends on).
		tc.SetNoDelay(true)
	}
	s := l.s
	remote := addrPort(nc.RemoteAddr())
	if !s.lim.admitGlobal() {
		l.refuse(nc, remote.Addr(), limMaxConns)
		return nil
	}
	cfg := s.cfg.Load()
	pc := &peerConn{Conn: nc, raw: nc, s: s, l: l, peer: &session.Peer{
		ID:    session.NewID(),
		Addr:  remote,
		Local: addrPort(nc.LocalAddr()),
		Start: time.Now(),
		// Submission ports need a login before MAIL (RFC 6409 §4.3).
		RequireAuth:       l.cfg.Mode != "mx",
		AllowInsecureAuth: l.cfg.Auth.AllowInsecure,
	}}
	if l.proxy && l.trusted(remote.Addr()) {
		pc.balancer = &balancerConn{Conn: nc}
		pc.Conn = newProxyConn(pc.balancer)
		pc.proxied = true
	} else {
		key, limit := s.lim.admitIP(remote.Addr())
		if limit != "" {
			s.lim.releaseGlobal()
			l.refuse(nc, remote.Addr(), limit)
			return nil
		}
		pc.ipKey = key
		pc.watchProxyHeader = l.proxy
	}
	if !l.implicit {
		pc.guard = newGuard(cfg)
		pc.earlyWait = cfg.EarlyTalker.Wait.D()
		pc.earlyWarn = cfg.EarlyTalker.Mode == "warn"
		pc.hostname = cfg.Hostname
	}
	pc.txnIdle = cfg.Limits.TransactionIdleTimeout.D()
	s.track(pc)
	if !pc.proxied {
		pc.logConnect()
	}
	if l.implicit {
		return tls.Server(pc, s.tlsConfig())
	}
	return pc
}

func (l *listener) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.proxyFrom {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refuse answers a connection over a limit and closes it: RFC 5321 §3.1
// lets a server open with 421 instead of 220. A fresh socket's send
// buffer is empty, so the write does not block Accept's loop (the
// deadline is there anyway). Implicit TLS gets no plain-text reply.
func (l *listener) refuse(nc net.Conn, ip netip.Addr, limit string) {
	if !l.implicit {
		nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		nc.Write(tooManyReply(ip))
	}
	nc.Close()
	l.logRefusal.Do(func() {
		l.s.Logger.Info("reject", "stage", "connect", "check", limit, "client", ip.Unmap().String(), "reply", "421 4.7.0 Too many connections")
	})
}

func tooManyReply(ip netip.Addr) []byte {
	return []byte("421 4.7.0 Too many connections from " + ip.Unmap().String() + ", try later\r\n")
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

var errRefused = errors.New("connection refused by smtpgate")

// peerConn is the raw client connection.
type peerConn struct {
	net.Conn
	raw     net.Conn // the socket itself (under the PROXY protocol layer)
	s       *Server
	l       *listener
	peer    *session.Peer
	closing sync.Once
	bye     sync.Once
	// leaving is set by goodbye: what is written from then on is not the
	// session's.
	leaving atomic.Bool

	// The preamble (start) runs once, before go-smtp's first read or
	// write: PROXY header, per-IP limits for proxied clients, early talker.
	started   sync.Once
	startErr  error
	proxied   bool
	earlyWait time.Duration
	earlyWarn bool
	hostname  string
	// pending holds what an early talker sent in warn mode, for go-smtp.
	pending []byte
	// watchProxyHeader: an untrusted client on a PROXY listener; a PROXY
	// header from it closes the connection.
	watchProxyHeader bool
	ipKey            netip.Prefix
	guard            *guard

	// A connection is logged ("connect") once the client sends its first
	// byte, or when it ends otherwise. One the client closes without
	// having sent anything (a load balancer's health check, a port scan)
	// is only counted and logged at debug level: a check every 2s would
	// otherwise fill the log with pairs and "connection reset" warnings.
	admitted  atomic.Bool // past the limits and the PROXY header
	balancer  *balancerConn
	spoke     atomic.Bool // the client sent a byte
	hungUp    atomic.Bool // the client closed (EOF or reset)
	connected atomic.Bool // "connect" was logged
	// wmu orders the replies of the session with the 421 that goodbye
	// writes from the shutdown goroutine, and keeps the guard, which is
	// the session's, away from that goroutine.
	wmu sync.Mutex
	// txnIdle is limits.transaction_idle_timeout; idleCut says the read
	// deadline in force was shortened to it, idleLogged that its timeout
	// was logged.
	txnIdle    time.Duration
	idleCut    atomic.Bool
	idleLogged atomic.Bool
}

func (c *peerConn) Peer() *session.Peer { return c.peer }

// logConnect notes that the connection is admitted; "connect" is logged
// when the client speaks (heard) or at Close.
func (c *peerConn) logConnect() { c.admitted.Store(true) }

func (c *peerConn) emitConnect() {
	if c.admitted.Load() && c.connected.CompareAndSwap(false, true) {
		c.s.Logger.Info("connect", "session", c.peer.ID, "client", c.peer.Addr.Addr().Unmap().String(), "port", c.peer.Addr.Port(), "local", c.peer.Local.String())
	}
}

// heard marks that the client sent something.
func (c *peerConn) heard() {
	if c.spoke.CompareAndSwap(false, true) {
		c.emitConnect()
	}
}

// silentEnd turns the client's hang-up before its first byte into a
// plain end of input: go-smtp logs a reset as an error.
func (c *peerConn) silentEnd(err error) error {
	if c.spoke.Load() || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		return err
	}
	c.hungUp.Store(true)
	return io.EOF
}

func (c *peerConn) start() error {
	c.started.Do(func() {
		c.startErr = c.preamble()
		if c.startErr != nil {
			c.Close()
		}
	})
	return c.startErr
}

func (c *peerConn) preamble() error {
	if c.proxied {
		if err := c.readProxyHeader(); err != nil {
			return err
		}
		key, limit := c.s.lim.admitIP(c.peer.Addr.Addr())
		if limit != "" {
			c.l.refuse(c.Conn, c.peer.Addr.Addr(), limit)
			return errRefused
		}
		c.ipKey = key
		c.logConnect()
	}
	if c.earlyWait > 0 {
		return c.earlyTalker()
	}
	return nil
}

// earlyTalker is postscreen's pregreet test: a "220-" teaser line, then
// a wait. A client that speaks before the final 220 line is not waiting
// for replies (RFC 5321 §4.3.1: the client waits for the greeting); it is
// told 554 5.5.1 and closed, or only logged in warn mode.
func (c *peerConn) earlyTalker() error {
	c.Conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Conn.Write([]byte("220-" + c.hostname + " ESMTP\r\n")); err != nil {
		return c.silentEnd(err)
	}
	c.Conn.SetReadDeadline(time.Now().Add(c.earlyWait))
	buf := make([]byte, 512)
	n, err := c.Conn.Read(buf)
	c.Conn.SetReadDeadline(time.Time{})
	if n == 0 {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil // quiet: a well-behaved client
		}
		return c.silentEnd(err)
	}
	c.heard()
	client := c.peer.Addr.Addr().Unmap().String()
	if c.earlyWarn {
		c.s.Logger.Info("would reject", "session", c.peer.ID, "client", client, "stage", "connect", "check", "early_talker", "mode", "warn", "evidence", string(buf[:min(n, 60)]))
		c.pending = buf[:n]
		return nil
	}
	c.s.met.limitRejected("early_talker")
	c.s.Logger.Info("reject", "session", c.peer.ID, "client", client, "stage", "connect", "check", "early_talker", "reply", "554 5.5.1 Error: you talk too soon", "evidence", string(buf[:min(n, 60)]))
	c.Conn.Write([]byte("554 5.5.1 Error: you talk too soon\r\n"))
	return errRefused
}

func (c *peerConn) Read(p []byte) (int, error) {
	if err := c.start(); err != nil {
		return 0, err
	}
	var n int
	var err error
	if len(c.pending) > 0 {
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	} else {
		n, err = c.Conn.Read(p)
		if err != nil {
			c.logIdle(err)
		}
	}
	if n > 0 {
		c.heard()
	} else if err != nil {
		err = c.silentEnd(err)
	}
	if n > 0 && c.watchProxyHeader {
		c.watchProxyHeader = false
		if isProxyHeader(p[:n]) {
			c.s.met.limitRejected("proxy_untrusted")
			c.s.Logger.Warn("reject", "session", c.peer.ID, "client", c.peer.Addr.Addr().Unmap().String(), "stage", "connect", "check", "proxy_protocol", "error", "PROXY header from a source not in proxy_protocol_from")
			c.Close()
			return 0, errRefused
		}
	}
	if n > 0 && c.guard != nil {
		c.wmu.Lock()
		c.guard.in(p[:n])
		c.wmu.Unlock()
	}
	return n, err
}

func (c *peerConn) Write(p []byte) (int, error) {
	if err := c.start(); err != nil {
		return 0, err
	}
	c.wmu.Lock()
	if c.guard != nil && !c.leaving.Load() {
		if reply, check := c.guard.out(p, c.inputWaiting); reply != "" {
			// The session is dead for every later stage, whatever the
			// client pipelined behind the refused command.
			c.peer.HangUpAfterReply()
			c.s.met.limitRejected(check)
			c.s.met.Decision("session", check, 421, false)
			c.s.Logger.Info("reject", "session", c.peer.ID, "client", c.peer.Addr.Addr().Unmap().String(), "check", check, "reply", reply, "evidence", c.guard.evidence)
			c.Conn.Write([]byte(reply + "\r\n"))
			c.wmu.Unlock()
			c.hangUp()
			return 0, errRefused
		}
	}
	n, err := c.Conn.Write(p)
	c.wmu.Unlock()
	if err != nil {
		c.silentEnd(err) // the greeting to a health check that left
	}
	if c.peer.HangingUp() {
		c.hangUp()
	}
	return n, err
}

// lingerMax bounds how long and how much hangUp reads from a client after
// the reply that ends its session.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 1 << 20
)

// hangUp closes the connection after the reply that ends the session. A
// client that pipelined more than we read would get a reset from a plain
// close (unread input makes the kernel answer with RST), and a reset can
// destroy our last replies in the client's receive buffer before it reads
// them, the refusal included. So the write side is shut first (a FIN
// after the replies) and the client's input is read and dropped, for at
// most lingerTime and lingerBytes, before the close: the lingering close
// of HTTP servers.
func (c *peerConn) hangUp() {
	tc, ok := c.raw.(*net.TCPConn)
	if !ok || c.leaving.Load() {
		c.Close()
		return
	}
	if tc.CloseWrite() == nil {
		tc.SetReadDeadline(time.Now().Add(lingerTime))
		io.CopyN(io.Discard, tc, lingerBytes)
	}
	c.Close()
}

// TLSHandshakeFailed is called by go-smtp when a STARTTLS handshake
// failed; it closes the connection (RFC 3207 section 4.1: no going on in
// plain text, and no channel left for a reply).
func (c *peerConn) TLSHandshakeFailed(err error) {
	c.s.Logger.Info("reject", "session", c.peer.ID, "client", c.peer.Addr.Addr().Unmap().String(), "stage", "starttls", "check", "tls_handshake", "reply", "none, connection closed", "evidence", err.Error())
}

// logSMTPRefusal logs a refusal go-smtp decided on its own, without the
// session (an unparsable or unknown command, a command out of sequence,
// an unknown MAIL or RCPT parameter, a read timeout...), once, as the
// session logs its own decisions. A reply that was not written is not
// logged: the guard put its own in its place (and logged that), or the
// client is gone.
func (s *Server) logSMTPRefusal(c *smtp.Conn, r smtp.Refusal, err error) {
	if err != nil {
		return
	}
	pc := peerConnOf(c.Conn())
	if pc == nil {
		return
	}
	if r.Reason == smtp.ReasonIdleTimeout && pc.idleLogged.Load() {
		return // logged as transaction_idle_timeout
	}
	stage := refusalStage(r.Command)
	rep := reply.New(r.Code, [3]int(r.EnhancedCode), r.Message)
	s.met.Decision(stage, r.Reason, r.Code, false)
	s.Logger.Info("reject", "session", pc.peer.ID, "client", pc.peer.Addr.Addr().Unmap().String(), "stage", stage, "check", r.Reason, "reply", rep.String(), "command", r.Command)
}

// refusalStage is the stage a log names for a command go-smtp refused.
func refusalStage(cmd string) string {
	switch cmd {
	case "HELO", "EHLO", "LHLO":
		return "helo"
	case "MAIL":
		return "mail"
	case "RCPT":
		return "rcpt"
	case "DATA", "BDAT":
		return "data"
	case "AUTH":
		return "auth"
	case "STARTTLS":
		return "starttls"
	}
	return "session"
}

// peerConnOf finds our connection under the TLS layer STARTTLS puts on
// top of it.
func peerConnOf(nc net.Conn) *peerConn {
	for {
		switch c := nc.(type) {
		case *peerConn:
			return c
		case *tls.Conn:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}

// SetReadDeadline is how go-smtp waits for the next command (and the
// session for the next piece of DATA): while the session holds a
// connection to the MTA, the wait is at most limits.transaction_idle_timeout,
// so a client that goes quiet there does not keep one of the MTA's
// processes for the whole command_timeout.
func (c *peerConn) SetReadDeadline(t time.Time) error {
	cut := false
	if c.txnIdle > 0 && c.peer.HoldsUpstream() {
		if limit := time.Now().Add(c.txnIdle); t.IsZero() || t.After(limit) {
			t, cut = limit, true
		}
	}
	c.idleCut.Store(cut)
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline's rule for reads, t for writes.
func (c *peerConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// logIdle logs, once, a read that ended on a deadline SetReadDeadline
// shortened: go-smtp answers it with 421 4.4.2 and closes.
func (c *peerConn) logIdle(err error) {
	var ne net.Error
	if !c.idleCut.Load() || !errors.As(err, &ne) || !ne.Timeout() || !c.idleLogged.CompareAndSwap(false, true) {
		return
	}
	c.s.met.limitRejected("transaction_idle_timeout")
	c.s.met.Decision("session", "transaction_idle_timeout", 421, false)
	c.s.Logger.Info("reject", "session", c.peer.ID, "client", c.peer.Addr.Addr().Unmap().String(), "stage", "session", "check", "transaction_idle_timeout", "reply", "421 4.4.2 Idle timeout, bye bye", "evidence", "no input for "+c.txnIdle.String()+" while holding a connection to the MTA")
}

// inputWaiting reports whether the client has sent bytes we have not read
// yet (they wait in the kernel's socket buffer).
func (c *peerConn) inputWaiting() bool { return socketReadable(c.raw) }

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.closing.Do(func() {
		c.s.untrack(c)
		c.s.lim.releaseIP(c.ipKey)
		c.s.lim.releaseGlobal()
		client := c.peer.Addr.Addr().Unmap().String()
		duration := time.Since(c.peer.Start).Round(time.Millisecond).String()
		if c.admitted.Load() && !c.spoke.Load() && c.hungUp.Load() && !c.connected.Load() {
			c.s.met.silentConns.Inc()
			c.s.Logger.Debug("silent connection", "session", c.peer.ID, "client", client, "duration", duration)
			return
		}
		c.emitConnect()
		if c.connected.Load() {
			c.s.Logger.Info("disconnect", "session", c.peer.ID, "client", client, "duration", duration)
		}
	})
	return err
}

// goodbye tells the client the server is going away (RFC 5321 §3.8) and
// closes the connection; go-smtp's read then fails and the session ends.
//
// It runs on the shutdown goroutine while the session may be writing: the
// 421 goes out between two of the session's replies (wmu), and the
// session's guard never sees it.
func (c *peerConn) goodbye() {
	c.bye.Do(func() {
		c.leaving.Store(true)
		const bye = "421 4.3.2 Service shutting down, try again later\r\n"
		if top := c.peer.Top(); top != nil && top != net.Conn(c) {
			// TLS: its records go out through c.Write, one at a time.
			top.SetWriteDeadline(time.Now().Add(time.Second))
			top.Write([]byte(bye))
		} else {
			// The deadline first: it also ends a write of the session's
			// that a client who does not read keeps blocked.
			c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			c.wmu.Lock()
			c.Conn.Write([]byte(bye))
			c.wmu.Unlock()
		}
		c.Close()
	})
}

func (s *Server) track(c *peerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.met.sessionsTotal.Inc()
}

func (s *Server) untrack(c *peerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.wg.Done()
	}
}
