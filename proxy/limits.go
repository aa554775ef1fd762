package proxy

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/smtpgate/smtpgate/config"
)

// Limit names, as the logs and the smtpgate_limit_rejections_total metric
// use them.
const (
	limMaxConns       = "max_connections"
	limMaxConnsPerIP  = "max_connections_per_ip"
	limConnRate       = "connection_rate_per_ip"
	limMessages       = "messages_per_ip"
	limRecipients     = "recipients_per_ip"
	limRcptsPerSender = "recipients_per_sender"
)

// limiter is Postfix's anvil for one node: open connections (global and
// per client network) and token buckets per client network and per
// sender. Its state is bounded: entries that are idle (no connection open,
// every bucket full again) are swept, and past limits.max_tracked_ips
// idle-but-not-full entries are dropped too (which only forgives a client
// some tokens). It is safe for concurrent use.
type limiter struct {
	now    func() time.Time
	exempt atomic.Pointer[func(netip.Addr) bool]
	p      atomic.Pointer[limitParams]
	// onReject is told each refusal (metrics).
	onReject func(limit string)

	total atomic.Int64

	mu        sync.Mutex
	ips       map[netip.Prefix]*ipState
	senders   map[string]*senderState
	nextSweep time.Time
}

type limitParams struct {
	config.EdgeLimits
	gen int
}

type ipState struct {
	gen                  int
	conns                int
	connRate, msgs, rcpt *rate.Limiter // nil when that limit is off
}

type senderState struct {
	gen  int
	rcpt *rate.Limiter
}

const sweepEvery = time.Minute

func newLimiter(l config.EdgeLimits, exempt func(netip.Addr) bool) *limiter {
	lim := &limiter{now: time.Now, ips: map[netip.Prefix]*ipState{}, senders: map[string]*senderState{}}
	lim.set(l, exempt)
	return lim
}

// set installs new limits (a reload). Buckets are rebuilt, full, at their
// next use; open-connection counts are kept.
func (l *limiter) set(e config.EdgeLimits, exempt func(netip.Addr) bool) {
	gen := 1
	if old := l.p.Load(); old != nil {
		if old.EdgeLimits == e {
			gen = old.gen
		} else {
			gen = old.gen + 1
		}
	}
	l.p.Store(&limitParams{EdgeLimits: e, gen: gen})
	if exempt == nil {
		exempt = func(netip.Addr) bool { return false }
	}
	l.exempt.Store(&exempt)
}

func (l *limiter) refused(limit string) string {
	if l.onReject != nil {
		l.onReject(limit)
	}
	return limit
}

// admitGlobal counts one more open connection, or refuses it.
func (l *limiter) admitGlobal() bool {
	if l.total.Add(1) > int64(l.p.Load().MaxConnections) {
		l.total.Add(-1)
		l.refused(limMaxConns)
		return false
	}
	return true
}

func (l *limiter) releaseGlobal() { l.total.Add(-1) }

// open returns the number of connections counted by admitGlobal.
func (l *limiter) open() int64 { return l.total.Load() }

// key is the client network a per-IP limit counts against.
func (l *limiter) key(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := l.p.Load().IPv4Prefix
	if ip.Is6() {
		bits = l.p.Load().IPv6Prefix
	}
	p, _ := ip.Prefix(bits)
	return p
}

// admitIP counts one more connection from ip's network; it returns the
// limit that refused it, or "" and ok.
func (l *limiter) admitIP(ip netip.Addr) (key netip.Prefix, limit string) {
	if (*l.exempt.Load())(ip.Unmap()) {
		return netip.Prefix{}, ""
	}
	p := l.p.Load()
	key = l.key(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.ipState(key, p, now)
	if st.conns >= p.MaxConnectionsPerIP {
		return netip.Prefix{}, l.refused(limMaxConnsPerIP)
	}
	if st.connRate != nil && !st.connRate.AllowN(now, 1) {
		return netip.Prefix{}, l.refused(limConnRate)
	}
	st.conns++
	return key, ""
}

// releaseIP undoes an admitIP that returned key.
func (l *limiter) releaseIP(key netip.Prefix) {
	if !key.IsValid() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.ips[key]; st != nil && st.conns > 0 {
		st.conns--
	}
}

// AllowMessage implements session.Limiter.
func (l *limiter) AllowMessage(ip netip.Addr) string {
	p := l.p.Load()
	if p.MessagesPerIP.Off() || (*l.exempt.Load())(ip) {
		return ""
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.ipState(l.key(ip), p, now).msgs.AllowN(now, 1) {
		return l.refused(limMessages)
	}
	return ""
}

// AllowRecipient implements session.Limiter. The null sender (bounces)
// is not limited per sender: it is everyone's.
func (l *limiter) AllowRecipient(ip netip.Addr, sender string) string {
	p := l.p.Load()
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !p.RecipientsPerIP.Off() && !(*l.exempt.Load())(ip) {
		st := l.ipState(l.key(ip), p, now)
		if !st.rcpt.AllowN(now, 1) {
			return l.refused(limRecipients)
		}
	}
	if !p.RecipientsPerSender.Off() && sender != "" {
		k := strings.ToLower(sender)
		ss := l.senders[k]
		if ss == nil || ss.gen != p.gen {
			l.sweepIfDue(p, now)
			ss = &senderState{gen: p.gen, rcpt: bucket(p.RecipientsPerSender)}
			l.senders[k] = ss
		}
		if !ss.rcpt.AllowN(now, 1) {
			return l.refused(limRcptsPerSender)
		}
	}
	return ""
}

func bucket(r config.Rate) *rate.Limiter {
	if r.Off() {
		return nil
	}
	return rate.NewLimiter(rate.Every(r.Per/time.Duration(r.N)), r.N)
}

// ipState returns key's entry, made (or remade after a reload) as needed.
// l.mu is held.
func (l *limiter) ipState(key netip.Prefix, p *limitParams, now time.Time) *ipState {
	st := l.ips[key]
	if st == nil {
		l.sweepIfDue(p, now)
		st = &ipState{}
		l.ips[key] = st
	}
	if st.gen != p.gen {
		st.gen = p.gen
		st.connRate = bucket(p.ConnectionRatePerIP)
		st.msgs = bucket(p.MessagesPerIP)
		st.rcpt = bucket(p.RecipientsPerIP)
	}
	return st
}

// sweepIfDue drops idle entries once a minute, or at once when the maps
// are over limits.max_tracked_ips. l.mu is held.
func (l *limiter) sweepIfDue(p *limitParams, now time.Time) {
	over := len(l.ips) >= p.MaxTrackedIPs || len(l.senders) >= p.MaxTrackedIPs
	if !over && now.Before(l.nextSweep) {
		return
	}
	l.nextSweep = now.Add(sweepEvery)
	for k, st := range l.ips {
		if st.conns == 0 && (st.gen != p.gen || (full(st.connRate, now) && full(st.msgs, now) && full(st.rcpt, now))) {
			delete(l.ips, k)
		}
	}
	for k, ss := range l.senders {
		if ss.gen != p.gen || full(ss.rcpt, now) {
			delete(l.senders, k)
		}
	}
	// Still over (a flood from many addresses): forget some clients that
	// have nothing open, down to 90%, so the next forced sweep is far.
	target := p.MaxTrackedIPs * 9 / 10
	for k, st := range l.ips {
		if len(l.ips) <= target {
			break
		}
		if st.conns == 0 {
			delete(l.ips, k)
		}
	}
	for k := range l.senders {
		if len(l.senders) <= target {
			break
		}
		delete(l.senders, k)
	}
}

func full(b *rate.Limiter, now time.Time) bool {
	return b == nil || b.TokensAt(now) >= float64(b.Burst())
}

// tracked returns the number of per-IP and per-sender entries (tests,
// metrics).
func (l *limiter) tracked() (ips, senders int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ips), len(l.senders)
}
