package recipient

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/store"
)

// Name is the config and log name of the recipient
// existence check.
const Name = "unknown_recipient"

// RecipientList answers whether an address exists (table.RecipientList).
type RecipientList interface {
	Covers(domain string) bool
	Contains(local, domain string) bool
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
//
// Probe answers are remembered in a store.Store under "rcpt:probe:ADDR"
// (positive_ttl for 2xx, negative_ttl for 5xx, 4xx never), by default in
// memory bounded by cache_size, in the store shared with the other nodes
// (policy.Env.Store, store.redis) when there is one. A store error is a cache miss: the MTA is
// asked, as it is the authority anyway, and the recipient's log line
// says that the cache failed.
type UnknownRecipient struct {
	domains        map[string]bool
	list           RecipientList // may be nil
	prober         policy.RecipientProber
	cache          store.Store
	posTTL, negTTL time.Duration
}

// NewUnknownRecipient builds the check. list and prober may each be nil;
// with both nil the check has nothing to consult and is not built.
func NewUnknownRecipient(domains []string, list RecipientList, prober policy.RecipientProber, posTTL, negTTL time.Duration, cacheSize int) *UnknownRecipient {
	if list == nil && prober == nil {
		return nil
	}
	u := &UnknownRecipient{domains: map[string]bool{}, list: list, prober: prober}
	for _, d := range domains {
		u.domains[strings.ToLower(d)] = true
	}
	if prober != nil {
		u.cache, u.posTTL, u.negTTL = store.NewMemory(cacheSize, nil), posTTL, negTTL
	}
	return u
}

// Name returns Name.
func (*UnknownRecipient) Name() string { return Name }

// CheckRcpt implements policy.RcptChecker.
func (u *UnknownRecipient) CheckRcpt(ctx context.Context, c *policy.Client, env *policy.Envelope, rcpt string) policy.Result {
	local, domain, ok := splitAddr(rcpt)
	if !ok {
		return policy.Result{}
	}
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if !u.domains[domain] && (u.list == nil || !u.list.Covers(domain)) {
		return policy.Result{}
	}
	unknown := reply.New(550, [3]int{5, 1, 1}, "<"+rcpt+">: Recipient address rejected: User unknown")
	if u.list != nil && u.list.Covers(domain) {
		if u.list.Contains(local, domain) {
			return policy.Result{}
		}
		if u.prober == nil {
			return policy.Rejected(unknown, "not in recipients.files")
		}
	}
	if u.prober == nil {
		// Our domain but no list names it: nothing to decide on; the MTA
		// answers the forwarded RCPT itself.
		return policy.Result{}
	}
	key := "rcpt:probe:" + strings.ToLower(local) + "@" + domain
	pr, cached, cacheErr := u.cached(ctx, key)
	if cached {
		return u.probeVerdict(rcpt, pr, unknown, "cached probe: ")
	}
	pr, err := u.prober.ProbeRecipient(ctx, c.Addr, rcpt)
	var refused interface{ Reply() reply.Reply }
	if errors.As(err, &refused) {
		return policy.Rejected(refused.Reply(), "probe not made: "+err.Error())
	}
	if err != nil {
		return policy.Rejected(reply.New(450, [3]int{4, 1, 1}, "<"+rcpt+">: Recipient address rejected: unverified address: mail server unreachable"), "probe failed: "+err.Error())
	}
	if cacheErr == nil && pr.Code/100 != 4 {
		cacheErr = u.remember(ctx, key, pr)
	}
	res := u.probeVerdict(rcpt, pr, unknown, "probe: ")
	if cacheErr != nil {
		if res.Evidence == "" {
			res.Evidence = "probe: " + probeString(pr)
		}
		res.Evidence += "; probe cache failed: " + cacheErr.Error()
		res.Log = true
	}
	return res
}

// cached returns the remembered answer for key, if any.
func (u *UnknownRecipient) cached(ctx context.Context, key string) (reply.Reply, bool, error) {
	v, ok, err := u.cache.Get(ctx, key)
	if err != nil || !ok {
		return reply.Reply{}, false, err
	}
	var pr reply.Reply
	if err := json.Unmarshal(v, &pr); err != nil {
		return reply.Reply{}, false, err
	}
	return pr, true, nil
}

// remember stores a 2xx answer for positive_ttl, a 5xx one for
// negative_ttl (Postfix: address_verify_positive_refresh_time 7d,
// address_verify_negative_expire_time 3d with refresh 3h).
func (u *UnknownRecipient) remember(ctx context.Context, key string, pr reply.Reply) error {
	ttl := u.posTTL
	if pr.Code/100 != 2 {
		ttl = u.negTTL
	}
	if ttl <= 0 {
		return nil
	}
	v, err := json.Marshal(pr)
	if err != nil {
		return err
	}
	return u.cache.Set(ctx, key, v, ttl)
}

func (u *UnknownRecipient) probeVerdict(rcpt string, pr reply.Reply, unknown reply.Reply, how string) policy.Result {
	switch pr.Code / 100 {
	case 2:
		return policy.Result{}
	case 5:
		return policy.Rejected(unknown, how+probeString(pr))
	}
	return policy.Rejected(reply.New(450, [3]int{4, 1, 1}, "<"+rcpt+">: Recipient address rejected: unverified address: "+pr.Text), how+probeString(pr))
}

func probeString(p reply.Reply) string {
	return p.String()
}

// splitAddr splits at the last @ (quoted local parts may hold @).
func splitAddr(a string) (local, domain string, ok bool) {
	i := strings.LastIndexByte(a, '@')
	if i <= 0 || i == len(a)-1 {
		return "", "", false
	}
	return a[:i], a[i+1:], true
}
