// Package store is smtpgate's shared state: token buckets, counters and
// values that expire, behind one interface, so that several smtpgate nodes
// behind a load balancer can share them (a network store) while a single
// node keeps them in memory (Memory).
//
// It is for state that is a fact about a client, a login or an address
// over time, and that every node should see alike. It is not for
// per-process facts such as the connections open right now (those die
// with the process and stay in proxy), nor for configuration.
//
// Every call takes a context and returns an error, because a network
// store can fail or be slow; each caller decides what a failure means,
// says so in its doc comment and logs it.
//
// The operations are shaped so that a Redis implementation does each in
// one round trip: Take is the GCRA form of a token bucket (one key holding
// the theoretical arrival time, updated by one Lua script using the
// server's TIME, as go-redis/redis_rate and redis-cell do), Incr is
// INCRBY plus EXPIRE NX (Haraka's limit plugin counts this way), and
// Get/Set/Delete are GET, SET PX and DEL.
//
// # Keys
//
// Keys are namespaced by their caller, "kind:scope:subject". What lives
// here today, and what a store error does there:
//
//	rate:conn:RATE:NET       connection_rate_per_ip bucket of a client network
//	rate:msgs:RATE:NET       messages_per_ip
//	rate:rcpt:RATE:NET       recipients_per_ip
//	rate:sender:RATE:ADDR    recipients_per_sender (lower-cased MAIL FROM)
//	    (proxy's rate limiter; RATE is the configured "N/period", so a
//	    reload that changes a rate starts its buckets full.) A store error lets
//	    the client through (fails open) with a warning: a rate limit is a
//	    courtesy to the MTA, and refusing all mail because the state is
//	    unreachable would be worse than a flood slipping through.
//
//	auth:ip:N/WINDOW:ADDR            failures_per_ip bucket (IPv6: the /64)
//	auth:login:N/WINDOW:NET:LOGIN    failures_per_login (IPv4 /24, IPv6 /64)
//	auth:total:N/WINDOW:LOGIN        failures_per_login_total
//	auth:known:NET:LOGIN             a network LOGIN logged in from (30 days)
//	    (proxy's AUTH limiter; N/WINDOW as configured.) A store error
//	    at the lock-out check fails closed: AUTH is answered 454 4.7.0
//	    (temporary), since letting password guessing run unthrottled is
//	    worse than users retrying. A failure that cannot be recorded,
//	    or a login that cannot be remembered, is logged and otherwise
//	    ignored.
//
//	rcpt:probe:ADDR          the MTA's answer to a recipient probe, JSON
//	    (the unknown_recipient check; positive_ttl for 2xx,
//	    negative_ttl for 5xx, 4xx never stored.) A store error is a
//	    cache miss: the MTA is asked, which is the authority anyway; the
//	    log line of that recipient says so.
//
// With a shared store (Redis, store.redis in the configuration) the rate
// limiter and the AUTH limiter use Failover: while Redis fails, their
// own Memory answers (they limit by what this node sees, they do not
// fail open or closed); the rules above are then those of that Memory.
// The probe cache uses Redis alone: an error is a cache miss. Open
// connections stay per node (see above).
//
// On a single node each caller keeps its own Memory with its own bound
// (4 × limits.max_tracked_ips rate buckets; 300,000 AUTH buckets and
// 100,000 known networks; recipients.cache_size probe answers), so that a
// flood of one kind of key cannot push out another kind. Greylisting
// triplets are expected next, as values with a TTL.
package store

import (
	"context"
	"errors"
	"time"
)

// Store is shared state with expiry. Implementations are safe for
// concurrent use. A key is used with one kind of operation only (a
// bucket, a counter or a value); mixing kinds on one key is an error.
type Store interface {
	// Take takes n tokens from the bucket at key, if it holds them. A
	// bucket that was never used, or is full again, holds lim.Burst
	// tokens. n = 0 takes nothing and reports what is there (a peek).
	// A bucket that is refused is not changed.
	Take(ctx context.Context, key string, lim Limit, n int) (Taken, error)
	// Incr adds delta to the counter at key and returns its new value.
	// A counter that does not exist starts at 0 and expires ttl after
	// this call; later calls do not move its expiry (a fixed window).
	Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)
	// Get returns the value at key; ok is false when there is none (or
	// it expired).
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Set stores value at key for ttl (> 0).
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// Delete removes key, of whatever kind; a missing key is no error.
	Delete(ctx context.Context, key string) error
}

// Limit is a token bucket: it holds at most Burst tokens, and one comes
// back every Every.
type Limit struct {
	Burst int
	Every time.Duration
}

// PerPeriod is the bucket of n events per period: bursts of n, refilled
// evenly (n/period).
func PerPeriod(n int, period time.Duration) Limit {
	if n <= 0 {
		return Limit{}
	}
	return Limit{Burst: n, Every: period / time.Duration(n)}
}

// Valid reports whether l is a bucket Take accepts.
func (l Limit) Valid() bool { return l.Burst > 0 && l.Every > 0 }

// Taken is the result of Take.
type Taken struct {
	// OK says the tokens were taken.
	OK bool
	// Remaining is the number of whole tokens left in the bucket.
	Remaining int
	// RetryAfter, when !OK, is how long until the n tokens are there.
	RetryAfter time.Duration
}

var (
	// ErrInvalidLimit is returned for a bucket with no size or refill,
	// or a negative n.
	ErrInvalidLimit = errors.New("store: invalid token bucket")
	// ErrKind is returned when a key is used with another kind of
	// operation than the one that made it.
	ErrKind = errors.New("store: key holds another kind of state")
	// ErrTTL is returned for a non-positive TTL.
	ErrTTL = errors.New("store: TTL must be positive")
)
