package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestMemory(max int) (*Memory, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	return NewMemory(max, c.now), c
}

var bg = context.Background()

// A flood of distinct keys never holds more than the bound; expired keys
// go first, then the least recently written.
func TestBound(t *testing.T) {
	m, clk := newTestMemory(1000)
	lim := PerPeriod(10, time.Minute)
	for i := 0; i < 100000; i++ {
		if _, err := m.Take(bg, fmt.Sprint("rate:conn:", i), lim, 1); err != nil {
			t.Fatal(err)
		}
		if n := m.Len(); n > 1000 {
			t.Fatalf("after %d keys: %d held", i+1, n)
		}
	}

	t.Run("expired first", func(t *testing.T) {
		m, clk := newTestMemory(10)
		m.Set(bg, "old-long", []byte("x"), time.Hour)
		m.Set(bg, "new-short", []byte("x"), time.Second)
		for i := 0; i < 8; i++ {
			m.Set(bg, fmt.Sprint("fill", i), []byte("x"), time.Hour)
		}
		clk.advance(2 * time.Second)
		m.Set(bg, "one-more", []byte("x"), time.Hour) // the 11th key
		if n := m.Len(); n > 10 {
			t.Fatalf("%d keys held, bound 10", n)
		}
		if _, ok, _ := m.Get(bg, "old-long"); !ok {
			t.Error("the oldest live key was evicted while an expired one was there")
		}
		if _, ok, _ := m.Get(bg, "new-short"); ok {
			t.Error("the expired key is still there")
		}
	})
	t.Run("then the least recently written", func(t *testing.T) {
		m, _ := newTestMemory(10)
		m.Set(bg, "untouched", []byte("x"), time.Hour)
		m.Set(bg, "touched", []byte("x"), time.Hour)
		for i := 0; i < 8; i++ {
			m.Set(bg, fmt.Sprint("fill", i), []byte("x"), time.Hour)
		}
		m.Set(bg, "touched", []byte("y"), time.Hour) // rewritten: now the newest
		m.Set(bg, "one-more", []byte("x"), time.Hour)
		if n := m.Len(); n > 10 {
			t.Fatalf("%d keys held, bound 10", n)
		}
		if _, ok, _ := m.Get(bg, "touched"); !ok {
			t.Error("the rewritten key was evicted")
		}
		if _, ok, _ := m.Get(bg, "untouched"); ok {
			t.Error("the least recently written key was kept")
		}
	})

	// Idle expired state goes without waiting for the bound.
	clk.advance(time.Hour)
	for i := 0; i < 1000; i++ {
		m.Set(bg, fmt.Sprint("v", i), nil, time.Hour)
	}
	if m.Len() > 1000 {
		t.Fatalf("%d held", m.Len())
	}
	m.SetMax(10)
	m.Set(bg, "after-shrink", nil, time.Hour)
	if m.Len() > 10 {
		t.Fatalf("after SetMax(10): %d held", m.Len())
	}
}

func BenchmarkTake(b *testing.B) {
	m := NewMemory(100000, nil)
	lim := PerPeriod(1000, time.Second)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("rate:conn:30/1m0s:192.0.2.", i, "/32")
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Take(bg, keys[i%len(keys)], lim, 1)
			i++
		}
	})
}

func BenchmarkTakeNewKeys(b *testing.B) {
	m := NewMemory(100000, nil)
	lim := PerPeriod(30, time.Minute)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m.Take(bg, fmt.Sprint("rate:conn:", i), lim, 1)
	}
}

func BenchmarkIncr(b *testing.B) {
	m := NewMemory(100000, nil)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("auth:fail:198.51.100.", i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Incr(bg, keys[i%len(keys)], 1, 10*time.Minute)
			i++
		}
	})
}

func BenchmarkGetSet(b *testing.B) {
	m := NewMemory(100000, nil)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("rcpt:probe:user", i, "@example.com")
	}
	val := []byte(`{"Code":250,"Enhanced":[2,1,5],"Text":"Ok"}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			k := keys[i%len(keys)]
			if _, ok, _ := m.Get(bg, k); !ok {
				m.Set(bg, k, val, time.Hour)
			}
			i++
		}
	})
}

func TestIncr(t *testing.T) {
	m, clk := newTestMemory(10)
	for i, s := range []struct {
		advance time.Duration
		delta   int64
		want    int64
	}{
		{0, 1, 1},
		{time.Minute, 1, 2},
		{8 * time.Minute, 3, 5},
		{59 * time.Second, -1, 4}, // 9m59s after the first: same window
		{time.Second, 1, 1},       // 10m after the first: a new one
		{9 * time.Minute, 1, 2},   // the window does not slide
	} {
		clk.advance(s.advance)
		got, err := m.Incr(bg, "auth:fail:x", s.delta, 10*time.Minute)
		if err != nil || got != s.want {
			t.Fatalf("step %d: Incr = %d, %v; want %d", i, got, err, s.want)
		}
	}
	if _, err := m.Incr(bg, "k", 1, 0); !errors.Is(err, ErrTTL) {
		t.Errorf("Incr with no TTL: %v", err)
	}
}

func TestGetSetDelete(t *testing.T) {
	m, clk := newTestMemory(10)
	if _, ok, err := m.Get(bg, "v"); ok || err != nil {
		t.Fatalf("Get of nothing: %v %v", ok, err)
	}
	val := []byte("250 2.1.5 Ok")
	if err := m.Set(bg, "v", val, time.Hour); err != nil {
		t.Fatal(err)
	}
	val[0] = '5' // the store keeps its own copy
	got, ok, err := m.Get(bg, "v")
	if !ok || err != nil || string(got) != "250 2.1.5 Ok" {
		t.Fatalf("Get = %q %v %v", got, ok, err)
	}
	got[0] = '4'
	if got, _, _ := m.Get(bg, "v"); string(got) != "250 2.1.5 Ok" {
		t.Fatalf("a returned value changed the stored one: %q", got)
	}
	clk.advance(time.Hour - 1)
	if _, ok, _ := m.Get(bg, "v"); !ok {
		t.Fatal("gone before its TTL")
	}
	clk.advance(1)
	if _, ok, _ := m.Get(bg, "v"); ok {
		t.Fatal("still there at its TTL")
	}
	if m.Len() != 0 {
		t.Fatalf("an expired value read is still held: %d", m.Len())
	}
	// Set again moves the expiry; Delete removes.
	m.Set(bg, "v", []byte("a"), time.Minute)
	clk.advance(50 * time.Second)
	m.Set(bg, "v", []byte("b"), time.Minute)
	clk.advance(50 * time.Second)
	if got, ok, _ := m.Get(bg, "v"); !ok || string(got) != "b" {
		t.Fatalf("after a second Set: %q %v", got, ok)
	}
	if err := m.Delete(bg, "v"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := m.Get(bg, "v"); ok {
		t.Fatal("there after Delete")
	}
	if err := m.Delete(bg, "v"); err != nil {
		t.Fatalf("Delete of nothing: %v", err)
	}
	if err := m.Set(bg, "v", nil, 0); !errors.Is(err, ErrTTL) {
		t.Fatalf("Set with no TTL: %v", err)
	}
}
