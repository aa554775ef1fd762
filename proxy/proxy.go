// Package proxy is the smtpgate server: listeners, TLS, the go-smtp
// wiring, reload and graceful shutdown. It turns a config.Config into the
// session.Settings that each new session uses.
//
// proxy knows nothing of the checks' details: check.Build does that.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/check"
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/session"
	"github.com/smtpgate/smtpgate/store"
	"github.com/smtpgate/smtpgate/upstream"
	"github.com/smtpgate/smtpgate/users"
)

// Server runs smtpgate's listeners.
type Server struct {
	Logger *slog.Logger

	cfg     atomic.Pointer[config.Config]
	cert    atomic.Pointer[tls.Certificate]
	backend *session.Backend
	servers []*smtp.Server
	lns     []net.Listener

	// reloadMu serialises reloads (SIGHUP and POST /reload may come
	// together) and guards what a reload replaces: authLim, pool and
	// their keys (res too, which resMu also guards for the metrics).
	reloadMu sync.Mutex
	// res is shared by every check and kept across reloads while dns.*
	// does not change, so its cache survives.
	resMu  sync.Mutex
	res    *dns.Resolver
	resKey string
	// authLim outlives reloads: a reload must not reset a lock-out.
	authLim    *authLimiter
	authLimKey string
	// shared is the store.redis store (nil without one), kept across
	// reloads while store.redis does not change; sharedKey is its
	// settings.
	shared    atomic.Pointer[store.Redis]
	sharedKey string

	lim    *limiter
	upLim  *upstreamLimiter
	met    *metrics
	http   *http.Server
	httpLn net.Listener

	// ReloadFunc, when set, is what POST /reload on the metrics listener
	// runs (main: read the configuration file again and Reload).
	ReloadFunc func() error

	// pool keeps MTA connections between sessions; replaced when
	// upstream.* changes on reload.
	pool    *upstream.Pool
	poolKey string
	// ident is what MTA connections said about XCLIENT/XFORWARD.
	ident identityTracker

	mu    sync.Mutex
	conns map[*peerConn]struct{}
	wg    sync.WaitGroup
}

// New prepares a server for cfg; Listen opens its sockets.
func New(cfg *config.Config, logger *slog.Logger) (*Server, error) {
	s := &Server{Logger: logger, conns: map[*peerConn]struct{}{}}
	s.ident.s = s
	s.met = newMetrics(s)
	// The rate buckets and the AUTH failure counts live in a store:
	// this node's memory (store.Memory, made by the limiters), and
	// store.redis when it is configured (install gives it to them).
	s.lim = newLimiter(cfg.Limits.EdgeLimits, trustedFunc(cfg.RelayNetworks))
	s.lim.onReject = s.met.limitRejected
	s.lim.logger = logger
	s.upLim = newUpstreamLimiter(s.lim)
	s.upLim.onReject = s.met.limitRejected
	s.upLim.set(cfg.Upstream.MaxConnections, cfg.Upstream.MaxConnectionsPerIP)
	cert, err := loadCert(cfg)
	if err != nil {
		return nil, err
	}
	b, err := s.build(cfg)
	if err != nil {
		return nil, err
	}
	s.install(b)
	s.cert.Store(cert)
	s.cfg.Store(cfg)
	s.backend = session.NewBackend(b.st)
	s.warnOpenFiles(cfg.Limits.MaxConnections)
	return s, nil
}

// built is everything a configuration needs, made but not yet installed:
// a reload builds it whole and installs it only when nothing failed.
type built struct {
	st         *session.Settings
	res        *dns.Resolver
	resKey     string
	authLim    *authLimiter
	authLimKey string
	pool       *upstream.Pool
	poolKey    string
	shared     *store.Redis
	sharedKey  string
}

// install makes b the running parts (s.reloadMu held, or New). A pool that
// b replaces says QUIT to its idle connections.
func (s *Server) install(b *built) {
	s.resMu.Lock()
	s.res, s.resKey = b.res, b.resKey
	s.resMu.Unlock()
	s.authLim, s.authLimKey = b.authLim, b.authLimKey
	if old := s.shared.Swap(b.shared); old != nil && old != b.shared {
		old.Close()
	}
	s.sharedKey = b.sharedKey
	var rate store.Store
	if b.shared != nil {
		rate = b.shared
	}
	s.lim.setShared(rate, s.storeFailed(useRateLimits))
	if s.pool != nil && s.pool != b.pool {
		s.pool.Close()
	}
	s.pool, s.poolKey = b.pool, b.poolKey
}

// loadCert reads the certificate; it is installed only with the rest of
// the configuration, so that a refused reload changes nothing.
func loadCert(cfg *config.Config) (*tls.Certificate, error) {
	if cfg.TLS.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &cert, nil
}

func trustedFunc(nets []netip.Prefix) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		for _, n := range nets {
			if n.Contains(a) {
				return true
			}
		}
		return false
	}
}

func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		},
	}
}

// build makes what sessions need from cfg, reusing the running resolver,
// AUTH limiter and MTA pool where their settings did not change. It
// changes nothing in s (s.reloadMu held, or New).
func (s *Server) build(cfg *config.Config) (*built, error) {
	addr := cfg.Upstream.Address
	want := cfg.Upstream.XClient
	uo := upstream.Options{
		Helo:           cfg.Upstream.Helo,
		Timeout:        cfg.Upstream.Timeout.D(),
		DataTimeout:    cfg.Upstream.DataTimeout.D(),
		ConnectTimeout: cfg.Upstream.ConnectTimeout.D(),
		XClient:        cfg.Upstream.XClient,
		Observe:        s.met.upstream,
		OnIdentity:     func(id upstream.Identity) { s.ident.report(want, addr, id) },
	}
	var prober policy.RecipientProber
	if cfg.Recipients.Verify == "upstream" {
		prober = probeFunc(func(ctx context.Context, client netip.Addr, rcpt string) (reply.Reply, error) {
			// A probe holds an MTA connection of its own: it takes a
			// slot of upstream.max_connections while it does.
			release, err := s.upLim.probe(client)
			if err != nil {
				return reply.Reply{}, err
			}
			defer release()
			rep, err := upstream.Probe(ctx, addr, uo, rcpt)
			if err != nil {
				return reply.Reply{}, err
			}
			return *rep, nil
		})
	}
	b := &built{}
	res, err := s.resolver(cfg, b)
	if err != nil {
		return nil, err
	}
	b.shared, b.sharedKey, err = s.sharedStore(cfg)
	if err != nil {
		return nil, err
	}
	deps := check.Deps{Resolver: res, Prober: prober, OwnIPs: ownIPs(cfg), Logger: s.Logger}
	if b.shared != nil {
		deps.Store = observedStore{Store: b.shared, failed: s.storeFailed(useProbes)}
	}
	pol, err := check.Build(cfg, deps)
	if err != nil {
		if b.shared != nil && b.shared != s.shared.Load() {
			b.shared.Close()
		}
		return nil, err
	}
	var auth session.Authenticator
	if cfg.Auth.UsersFile != "" {
		u, err := users.Load(cfg.Auth.UsersFile)
		if err != nil {
			return nil, err
		}
		for _, w := range u.Warnings() {
			s.Logger.Warn("users file", "file", cfg.Auth.UsersFile, "warning", w)
		}
		auth = u
	}
	b.authLim, b.authLimKey = s.authLim, fmt.Sprint(cfg.Auth.FailuresPerIP, cfg.Auth.FailuresPerLogin, cfg.Auth.FailuresPerLoginTotal, cfg.Auth.FailureWindow, b.sharedKey)
	if b.authLim == nil || s.authLimKey != b.authLimKey {
		b.authLim = newAuthLimiter(cfg.Auth.FailuresPerIP, cfg.Auth.FailuresPerLogin, cfg.Auth.FailuresPerLoginTotal, cfg.Auth.FailureWindow.D())
		b.authLim.logger = s.Logger
		if b.shared != nil {
			b.authLim.share(b.shared, s.storeFailed(useAuth))
		}
	}
	b.pool, b.poolKey = s.upstreamPool(addr, uo, cfg.Upstream.Pool)
	s.learnMTA(b.pool, cfg.Upstream.ConnectTimeout.D())
	b.st = &session.Settings{
		ClientName: func(ctx context.Context, ip netip.Addr) string {
			ctx, cancel := context.WithTimeout(ctx, cfg.DNS.Timeout.D())
			defer cancel()
			return res.ClientName(ctx, ip)
		},
		Users:           auth,
		AuthLimiter:     b.authLim,
		MaxAuthFailures: cfg.Auth.MaxFailuresPerSession,
		Hostname:        cfg.Hostname,
		Policy:          pol,
		Dial:            s.upLim.wrap(b.pool.Get),
		Offer:           b.pool.Offers,
		MaxHeaderBytes:  cfg.Limits.MaxHeaderBytes,
		DataTimeout:     cfg.Limits.DataTimeout.D(),
		DelayReject:     *cfg.DelayReject,
		Trusted:         trustedFunc(cfg.RelayNetworks),
		Postmaster:      cfg.Postmaster,
		Logger:          s.Logger,
		Limiter:         s.lim,
		Metrics:         s.met,
	}
	b.st.SpoolMemoryBytes, b.st.SpoolDir = cfg.Limits.SpoolMemoryBytes, cfg.Limits.SpoolDir
	return b, nil
}

// upstreamPool returns the pool for addr, uo and upstream.pool and its
// key: the running one (and its idle connections) while they do not
// change, else a new one that install puts in its place.
func (s *Server) upstreamPool(addr string, uo upstream.Options, pc config.Pool) (*upstream.Pool, string) {
	maxIdle := pc.MaxIdle
	if !*pc.Enabled {
		maxIdle = 0 // nothing kept: a connection per session
	}
	key := fmt.Sprint(addr, uo, maxIdle, pc.IdleTimeout, pc.MaxMessages, pc.MaxAge)
	if s.pool != nil && key == s.poolKey {
		return s.pool, key
	}
	return &upstream.Pool{Addr: addr, Opts: uo, MaxIdle: maxIdle, IdleTimeout: pc.IdleTimeout.D(), MaxMessages: pc.MaxMessages, MaxAge: pc.MaxAge.D()}, key
}

// learnMTA reads the MTA's EHLO (at start and on every reload), so that
// clients are offered only the extensions it has (SMTPUTF8, DSN). An MTA
// that does not answer now is learnt from the next connection to it.
func (s *Server) learnMTA(pool *upstream.Pool, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := pool.Learn(ctx); err != nil {
		s.Logger.Warn("MTA extensions not known yet: SMTPUTF8 and DSN are offered once it answers", "upstream", pool.Addr, "error", err.Error())
	}
}

// resolver returns the running resolver while dns.* does not change, else
// a new one; it notes either in b.
func (s *Server) resolver(cfg *config.Config, b *built) (*dns.Resolver, error) {
	key := fmt.Sprint(cfg.DNSServers(), cfg.DNS.Timeout)
	s.resMu.Lock()
	cur, curKey := s.res, s.resKey
	s.resMu.Unlock()
	if cur != nil && key == curKey {
		b.res, b.resKey = cur, key
		return cur, nil
	}
	r, err := dns.NewResolver(dns.Options{Servers: cfg.DNSServers(), Timeout: cfg.DNS.Timeout.D(), OnQuery: s.met.dnsQuery})
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	b.res, b.resKey = r, key
	return r, nil
}

// ownIPs are the addresses a client would name in an address-literal HELO
// to pass for us: the listeners', or every local address for a wildcard
// listener.
func ownIPs(cfg *config.Config) []netip.Addr {
	var ips []netip.Addr
	wildcard := false
	for _, l := range cfg.Listen {
		host, _, _ := net.SplitHostPort(l.Address)
		a, err := netip.ParseAddr(host)
		if err != nil || a.IsUnspecified() {
			wildcard = true
			continue
		}
		ips = append(ips, a.Unmap())
	}
	if wildcard {
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				ips = append(ips, p.Addr().Unmap())
			}
		}
	}
	return ips
}

type probeFunc func(ctx context.Context, client netip.Addr, rcpt string) (reply.Reply, error)

func (f probeFunc) ProbeRecipient(ctx context.Context, client netip.Addr, rcpt string) (reply.Reply, error) {
	return f(ctx, client, rcpt)
}

// Listen opens every configured listener.
func (s *Server) Listen() error {
	cfg := s.cfg.Load()
	for _, l := range cfg.Listen {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			s.Close()
			return fmt.Errorf("listen %s: %w", l.Address, err)
		}
		s.lns = append(s.lns, s.wrap(ln, l))
	}
	if cfg.Metrics.Address != "" {
		if err := s.serveMetrics(cfg.Metrics.Address); err != nil {
			s.Close()
			return err
		}
	}
	return nil
}

// Addrs returns the listening addresses (useful with port 0).
func (s *Server) Addrs() []net.Addr {
	out := make([]net.Addr, len(s.lns))
	for i, l := range s.lns {
		out[i] = l.Addr()
	}
	return out
}

func (s *Server) newSMTPServer(l config.Listener) *smtp.Server {
	cfg := s.cfg.Load()
	srv := smtp.NewServer(s.backend)
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.Limits.MaxMessageBytes
	srv.MaxRecipients = cfg.Limits.MaxRecipients
	srv.MaxLineLength = cfg.Limits.MaxLineLength
	srv.ReadTimeout = cfg.Limits.CommandTimeout.D()
	srv.WriteTimeout = cfg.Limits.CommandTimeout.D()
	// Offered only where the MTA offers them (Settings.Offer).
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.Offer = func(kw string) bool {
		st := s.backend.Settings()
		return st.Offer == nil || st.Offer(kw)
	}
	// The session decides where AUTH is offered (TLS or
	// listen[].auth.allow_insecure) and answers 538 5.7.11 itself.
	srv.AllowInsecureAuth = true
	srv.ErrorLog = log.New(slogWriter{s.Logger}, "", 0)
	srv.OnRefusal = s.logSMTPRefusal
	if l.TLS == "starttls" {
		srv.TLSConfig = s.tlsConfig()
	}
	return srv
}

// Serve serves every listener until Shutdown. It returns the first
// listener error other than a shutdown.
func (s *Server) Serve() error {
	cfg := s.cfg.Load()
	errc := make(chan error, len(s.lns))
	for i, ln := range s.lns {
		srv := s.newSMTPServer(cfg.Listen[i])
		s.servers = append(s.servers, srv)
		s.Logger.Info("listening", "address", ln.Addr().String(), "tls", cfg.Listen[i].TLS)
		go func() { errc <- srv.Serve(ln) }()
	}
	var first error
	for range s.lns {
		if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) && first == nil {
			first = err
		}
	}
	return first
}

// Reload applies a new configuration (lists, tables, checks, certificate,
// limits) to sessions and connections that start from now on; sessions
// in flight finish under the one they started with. Nothing changes when
// it fails. Listeners and metrics.address need a restart; a change there
// is logged.
func (s *Server) Reload(cfg *config.Config) (err error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	defer func() {
		result := "ok"
		if err != nil {
			result = "refused"
		}
		s.met.reloads.WithLabelValues(result).Inc()
	}()
	old := s.cfg.Load()
	cert, err := loadCert(cfg)
	if err != nil {
		return err
	}
	b, err := s.build(cfg)
	if err != nil {
		return err
	}
	if fmt.Sprint(old.Listen) != fmt.Sprint(cfg.Listen) || old.Metrics != cfg.Metrics {
		s.Logger.Warn("reload: listen and metrics.address changes take effect at the next restart")
	}
	st := b.st
	s.install(b)
	s.cert.Store(cert)
	s.lim.set(cfg.Limits.EdgeLimits, trustedFunc(cfg.RelayNetworks))
	s.upLim.set(cfg.Upstream.MaxConnections, cfg.Upstream.MaxConnectionsPerIP)
	s.backend.Swap(st)
	s.cfg.Store(cfg)
	s.Logger.Info("reloaded", "config", cfg.Path, "checks", strings.Join(st.Policy.Names(), ","))
	return nil
}

// Shutdown stops accepting, lets sessions that are in a transaction finish
// until ctx ends, says 421 4.3.2 to the others at once and to the rest when
// ctx ends, and returns when every connection is closed.
func (s *Server) Shutdown(ctx context.Context) error {
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.http != nil {
		defer s.http.Close()
	}
	defer s.closePool()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		conns := s.snapshot()
		if len(conns) == 0 {
			return nil
		}
		for _, c := range conns {
			if !c.peer.Busy() {
				c.goodbye()
			}
		}
		select {
		case <-ctx.Done():
			for _, c := range s.snapshot() {
				c.goodbye()
			}
			s.waitConns(2 * time.Second)
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (s *Server) snapshot() []*peerConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*peerConn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

func (s *Server) waitConns(d time.Duration) {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// Close closes every listener and connection at once.
func (s *Server) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.http != nil {
		s.http.Close()
	}
	defer s.closePool()
	for _, c := range s.snapshot() {
		c.Close()
	}
}

// slogWriter sends go-smtp's own error log to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("smtp server", "error", strings.TrimSpace(string(p)))
	return len(p), nil
}

// DrainTimeout is shutdown.drain_timeout of the running configuration.
func (s *Server) DrainTimeout() time.Duration { return s.cfg.Load().Shutdown.DrainTimeout.D() }

// closePool says QUIT to the idle MTA connections.
func (s *Server) closePool() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.pool != nil {
		s.pool.Close()
	}
	if r := s.shared.Load(); r != nil {
		r.Close()
	}
}
