// Package dns is smtpgate's DNS stub resolver: miekg/dns queries to the
// configured servers (or /etc/resolv.conf), over UDP with a TCP retry on
// truncation, with a TTL-bounded cache (RFC 2308 negative caching) shared
// by every check. It is a leaf library: it imports nothing of smtpgate.
package dns

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Cache lifetimes. Positive answers live for the smallest TTL of their
// records, negative ones as RFC 2308 §5 says, both clamped so that a TTL of
// 0 does not turn every check into a query and a huge TTL does not pin a
// stale answer.
const (
	minCacheTTL      = 5 * time.Second
	maxCacheTTL      = 24 * time.Hour
	maxNegativeTTL   = 3 * time.Hour    // RFC 2308 §5: "one to three hours"
	defaultNegTTL    = 5 * time.Minute  // no SOA in the authority section
	servFailCacheTTL = 30 * time.Second // RFC 2308 §7.1: at most five minutes

	defaultResolverTimeout = 5 * time.Second
	defaultCacheSize       = 10000

	// ednsBufSize is the DNS flag day 2020 recommendation: large enough for
	// most answers, small enough not to be fragmented.
	ednsBufSize = 1232
)

// Options configures a Resolver. The zero value reads the servers
// from /etc/resolv.conf and uses the defaults below.
type Options struct {
	// Servers are recursive resolvers as host:port, tried in order. Empty
	// means the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query to one server (UDP and its TCP retry);
	// default 5s. The context's deadline, when earlier, wins.
	Timeout time.Duration
	// CacheSize is the number of answers kept; default 10000.
	CacheSize int
	// OnQuery, when set, is told the duration and error of every query
	// sent to a server (the proxy's latency histogram).
	OnQuery func(d time.Duration, err error)
}

// Resolver is the DNS stub resolver shared by all checks: it asks the
// configured recursive servers, caches answers (negative ones too, RFC
// 2308) and coalesces identical concurrent queries. It is safe for
// concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
	cache   *answerCache
	flight  flightGroup
	now     func() time.Time // the cache's clock; tests replace it
	onQuery func(time.Duration, error)

	hits, misses, coalesced, queries, failures atomic.Uint64
}

// NewResolver builds a Resolver.
func NewResolver(o Options) (*Resolver, error) {
	servers := o.Servers
	if len(servers) == 0 {
		var err error
		if servers, err = resolvConfServers("/etc/resolv.conf"); err != nil {
			return nil, err
		}
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("dns server %q: want host:port", s)
		}
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = defaultResolverTimeout
	}
	size := o.CacheSize
	if size <= 0 {
		size = defaultCacheSize
	}
	return &Resolver{
		servers: servers,
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", Timeout: timeout, UDPSize: ednsBufSize},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
		cache:   newAnswerCache(size),
		now:     time.Now,
		onQuery: o.OnQuery,
	}, nil
}

// resolvConfServers returns the nameservers of a resolv.conf as host:port.
func resolvConfServers(path string) ([]string, error) {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("dns servers: %w", err)
	}
	var servers []string
	for _, s := range cfg.Servers {
		servers = append(servers, net.JoinHostPort(s, cfg.Port))
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("dns servers: no nameserver in %s", path)
	}
	return servers, nil
}

// Answer is a DNS response reduced to what checks look at. Answers are
// shared through the cache: treat them as read-only.
type Answer struct {
	Name  string // the question, canonical (lower case, fully qualified)
	Qtype uint16
	// Rcode is the response code: dns.RcodeSuccess, dns.RcodeNameError
	// (NXDOMAIN), dns.RcodeServerFailure, ...
	Rcode int
	// RRs is the answer section, CNAMEs included.
	RRs []dns.RR
	// SOA is the SOA of the authority section of a negative answer, if any.
	SOA *dns.SOA
}

// Records returns the answer records of type t (those of the question's
// type when t is 0), leaving out the CNAMEs that led to them.
func (a *Answer) Records(t uint16) []dns.RR {
	if t == 0 {
		t = a.Qtype
	}
	var out []dns.RR
	for _, rr := range a.RRs {
		if rr.Header().Rrtype == t {
			out = append(out, rr)
		}
	}
	return out
}

// NXDomain reports whether the name does not exist.
func (a *Answer) NXDomain() bool { return a.Rcode == dns.RcodeNameError }

// NoData reports whether the name exists but has no record of the type
// asked (RFC 2308 §2.2).
func (a *Answer) NoData() bool {
	return a.Rcode == dns.RcodeSuccess && len(a.Records(0)) == 0
}

// ServFail reports whether the servers gave no usable answer: SERVFAIL, or
// any response code other than NOERROR and NXDOMAIN (REFUSED, FORMERR...).
// It is a temporary condition.
func (a *Answer) ServFail() bool {
	return a.Rcode != dns.RcodeSuccess && a.Rcode != dns.RcodeNameError
}

// String summarises the answer for logs: "example.com. MX: NXDOMAIN" or
// "example.com. MX: 10 mx.example.com.".
func (a *Answer) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", a.Name, dns.TypeToString[a.Qtype])
	switch {
	case a.NXDomain():
		b.WriteString("NXDOMAIN")
	case a.ServFail():
		b.WriteString(dns.RcodeToString[a.Rcode])
	case a.NoData():
		b.WriteString("NODATA")
	default:
		for i, rr := range a.Records(0) {
			if i > 0 {
				b.WriteString(", ")
			}
			h := rr.Header().String() // "name.\tTTL\tIN\tTYPE\t"
			b.WriteString(strings.TrimSpace(strings.TrimPrefix(rr.String(), h)))
		}
	}
	return b.String()
}

// ttl is how long the answer may be cached; 0 means not at all.
func (a *Answer) ttl() time.Duration {
	switch {
	case a.ServFail():
		return servFailCacheTTL
	case a.NXDomain(), a.NoData():
		if a.SOA == nil {
			return defaultNegTTL
		}
		// RFC 2308 §5: the smaller of the SOA's own TTL and its MINIMUM.
		t := min(a.SOA.Hdr.Ttl, a.SOA.Minttl)
		return clampTTL(time.Duration(t)*time.Second, maxNegativeTTL)
	}
	t := a.RRs[0].Header().Ttl
	for _, rr := range a.RRs[1:] {
		t = min(t, rr.Header().Ttl)
	}
	return clampTTL(time.Duration(t)*time.Second, maxCacheTTL)
}

func clampTTL(d, hi time.Duration) time.Duration {
	return min(max(d, minCacheTTL), hi)
}

// Stats are the resolver's counters since it was built.
type Stats struct {
	Hits      uint64 // answered from the cache
	Misses    uint64 // not in the cache: asked the servers
	Coalesced uint64 // waited for an identical query in flight
	Queries   uint64 // queries sent (per server tried, TCP retries included)
	Failures  uint64 // lookups that ended in an error (timeout, network)
	Entries   int    // answers cached now
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Hits:      r.hits.Load(),
		Misses:    r.misses.Load(),
		Coalesced: r.coalesced.Load(),
		Queries:   r.queries.Load(),
		Failures:  r.failures.Load(),
		Entries:   r.cache.len(),
	}
}

type cacheKey struct {
	name  string
	qtype uint16
}

// Lookup asks for name's records of type qtype. A negative or failed
// answer is not an error: the Answer says NXDOMAIN, NODATA or SERVFAIL.
// The error is for no answer at all (every server timed out or was
// unreachable, or ctx ended).
func (r *Resolver) Lookup(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	key := cacheKey{dns.CanonicalName(name), qtype}
	for {
		if a, ok := r.cache.get(key, r.now()); ok {
			r.hits.Add(1)
			return a, nil
		}
		a, err, shared := r.flight.do(ctx, key, func() (*Answer, error) {
			// An identical query may have finished since we looked.
			if a, ok := r.cache.get(key, r.now()); ok {
				r.hits.Add(1)
				return a, nil
			}
			r.misses.Add(1)
			a, err := r.query(ctx, key.name, qtype)
			if err == nil {
				r.cache.put(key, a, r.now().Add(a.ttl()))
			} else {
				r.failures.Add(1)
			}
			return a, err
		})
		if shared {
			r.coalesced.Add(1)
			// The query we waited for ran under another caller's context;
			// if that one ended but ours did not, ask again ourselves.
			if err != nil && ctx.Err() == nil && isContextErr(err) {
				continue
			}
		}
		return a, err
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// query asks the servers in order until one gives an answer that is not a
// server failure.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*Answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsBufSize, false)

	var failed *dns.Msg
	var lastErr error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			lastErr = err
			break
		}
		resp, err := r.exchange(ctx, m, server)
		if err != nil {
			lastErr = err
			continue
		}
		if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
			failed = resp
			continue
		}
		return newAnswer(name, qtype, resp), nil
	}
	if failed != nil {
		return newAnswer(name, qtype, failed), nil
	}
	return nil, &LookupError{Name: name, Qtype: qtype, Err: lastErr}
}

// exchange sends one query to one server: UDP first, TCP when the UDP
// answer is truncated (RFC 7766 §5).
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	resp, err := r.exchangeOver(ctx, r.udp, m, server)
	if err != nil {
		return nil, err
	}
	if resp.Truncated {
		resp, err = r.exchangeOver(ctx, r.tcp, m, server)
	}
	return resp, err
}

// exchangeOver is one query over one transport. miekg/dns turns the
// context's deadline into the connection's, but not its cancellation:
// that is done here by moving the deadline to the past.
func (r *Resolver) exchangeOver(ctx context.Context, c *dns.Client, m *dns.Msg, server string) (_ *dns.Msg, err error) {
	r.queries.Add(1)
	if r.onQuery != nil {
		start := time.Now()
		defer func() { r.onQuery(time.Since(start), err) }()
	}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return resp, err
}

func newAnswer(name string, qtype uint16, resp *dns.Msg) *Answer {
	a := &Answer{Name: name, Qtype: qtype, Rcode: resp.Rcode, RRs: resp.Answer}
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			a.SOA = soa
			break
		}
	}
	return a
}

// LookupError is a lookup that got no answer from any server.
type LookupError struct {
	Name  string
	Qtype uint16
	Err   error // the last server's error
}

func (e *LookupError) Error() string {
	return fmt.Sprintf("dns %s %s: %v", e.Name, dns.TypeToString[e.Qtype], e.Err)
}

func (e *LookupError) Unwrap() error { return e.Err }

// Timeout reports whether the lookup timed out.
func (e *LookupError) Timeout() bool {
	var ne net.Error
	return errors.Is(e.Err, context.DeadlineExceeded) || errors.As(e.Err, &ne) && ne.Timeout()
}

// The convenience lookups below return errors shaped like net.Resolver's
// (*net.DNSError with IsNotFound, IsTemporary, IsTimeout), so that code
// written for the standard library, such as the SPF library, can use them.

// dnsError turns a negative or failed answer, or a lookup error, into a
// *net.DNSError; nil when the answer has records of the type asked.
func dnsError(a *Answer, err error, name string) error {
	if err != nil {
		var le *LookupError
		timeout := errors.As(err, &le) && le.Timeout()
		return &net.DNSError{Err: err.Error(), Name: name, IsTimeout: timeout, IsTemporary: true}
	}
	switch {
	case a.ServFail():
		return &net.DNSError{Err: "server misbehaving: " + dns.RcodeToString[a.Rcode], Name: name, IsTemporary: true}
	case a.NXDomain(), a.NoData():
		// net.Resolver reports NODATA as "no such host" too.
		return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return nil
}

// LookupMX returns name's MX records, in the order received.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*dns.MX, error) {
	a, err := r.Lookup(ctx, name, dns.TypeMX)
	if err := dnsError(a, err, name); err != nil {
		return nil, err
	}
	var mxs []*dns.MX
	for _, rr := range a.Records(0) {
		mxs = append(mxs, rr.(*dns.MX))
	}
	return mxs, nil
}

// LookupTXT returns name's TXT records, each one's strings joined without
// separator (RFC 7208 §3.3).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	a, err := r.Lookup(ctx, name, dns.TypeTXT)
	if err := dnsError(a, err, name); err != nil {
		return nil, err
	}
	var txts []string
	for _, rr := range a.Records(0) {
		txts = append(txts, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return txts, nil
}

// LookupIP4 returns name's A records.
func (r *Resolver) LookupIP4(ctx context.Context, name string) ([]netip.Addr, error) {
	return r.lookupIP(ctx, name, dns.TypeA)
}

// LookupIP6 returns name's AAAA records.
func (r *Resolver) LookupIP6(ctx context.Context, name string) ([]netip.Addr, error) {
	return r.lookupIP(ctx, name, dns.TypeAAAA)
}

func (r *Resolver) lookupIP(ctx context.Context, name string, qtype uint16) ([]netip.Addr, error) {
	a, err := r.Lookup(ctx, name, qtype)
	if err := dnsError(a, err, name); err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, rr := range a.Records(0) {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		}
		if addr, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, addr.Unmap())
		}
	}
	return addrs, nil
}

// LookupHost returns name's IPv4 and IPv6 addresses, asked concurrently.
// Addresses of one family are returned even if the other's lookup failed;
// the error is not-found only if both families are.
func (r *Resolver) LookupHost(ctx context.Context, name string) ([]netip.Addr, error) {
	var v6 []netip.Addr
	var err6 error
	done := make(chan struct{})
	go func() {
		defer close(done)
		v6, err6 = r.LookupIP6(ctx, name)
	}()
	v4, err4 := r.LookupIP4(ctx, name)
	<-done
	if addrs := append(v4, v6...); len(addrs) > 0 {
		return addrs, nil
	}
	if isNotFound(err4) {
		return nil, err6 // not found too, or the failure that hides an answer
	}
	return nil, err4
}

// LookupAddr returns the PTR names of ip.
func (r *Resolver) LookupAddr(ctx context.Context, ip netip.Addr) ([]string, error) {
	name, err := dns.ReverseAddr(ip.Unmap().String())
	if err != nil {
		return nil, err
	}
	a, err := r.Lookup(ctx, name, dns.TypePTR)
	if err := dnsError(a, err, name); err != nil {
		return nil, err
	}
	var names []string
	for _, rr := range a.Records(0) {
		names = append(names, rr.(*dns.PTR).Ptr)
	}
	return names, nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// answerCache is a bounded LRU of answers with their expiry.
type answerCache struct {
	mu      sync.Mutex
	size    int
	order   *list.List // front is most recently used; values are *cacheEntry
	entries map[cacheKey]*list.Element
}

type cacheEntry struct {
	key     cacheKey
	answer  *Answer
	expires time.Time
}

func newAnswerCache(size int) *answerCache {
	return &answerCache{size: size, order: list.New(), entries: make(map[cacheKey]*list.Element)}
}

func (c *answerCache) get(k cacheKey, now time.Time) (*Answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.entries, k)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.answer, true
}

func (c *answerCache) put(k cacheKey, a *Answer, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*cacheEntry)
		e.answer, e.expires = a, expires
		c.order.MoveToFront(el)
		return
	}
	c.entries[k] = c.order.PushFront(&cacheEntry{key: k, answer: a, expires: expires})
	for c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*cacheEntry).key)
	}
}

func (c *answerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// flightGroup coalesces concurrent identical queries: the first caller
// asks, the others wait for its answer (or for their own context to end).
type flightGroup struct {
	mu    sync.Mutex
	calls map[cacheKey]*flight
}

type flight struct {
	done   chan struct{}
	answer *Answer
	err    error
}

func (g *flightGroup) do(ctx context.Context, k cacheKey, fn func() (*Answer, error)) (a *Answer, err error, shared bool) {
	g.mu.Lock()
	if f, ok := g.calls[k]; ok {
		g.mu.Unlock()
		select {
		case <-f.done:
			return f.answer, f.err, true
		case <-ctx.Done():
			return nil, &LookupError{Name: k.name, Qtype: k.qtype, Err: ctx.Err()}, false
		}
	}
	if g.calls == nil {
		g.calls = make(map[cacheKey]*flight)
	}
	f := &flight{done: make(chan struct{})}
	g.calls[k] = f
	g.mu.Unlock()

	defer func() {
		g.mu.Lock()
		delete(g.calls, k)
		g.mu.Unlock()
		close(f.done)
	}()
	f.answer, f.err = fn()
	return f.answer, f.err, false
}

// ClientName returns the forward-confirmed reverse DNS name of ip, as
// Postfix's smtpd computes it for "client=name[ip]": a PTR name whose
// A/AAAA records contain ip. "" when there is none or DNS fails.
func (r *Resolver) ClientName(ctx context.Context, ip netip.Addr) string {
	ip = ip.Unmap()
	names, err := r.LookupAddr(ctx, ip)
	if err != nil {
		return ""
	}
	for i, n := range names {
		if i >= 5 {
			break // bounded work per client
		}
		addrs, err := r.LookupHost(ctx, n)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.Unmap() == ip {
				return strings.TrimSuffix(n, ".")
			}
		}
	}
	return ""
}
