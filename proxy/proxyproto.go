package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyHeaderTimeout bounds the wait for a load balancer's PROXY header,
// which it sends as soon as it has connected.
const proxyHeaderTimeout = 10 * time.Second

// newProxyConn wraps a connection from a trusted load balancer: it must
// start with a PROXY header, v1 or v2 (HAProxy's send-proxy and
// send-proxy-v2, cloud TCP load balancers).
func newProxyConn(nc net.Conn) *proxyproto.Conn {
	return proxyproto.NewConn(nc, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(proxyHeaderTimeout))
}

// readProxyHeader reads the PROXY header and makes its source the
// client, for every check and for XCLIENT. A LOCAL header (the load
// balancer's own health check) keeps the balancer's address.
func (c *peerConn) readProxyHeader() error {
	pc := c.Conn.(*proxyproto.Conn)
	h := pc.ProxyHeader()
	if h == nil && c.balancer != nil && c.balancer.silent() {
		// The balancer's health check: connected and closed, no header.
		c.admitted.Store(true)
		c.hungUp.Store(true)
		return io.EOF
	}
	if h == nil {
		err := fmt.Errorf("no valid PROXY header from a proxy_protocol_from source")
		c.s.met.limitRejected("proxy_header")
		c.s.Logger.Warn("reject", "session", c.peer.ID, "client", c.peer.Addr.Addr().Unmap().String(), "stage", "connect", "check", "proxy_protocol", "error", err.Error())
		return err
	}
	if h.Command.IsProxy() {
		if src, ok := h.SourceAddr.(*net.TCPAddr); ok {
			c.peer.Addr = src.AddrPort()
		}
		if dst, ok := h.DestinationAddr.(*net.TCPAddr); ok {
			c.peer.Local = dst.AddrPort()
		}
	}
	c.s.Logger.Debug("proxy header", "session", c.peer.ID, "proxy", addrPort(c.raw.RemoteAddr()).String(), "client", c.peer.Addr.String())
	return nil
}

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// isProxyHeader reports whether b starts like a PROXY header (v1 or v2).
func isProxyHeader(b []byte) bool {
	return bytes.HasPrefix(b, []byte("PROXY ")) || bytes.HasPrefix(b, proxyV2Sig[:min(len(b), len(proxyV2Sig))]) && len(b) >= 4
}

// balancerConn is a load balancer's connection under the PROXY protocol
// layer; it tells a health check that closes without a byte (HAProxy's
// plain "check") from a client that sends no valid header.
type balancerConn struct {
	net.Conn
	got    atomic.Int64
	hungUp atomic.Bool
}

func (b *balancerConn) Read(p []byte) (int, error) {
	n, err := b.Conn.Read(p)
	b.got.Add(int64(n))
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		b.hungUp.Store(true)
	}
	return n, err
}

func (b *balancerConn) silent() bool { return b.got.Load() == 0 && b.hungUp.Load() }
