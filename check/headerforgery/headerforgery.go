// Package headerforgery is the own_domain_header_forgery check: the
// From: a reader sees must not name one of our domains when the message
// comes from an outsider who did not log in.
package headerforgery

import (
	"context"
	"fmt"
	"net/mail"
	"net/netip"
	"regexp"
	"strings"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// Name is the check's config and log name.
const Name = "own_domain_header_forgery"

// HeaderForgery refuses a message whose From: (RFC 5322.From), or Sender:
// when present, is an address in one of our domains, when the client did
// not authenticate and is not in relay.networks: own_domain_forgery stops
// MAIL FROM:<ceo@example.com>, this stops the same attacker's
// MAIL FROM:<x@attacker.test> with "From: CEO <ceo@example.com>", which
// is what the victim sees.
//
// Exceptions: a verified DKIM signature whose d= is aligned (relaxed,
// RFC 7489 §3.1.1) with that address's domain (our own mail coming back
// through a list or forwarder that kept the signature: the dkim check's
// results on the envelope), and the allow list (envelope senders, their
// domains, client networks: services that mail as us).
//
// The check runs on the whole message, after the dkim check verified the
// signatures: with DKIM on, the message is spooled anyway.
//
// Replies:
//
//	550 5.7.1 <addr>: From: header address rejected: not logged in
//	550 5.7.1 <addr>: Sender: header address rejected: not logged in
//	451 4.7.1 <addr>: From: header address rejected: DKIM key lookup failed, try again later
//	    (an aligned signature whose key could not be looked up)
//	550 5.7.1 Message has N From: header fields, RFC 5322 allows exactly one
//	550 5.7.1 Message has no From: header field, RFC 5322 requires one
//	    (missing_from: enforce; logged only by default)
//	550 5.7.1 <addr>: From: header display name rejected: it names our domain D
//	    (display_name: enforce; logged only by default)
type HeaderForgery struct {
	domains        address.DomainSet
	allow          Allow
	enforceMissing bool
	enforceDisplay bool
}

// Allow is the allow list: envelope senders ("user@domain"), their
// domains ("@domain"), and client networks.
type Allow struct {
	addrs   map[string]bool
	domains map[string]bool
	nets    []netip.Prefix
}

// ParseAllow parses the allow list's entries: "user@domain", "@domain",
// an address or a CIDR network.
func ParseAllow(entries []string) (Allow, error) {
	a := Allow{addrs: map[string]bool{}, domains: map[string]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case strings.HasPrefix(e, "@") && len(e) > 1:
			a.domains[strings.ToLower(strings.TrimSuffix(e[1:], "."))] = true
		case strings.Contains(e, "@"):
			a.addrs[strings.ToLower(strings.TrimSuffix(e, "."))] = true
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return Allow{}, fmt.Errorf("allow: %q: %v", e, err)
			}
			a.nets = append(a.nets, p.Masked())
		default:
			ip, err := netip.ParseAddr(e)
			if err != nil {
				return Allow{}, fmt.Errorf("allow: %q: want user@domain, @domain, an address or a network", e)
			}
			a.nets = append(a.nets, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		}
	}
	return a, nil
}

// match returns what in the allow list lets the message through, or "".
func (a Allow) match(client netip.Addr, from string) string {
	from = strings.ToLower(strings.TrimSuffix(from, "."))
	if from != "" && a.addrs[from] {
		return "envelope sender " + from
	}
	if d := address.Domain(from); d != "" && a.domains[d] {
		return "envelope sender domain @" + d
	}
	ip := client.Unmap()
	for _, n := range a.nets {
		if n.Contains(ip) {
			return "client network " + n.String()
		}
	}
	return ""
}

// New returns the check for our domains.
func New(domains []string, allow Allow, enforceMissing, enforceDisplay bool) *HeaderForgery {
	return &HeaderForgery{domains: address.NewDomainSet(domains), allow: allow, enforceMissing: enforceMissing, enforceDisplay: enforceDisplay}
}

// Name returns Name.
func (*HeaderForgery) Name() string { return Name }

func refuse(text, evidence string) policy.Result {
	return policy.Rejected(reply.New(550, [3]int{5, 7, 1}, text), evidence)
}

// CheckWholeMessage implements policy.WholeMessageChecker.
func (k *HeaderForgery) CheckWholeMessage(_ context.Context, c *policy.Client, env *policy.Envelope, m *policy.Message) policy.Result {
	if c.Login != "" || c.Trusted {
		return policy.Result{}
	}
	var froms, senders []string
	for _, h := range m.Header {
		switch {
		case strings.EqualFold(h.Name, "From"):
			froms = append(froms, h.Value)
		case strings.EqualFold(h.Name, "Sender"):
			senders = append(senders, h.Value)
		}
	}
	switch {
	case len(froms) > 1:
		// RFC 5322 §3.6: exactly one; a second From: is how a reader is
		// shown one address while DMARC is asked about another.
		return refuse(fmt.Sprintf("Message has %d From: header fields, RFC 5322 allows exactly one", len(froms)),
			fmt.Sprintf("%d From: fields: %s", len(froms), address.Printable(strings.Join(froms, " | "))))
	case len(froms) == 0:
		r := refuse("Message has no From: header field, RFC 5322 requires one", "no From: field")
		if !k.enforceMissing {
			return policy.Result{Log: true, Evidence: "would reject (missing_from: warn): no From: field"}
		}
		return r
	}
	var envFrom string
	if env != nil {
		envFrom = env.From
	}
	allowed := k.allow.match(c.Addr, envFrom)
	for _, f := range []struct{ field, value string }{{"From", froms[0]}, {"Sender", first(senders)}} {
		if f.value == "" {
			continue
		}
		for _, addr := range mailboxes(f.value) {
			d := address.Domain(strings.ToLower(addr))
			if !k.domains[d] {
				continue
			}
			if allowed != "" {
				return policy.Result{Log: true, Evidence: fmt.Sprintf("%s: %s is ours, allowed: %s", f.field, addr, allowed)}
			}
			if dd := env.DKIMAligned(d, false); dd != "" {
				return policy.Result{Log: true, Evidence: fmt.Sprintf("%s: %s is ours, DKIM signature d=%s verified", f.field, addr, dd)}
			}
			if dd := alignedTempError(env, d); dd != "" {
				// The signature may verify once DNS answers: 4xx when unsure.
				return policy.Rejected(reply.New(451, [3]int{4, 7, 1}, address.Bracket(addr)+": "+f.field+": header address rejected: DKIM key lookup failed, try again later"),
					fmt.Sprintf("%s: %s is ours, DKIM signature d=%s temperror", f.field, addr, dd))
			}
			return refuse(address.Bracket(addr)+": "+f.field+": header address rejected: not logged in",
				fmt.Sprintf("%s: %s is in our domain %s, client not logged in, no aligned DKIM signature", f.field, addr, d))
		}
	}
	if d, who := k.displayNameTrick(froms[0]); d != "" && allowed == "" {
		if !k.enforceDisplay {
			return policy.Result{Log: true, Evidence: fmt.Sprintf("would reject (display_name: warn): From: display name names our domain %s, address %s", d, who)}
		}
		return refuse(address.Bracket(who)+": From: header display name rejected: it names our domain "+d,
			fmt.Sprintf("From: display name names our domain %s, address %s", d, who))
	}
	return policy.Result{}
}

// alignedTempError returns the d= of a DKIM signature aligned with domain
// whose key lookup failed, or "".
func alignedTempError(env *policy.Envelope, domain string) string {
	for _, r := range env.AuthFor("dkim") {
		if r.Result == "temperror" && policy.Aligned(r.Domain, domain, false) {
			return r.Domain
		}
	}
	return ""
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// addrLike finds what a mail reader may show as an address in a field
// that does not parse: an attacker need not write valid RFC 5322.
var addrLike = regexp.MustCompile(`[^\s<>"(),;:@]+@[A-Za-z0-9.-]*[A-Za-z0-9]`)

// mailboxes lists the addresses of a From: or Sender: value; one that
// does not parse is searched for anything shaped like an address.
func mailboxes(v string) []string {
	if list, err := mail.ParseAddressList(v); err == nil {
		out := make([]string, 0, len(list))
		for _, a := range list {
			out = append(out, a.Address)
		}
		return out
	}
	return addrLike.FindAllString(v, -1)
}

// displayNameTrick finds "ceo@example.com" <x@attacker.test>: a display
// name showing an address in our domain over an address outside them.
func (k *HeaderForgery) displayNameTrick(v string) (domain, addr string) {
	list, err := mail.ParseAddressList(v)
	if err != nil {
		return "", ""
	}
	for _, a := range list {
		for _, shown := range addrLike.FindAllString(a.Name, -1) {
			if d := address.Domain(strings.ToLower(shown)); k.domains[d] {
				return d, a.Address
			}
		}
	}
	return "", ""
}
