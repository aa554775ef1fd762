package proxy

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/session"
)

// listener hands go-smtp connections that carry their session.Peer, and
// for implicit TLS puts TLS on top of that (so that go-smtp sees a
// *tls.Conn and the session still finds its Peer underneath).
type listener struct {
	net.Listener
	s        *Server
	implicit bool
	cfg      config.Listener
}

func (s *Server) wrap(ln net.Listener, l config.Listener) net.Listener {
	return &listener{Listener: ln, s: s, implicit: l.TLS == "implicit", cfg: l}
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		// Replies are small and go out one by one: Nagle would hold each
		// back for the client's delayed ACK (Go sets NODELAY already; be
		// explicit, it is what -s 1 latency depends on).
		tc.SetNoDelay(true)
	}
	pc := &peerConn{Conn: nc, s: l.s, peer: &session.Peer{
		ID:    session.NewID(),
		Addr:  addrPort(nc.RemoteAddr()),
		Local: addrPort(nc.LocalAddr()),
		Start: time.Now(),
		// Submission ports need a login before MAIL (RFC 6409 §4.3).
		RequireAuth:       l.cfg.Mode != "mx",
		AllowInsecureAuth: l.cfg.Auth.AllowInsecure,
	}}
	l.s.track(pc)
	l.s.Logger.Info("connect", "session", pc.peer.ID, "client", pc.peer.Addr.Addr().Unmap().String(), "port", pc.peer.Addr.Port(), "local", pc.peer.Local.String())
	if l.implicit {
		return tls.Server(pc, l.s.tlsConfig()), nil
	}
	return pc, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// peerConn is the raw client connection.
type peerConn struct {
	net.Conn
	s       *Server
	peer    *session.Peer
	closing sync.Once
	bye     sync.Once
}

func (c *peerConn) Peer() *session.Peer { return c.peer }

func (c *peerConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.peer.HangingUp() {
		c.Close()
	}
	return n, err
}

func (c *peerConn) Close() error {
	err := c.Conn.Close()
	c.closing.Do(func() {
		c.s.untrack(c)
		c.s.Logger.Info("disconnect", "session", c.peer.ID, "client", c.peer.Addr.Addr().Unmap().String(), "duration", time.Since(c.peer.Start).Round(time.Millisecond).String())
	})
	return err
}

// goodbye tells the client the server is going away (RFC 5321 §3.8) and
// closes the connection; go-smtp's read then fails and the session ends.
func (c *peerConn) goodbye() {
	c.bye.Do(func() {
		w := net.Conn(c.Conn)
		if top := c.peer.Top(); top != nil {
			w = top
		}
		w.SetWriteDeadline(time.Now().Add(time.Second))
		w.Write([]byte("421 4.3.2 Service shutting down, try again later\r\n"))
		c.Close()
	})
}

func (s *Server) track(c *peerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = struct{}{}
	s.wg.Add(1)
}

func (s *Server) untrack(c *peerConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.wg.Done()
	}
}
