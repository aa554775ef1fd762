package recipient

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/store"
)

// countingProber answers every probe with r and counts the probes.
type countingProber struct {
	r     reply.Reply
	calls atomic.Int32
}

func (p *countingProber) ProbeRecipient(context.Context, netip.Addr, string) (reply.Reply, error) {
	p.calls.Add(1)
	return p.r, nil
}

// downStore fails every call, as a network store does while its server
// cannot be reached.
type downStore struct{}

var errDown = errors.New("dial tcp 192.0.2.53:6379: connect: connection refused")

func (downStore) Take(context.Context, string, store.Limit, int) (store.Taken, error) {
	return store.Taken{}, errDown
}
func (downStore) Incr(context.Context, string, int64, time.Duration) (int64, error) {
	return 0, errDown
}
func (downStore) Get(context.Context, string) ([]byte, bool, error) { return nil, false, errDown }
func (downStore) Set(context.Context, string, []byte, time.Duration) error {
	return errDown
}
func (downStore) Delete(context.Context, string) error { return errDown }

type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

// The probe cache keeps 2xx answers for positive_ttl and 5xx ones for
// negative_ttl, never 4xx ones; with its store down every recipient is
// probed, the MTA's answer decides, and the log line says the cache
// failed.
func TestUnknownRecipientProbeCache(t *testing.T) {
	const pos, neg = 7 * 24 * time.Hour, 3 * time.Hour
	ok := reply.New(250, [3]int{2, 1, 5}, "Ok")
	unknown := reply.New(550, [3]int{5, 1, 1}, "<bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table")
	busy := reply.New(450, [3]int{4, 3, 2}, "Service currently unavailable")
	type step struct {
		advance time.Duration
		probes  int32  // probes made so far
		reply   string // "" for a pass
	}
	for _, tc := range []struct {
		name  string
		probe reply.Reply
		down  bool
		steps []step
	}{
		{"2xx kept for positive_ttl", ok, false, []step{
			{0, 1, ""}, {pos - time.Second, 1, ""}, {time.Second, 2, ""},
		}},
		{"5xx kept for negative_ttl", unknown, false, []step{
			{0, 1, "550 5.1.1 <Bob@Example.com>: Recipient address rejected: User unknown"},
			{neg - time.Second, 1, "550 5.1.1 <Bob@Example.com>: Recipient address rejected: User unknown"},
			{time.Second, 2, "550 5.1.1 <Bob@Example.com>: Recipient address rejected: User unknown"},
		}},
		{"4xx never kept", busy, false, []step{
			{0, 1, "450 4.1.1 <Bob@Example.com>: Recipient address rejected: unverified address: Service currently unavailable"},
			{0, 2, "450 4.1.1 <Bob@Example.com>: Recipient address rejected: unverified address: Service currently unavailable"},
		}},
		{"store down, 5xx: refused, each time probed", unknown, true, []step{
			{0, 1, "550 5.1.1 <Bob@Example.com>: Recipient address rejected: User unknown"},
			{0, 2, "550 5.1.1 <Bob@Example.com>: Recipient address rejected: User unknown"},
		}},
		{"store down, 2xx: passes, each time probed", ok, true, []step{
			{0, 1, ""}, {0, 2, ""},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &countingProber{r: tc.probe}
			u := NewUnknownRecipient([]string{"example.com"}, nil, p, pos, neg, 10)
			clk := &testClock{t: time.Unix(1_700_000_000, 0)}
			u.cache = store.NewMemory(10, clk.now)
			if tc.down {
				u.cache = downStore{}
			}
			for i, s := range tc.steps {
				clk.t = clk.t.Add(s.advance)
				r := u.CheckRcpt(context.Background(), &policy.Client{}, &policy.Envelope{}, "Bob@Example.com")
				got := ""
				if r.Action != policy.Pass {
					got = r.Reply.String()
				}
				if got != s.reply {
					t.Fatalf("step %d: reply %q, want %q", i, got, s.reply)
				}
				if n := p.calls.Load(); n != s.probes {
					t.Fatalf("step %d: %d probes, want %d", i, n, s.probes)
				}
				logged := r.Log || r.Action != policy.Pass
				if cacheNote := strings.Contains(r.Evidence, "probe cache failed: "+errDown.Error()); cacheNote != tc.down || (tc.down && !logged) {
					t.Fatalf("step %d: evidence %q (logged %v), store down %v", i, r.Evidence, logged, tc.down)
				}
			}
		})
	}
}

// cache_size bounds the answers held.
func TestUnknownRecipientProbeCacheBound(t *testing.T) {
	p := &countingProber{r: reply.New(250, [3]int{2, 1, 5}, "Ok")}
	u := NewUnknownRecipient([]string{"example.com"}, nil, p, time.Hour, time.Hour, 100)
	for i := 0; i < 1000; i++ {
		u.CheckRcpt(context.Background(), &policy.Client{}, &policy.Envelope{}, fmt.Sprintf("user%d@example.com", i))
	}
	if n := u.cache.(*store.Memory).Len(); n > 100 {
		t.Fatalf("%d answers held, cache_size 100", n)
	}
}
