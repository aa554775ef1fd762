package proxy

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// authLimiter counts failed AUTH attempts per client address and per
// login with token buckets (golang.org/x/time/rate): burst failures per
// window, refilled at burst/window. An empty bucket is a lock-out until a
// token comes back. Full buckets are forgotten, so memory stays bounded by
// the addresses that failed recently.
type authLimiter struct {
	mu     sync.Mutex
	ip     map[netip.Addr]*rate.Limiter
	login  map[string]*rate.Limiter
	ipN    int
	loginN int
	window time.Duration
	now    func() time.Time
	swept  time.Time
	onLock func(kind string)
}

func newAuthLimiter(perIP, perLogin int, window time.Duration) *authLimiter {
	return &authLimiter{
		ip:     map[netip.Addr]*rate.Limiter{},
		login:  map[string]*rate.Limiter{},
		ipN:    perIP,
		loginN: perLogin,
		window: window,
		now:    time.Now,
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

// Locked implements session.AuthLimiter.
func (l *authLimiter) Locked(ip netip.Addr, login string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if b, ok := l.ip[ipKey(ip)]; ok && b.TokensAt(now) < 1 {
		return true
	}
	if login != "" {
		if b, ok := l.login[login]; ok && b.TokensAt(now) < 1 {
			return true
		}
	}
	return false
}

// Failed implements session.AuthLimiter.
func (l *authLimiter) Failed(ip netip.Addr, login string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.sweep(now)
	take(l.ip, ipKey(ip), l.ipN, l.window, now)
	if login != "" {
		take(l.login, login, l.loginN, l.window, now)
	}
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
	for k, b := range l.ip {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(l.ip, k)
		}
	}
	for k, b := range l.login {
		if b.TokensAt(now) >= float64(b.Burst()) {
			delete(l.login, k)
		}
	}
}
