package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/store"
)

// The uses of the shared store, as the smtpgate_store_errors_total
// metric labels them.
const (
	useRateLimits = "rate_limits"
	useAuth       = "auth"
	useProbes     = "recipient_probes"
)

// sharedStore returns the Redis store store.redis describes and its key:
// the running one while store.redis does not change, nil when it is not
// configured. It does not connect (the first call does), so a Redis that
// is down at start or reload is no error: the node runs on its own state
// until it answers.
func (s *Server) sharedStore(cfg *config.Config) (*store.Redis, string, error) {
	rc := cfg.Store.Redis
	if !rc.Enabled() {
		return nil, "", nil
	}
	key := fmt.Sprintf("%+v", rc)
	if cur := s.shared.Load(); cur != nil && key == s.sharedKey {
		return cur, key, nil
	}
	o := store.RedisOptions{
		Addresses:      rc.Addresses(),
		URL:            rc.URL,
		SentinelMaster: rc.SentinelMaster,
		Username:       rc.Username,
		Password:       rc.Password,
		DB:             rc.DB,
		KeyPrefix:      rc.KeyPrefix,
		Timeout:        rc.Timeout.D(),
		Logger:         s.Logger,
	}
	if rc.TLS {
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	r, err := store.NewRedis(o)
	if err != nil {
		return nil, "", fmt.Errorf("store.redis: %w", err)
	}
	return r, key, nil
}

// storeFailed counts a failed call to the shared store (the Redis store
// logs the start and the end of an outage itself, once each).
func (s *Server) storeFailed(use string) func(error) {
	c := s.met.storeErrors.WithLabelValues(use)
	return func(error) { c.Inc() }
}

// observedStore counts its store's failures; the recipient probes use it
// without a local fallback: a failure is a cache miss and the MTA is
// asked.
type observedStore struct {
	store.Store
	failed func(error)
}

func (o observedStore) note(err error) error {
	if err != nil && o.failed != nil {
		o.failed(err)
	}
	return err
}

func (o observedStore) Take(ctx context.Context, key string, lim store.Limit, n int) (store.Taken, error) {
	t, err := o.Store.Take(ctx, key, lim, n)
	return t, o.note(err)
}

func (o observedStore) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	v, err := o.Store.Incr(ctx, key, delta, ttl)
	return v, o.note(err)
}

func (o observedStore) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, ok, err := o.Store.Get(ctx, key)
	return v, ok, o.note(err)
}

func (o observedStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return o.note(o.Store.Set(ctx, key, value, ttl))
}

func (o observedStore) Delete(ctx context.Context, key string) error {
	return o.note(o.Store.Delete(ctx, key))
}

// storeHealth is the /readyz line about the shared store: "" without
// one. A Redis that is down makes the node degraded, not unready: mail
// keeps flowing on this node's own state, and a load balancer that took
// every node out because their shared Redis failed would stop all mail.
func (s *Server) storeHealth(ctx context.Context) (line string, degraded bool) {
	r := s.shared.Load()
	if r == nil {
		return "", false
	}
	if err := r.Ping(ctx); err != nil {
		return "degraded: shared state store (redis) unavailable: rate limits and AUTH lock-outs count on this node only, recipient probes ask the MTA: " + err.Error(), true
	}
	return "shared state store (redis): ok", false
}
