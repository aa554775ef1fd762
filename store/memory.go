package store

import (
	"context"
	"sync"
	"time"
)

// Memory is the Store of a single node, safe for concurrent use. It holds
// at most Max keys: when a new key would go past that, expired keys are
// dropped first and then the least recently written ones, down to 90% of
// Max, so that a flood of distinct keys costs bounded memory and the next
// eviction is far away. Forgetting a bucket forgives its tokens;
// forgetting a value is a cache miss.
type Memory struct {
	now func() time.Time

	mu  sync.Mutex
	max int
	m   map[string]*entry
	// head is the list's sentinel: head.next is the most recently
	// written entry, head.prev the least.
	head entry
}

type kind uint8

const (
	kindBucket kind = iota + 1
	kindCounter
	kindValue
)

type entry struct {
	key  string
	kind kind
	// exp is when the entry is gone (for a bucket: when it is full
	// again).
	exp int64 // unix nanoseconds
	// tat is a bucket's theoretical arrival time (GCRA): the bucket is
	// full at tat, and holds Burst - (tat-now)/Every tokens before.
	tat   int64
	n     int64
	value []byte

	prev, next *entry
}

// DefaultMax is Memory's bound when NewMemory is given none.
const DefaultMax = 100000

// NewMemory returns an empty Memory holding at most max keys (DefaultMax
// when max <= 0). now is its clock (time.Now when nil); tests give their
// own.
func NewMemory(max int, now func() time.Time) *Memory {
	if max <= 0 {
		max = DefaultMax
	}
	if now == nil {
		now = time.Now
	}
	m := &Memory{now: now, max: max, m: map[string]*entry{}}
	m.head.next, m.head.prev = &m.head, &m.head
	return m
}

// SetMax changes the bound (a reload); a smaller one takes effect at the
// next new key.
func (m *Memory) SetMax(max int) {
	if max <= 0 {
		max = DefaultMax
	}
	m.mu.Lock()
	m.max = max
	m.mu.Unlock()
}

// Len returns the number of keys held, expired ones not yet dropped
// included.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.m)
}

// Take implements Store.
func (m *Memory) Take(ctx context.Context, key string, lim Limit, n int) (Taken, error) {
	if err := ctx.Err(); err != nil {
		return Taken{}, err
	}
	if !lim.Valid() || n < 0 {
		return Taken{}, ErrInvalidLimit
	}
	every := int64(lim.Every)
	capacity := every * int64(lim.Burst)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now().UnixNano()
	e, err := m.live(key, kindBucket, now)
	if err != nil {
		return Taken{}, err
	}
	tat := now
	if e != nil && e.tat > now {
		tat = e.tat
	}
	newTat := tat + int64(n)*every
	if wait := newTat - now - capacity; wait > 0 {
		return Taken{RetryAfter: time.Duration(wait), Remaining: int((capacity - (tat - now)) / every)}, nil
	}
	if n > 0 {
		if e == nil {
			e = m.insert(key, kindBucket, now)
		} else {
			m.touch(e)
		}
		e.tat, e.exp = newTat, newTat
	}
	return Taken{OK: true, Remaining: int((capacity - (newTat - now)) / every)}, nil
}

// Incr implements Store.
func (m *Memory) Incr(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if ttl <= 0 {
		return 0, ErrTTL
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now().UnixNano()
	e, err := m.live(key, kindCounter, now)
	if err != nil {
		return 0, err
	}
	if e == nil {
		e = m.insert(key, kindCounter, now)
		e.exp = now + int64(ttl)
	} else {
		m.touch(e)
	}
	e.n += delta
	return e.n, nil
}

// Get implements Store. The value returned is the caller's to keep.
func (m *Memory) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.live(key, kindValue, m.now().UnixNano())
	if err != nil || e == nil {
		return nil, false, err
	}
	return append([]byte(nil), e.value...), true, nil
}

// Set implements Store. value is copied.
func (m *Memory) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl <= 0 {
		return ErrTTL
	}
	v := append([]byte(nil), value...)
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now().UnixNano()
	e, err := m.live(key, kindValue, now)
	if err != nil {
		return err
	}
	if e == nil {
		e = m.insert(key, kindValue, now)
	} else {
		m.touch(e)
	}
	e.value, e.exp = v, now+int64(ttl)
	return nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.m[key]; e != nil {
		m.remove(e)
	}
	return nil
}

// live returns key's entry if it exists and has not expired (an expired
// one is dropped), or an error if it is of another kind. m.mu is held.
func (m *Memory) live(key string, k kind, now int64) (*entry, error) {
	e := m.m[key]
	if e == nil {
		return nil, nil
	}
	if now >= e.exp {
		m.remove(e)
		return nil, nil
	}
	if e.kind != k {
		return nil, ErrKind
	}
	return e, nil
}

// insert adds a new entry for key at the front, making room first.
// m.mu is held.
func (m *Memory) insert(key string, k kind, now int64) *entry {
	m.expireOldest(now)
	if len(m.m) >= m.max {
		m.evict(now)
	}
	e := &entry{key: key, kind: k}
	m.m[key] = e
	m.pushFront(e)
	return e
}

// expireOldest drops the least recently written entries while they have
// expired, looking at two at most: a cheap, steady cleanup (as Redis
// samples keys) so that idle expired state does not wait for the bound.
func (m *Memory) expireOldest(now int64) {
	for i := 0; i < 2; i++ {
		e := m.head.prev
		if e == &m.head || now < e.exp {
			return
		}
		m.remove(e)
	}
}

// evict drops every expired entry, then the least recently written ones
// down to 90% of the bound. Each full pass is followed by at least a
// tenth of the bound of new keys before the next, so the cost per key
// stays constant.
func (m *Memory) evict(now int64) {
	for _, e := range m.m {
		if now >= e.exp {
			m.remove(e)
		}
	}
	target := m.max * 9 / 10
	if target >= m.max {
		target = m.max - 1
	}
	for len(m.m) > target && m.head.prev != &m.head {
		m.remove(m.head.prev)
	}
}

func (m *Memory) remove(e *entry) {
	delete(m.m, e.key)
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (m *Memory) pushFront(e *entry) {
	e.prev, e.next = &m.head, m.head.next
	m.head.next.prev = e
	m.head.next = e
}

// touch moves e to the front: it was just written.
func (m *Memory) touch(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	m.pushFront(e)
}
