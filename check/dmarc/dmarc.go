// Package dmarc is the dmarc check (RFC 7489): does the domain of the
// From: a reader sees publish a policy, and did SPF or DKIM authenticate
// a domain aligned with it?
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/mail"
	"regexp"
	"strings"

	msgdmarc "github.com/emersion/go-msgauth/dmarc"
	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// Name is the check's config and log name.
const Name = "dmarc"

// DMARC evaluates the DMARC policy of the From: domain of each message:
// the record (_dmarc.<domain> TXT, else _dmarc.<organizational domain>,
// RFC 7489 §6.6.3) is looked up through the shared resolver and parsed
// with github.com/emersion/go-msgauth/dmarc; the organizational domain
// comes from the public suffix list (golang.org/x/net/publicsuffix). The
// message passes when the spf check's pass (for MAIL FROM, or HELO for
// the null sender) or a dkim signature's pass is for a domain aligned
// with the From: domain, strictly or relaxed as the record's aspf= and
// adkim= say. A failing message gets the record's policy: sp= when the
// record was found at the organizational domain, pct= sampled (a message
// outside the sample gets the next milder policy, §6.6.4).
//
// The result (pass, fail, none, temperror, permerror; header.from) goes on
// the envelope as method "dmarc", with the policy applied in its comment.
// Authenticated and trusted clients are not checked (as for spf).
//
// Replies:
//
//	550 5.7.1 Rejected by DMARC policy for <domain>       p=reject
//	    (and p=quarantine with quarantine: refuse)
//	451 4.7.1 DMARC policy for <domain> unavailable, try again later
//	                                                       DNS failure
//
// p=quarantine with quarantine: header (the default) adds the field
// "X-Spam-Flag: YES", which delivery agents sort into the junk folder.
type DMARC struct {
	r                *dns.Resolver
	quarantineRefuse bool
	// sample returns a number in [0, 100) for pct=.
	sample func() int
}

// New returns the check on r. quarantineRefuse makes p=quarantine a
// refusal rather than a header field.
func New(r *dns.Resolver, quarantineRefuse bool) *DMARC {
	return &DMARC{r: r, quarantineRefuse: quarantineRefuse, sample: func() int { return rand.IntN(100) }}
}

// Name returns Name.
func (*DMARC) Name() string { return Name }

// QuarantineField is what p=quarantine adds with quarantine: header.
const QuarantineField = "X-Spam-Flag: YES"

// CheckWholeMessage implements policy.WholeMessageChecker.
func (k *DMARC) CheckWholeMessage(ctx context.Context, c *policy.Client, env *policy.Envelope, m *policy.Message) policy.Result {
	if c.Login != "" || c.Trusted {
		return policy.Result{}
	}
	domains := fromDomains(m.Header)
	if len(domains) == 0 {
		return policy.Result{Evidence: "dmarc: no From: domain to evaluate"}
	}
	var out policy.Result
	var ev []string
	for _, d := range domains {
		r := k.evaluate(ctx, env, d)
		ev = append(ev, r.Evidence)
		if r.Action != policy.Pass {
			r.Evidence = strings.Join(ev, "; ")
			return r
		}
		out.Prepend = append(out.Prepend, r.Prepend...)
		out.Log = out.Log || r.Log
	}
	out.Evidence = strings.Join(ev, "; ")
	return out
}

// fromDomains lists the distinct domains of the From: mailboxes (RFC
// 7489 §6.6.1: each is evaluated).
func fromDomains(hdr []policy.Header) []string {
	var out []string
	seen := map[string]bool{}
	for _, h := range hdr {
		if !strings.EqualFold(h.Name, "From") {
			continue
		}
		var addrs []string
		if list, err := mail.ParseAddressList(h.Value); err == nil {
			for _, a := range list {
				addrs = append(addrs, a.Address)
			}
		} else {
			// A From: that does not parse still shows a reader an
			// address: evaluate what looks like one.
			addrs = addrLike.FindAllString(h.Value, -1)
		}
		for _, a := range addrs {
			d := strings.ToLower(address.Domain(a))
			if ascii, err := address.LookupName(d); err == nil {
				d = ascii
			}
			if d != "" && !seen[d] {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out
}

// evaluate applies the DMARC policy of one From: domain.
func (k *DMARC) evaluate(ctx context.Context, env *policy.Envelope, domain string) policy.Result {
	rec, at, err := k.lookup(ctx, domain)
	add := func(result, comment string) {
		env.AddAuth(policy.AuthResult{Method: "dmarc", Result: result, Domain: domain, Property: "header.from", Comment: comment})
	}
	switch {
	case errors.Is(err, errTemp):
		add("temperror", "")
		return policy.Rejected(reply.New(451, [3]int{4, 7, 1}, "DMARC policy for "+domain+" unavailable, try again later"),
			fmt.Sprintf("dmarc temperror: %s: %v", domain, err))
	case errors.Is(err, msgdmarc.ErrNoPolicy):
		add("none", "")
		return policy.Result{Log: true, Evidence: "dmarc none: no policy for " + domain}
	case err != nil:
		add("permerror", "")
		return policy.Result{Log: true, Evidence: fmt.Sprintf("dmarc permerror: _dmarc.%s: %v", at, err)}
	}
	p := rec.Policy
	if at != domain && rec.SubdomainPolicy != "" {
		p = rec.SubdomainPolicy
	}
	record := fmt.Sprintf("_dmarc.%s p=%s", at, p)
	if why := aligned(env, domain, rec); why != "" {
		add("pass", "p="+string(p))
		return policy.Result{Log: true, Evidence: fmt.Sprintf("dmarc pass: %s: %s (%s)", domain, why, record)}
	}
	if rec.Percent != nil && *rec.Percent < 100 && k.sample() >= *rec.Percent {
		// §6.6.4: outside the sample, the next milder policy.
		switch p {
		case msgdmarc.PolicyReject:
			p = msgdmarc.PolicyQuarantine
		case msgdmarc.PolicyQuarantine:
			p = msgdmarc.PolicyNone
		}
		record += fmt.Sprintf(" pct=%d, not sampled: %s", *rec.Percent, p)
	}
	add("fail", "p="+string(p))
	evidence := fmt.Sprintf("dmarc fail: %s: no aligned SPF or DKIM pass (%s)", domain, record)
	refuse := policy.Rejected(reply.New(550, [3]int{5, 7, 1}, "Rejected by DMARC policy for "+domain), evidence)
	switch p {
	case msgdmarc.PolicyReject:
		return refuse
	case msgdmarc.PolicyQuarantine:
		if k.quarantineRefuse {
			return refuse
		}
		return policy.Result{Prepend: []string{QuarantineField}, Log: true, Evidence: evidence + ": quarantined"}
	}
	return policy.Result{Log: true, Evidence: evidence}
}

// aligned says which authenticated identifier is aligned with the From:
// domain, or "".
func aligned(env *policy.Envelope, domain string, rec *msgdmarc.Record) string {
	if d := env.DKIMAligned(domain, rec.DKIMAlignment == msgdmarc.AlignmentStrict); d != "" {
		return "DKIM d=" + d
	}
	for _, a := range env.AuthFor("spf") {
		if a.Result == "pass" && policy.Aligned(a.Domain, domain, rec.SPFAlignment == msgdmarc.AlignmentStrict) {
			return "SPF " + a.Property + "=" + a.Domain
		}
	}
	return ""
}

var errTemp = errors.New("DNS temporary failure")

// addrLike finds addresses in a From: value that does not parse.
var addrLike = regexp.MustCompile(`[^\s<>"(),;:@]+@[A-Za-z0-9.-]*[A-Za-z0-9]`)

// lookup finds the DMARC record of domain, else of its organizational
// domain, and says where it was found.
func (k *DMARC) lookup(ctx context.Context, domain string) (*msgdmarc.Record, string, error) {
	rec, err := k.record(ctx, domain)
	if !errors.Is(err, msgdmarc.ErrNoPolicy) {
		return rec, domain, err
	}
	org := policy.OrgDomain(domain)
	if org == domain {
		return nil, domain, err
	}
	rec, err = k.record(ctx, org)
	return rec, org, err
}

func (k *DMARC) record(ctx context.Context, domain string) (*msgdmarc.Record, error) {
	txts, err := k.r.LookupTXT(ctx, "_dmarc."+domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, msgdmarc.ErrNoPolicy
		}
		return nil, fmt.Errorf("%w: %v", errTemp, err)
	}
	var found []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=DMARC1") {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		// §6.6.3: none, or more than one, is no policy.
		return nil, msgdmarc.ErrNoPolicy
	}
	return msgdmarc.Parse(found[0])
}
