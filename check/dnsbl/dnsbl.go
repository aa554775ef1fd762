package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	miekg "github.com/miekg/dns"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// DNSBL is the dnsbl check: the client's IP address is looked up in DNS
// block lists and the weights of the lists that have it are summed against
// a threshold, as Postfix's postscreen does (postscreen_dnsbl_sites,
// postscreen_dnsbl_threshold). Lists are asked concurrently; a list that
// does not answer in time, or answers SERVFAIL, counts as not listing the
// client, so that a broken list never stops mail.
//
// Trusted clients (relay.networks) are not looked up.
type DNSBL struct {
	r         *dns.Resolver
	zones     []dnsblZone
	threshold int
}

// DNSBLZone is one DNS block list.
type DNSBLZone struct {
	// Zone is the list's DNS zone, e.g. "zen.spamhaus.org".
	Zone string
	// Weight is added to the score when the list has the client; default
	// 1. A negative weight makes an allow list.
	Weight int
	// Filter selects the answers that count, in postscreen syntax: each
	// octet a number or a bracketed list of numbers and ranges, e.g.
	// "127.0.0.2", "127.0.0.[2..11]", "127.0.0.[2;4;6]",
	// "127.0.[0..1].[2;4..6]". Empty means any address in 127.0.0.0/8
	// except 127.255.255.0/24, which lists such as Spamhaus use for
	// errors ("query refused"), not for listings.
	Filter string
}

// ParseDNSBLZone parses a zone in postscreen_dnsbl_sites syntax:
// "zone[=filter][*weight]", e.g. "zen.spamhaus.org=127.0.0.[2..11]*3".
func ParseDNSBLZone(s string) (DNSBLZone, error) {
	var z DNSBLZone
	rest := s
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		w, err := strconv.Atoi(rest[i+1:])
		if err != nil {
			return z, fmt.Errorf("dnsbl zone %q: weight: %w", s, err)
		}
		z.Weight, rest = w, rest[:i]
	}
	z.Zone, z.Filter, _ = strings.Cut(rest, "=")
	if _, err := newDNSBLZone(z); err != nil {
		return z, err
	}
	return z, nil
}

type dnsblZone struct {
	DNSBLZone
	filter *dnsblFilter // nil: the default filter
}

func newDNSBLZone(z DNSBLZone) (dnsblZone, error) {
	z.Zone = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(z.Zone)), ".")
	if _, ok := miekg.IsDomainName(z.Zone); !ok || z.Zone == "" {
		return dnsblZone{}, fmt.Errorf("dnsbl zone %q: not a domain name", z.Zone)
	}
	if z.Weight == 0 {
		z.Weight = 1
	}
	out := dnsblZone{DNSBLZone: z}
	if z.Filter != "" {
		f, err := parseDNSBLFilter(z.Filter)
		if err != nil {
			return dnsblZone{}, fmt.Errorf("dnsbl zone %s: filter %q: %w", z.Zone, z.Filter, err)
		}
		out.filter = f
	}
	return out, nil
}

// NewDNSBL builds the check. A threshold of 0 means 1. Zones with an
// invalid name or filter are an error.
func NewDNSBL(r *dns.Resolver, zones []DNSBLZone, threshold int) (*DNSBL, error) {
	if threshold <= 0 {
		threshold = 1
	}
	d := &DNSBL{r: r, threshold: threshold}
	for _, z := range zones {
		dz, err := newDNSBLZone(z)
		if err != nil {
			return nil, err
		}
		d.zones = append(d.zones, dz)
	}
	if len(d.zones) == 0 {
		return nil, errors.New("dnsbl: no zones")
	}
	return d, nil
}

// Name is the check's configuration and log name.
func (*DNSBL) Name() string { return Name }

// Name is the check's config and log name.
const Name = "dnsbl"

// zoneAnswer is what one list said of the client.
type zoneAnswer struct {
	answer *dns.Answer
	err    error
}

// CheckConn looks the client up in every list.
func (d *DNSBL) CheckConn(ctx context.Context, c *policy.Client) policy.Result {
	ip := c.Addr.Unmap()
	if !ip.IsValid() || c.Trusted {
		return policy.Result{}
	}
	rev := reverseIP(ip)
	answers := make([]zoneAnswer, len(d.zones))
	var wg sync.WaitGroup
	for i, z := range d.zones {
		wg.Go(func() {
			a, err := d.r.Lookup(ctx, rev+"."+z.Zone+".", miekg.TypeA)
			answers[i] = zoneAnswer{a, err}
		})
	}
	wg.Wait()

	score := 0
	var blocking, evidence []string
	for i, z := range d.zones {
		switch a := answers[i]; {
		case a.err != nil:
			evidence = append(evidence, fmt.Sprintf("%s: %v (counted as not listed)", z.Zone, a.err))
		case a.answer.ServFail():
			evidence = append(evidence, fmt.Sprintf("%s: %s (counted as not listed)", z.Zone, miekg.RcodeToString[a.answer.Rcode]))
		default:
			listed, got := z.match(a.answer)
			if got == "" {
				continue
			}
			if !listed {
				evidence = append(evidence, fmt.Sprintf("%s=%s (not matching filter)", z.Zone, got))
				continue
			}
			score += z.Weight
			evidence = append(evidence, fmt.Sprintf("%s=%s*%d", z.Zone, got, z.Weight))
			if z.Weight > 0 {
				blocking = append(blocking, z.Zone)
			}
		}
	}
	if len(evidence) == 0 {
		return policy.Result{}
	}
	summary := fmt.Sprintf("score %d, threshold %d: %s", score, d.threshold, strings.Join(evidence, "; "))
	if score >= d.threshold && len(blocking) > 0 {
		return policy.Rejected(reply.Reply{
			Code:     554,
			Enhanced: [3]int{5, 7, 1},
			Text:     fmt.Sprintf("Service unavailable; client [%s] blocked using %s", ip, strings.Join(blocking, ", ")),
		}, summary)
	}
	return policy.Result{Evidence: summary, Log: true}
}

// match reports whether an answer lists the client, and the addresses
// answered ("" for none).
func (z dnsblZone) match(a *dns.Answer) (bool, string) {
	var got []string
	listed := false
	for _, rr := range a.Records(miekg.TypeA) {
		ip, ok := netip.AddrFromSlice(rr.(*miekg.A).A)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		got = append(got, ip.String())
		if z.filter != nil && z.filter.match(ip) || z.filter == nil && defaultDNSBLMatch(ip) {
			listed = true
		}
	}
	return listed, strings.Join(got, ",")
}

var (
	loopback8   = netip.MustParsePrefix("127.0.0.0/8")
	dnsblErrors = netip.MustParsePrefix("127.255.255.0/24")
)

func defaultDNSBLMatch(ip netip.Addr) bool {
	return loopback8.Contains(ip) && !dnsblErrors.Contains(ip)
}

// reverseIP is the DNSBL query label sequence: the IPv4 octets reversed,
// or the 32 IPv6 nibbles reversed (RFC 5782 §2.1, §2.4).
func reverseIP(ip netip.Addr) string {
	var b strings.Builder
	if ip.Is4() {
		o := ip.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d", o[3], o[2], o[1], o[0])
		return b.String()
	}
	const hex = "0123456789abcdef"
	o := ip.As16()
	for i := len(o) - 1; i >= 0; i-- {
		if i < len(o)-1 {
			b.WriteByte('.')
		}
		b.WriteByte(hex[o[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[o[i]>>4])
	}
	return b.String()
}

// dnsblFilter is a postscreen answer filter: per octet, the ranges allowed.
type dnsblFilter [4][]octetRange

type octetRange struct{ lo, hi int }

func (f *dnsblFilter) match(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	o := ip.As4()
	for i, ranges := range f {
		ok := false
		for _, r := range ranges {
			if int(o[i]) >= r.lo && int(o[i]) <= r.hi {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// parseDNSBLFilter parses "d.d.d.d" where each d is a number 0-255 or
// "[" elements "]", elements separated by ";", each a number or "lo..hi".
func parseDNSBLFilter(s string) (*dnsblFilter, error) {
	var f dnsblFilter
	rest := s
	for i := range f {
		var octet string
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, errors.New("missing ]")
			}
			octet, rest = rest[1:end], rest[end+1:]
			if octet == "" {
				return nil, errors.New("empty []")
			}
			for _, el := range strings.Split(octet, ";") {
				r, err := parseOctetRange(el)
				if err != nil {
					return nil, err
				}
				f[i] = append(f[i], r)
			}
		} else {
			end := strings.IndexByte(rest, '.')
			if end < 0 {
				end = len(rest)
			}
			octet, rest = rest[:end], rest[end:]
			n, err := parseOctet(octet)
			if err != nil {
				return nil, err
			}
			f[i] = []octetRange{{n, n}}
		}
		if i < len(f)-1 {
			if !strings.HasPrefix(rest, ".") {
				return nil, errors.New("want four octets")
			}
			rest = rest[1:]
		}
	}
	if rest != "" {
		return nil, fmt.Errorf("trailing %q", rest)
	}
	return &f, nil
}

func parseOctetRange(s string) (octetRange, error) {
	lo, hi, isRange := strings.Cut(s, "..")
	l, err := parseOctet(lo)
	if err != nil {
		return octetRange{}, err
	}
	if !isRange {
		return octetRange{l, l}, nil
	}
	h, err := parseOctet(hi)
	if err != nil {
		return octetRange{}, err
	}
	if h < l {
		return octetRange{}, fmt.Errorf("range %s is empty", s)
	}
	return octetRange{l, h}, nil
}

func parseOctet(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("octet %q: want 0-255", s)
	}
	return n, nil
}
