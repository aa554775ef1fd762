package store

import (
	"context"
	"errors"
	"time"
)

// Failover is a shared Store backed by this node's own: a call that fails
// for the shared store (unreachable, slow, in its cooldown) is answered
// by Local instead, so that a limit keeps counting on this node while
// the shared state is gone, rather than failing open or closed. Errors
// that are the caller's (ErrKind, ErrInvalidLimit, ErrTTL, a cancelled
// context) are returned as they are. OnError, when not nil, is told each
// failure of Shared (Redis logs the start of an outage once itself).
//
// What Local counted during an outage stays local: when Shared is back,
// it answers with the state it had.
type Failover struct {
	Shared  Store
	Local   Store
	OnError func(error)
}

func (f *Failover) fell(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, ErrKind) || errors.Is(err, ErrInvalidLimit) || errors.Is(err, ErrTTL) || ctx.Err() != nil {
		return false
	}
	if f.OnError != nil {
		f.OnError(err)
	}
	return true
}

// Take implements Store.
func (f *Failover) Take(ctx context.Context, key string, lim Limit, n int) (Taken, error) {
	t, err := f.Shared.Take(ctx, key, lim, n)
	if f.fell(ctx, err) {
		return f.Local.Take(ctx, key, lim, n)
	}
	return t, err
}

// Incr implements Store.
func (f *Failover) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	v, err := f.Shared.Incr(ctx, key, delta, ttl)
	if f.fell(ctx, err) {
		return f.Local.Incr(ctx, key, delta, ttl)
	}
	return v, err
}

// Get implements Store.
func (f *Failover) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, ok, err := f.Shared.Get(ctx, key)
	if f.fell(ctx, err) {
		return f.Local.Get(ctx, key)
	}
	return v, ok, err
}

// Set implements Store.
func (f *Failover) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	err := f.Shared.Set(ctx, key, value, ttl)
	if f.fell(ctx, err) {
		return f.Local.Set(ctx, key, value, ttl)
	}
	return err
}

// Delete implements Store: from both, so that a value deleted during an
// outage is not found locally in the next one.
func (f *Failover) Delete(ctx context.Context, key string) error {
	lerr := f.Local.Delete(ctx, key)
	err := f.Shared.Delete(ctx, key)
	if f.fell(ctx, err) {
		return lerr
	}
	return err
}
