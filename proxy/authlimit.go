package proxy

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// authLimiter counts failed AUTH attempts with token buckets
// (golang.org/x/time/rate): burst failures per window, refilled at
// burst/window. An empty bucket is a lock-out until a token comes back.
//
// Three counts, so that guessing is slowed everywhere but nobody can lock
// a user out of his own network:
//   - per client address (IPv6: its /64): failures_per_ip;
//   - per login and client network (IPv4 /24, IPv6 /64):
//     failures_per_login. Failures for bob from elsewhere do not lock bob
//     out of his own network;
//   - per login over all networks: failures_per_login_total, the ceiling
//     against guessing from many networks. It does not apply to a network
//     bob logged in from in the last 30 days (knownNetworkTTL), so a distributed
//     attack locks out only the networks bob has not used.
//
// Full buckets and expired networks are forgotten, so memory stays bounded
// by the addresses that failed recently and by maxKnown.
type authLimiter struct {
	mu       sync.Mutex
	ip       map[netip.Addr]*rate.Limiter
	loginNet map[loginNet]*rate.Limiter
	login    map[string]*rate.Limiter
	known    map[loginNet]time.Time // last successful login from there
	ipN      int
	loginN   int
	totalN   int
	window   time.Duration
	now      func() time.Time
	swept    time.Time
}

type loginNet struct {
	login string
	net   netip.Prefix
}

const (
	// knownNetworkTTL is how long a network where a login succeeded stays
	// exempt from that login's total ceiling.
	knownNetworkTTL = 30 * 24 * time.Hour
	// maxKnown bounds the remembered (login, network) pairs.
	maxKnown = 100000
)

func newAuthLimiter(perIP, perLogin, perLoginTotal int, window time.Duration) *authLimiter {
	return &authLimiter{
		ip:       map[netip.Addr]*rate.Limiter{},
		loginNet: map[loginNet]*rate.Limiter{},
		login:    map[string]*rate.Limiter{},
		known:    map[loginNet]time.Time{},
		ipN:      perIP,
		loginN:   perLogin,
		totalN:   perLoginTotal,
		window:   window,
		now:      time.Now,
	}
}

// ipKey groups IPv6 clients by /64: one host owns at least that much.
func ipKey(a netip.Addr) netip.Addr {
	if a.Is6() && !a.Is4In6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a.Unmap()
}

// clientNet is the network a login is counted in: IPv4 /24, IPv6 /64.
func clientNet(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// Locked implements session.AuthLimiter: the name of the limit that
// locks ip (or login from ip, when login is not empty) out, or "".
func (l *authLimiter) Locked(ip netip.Addr, login string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if b, ok := l.ip[ipKey(ip)]; ok && b.TokensAt(now) < 1 {
		return "failures_per_ip"
	}
	if login == "" {
		return ""
	}
	k := loginNet{login, clientNet(ip)}
	if b, ok := l.loginNet[k]; ok && b.TokensAt(now) < 1 {
		return "failures_per_login"
	}
	if b, ok := l.login[login]; ok && b.TokensAt(now) < 1 && !l.knownAt(k, now) {
		return "failures_per_login_total"
	}
	return ""
}

// Failed implements session.AuthLimiter.
func (l *authLimiter) Failed(ip netip.Addr, login string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	take(l.ip, ipKey(ip), l.ipN, l.window, now)
	if login != "" {
		take(l.loginNet, loginNet{login, clientNet(ip)}, l.loginN, l.window, now)
		take(l.login, login, l.totalN, l.window, now)
	}
}

// Succeeded implements session.AuthLimiter: the network becomes one of
// login's own.
func (l *authLimiter) Succeeded(ip netip.Addr, login string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	k := loginNet{login, clientNet(ip)}
	if _, ok := l.known[k]; !ok && len(l.known) >= maxKnown {
		l.forgetKnown(now)
		if len(l.known) >= maxKnown {
			return
		}
	}
	l.known[k] = now
}

func (l *authLimiter) knownAt(k loginNet, now time.Time) bool {
	t, ok := l.known[k]
	return ok && now.Sub(t) < knownNetworkTTL
}

func take[K comparable](m map[K]*rate.Limiter, k K, n int, window time.Duration, now time.Time) {
	b, ok := m[k]
	if !ok {
		b = rate.NewLimiter(rate.Limit(float64(n)/window.Seconds()), n)
		m[k] = b
	}
	b.AllowN(now, 1)
}

// sweep forgets full buckets, at most once a minute.
func (l *authLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	forgetFull(l.ip, now)
	forgetFull(l.loginNet, now)
	forgetFull(l.login, now)
	l.forgetKnown(now)
}

func forgetFull[K comparable](m map[K]*rate.Limiter, now time.Time) {
	for k, b := range m {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(m, k)
		}
	}
}

func (l *authLimiter) forgetKnown(now time.Time) {
	for k, t := range l.known {
		if now.Sub(t) >= knownNetworkTTL {
			delete(l.known, k)
		}
	}
}
