package helo

import (
	"context"
	"net/netip"
	"strings"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// Config and log names of the HELO checks, each switchable on its own.
const (
	NameForged  = "forged_helo"
	NameInvalid = "invalid_helo"
	NameNonFQDN = "non_fqdn_helo"
)

// heloAddr returns the IP a HELO argument names: an address literal
// ("[192.0.2.1]", "[IPv6:...]") or a bare address, which spam software
// sends although RFC 5321 §4.1.3 asks for brackets.
func heloAddr(helo string) (netip.Addr, bool) {
	if strings.HasPrefix(helo, "[") {
		ip, err := address.ParseLiteral(helo)
		return ip, err == nil
	}
	ip, err := netip.ParseAddr(helo)
	return ip, err == nil && ip.Zone() == ""
}

// ForgedHelo refuses a HELO/EHLO that claims to be us: our hostname, one of
// our domains, or an address literal (or bare address) of one of our own
// addresses or of loopback, from a client that is not us. Nobody else has
// a reason to say so; bots say it because hosts trust themselves.
//
// A client is us when it connects from loopback or from one of our own
// addresses. Clients in the relay networks (policy.Client.Trusted) and
// authenticated clients are our own hosts and users and pass too. Only exact
// names match: a HELO of another host in our domain (mx2.example.com) is
// not refused.
//
// Replies:
//
//	550 5.7.1 <helo>: Helo command rejected: forged hostname (that is us)
type ForgedHelo struct {
	names address.DomainSet
	ips   address.OwnAddrs
}

// NewForgedHelo returns the check for our hostname, our domains and our
// own addresses (the listener addresses and the host's public ones).
func NewForgedHelo(hostname string, domains []string, ownIPs []netip.Addr) *ForgedHelo {
	return &ForgedHelo{names: address.NewDomainSet(append([]string{hostname}, domains...)), ips: address.NewOwnAddrs(ownIPs)}
}

// Name returns NameForged.
func (*ForgedHelo) Name() string { return NameForged }

func (f *ForgedHelo) ours(ip netip.Addr) bool { return f.ips.Contains(ip) }

// CheckHelo implements policy.HeloChecker.
func (f *ForgedHelo) CheckHelo(_ context.Context, c *policy.Client) policy.Result {
	if c.Helo == "" || c.Trusted || c.Login != "" || (c.Addr.IsValid() && f.ours(c.Addr.WithZone(""))) {
		return policy.Result{}
	}
	forged := reply.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: address.Bracket(c.Helo) + ": Helo command rejected: forged hostname (that is us)"}
	if ip, ok := heloAddr(c.Helo); ok {
		if f.ours(ip) {
			return policy.Rejected(forged, "HELO names our address "+ip.String())
		}
		return policy.Result{}
	}
	if d, err := address.CanonicalDomain(c.Helo); err == nil && f.names[d] {
		return policy.Rejected(forged, "HELO names our host or domain "+d)
	}
	return policy.Result{}
}

// InvalidHelo refuses a HELO/EHLO argument that is neither a valid
// hostname (RFC 1123 §2.1, "_" allowed as Postfix does, IDNs as U-labels or
// A-labels) nor a valid address literal (RFC 5321 §4.1.3), like Postfix's
// reject_invalid_helo_hostname. A bare IP address is invalid: RFC 5321
// wants it in brackets.
//
// Replies:
//
//	501 5.5.2 <helo>: Helo command rejected: Invalid name
type InvalidHelo struct{}

// NewInvalidHelo returns the check.
func NewInvalidHelo() *InvalidHelo { return &InvalidHelo{} }

// Name returns NameInvalid.
func (*InvalidHelo) Name() string { return NameInvalid }

// CheckHelo implements policy.HeloChecker.
func (*InvalidHelo) CheckHelo(_ context.Context, c *policy.Client) policy.Result {
	var err error
	if strings.HasPrefix(c.Helo, "[") {
		_, err = address.ParseLiteral(c.Helo)
	} else {
		_, err = address.CanonicalDomain(c.Helo)
	}
	if err != nil {
		return policy.Rejected(reply.Reply{Code: 501, Enhanced: [3]int{5, 5, 2}, Text: address.Bracket(c.Helo) + ": Helo command rejected: Invalid name"}, err.Error())
	}
	return policy.Result{}
}

// NonFQDNHelo refuses a HELO/EHLO hostname without a dot (Postfix's
// reject_non_fqdn_helo_hostname): "localhost", "DESKTOP-1234". address.Address
// literals pass; whether the rest is valid is InvalidHelo's business.
//
// Replies:
//
//	504 5.5.2 <helo>: Helo command rejected: need fully-qualified hostname
type NonFQDNHelo struct{}

// NewNonFQDNHelo returns the check.
func NewNonFQDNHelo() *NonFQDNHelo { return &NonFQDNHelo{} }

// Name returns NameNonFQDN.
func (*NonFQDNHelo) Name() string { return NameNonFQDN }

// CheckHelo implements policy.HeloChecker.
func (*NonFQDNHelo) CheckHelo(_ context.Context, c *policy.Client) policy.Result {
	if strings.HasPrefix(c.Helo, "[") {
		return policy.Result{}
	}
	if !strings.Contains(strings.TrimSuffix(c.Helo, "."), ".") {
		return policy.Rejected(reply.Reply{Code: 504, Enhanced: [3]int{5, 5, 2}, Text: address.Bracket(c.Helo) + ": Helo command rejected: need fully-qualified hostname"}, "no dot")
	}
	return policy.Result{}
}
