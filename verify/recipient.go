package verify

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/smtpgate/smtpgate/reply"
)

// UnknownRecipientName is the config and log name of the recipient
// existence check.
const UnknownRecipientName = "unknown_recipient"

// RecipientList answers whether an address exists (config.RecipientList).
type RecipientList interface {
	Covers(domain string) bool
	Contains(local, domain string) bool
}

// ProbeResult is the MTA's answer to an RCPT probe.
type ProbeResult struct {
	Code     int
	Enhanced [3]int
	Text     string
}

// RecipientProber asks the MTA whether it would take a recipient: RCPT
// with the null sender on a connection of its own, then RSET (Postfix's
// ADDRESS_VERIFICATION_README does the same towards other MTAs). client
// is the address of the client the probe is made for: its MTA connection
// counts in that client's share (upstream.max_connections_per_ip). An
// error with a Reply method (a cap of ours refused the probe) is that
// reply to the RCPT.
type RecipientProber interface {
	ProbeRecipient(ctx context.Context, client netip.Addr, rcpt string) (ProbeResult, error)
}

// UnknownRecipient refuses recipients in our domains that do not exist,
// so that mail for them is refused while the sender is connected instead
// of bounced to a forged sender later (BACKSCATTER_README, "random
// recipient addresses").
//
// Replies:
//   - 550 5.1.1 <rcpt>: Recipient address rejected: User unknown
//     (the list does not have it, or the MTA said 5xx to the probe)
//   - 450 4.1.1 <rcpt>: Recipient address rejected: unverified address:
//     mail server unreachable (the probe could not be made)
//
// Recipients of domains that are not ours pass: unauth_destination
// decides those.
type UnknownRecipient struct {
	domains map[string]bool
	list    RecipientList // may be nil
	prober  RecipientProber
	cache   *probeCache
}

// NewUnknownRecipient builds the check. list and prober may each be nil;
// with both nil the check has nothing to consult and is not built.
func NewUnknownRecipient(domains []string, list RecipientList, prober RecipientProber, posTTL, negTTL time.Duration, cacheSize int) *UnknownRecipient {
	if list == nil && prober == nil {
		return nil
	}
	u := &UnknownRecipient{domains: map[string]bool{}, list: list, prober: prober}
	for _, d := range domains {
		u.domains[strings.ToLower(d)] = true
	}
	if prober != nil {
		u.cache = newProbeCache(posTTL, negTTL, cacheSize, time.Now)
	}
	return u
}

// CheckRcpt implements RcptChecker.
func (u *UnknownRecipient) CheckRcpt(ctx context.Context, c *Client, env *Envelope, rcpt string) Result {
	local, domain, ok := splitAddr(rcpt)
	if !ok {
		return Result{}
	}
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if !u.domains[domain] && (u.list == nil || !u.list.Covers(domain)) {
		return Result{}
	}
	unknown := Reply{550, [3]int{5, 1, 1}, "<" + rcpt + ">: Recipient address rejected: User unknown"}
	if u.list != nil && u.list.Covers(domain) {
		if u.list.Contains(local, domain) {
			return Result{}
		}
		if u.prober == nil {
			return Rejected(unknown, "not in recipients.files")
		}
	}
	if u.prober == nil {
		// Our domain but no list names it: nothing to decide on; the MTA
		// answers the forwarded RCPT itself.
		return Result{}
	}
	key := strings.ToLower(local) + "@" + domain
	if pr, ok := u.cache.get(key); ok {
		return u.probeVerdict(rcpt, pr, unknown, "cached probe: ")
	}
	pr, err := u.prober.ProbeRecipient(ctx, c.Addr, rcpt)
	var refused interface{ Reply() reply.Reply }
	if errors.As(err, &refused) {
		r := refused.Reply()
		return Rejected(Reply{r.Code, r.Enhanced, r.Text}, "probe not made: "+err.Error())
	}
	if err != nil {
		return Rejected(Reply{450, [3]int{4, 1, 1}, "<" + rcpt + ">: Recipient address rejected: unverified address: mail server unreachable"}, "probe failed: "+err.Error())
	}
	if pr.Code/100 != 4 {
		u.cache.put(key, pr)
	}
	return u.probeVerdict(rcpt, pr, unknown, "probe: ")
}

func (u *UnknownRecipient) probeVerdict(rcpt string, pr ProbeResult, unknown Reply, how string) Result {
	switch pr.Code / 100 {
	case 2:
		return Result{}
	case 5:
		return Rejected(unknown, how+probeString(pr))
	}
	return Rejected(Reply{450, [3]int{4, 1, 1}, "<" + rcpt + ">: Recipient address rejected: unverified address: " + pr.Text}, how+probeString(pr))
}

func probeString(p ProbeResult) string {
	return Reply{p.Code, p.Enhanced, p.Text}.String()
}

// splitAddr splits at the last @ (quoted local parts may hold @).
func splitAddr(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", false
	}
	return a[:i], a[i+1:], true
}

// probeCache remembers probe answers: positive ones for long, negative ones
// shorter (Postfix: address_verify_positive_refresh_time 7d,
// address_verify_negative_expire_time 3d with refresh 3h), bounded in size.
type probeCache struct {
	mu       sync.Mutex
	pos, neg time.Duration
	max      int
	now      func() time.Time
	m        map[string]probeEntry
}

type probeEntry struct {
	r   ProbeResult
	exp time.Time
}

func newProbeCache(pos, neg time.Duration, max int, now func() time.Time) *probeCache {
	if max <= 0 {
		max = 100000
	}
	return &probeCache{pos: pos, neg: neg, max: max, now: now, m: map[string]probeEntry{}}
}

func (c *probeCache) get(k string) (ProbeResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return ProbeResult{}, false
	}
	if c.now().After(e.exp) {
		delete(c.m, k)
		return ProbeResult{}, false
	}
	return e.r, true
}

func (c *probeCache) put(k string, r ProbeResult) {
	ttl := c.pos
	if r.Code/100 != 2 {
		ttl = c.neg
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		// Evict expired entries first, then arbitrary ones (map order):
		// bounded memory matters more than the exact victim.
		now := c.now()
		for key, e := range c.m {
			if now.After(e.exp) || len(c.m) >= c.max {
				delete(c.m, key)
			}
			if len(c.m) < c.max*9/10 {
				break
			}
		}
	}
	c.m[k] = probeEntry{r: r, exp: c.now().Add(ttl)}
}
