package policy

import (
	"strings"

	"golang.org/x/net/publicsuffix"
)

// OrgDomain is the organizational domain of a DNS name (RFC 7489 §3.2):
// the public suffix plus one label, from the public suffix list. A name
// that is itself a public suffix, or that the list cannot place, is its
// own organizational domain.
func OrgDomain(domain string) string {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// Aligned reports whether two domains are aligned in the sense of RFC
// 7489 §3.1: equal (strict), or with the same organizational domain
// (relaxed).
func Aligned(a, b string, strict bool) bool {
	a = strings.ToLower(strings.TrimSuffix(a, "."))
	b = strings.ToLower(strings.TrimSuffix(b, "."))
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	return !strict && OrgDomain(a) == OrgDomain(b)
}

// DKIMAligned returns the domain (d=) of a passing DKIM signature on the
// envelope aligned with domain, or "" when there is none.
func (e *Envelope) DKIMAligned(domain string, strict bool) string {
	for _, r := range e.AuthFor("dkim") {
		if r.Result == "pass" && Aligned(r.Domain, domain, strict) {
			return r.Domain
		}
	}
	return ""
}
