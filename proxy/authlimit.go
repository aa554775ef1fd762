package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/smtpgate/smtpgate/store"
)

// authLimiter counts failed AUTH attempts with token buckets in a
// store.Store: burst failures per window, refilled at burst/window. An
// empty bucket is a lock-out until a token comes back.
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
// The buckets and the known networks are in two stores (the same one
// when it is shared; keys in package store's doc). In this node's memory
// each is bounded: full buckets expire, and past maxBuckets or maxKnown
// the least recently written entries are forgotten first, so a flood of
// failures from many addresses cannot push out the networks users log in
// from.
//
// With a shared store (store.redis), both are store.Failover: the counts
// are shared, and while the shared store fails this node's memory keeps
// counting (a guesser is still locked out by what this node sees).
//
// Store errors (of this node's own store): the lock-out check fails closed (Locked names
// limAuthState, so AUTH gets 454 4.7.0, temporary): while the failure
// counts cannot be read, password guessing would otherwise run
// unthrottled, and a user can retry later. A failure or a login that
// cannot be recorded is logged and otherwise ignored. Each store error
// is logged as a warning. The session's AuthLimiter interface carries no
// context, so a shared store bounds its calls with its client's own
// timeouts.
type authLimiter struct {
	buckets store.Store
	known   store.Store
	logger  *slog.Logger
	ipN     int
	loginN  int
	totalN  int
	window  time.Duration
	now     func() time.Time
}

const (
	// knownNetworkTTL is how long a network where a login succeeded stays
	// exempt from that login's total ceiling.
	knownNetworkTTL = 30 * 24 * time.Hour
	// maxKnown bounds the remembered (login, network) pairs in memory.
	maxKnown = 100000
	// maxBuckets bounds the failure buckets in memory.
	maxBuckets = 3 * maxKnown
	// limAuthState is the limit Locked names when the store failed.
	limAuthState = "auth_state_unavailable"
)

func newAuthLimiter(perIP, perLogin, perLoginTotal int, window time.Duration) *authLimiter {
	l := &authLimiter{
		ipN:    perIP,
		loginN: perLogin,
		totalN: perLoginTotal,
		window: window,
		now:    time.Now,
	}
	// The clock is read through l.now, which tests replace.
	clock := func() time.Time { return l.now() }
	l.buckets = store.NewMemory(maxBuckets, clock)
	l.known = store.NewMemory(maxKnown, clock)
	return l
}

// share makes the counts live in shared, with this node's memory
// answering while it fails (failed is told each failure).
func (l *authLimiter) share(shared store.Store, failed func(error)) {
	l.buckets = &store.Failover{Shared: shared, Local: l.buckets, OnError: failed}
	l.known = &store.Failover{Shared: shared, Local: l.known, OnError: failed}
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

// authBucket is one of the three counts: its store key and bucket.
type authBucket struct {
	key string
	lim store.Limit
}

func (l *authLimiter) bucket(kind string, n int, subject string) authBucket {
	return authBucket{
		key: "auth:" + kind + ":" + strconv.Itoa(n) + "/" + l.window.String() + ":" + subject,
		lim: store.PerPeriod(n, l.window),
	}
}

func (l *authLimiter) ipBucket(ip netip.Addr) authBucket {
	return l.bucket("ip", l.ipN, ipKey(ip).String())
}

func (l *authLimiter) loginBucket(ip netip.Addr, login string) authBucket {
	return l.bucket("login", l.loginN, clientNet(ip).String()+":"+login)
}

func (l *authLimiter) totalBucket(login string) authBucket {
	return l.bucket("total", l.totalN, login)
}

func knownKey(ip netip.Addr, login string) string {
	return "auth:known:" + clientNet(ip).String() + ":" + login
}

// Locked implements session.AuthLimiter: the name of the limit that
// locks ip (or login from ip, when login is not empty) out, or "". When
// the store fails it is limAuthState.
func (l *authLimiter) Locked(ip netip.Addr, login string) string {
	ctx := context.Background()
	if empty, err := l.empty(ctx, l.ipBucket(ip)); err != nil {
		return l.failedClosed(ip, login, err)
	} else if empty {
		return "failures_per_ip"
	}
	if login == "" {
		return ""
	}
	if empty, err := l.empty(ctx, l.loginBucket(ip, login)); err != nil {
		return l.failedClosed(ip, login, err)
	} else if empty {
		return "failures_per_login"
	}
	empty, err := l.empty(ctx, l.totalBucket(login))
	if err != nil {
		return l.failedClosed(ip, login, err)
	}
	if !empty {
		return ""
	}
	_, known, err := l.known.Get(ctx, knownKey(ip, login))
	if err != nil {
		return l.failedClosed(ip, login, err)
	}
	if known {
		return ""
	}
	return "failures_per_login_total"
}

// empty reports whether b has no whole token left (a peek).
func (l *authLimiter) empty(ctx context.Context, b authBucket) (bool, error) {
	if !b.lim.Valid() {
		return false, nil
	}
	t, err := l.buckets.Take(ctx, b.key, b.lim, 0)
	return err == nil && t.Remaining < 1, err
}

func (l *authLimiter) failedClosed(ip netip.Addr, login string, err error) string {
	l.log().Warn("AUTH failure counts unavailable: AUTH refused", "stage", "auth", "client", ip.String(), "login", login, "error", err.Error())
	return limAuthState
}

func (l *authLimiter) log() *slog.Logger {
	if l.logger == nil {
		return slog.Default()
	}
	return l.logger
}

// Failed implements session.AuthLimiter.
func (l *authLimiter) Failed(ip netip.Addr, login string) {
	ctx := context.Background()
	bs := []authBucket{l.ipBucket(ip)}
	if login != "" {
		bs = append(bs, l.loginBucket(ip, login), l.totalBucket(login))
	}
	for _, b := range bs {
		if !b.lim.Valid() {
			continue
		}
		if _, err := l.buckets.Take(ctx, b.key, b.lim, 1); err != nil {
			l.log().Warn("AUTH failure not counted", "stage", "auth", "client", ip.String(), "login", login, "error", err.Error())
			return
		}
	}
}

// Succeeded implements session.AuthLimiter: the network becomes one of
// login's own.
func (l *authLimiter) Succeeded(ip netip.Addr, login string) {
	ctx := context.Background()
	if err := l.known.Set(ctx, knownKey(ip, login), nil, knownNetworkTTL); err != nil {
		l.log().Warn("AUTH login network not remembered", "stage", "auth", "client", ip.String(), "login", login, "error", err.Error())
	}
}
