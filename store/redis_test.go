package store

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/store/redistest"
)

func newTestRedis(t *testing.T, srv *redistest.Server, o RedisOptions) *Redis {
	t.Helper()
	o.Addresses = []string{srv.Addr}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second // a loaded test machine; the outage tests kill the server
	}
	r, err := NewRedis(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func pttl(t *testing.T, srv *redistest.Server, key string) time.Duration {
	t.Helper()
	a := srv.Do("PTTL", key)
	n, err := strconv.ParseInt(strings.TrimPrefix(a, ":"), 10, 64)
	if err != nil {
		t.Fatalf("PTTL %s: %q", key, a)
	}
	return time.Duration(n) * time.Millisecond
}

// Two nodes (two clients) racing for the last token of a bucket: never
// both get it, because Take is one script on the server.
func TestRedisTwoNodesRaceForLastToken(t *testing.T) {
	srv := redistest.Start(t)
	a := newTestRedis(t, srv, RedisOptions{KeyPrefix: "sg:"})
	b := newTestRedis(t, srv, RedisOptions{KeyPrefix: "sg:"})
	lim := PerPeriod(1, time.Hour)
	for i := 0; i < 200; i++ {
		key := "rate:msgs:1/1h:192.0.2." + strconv.Itoa(i) + "/32"
		var wg sync.WaitGroup
		var got [2]Taken
		for j, s := range []Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tk, err := s.Take(bg, key, lim, 1)
				if err != nil {
					t.Error(err)
				}
				got[j] = tk
			}()
		}
		wg.Wait()
		if got[0].OK == got[1].OK {
			t.Fatalf("round %d: node A %+v, node B %+v: exactly one must get the last token", i, got[0], got[1])
		}
	}
}

// Keys are PREFIX{KEY} (a hash tag: one slot per key in a Cluster), and
// expire on the server: a bucket when it is full again, a counter ttl
// after it was made (Incr does not move it), a value ttl after Set.
func TestRedisKeysAndTTLs(t *testing.T) {
	srv := redistest.Start(t)
	r := newTestRedis(t, srv, RedisOptions{KeyPrefix: "sg:"})
	if _, err := r.Take(bg, "rate:conn:30/1m0s:192.0.2.0/24", PerPeriod(30, time.Minute), 3); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, srv, "sg:{rate:conn:30/1m0s:192.0.2.0/24}"); d <= 5*time.Second || d > 6*time.Second {
		t.Errorf("bucket after 3 of 30/min: PTTL %v, want 6s (full again then)", d)
	}
	if n, err := r.Incr(bg, "auth:fail:x", 2, 10*time.Minute); n != 2 || err != nil {
		t.Fatalf("Incr = %d, %v", n, err)
	}
	srv.Do("PEXPIRE", "sg:{auth:fail:x}", "300000") // as if 5 minutes went by
	if n, err := r.Incr(bg, "auth:fail:x", 3, 10*time.Minute); n != 5 || err != nil {
		t.Fatalf("Incr = %d, %v", n, err)
	}
	if d := pttl(t, srv, "sg:{auth:fail:x}"); d > 5*time.Minute {
		t.Errorf("a second Incr moved the window's end: PTTL %v", d)
	}
	if err := r.Set(bg, "rcpt:probe:a@example.com", []byte("250 2.1.5 Ok"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if d := pttl(t, srv, "sg:{rcpt:probe:a@example.com}"); d <= 59*time.Minute || d > time.Hour {
		t.Errorf("value: PTTL %v, want 1h", d)
	}
	if v, ok, err := r.Get(bg, "rcpt:probe:a@example.com"); string(v) != "250 2.1.5 Ok" || !ok || err != nil {
		t.Errorf("Get = %q %v %v", v, ok, err)
	}
	if v, ok, err := r.Get(bg, "nothing"); v != nil || ok || err != nil {
		t.Errorf("Get of nothing = %q %v %v", v, ok, err)
	}
	if err := r.Delete(bg, "rcpt:probe:a@example.com"); err != nil {
		t.Fatal(err)
	}
	if a := srv.Do("EXISTS", "sg:{rcpt:probe:a@example.com}"); a != ":0" {
		t.Errorf("after Delete: EXISTS %s", a)
	}
	if err := r.Ping(bg); err != nil || r.Health() != nil || r.Errors() != 0 {
		t.Errorf("healthy server: Ping %v, Health %v, Errors %d", err, r.Health(), r.Errors())
	}
}

// A dead server: the call that finds it fails, then calls fail at once
// (ErrUnavailable) for the cooldown; Failover answers from the local
// store meanwhile. When the server is back, a call after the cooldown
// finds it and sharing resumes.
func TestRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	breaker := newTestRedis(t, srv, RedisOptions{Timeout: 200 * time.Millisecond, Cooldown: time.Hour})
	retry := newTestRedis(t, srv, RedisOptions{Timeout: 200 * time.Millisecond, Cooldown: time.Nanosecond})
	lim := PerPeriod(2, time.Hour)
	if tk, err := retry.Take(bg, "b", lim, 1); !tk.OK || err != nil {
		t.Fatalf("before: %+v %v", tk, err)
	}
	if err := breaker.Ping(bg); err != nil {
		t.Fatal(err)
	}
	srv.Kill()

	if _, err := breaker.Take(bg, "b", lim, 1); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("first call to a dead server: %v, want the connection's error", err)
	}
	if _, err := breaker.Take(bg, "b", lim, 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("second call: %v, want ErrUnavailable at once", err)
	}
	if breaker.Health() == nil || breaker.Errors() != 2 {
		t.Fatalf("Health %v, Errors %d", breaker.Health(), breaker.Errors())
	}

	local := NewMemory(10, nil)
	var failures int
	f := &Failover{Shared: retry, Local: local, OnError: func(error) { failures++ }}
	for i := 0; i < 3; i++ {
		tk, err := f.Take(bg, "b", lim, 1)
		if err != nil || tk.OK != (i < 2) {
			t.Fatalf("take %d during the outage: %+v %v (the local bucket of 2 answers)", i, tk, err)
		}
	}
	if failures != 3 || retry.Health() == nil {
		t.Fatalf("failures %d, Health %v", failures, retry.Health())
	}

	srv.Restart() // empty: the shared bucket is full again
	var tk Taken
	var err error
	for i := 0; i < 100; i++ { // reconnecting: poll, bounded
		if tk, err = f.Take(bg, "shared-again", lim, 1); retry.Health() == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || !tk.OK || retry.Health() != nil {
		t.Fatalf("after the restart: %+v %v, Health %v", tk, err, retry.Health())
	}
	if a := srv.Do("EXISTS", "{shared-again}"); a != ":1" {
		t.Fatalf("the take after the restart did not reach the server: EXISTS %s", a)
	}
}

func TestNewRedisURL(t *testing.T) {
	srv := redistest.Start(t)
	r, err := NewRedis(RedisOptions{URL: "redis://" + srv.Addr + "/3", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Set(bg, "k", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if a := srv.Do("SELECT", "3"); a != "+OK" {
		t.Fatal(a)
	}
	if _, err := NewRedis(RedisOptions{URL: "http://x"}); err == nil {
		t.Error("an http URL was accepted")
	}
	if _, err := NewRedis(RedisOptions{}); err == nil {
		t.Error("no address was accepted")
	}
}

// BenchmarkRedisTake is Take against a real redis-server on loopback,
// from 32 parallel callers over 1024 buckets (one round trip each).
func BenchmarkRedisTake(b *testing.B) {
	srv := redistest.Start(b)
	r, err := NewRedis(RedisOptions{Addresses: []string{srv.Addr}, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	lim := PerPeriod(1000000, time.Second)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "rate:conn:1000000/1s:192.0.2." + strconv.Itoa(i) + "/32"
	}
	b.ReportAllocs()
	b.SetParallelism(16) // 16 callers per core: sessions wait on Redis concurrently
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := r.Take(bg, keys[i%len(keys)], lim, 1); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
