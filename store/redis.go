package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisOptions say where the Redis server is and how long a call may take.
type RedisOptions struct {
	// Addresses are host:port: one for a single server, several for a
	// Redis Cluster, or the Sentinels when SentinelMaster is set.
	Addresses []string
	// URL is a redis:// or rediss:// URL, instead of Addresses,
	// Username, Password, DB and TLS.
	URL            string
	SentinelMaster string
	Username       string
	Password       string
	DB             int
	// TLS, when not nil, is used to connect.
	TLS *tls.Config
	// KeyPrefix is put before every key, so that several sites can share
	// one Redis.
	KeyPrefix string
	// Timeout bounds every call, connecting included (DefaultRedisTimeout
	// when zero).
	Timeout time.Duration
	// Cooldown is how long calls fail at once after the server failed
	// (DefaultRedisCooldown when zero); then one call tries again.
	Cooldown time.Duration
	// Now, when not nil, is the clock of the token buckets (tests); by
	// default they use the server's TIME, so nodes with skewed clocks
	// agree.
	Now    func() time.Time
	Logger *slog.Logger
}

const (
	// DefaultRedisTimeout bounds a Redis call when RedisOptions.Timeout
	// is zero.
	DefaultRedisTimeout = 50 * time.Millisecond
	// DefaultRedisCooldown is how long a failed server is not asked.
	DefaultRedisCooldown = time.Second
)

// ErrUnavailable is returned without asking the server while it is
// considered down (after a failure, for RedisOptions.Cooldown).
var ErrUnavailable = errors.New("store: redis unavailable")

// Redis is a Store in a Redis server (Redis 7 or later: Incr uses EXPIRE
// NX), shared by every smtpgate node that uses it. Each operation is one
// round trip: Take and Set are Lua scripts, Incr is INCRBY and PEXPIRE NX
// in one MULTI, Get and Delete are GET and DEL. Every key is written
// PREFIX{KEY}: a hash tag, so that in a Redis Cluster the one key a
// script touches is the slot the script is routed by.
//
// A failed call (connection refused, timeout) is returned as an error
// and puts the server in a cooldown: for RedisOptions.Cooldown calls
// fail at once with ErrUnavailable, then one call at a time tries the
// server again until one succeeds. So a dead Redis costs one timeout per
// cooldown, not one per SMTP command. go-redis reconnects by itself.
type Redis struct {
	c        redis.UniversalClient
	prefix   string
	timeout  time.Duration
	cooldown time.Duration
	now      func() time.Time
	logger   *slog.Logger

	// downUntil is when the cooldown ends (unix ns), 0 when up.
	downUntil atomic.Int64
	// probing is set while one call tries a server in cooldown.
	probing atomic.Bool
	errors  atomic.Uint64
	lastErr atomic.Pointer[string]
}

// NewRedis returns a Redis store. It does not connect: the first call
// does (Ping checks).
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultRedisTimeout
	}
	if o.Cooldown <= 0 {
		o.Cooldown = DefaultRedisCooldown
	}
	uo := &redis.UniversalOptions{
		Addrs:                    o.Addresses,
		MasterName:               o.SentinelMaster,
		Username:                 o.Username,
		Password:                 o.Password,
		DB:                       o.DB,
		TLSConfig:                o.TLS,
		ClientName:               "smtpgate",
		Protocol:                 2,
		MaxRetries:               -1, // a retry would double the time a call may take
		DialTimeout:              o.Timeout,
		ReadTimeout:              o.Timeout,
		WriteTimeout:             o.Timeout,
		PoolTimeout:              o.Timeout,
		DialerRetries:            1,
		MaxRedirects:             3,
		DisableIdentity:          true,
		ContextTimeoutEnabled:    true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if o.URL != "" {
		u, err := redis.ParseURL(o.URL)
		if err != nil {
			return nil, fmt.Errorf("store: redis url: %w", err)
		}
		uo.Addrs = []string{u.Addr}
		uo.Username, uo.Password, uo.DB, uo.TLSConfig = u.Username, u.Password, u.DB, u.TLSConfig
	}
	if len(uo.Addrs) == 0 {
		return nil, errors.New("store: redis: no address")
	}
	r := &Redis{
		c:        redis.NewUniversalClient(uo),
		prefix:   o.KeyPrefix,
		timeout:  o.Timeout,
		cooldown: o.Cooldown,
		now:      o.Now,
		logger:   o.Logger,
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	return r, nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.c.Close() }

// Ping asks the server (bounded by the timeout), as every call does.
func (r *Redis) Ping(ctx context.Context) error {
	ctx, done, err := r.begin(ctx)
	if err != nil {
		return err
	}
	return done(r.c.Ping(ctx).Err())
}

// Errors is the number of calls that failed for the server (not for a
// wrong kind of key), cooldown refusals included.
func (r *Redis) Errors() uint64 { return r.errors.Load() }

// Health is nil while the server answers, or the last failure.
func (r *Redis) Health() error {
	if r.downUntil.Load() == 0 {
		return nil
	}
	if p := r.lastErr.Load(); p != nil {
		return errors.New(*p)
	}
	return ErrUnavailable
}

func (r *Redis) key(k string) string { return r.prefix + "{" + k + "}" }

// begin bounds a call by the timeout, or refuses it during a cooldown.
// done records the call's result and returns its error.
func (r *Redis) begin(ctx context.Context) (context.Context, func(error) error, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	probe := false
	if until := r.downUntil.Load(); until != 0 {
		if time.Now().UnixNano() < until || !r.probing.CompareAndSwap(false, true) {
			r.errors.Add(1)
			return nil, nil, ErrUnavailable
		}
		probe = true
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	return ctx, func(err error) error {
		cancel()
		if probe {
			defer r.probing.Store(false)
		}
		if errors.Is(err, redis.ErrClosed) {
			// A store a reload replaced, still used by a session in
			// flight: not an outage of the server.
			return fmt.Errorf("store: redis: %w", err)
		}
		if err == nil || errors.Is(err, redis.Nil) || isReplyError(err) {
			if r.downUntil.Swap(0) != 0 {
				r.logger.Info("shared state store reachable again", "check", "store", "store", "redis")
			}
			return err
		}
		r.errors.Add(1)
		msg := err.Error()
		r.lastErr.Store(&msg)
		if r.downUntil.Swap(time.Now().Add(r.cooldown).UnixNano()) == 0 {
			r.logger.Warn("shared state store unavailable: using this node's state", "check", "store", "store", "redis", "error", msg)
		}
		return fmt.Errorf("store: redis: %w", err)
	}, nil
}

// isReplyError reports whether err is the server's answer to a command
// (the server is up), such as WRONGTYPE.
func isReplyError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded)
}

// kindError maps the server's type errors to ErrKind.
func kindError(err error) error {
	if err == nil {
		return nil
	}
	s := err.Error()
	if strings.Contains(s, "WRONGTYPE") || strings.Contains(s, "not an integer") || strings.Contains(s, "smtpgate:kind") {
		return ErrKind
	}
	return err
}

// takeScript is GCRA over one hash field "t", the theoretical arrival
// time in microseconds (Lua numbers are doubles: microseconds since
// 1970 stay exact). It is Memory.Take line by line. ARGV: burst, every
// (µs), n, now (µs; negative: the server's TIME). It returns {ok,
// remaining, wait µs}.
var takeScript = redis.NewScript(`
local burst = tonumber(ARGV[1])
local every = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local capacity = every * burst
local tat = tonumber(redis.call('HGET', KEYS[1], 't'))
if not tat or tat < now then tat = now end
local newTat = tat + n * every
local wait = newTat - now - capacity
if wait > 0 then
  return {0, math.floor((capacity - (tat - now)) / every), wait}
end
if n > 0 then
  redis.call('HSET', KEYS[1], 't', string.format('%d', newTat))
  redis.call('PEXPIRE', KEYS[1], math.ceil((newTat - now) / 1000))
end
return {1, math.floor((capacity - (newTat - now)) / every), 0}
`)

// setScript is SET PX on a value, refusing a counter (values are stored
// with a leading 'v'; a bucket is a hash, so GET fails WRONGTYPE).
var setScript = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old and string.sub(old, 1, 1) ~= 'v' then
  return redis.error_reply('smtpgate:kind')
end
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
`)

// Take implements Store. The bucket's times are in microseconds.
func (r *Redis) Take(ctx context.Context, key string, lim Limit, n int) (Taken, error) {
	if !lim.Valid() || n < 0 {
		if err := ctx.Err(); err != nil {
			return Taken{}, err
		}
		return Taken{}, ErrInvalidLimit
	}
	every := max(lim.Every.Microseconds(), 1)
	now := int64(-1)
	if r.now != nil {
		now = r.now().UnixMicro()
	}
	ctx, done, err := r.begin(ctx)
	if err != nil {
		return Taken{}, err
	}
	res, err := takeScript.Run(ctx, r.c, []string{r.key(key)}, lim.Burst, every, n, now).Int64Slice()
	if err = done(err); err != nil {
		return Taken{}, kindError(err)
	}
	if len(res) != 3 {
		return Taken{}, fmt.Errorf("store: redis: take answered %v", res)
	}
	t := Taken{OK: res[0] == 1, Remaining: int(res[1])}
	if !t.OK {
		t.RetryAfter = time.Duration(res[2]) * time.Microsecond
	}
	return t, nil
}

// Incr implements Store.
func (r *Redis) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return 0, ErrTTL
	}
	ctx, done, err := r.begin(ctx)
	if err != nil {
		return 0, err
	}
	k := r.key(key)
	var incr *redis.IntCmd
	_, err = r.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		incr = p.IncrBy(ctx, k, delta)
		p.Do(ctx, "PEXPIRE", k, ttlMillis(ttl), "NX")
		return nil
	})
	if err = done(err); err != nil {
		return 0, kindError(err)
	}
	return incr.Val(), nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	ctx, done, err := r.begin(ctx)
	if err != nil {
		return nil, false, err
	}
	v, err := r.c.Get(ctx, r.key(key)).Bytes()
	if err = done(err); errors.Is(err, redis.Nil) {
		return nil, false, nil
	} else if err != nil {
		return nil, false, kindError(err)
	}
	if len(v) == 0 || v[0] != 'v' {
		return nil, false, ErrKind
	}
	return v[1:], true, nil
}

// Set implements Store.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		return ErrTTL
	}
	ctx, done, err := r.begin(ctx)
	if err != nil {
		return err
	}
	v := make([]byte, 1+len(value))
	v[0] = 'v'
	copy(v[1:], value)
	err = setScript.Run(ctx, r.c, []string{r.key(key)}, v, ttlMillis(ttl)).Err()
	return kindError(done(err))
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, key string) error {
	ctx, done, err := r.begin(ctx)
	if err != nil {
		return err
	}
	return done(r.c.Del(ctx, r.key(key)).Err())
}

func ttlMillis(d time.Duration) int64 { return max(int64((d+time.Millisecond-1)/time.Millisecond), 1) }
