package session

import (
	"crypto/tls"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Peer is what the listener knows of a connection before SMTP starts. The
// listener's net.Conn carries it (see PeerConn) so that the session, which
// go-smtp creates at the first HELO, finds it again.
type Peer struct {
	ID    string
	Addr  netip.AddrPort // the client (after PROXY protocol, if any)
	Local netip.AddrPort
	Start time.Time
	// RequireAuth is set on submission listeners: MAIL needs a login.
	RequireAuth bool
	// AllowInsecureAuth lets AUTH run without TLS (a loopback listener).
	AllowInsecureAuth bool

	hangUp   atomic.Bool
	busy     atomic.Bool
	upstream atomic.Bool
	top      atomic.Pointer[net.Conn]
}

// HoldsUpstream reports whether the session holds a connection to the MTA
// (from its first RCPT until it ends or the connection fails): each of
// those ties up one of the MTA's processes, so the listener gives such a
// client less idle time (limits.transaction_idle_timeout).
func (p *Peer) HoldsUpstream() bool { return p.upstream.Load() }

// Busy reports whether a transaction is open (MAIL given, message not yet
// answered): a draining server lets such sessions finish.
func (p *Peer) Busy() bool { return p.busy.Load() }

func (p *Peer) setBusy(b bool) { p.busy.Store(b) }

// Top returns the connection replies go through: the TLS layer after
// STARTTLS, else nil (the raw connection).
func (p *Peer) Top() net.Conn {
	if c := p.top.Load(); c != nil {
		return *c
	}
	return nil
}

func (p *Peer) setTop(nc net.Conn) { p.top.Store(&nc) }

// HangUpAfterReply asks the listener to close the connection right after
// the next reply is written (Postfix's "reply and disconnect" on a bare
// newline).
func (p *Peer) HangUpAfterReply() { p.hangUp.Store(true) }

// HangingUp reports whether HangUpAfterReply was called.
func (p *Peer) HangingUp() bool { return p.hangUp.Load() }

// PeerConn is implemented by the listener's connections.
type PeerConn interface {
	net.Conn
	Peer() *Peer
}

// peerOf finds the Peer of a connection go-smtp hands us, looking through
// the TLS layer that STARTTLS puts on top.
func peerOf(nc net.Conn) *Peer {
	for {
		switch c := nc.(type) {
		case PeerConn:
			return c.Peer()
		case *tls.Conn:
			nc = c.NetConn()
		default:
			return nil
		}
	}
}

// tlsState returns the TLS state of the connection, if it is TLS
// (implicit TLS or after STARTTLS: both put a *tls.Conn on top).
func tlsState(nc net.Conn) (tls.ConnectionState, bool) {
	if c, ok := nc.(*tls.Conn); ok {
		return c.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}
