package proxy

import (
	"context"
	"net/netip"
	"sync"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/session"
	"github.com/smtpgate/smtpgate/upstream"
)

// Limit names of the MTA's shield, as logs and metrics use them.
const (
	limUpstreamConns      = "upstream_max_connections"
	limUpstreamConnsPerIP = "upstream_max_connections_per_ip"
)

type dialFunc = func(ctx context.Context, ci *upstream.ClientInfo) (*upstream.Conn, error)

// upstreamLimiter shields the MTA as postscreen shields smtpd: each of
// the MTA's processes serves one of our sessions, so sessions that hold a
// connection to it are capped in total (upstream.max_connections) and per
// client network (upstream.max_connections_per_ip). Without the caps,
// clients that open a transaction and go quiet hold every smtpd process
// (Postfix's default_process_limit is 100) and nobody else gets mail
// through.
//
// It wraps the dial the sessions use. A session takes a slot at its first
// dial and keeps it until it ends (its context is done), across its
// transactions and redials, since the MTA connection it holds is busy for
// that long; a failed dial gives the slot back at once. Over a cap the
// session gets a *session.LimitError: 451 4.7.0 at RCPT.
type upstreamLimiter struct {
	max, perIP int
	// key and exempt are the edge limiter's: the client network of an
	// address, and relay.networks (exempt from the per-IP cap only).
	key    func(netip.Addr) netip.Prefix
	exempt func(netip.Addr) bool
	// onReject is told each refusal (metrics).
	onReject func(limit string)

	mu    sync.Mutex
	total int
	ips   map[netip.Prefix]int
	// held are the sessions holding a slot, by their context's Done
	// channel.
	held map[<-chan struct{}]heldSlot
}

type heldSlot struct {
	key  netip.Prefix // invalid when exempt from the per-IP cap
	stop func() bool  // stops the release at the context's end
}

func newUpstreamLimiter(l *limiter) *upstreamLimiter {
	return &upstreamLimiter{
		key:    l.key,
		exempt: func(a netip.Addr) bool { return (*l.exempt.Load())(a) },
		ips:    map[netip.Prefix]int{},
		held:   map[<-chan struct{}]heldSlot{},
	}
}

// set installs new caps (a reload); slots held are kept.
func (u *upstreamLimiter) set(max, perIP int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.max, u.perIP = max, perIP
}

// wrap returns dial with the caps in front of it.
func (u *upstreamLimiter) wrap(dial dialFunc) dialFunc {
	return func(ctx context.Context, ci *upstream.ClientInfo) (*upstream.Conn, error) {
		var ip netip.Addr
		if ci != nil {
			ip, _ = netip.ParseAddr(ci.Addr)
		}
		slot, taken, limit := u.acquire(ctx, ip.Unmap())
		if limit != "" {
			if u.onReject != nil {
				u.onReject(limit)
			}
			return nil, refusal(limit, ip.Unmap())
		}
		c, err := dial(ctx, ci)
		switch {
		case !taken:
		case ctx.Done() == nil:
			// No end to wait for (not a session's context): the slot
			// covered the dial only.
			u.mu.Lock()
			u.drop(slot)
			u.mu.Unlock()
		case err != nil:
			u.release(ctx.Done(), true)
		}
		return c, err
	}
}

// probe takes a slot for a recipient probe (recipients.verify: upstream)
// from a session of a client at ip: the probe opens an MTA connection of
// its own, beside any its session holds, and occupies one of the MTA's
// processes as a session does. It holds the slot until release, which
// the prober calls once the probe's connection is closed. Over a cap the
// probe is not made and the RCPT gets the sessions' 451 4.7.0: making it
// anyway would take the MTA past the cap, and the RCPT could not go on
// without an MTA connection either.
func (u *upstreamLimiter) probe(ip netip.Addr) (release func(), err error) {
	ip = ip.Unmap()
	slot, _, limit := u.acquire(context.Background(), ip)
	if limit != "" {
		if u.onReject != nil {
			u.onReject(limit)
		}
		return nil, probeRefusal{refusal(limit, ip)}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			u.drop(slot)
			u.mu.Unlock()
		})
	}, nil
}

// probeRefusal is a cap's refusal of a probe; its Reply is the RCPT's.
type probeRefusal struct{ *session.LimitError }

func (p probeRefusal) Reply() reply.Reply {
	r := p.LimitError.Reply
	return reply.New(r.Code, [3]int(r.EnhancedCode), r.Message)
}

// acquire takes a slot for the session of ctx, unless it holds one; it
// returns the slot and whether it took one, or the limit that refused.
func (u *upstreamLimiter) acquire(ctx context.Context, ip netip.Addr) (heldSlot, bool, string) {
	done := ctx.Done()
	u.mu.Lock()
	defer u.mu.Unlock()
	if done != nil {
		if _, ok := u.held[done]; ok {
			return heldSlot{}, false, ""
		}
	}
	if u.max > 0 && u.total >= u.max {
		return heldSlot{}, false, limUpstreamConns
	}
	slot := heldSlot{}
	if ip.IsValid() && !u.exempt(ip) {
		slot.key = u.key(ip)
		if u.perIP > 0 && u.ips[slot.key] >= u.perIP {
			return heldSlot{}, false, limUpstreamConnsPerIP
		}
		u.ips[slot.key]++
	}
	u.total++
	if done != nil {
		slot.stop = context.AfterFunc(ctx, func() { u.release(done, false) })
		u.held[done] = slot
	}
	return slot, true, ""
}

// release gives back the slot held under done; stop also cancels its
// release at the context's end.
func (u *upstreamLimiter) release(done <-chan struct{}, stop bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	slot, ok := u.held[done]
	if !ok {
		return
	}
	if stop && slot.stop != nil {
		slot.stop()
	}
	delete(u.held, done)
	u.drop(slot)
}

// drop uncounts slot (u.mu held).
func (u *upstreamLimiter) drop(slot heldSlot) {
	u.total--
	if slot.key.IsValid() {
		if u.ips[slot.key]--; u.ips[slot.key] <= 0 {
			delete(u.ips, slot.key)
		}
	}
}

// inUse returns the slots held, in total and for ip's network (tests,
// metrics).
func (u *upstreamLimiter) inUse(ip netip.Addr) (total, perIP int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.total, u.ips[u.key(ip)]
}

// refusal is the reply over a cap: 451 4.7.0, a temporary failure the
// client retries later (RFC 3463: 4.7.0 other security or policy status).
func refusal(limit string, ip netip.Addr) *session.LimitError {
	msg := "Error: too many connections to the mail server, try again later"
	if limit == limUpstreamConnsPerIP {
		msg = "Error: too many connections from " + ip.String() + " to the mail server, try again later"
	}
	return &session.LimitError{Check: limit, Reply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: msg}}
}
