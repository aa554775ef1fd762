package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/smtpgate/smtpgate/store/redistest"
)

// The tests in this file are the Store contract: they run against Memory
// and against Redis (a real redis-server), with the same table.

// maker makes fresh stores of one implementation for a test.
type maker struct {
	// new returns an empty store whose token buckets read clk.
	new func() (Store, *clock)
	// real returns an empty store on the real clock (concurrency tests).
	real func() Store
	// takes is how many takes TestTakeMatchesXTimeRate makes.
	takes int
}

func forEachStore(t *testing.T, f func(t *testing.T, mk maker)) {
	t.Run("memory", func(t *testing.T) {
		f(t, maker{
			new:   func() (Store, *clock) { return newTestMemory(10) },
			real:  func() Store { return NewMemory(1000, nil) },
			takes: 5000,
		})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		n := 0
		open := func(now func() time.Time) Store {
			n++
			r, err := NewRedis(RedisOptions{Addresses: []string{srv.Addr}, KeyPrefix: fmt.Sprintf("t%d:", n), Now: now, Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			return r
		}
		f(t, maker{
			new: func() (Store, *clock) {
				c := &clock{t: time.Unix(1_700_000_000, 0)}
				return open(c.now), c
			},
			real:  func() Store { return open(nil) },
			takes: 1000,
		})
	})
}

func TestTake(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk maker) {
		lim := PerPeriod(3, time.Minute) // a token every 20s
		type step struct {
			advance time.Duration
			n       int
			want    Taken
		}
		for _, tc := range []struct {
			name  string
			steps []step
		}{
			{"a new bucket is full", []step{
				{0, 0, Taken{OK: true, Remaining: 3}},
				{0, 3, Taken{OK: true, Remaining: 0}},
			}},
			{"empty, then one token per Every", []step{
				{0, 1, Taken{OK: true, Remaining: 2}},
				{0, 1, Taken{OK: true, Remaining: 1}},
				{0, 1, Taken{OK: true, Remaining: 0}},
				{0, 1, Taken{RetryAfter: 20 * time.Second}},
				{19 * time.Second, 1, Taken{RetryAfter: time.Second}},
				{time.Second, 1, Taken{OK: true, Remaining: 0}},
			}},
			{"a refused take changes nothing", []step{
				{0, 2, Taken{OK: true, Remaining: 1}},
				{0, 2, Taken{RetryAfter: 20 * time.Second, Remaining: 1}},
				{0, 1, Taken{OK: true, Remaining: 0}},
			}},
			{"a peek takes nothing", []step{
				{0, 3, Taken{OK: true}},
				{0, 0, Taken{OK: true, Remaining: 0}},
				{40 * time.Second, 0, Taken{OK: true, Remaining: 2}},
				{0, 2, Taken{OK: true, Remaining: 0}},
			}},
			{"never more than Burst", []step{
				{0, 1, Taken{OK: true, Remaining: 2}},
				{time.Hour, 0, Taken{OK: true, Remaining: 3}},
				{0, 4, Taken{RetryAfter: 20 * time.Second, Remaining: 3}},
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				m, clk := mk.new()
				for i, s := range tc.steps {
					clk.advance(s.advance)
					got, err := m.Take(bg, "rate:test", lim, s.n)
					if err != nil || got != s.want {
						t.Fatalf("step %d: Take(%d) = %+v, %v; want %+v", i, s.n, got, err, s.want)
					}
				}
			})
		}
	})
}

// Take gives the answers of golang.org/x/time/rate, the token bucket the
// limits used before they moved here, for the same sequence of takes.
func TestTakeMatchesXTimeRate(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk maker) {
		for _, r := range []struct {
			n   int
			per time.Duration
		}{{3, time.Minute}, {5, 10 * time.Minute}, {50, 10 * time.Minute}, {200, time.Hour}, {1, time.Second}} {
			m, clk := mk.new()
			lim := PerPeriod(r.n, r.per)
			ref := rate.NewLimiter(rate.Every(lim.Every), lim.Burst)
			rnd := rand.New(rand.NewSource(int64(r.n)))
			for i := 0; i < mk.takes; i++ {
				clk.advance(time.Duration(rnd.Int63n(int64(2 * lim.Every))).Truncate(time.Microsecond))
				got, err := m.Take(bg, "k", lim, 1)
				if err != nil {
					t.Fatal(err)
				}
				if want := ref.AllowN(clk.now(), 1); got.OK != want {
					t.Fatalf("%d/%v, take %d: got %v, x/time/rate says %v", r.n, r.per, i, got.OK, want)
				}
			}
		}
	})
}

func TestTakeInvalid(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk maker) {
		m, _ := mk.new()
		for _, tc := range []struct {
			lim Limit
			n   int
		}{{Limit{}, 1}, {Limit{Burst: 1}, 1}, {Limit{Every: time.Second}, 1}, {PerPeriod(1, time.Second), -1}, {PerPeriod(0, time.Second), 1}} {
			if _, err := m.Take(bg, "k", tc.lim, tc.n); !errors.Is(err, ErrInvalidLimit) {
				t.Errorf("Take(%+v, %d): %v, want ErrInvalidLimit", tc.lim, tc.n, err)
			}
		}
	})
}

func TestKindsDoNotMix(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk maker) {
		m, _ := mk.new()
		m.Set(bg, "v", []byte("x"), time.Hour)
		m.Incr(bg, "c", 1, time.Hour)
		m.Take(bg, "b", PerPeriod(1, time.Hour), 1)
		if _, err := m.Take(bg, "v", PerPeriod(1, time.Hour), 1); !errors.Is(err, ErrKind) {
			t.Errorf("Take of a value: %v", err)
		}
		if _, err := m.Incr(bg, "b", 1, time.Hour); !errors.Is(err, ErrKind) {
			t.Errorf("Incr of a bucket: %v", err)
		}
		if _, _, err := m.Get(bg, "c"); !errors.Is(err, ErrKind) {
			t.Errorf("Get of a counter: %v", err)
		}
		if err := m.Set(bg, "c", nil, time.Hour); !errors.Is(err, ErrKind) {
			t.Errorf("Set of a counter: %v", err)
		}
	})
}

func TestCancelledContext(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk maker) {
		m, _ := mk.new()
		ctx, cancel := context.WithCancel(bg)
		cancel()
		_, err1 := m.Take(ctx, "b", PerPeriod(1, time.Hour), 1)
		_, err2 := m.Incr(ctx, "c", 1, time.Hour)
		_, _, err3 := m.Get(ctx, "v")
		err4 := m.Set(ctx, "v", nil, time.Hour)
		err5 := m.Delete(ctx, "v")
		for i, err := range []error{err1, err2, err3, err4, err5} {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("call %d: %v, want context.Canceled", i+1, err)
			}
		}
	})
}

// Concurrent takes from one bucket grant exactly Burst tokens; concurrent
// increments all count. Run with -race.
func TestConcurrent(t *testing.T) {
	forEachStore(t, func(t *testing.T, mk maker) {
		m := mk.real()
		lim := PerPeriod(500, 24*time.Hour)
		var granted atomic.Int64
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 200; i++ {
					if tk, err := m.Take(bg, "shared", lim, 1); err != nil {
						t.Error(err)
					} else if tk.OK {
						granted.Add(1)
					}
					m.Incr(bg, "count", 1, time.Hour)
					m.Set(bg, fmt.Sprint("v", g, i%50), []byte("x"), time.Hour)
					m.Get(bg, fmt.Sprint("v", (g+1)%8, i%50))
					if i%10 == 0 {
						m.Delete(bg, fmt.Sprint("v", g, i%50))
					}
				}
			}()
		}
		wg.Wait()
		if got := granted.Load(); got != 500 {
			t.Errorf("%d tokens granted from a bucket of 500", got)
		}
		if n, _ := m.Incr(bg, "count", 0, time.Hour); n != 1600 {
			t.Errorf("counter %d, want 1600", n)
		}
	})
}
