package proxy

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/store"
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

// limiter is Postfix's anvil: open connections (global and per client
// network), which are facts about this process and stay here, and token
// buckets per client network and per sender, which live in a store.Store
// so that nodes behind a load balancer can share them (keys in package
// store's doc). By default the store is this node's memory, bounded by
// limits.max_tracked_ips (four buckets each: connections, messages and
// recipients per network, recipients per sender); forgetting a bucket
// only forgives a client some tokens.
//
// With a shared store (store.redis), this node's memory answers while
// the shared one fails: the client is limited by what this node sees
// (store.Failover). An error of this node's own store lets the client
// through (fails open) and is logged as a warning, at most once per
// storeWarnEvery: a rate limit spares the MTA,
// and refusing every client because the limits' state cannot be reached
// would do more harm than a flood that slips through meanwhile. It is
// safe for concurrent use.
type limiter struct {
	now    func() time.Time
	exempt atomic.Pointer[func(netip.Addr) bool]
	p      atomic.Pointer[limitParams]
	// onReject is told each refusal (metrics).
	onReject func(limit string)

	// store holds the buckets: this node's memory (mem), or shared
	// (store.redis) with mem answering while the shared one fails.
	store  atomic.Pointer[store.Store]
	mem    *store.Memory
	logger *slog.Logger
	// warned is when a store error was last logged (unix ns); suppressed
	// counts those not logged since.
	warned     atomic.Int64
	suppressed atomic.Int64

	total atomic.Int64

	mu sync.Mutex
	// ips are the client networks with connections open.
	ips map[netip.Prefix]*ipState
}

type limitParams struct {
	config.EdgeLimits
	// keys are the buckets' key prefixes, "rate:KIND:RATE:", made once
	// per configuration.
	connKey, msgsKey, rcptKey, senderKey string
}

type ipState struct {
	conns int
}

const (
	// storeWarnEvery spaces the warnings of a failing store.
	storeWarnEvery = 10 * time.Second
	// bucketsPerIP is how many store keys max_tracked_ips stands for.
	bucketsPerIP = 4
)

func newLimiter(l config.EdgeLimits, exempt func(netip.Addr) bool) *limiter {
	lim := &limiter{now: time.Now, ips: map[netip.Prefix]*ipState{}}
	// The clock is read through lim.now, which tests replace.
	lim.mem = store.NewMemory(bucketsPerIP*l.MaxTrackedIPs, func() time.Time { return lim.now() })
	lim.setShared(nil, nil)
	lim.set(l, exempt)
	return lim
}

// setShared makes the buckets live in shared (nil: in this node's memory
// only). While shared fails, this node's memory counts (so a client is
// still limited, to what one node sees) and failed is told each failure.
func (l *limiter) setShared(shared store.Store, failed func(error)) {
	var st store.Store = l.mem
	if shared != nil {
		st = &store.Failover{Shared: shared, Local: l.mem, OnError: failed}
	}
	l.store.Store(&st)
}

// set installs new limits (a reload). A bucket whose rate changed starts
// full at its next use (the rate is part of its key); open-connection
// counts are kept.
func (l *limiter) set(e config.EdgeLimits, exempt func(netip.Addr) bool) {
	l.p.Store(&limitParams{
		EdgeLimits: e,
		connKey:    bucketKey("conn", e.ConnectionRatePerIP),
		msgsKey:    bucketKey("msgs", e.MessagesPerIP),
		rcptKey:    bucketKey("rcpt", e.RecipientsPerIP),
		senderKey:  bucketKey("sender", e.RecipientsPerSender),
	})
	if l.mem != nil {
		l.mem.SetMax(bucketsPerIP * e.MaxTrackedIPs)
	}
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
	// The connection's place is taken first, so that the per-IP cap
	// holds while the store is asked without the lock.
	l.mu.Lock()
	st := l.ips[key]
	if st == nil {
		st = &ipState{}
		l.ips[key] = st
	}
	if st.conns >= p.MaxConnectionsPerIP {
		l.dropIfIdle(key, st)
		l.mu.Unlock()
		return netip.Prefix{}, l.refused(limMaxConnsPerIP)
	}
	st.conns++
	l.mu.Unlock()
	if !p.ConnectionRatePerIP.Off() && !l.take(p.connKey+key.String(), p.ConnectionRatePerIP, ip, limConnRate) {
		l.releaseIP(key)
		return netip.Prefix{}, l.refused(limConnRate)
	}
	return key, ""
}

// releaseIP undoes an admitIP that returned key.
func (l *limiter) releaseIP(key netip.Prefix) {
	if !key.IsValid() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.ips[key]; st != nil {
		if st.conns > 0 {
			st.conns--
		}
		l.dropIfIdle(key, st)
	}
}

// dropIfIdle forgets a network with nothing open. l.mu is held.
func (l *limiter) dropIfIdle(key netip.Prefix, st *ipState) {
	if st.conns == 0 {
		delete(l.ips, key)
	}
}

// AllowMessage implements session.Limiter.
func (l *limiter) AllowMessage(ip netip.Addr) string {
	p := l.p.Load()
	if p.MessagesPerIP.Off() || (*l.exempt.Load())(ip) {
		return ""
	}
	if !l.take(p.msgsKey+l.key(ip).String(), p.MessagesPerIP, ip, limMessages) {
		return l.refused(limMessages)
	}
	return ""
}

// AllowRecipient implements session.Limiter. The null sender (bounces)
// is not limited per sender: it is everyone's.
func (l *limiter) AllowRecipient(ip netip.Addr, sender string) string {
	p := l.p.Load()
	if !p.RecipientsPerIP.Off() && !(*l.exempt.Load())(ip) {
		if !l.take(p.rcptKey+l.key(ip).String(), p.RecipientsPerIP, ip, limRecipients) {
			return l.refused(limRecipients)
		}
	}
	if !p.RecipientsPerSender.Off() && sender != "" {
		if !l.take(p.senderKey+strings.ToLower(sender), p.RecipientsPerSender, ip, limRcptsPerSender) {
			return l.refused(limRcptsPerSender)
		}
	}
	return ""
}

// bucketKey is the key prefix of a kind of bucket: the rate is part of
// it, so that a reload that changes a rate starts its buckets full.
func bucketKey(kind string, r config.Rate) string {
	return "rate:" + kind + ":" + r.String() + ":"
}

// take takes one token from the bucket at key and reports whether it was
// there. A store error allows (see limiter). The session's Limiter
// interface carries no context: a shared store bounds its calls with its
// client's own timeouts.
func (l *limiter) take(key string, r config.Rate, client netip.Addr, limit string) bool {
	t, err := (*l.store.Load()).Take(context.Background(), key, store.PerPeriod(r.N, r.Per), 1)
	if err != nil {
		l.storeFailed(limit, client, err)
		return true
	}
	return t.OK
}

// storeFailed logs a store error, at most once per storeWarnEvery.
func (l *limiter) storeFailed(limit string, client netip.Addr, err error) {
	now := l.now().UnixNano()
	last := l.warned.Load()
	if (last != 0 && now-last < int64(storeWarnEvery)) || !l.warned.CompareAndSwap(last, now) {
		l.suppressed.Add(1)
		return
	}
	logger := l.logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.Warn("rate limit state unavailable: client allowed", "check", limit, "client", client.String(), "error", err.Error(), "suppressed", l.suppressed.Swap(0))
}

// sweepIfDue forgets networks with nothing open (releaseIP already does;
// the buckets expire in the store by themselves). l.mu is held.
func (l *limiter) sweepIfDue(_ *limitParams, _ time.Time) {
	for k, st := range l.ips {
		l.dropIfIdle(k, st)
	}
}

// tracked returns the number of client networks with connections open
// and of buckets held in this node's memory (tests, metrics).
func (l *limiter) tracked() (ips, buckets int) {
	l.mu.Lock()
	ips = len(l.ips)
	l.mu.Unlock()
	if l.mem != nil {
		buckets = l.mem.Len()
	}
	return ips, buckets
}
