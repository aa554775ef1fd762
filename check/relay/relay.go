package relay

import (
	"context"
	"net/netip"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// Name is the config and log name of UnauthDestination.
const Name = "unauth_destination"

// UnauthDestination is relay control (Postfix's reject_unauth_destination):
// an unauthenticated client outside the relay networks may only send to our
// domains.
//
// A recipient is ours only when its domain is one of the configured domains
// (exact match after canonicalization: case, trailing dot, IDN A-labels;
// subdomains are not included), it is not an address literal, every
// source-route hop is ours, and every domain its local part routes through
// with "%", "!" or "@" is ours (see address.Address.RoutingDomains). So no encoding
// of a foreign address passes, and local parts naming a foreign domain are
// refused even for our domains, as Postfix does with
// allow_untrusted_routing=no.
//
// Replies:
//
//	554 5.7.1 <rcpt>: Relay access denied            (RFC 5321 §3.6.2, RFC 3463 5.7.1)
//	501 5.1.3 Bad recipient address syntax            (unparseable path)
type UnauthDestination struct {
	domains  address.DomainSet
	networks []netip.Prefix
}

// NewUnauthDestination returns the check for our domains and the relay
// networks whose clients may relay (relay.networks; the session also marks
// them policy.Client.Trusted).
func NewUnauthDestination(domains []string, networks []netip.Prefix) *UnauthDestination {
	return &UnauthDestination{domains: address.NewDomainSet(domains), networks: networks}
}

// Name returns Name.
func (*UnauthDestination) Name() string { return Name }

// CheckRcpt implements policy.RcptChecker.
func (u *UnauthDestination) CheckRcpt(_ context.Context, c *policy.Client, _ *policy.Envelope, rcpt string) policy.Result {
	a, err := address.Parse(rcpt)
	if err != nil {
		return policy.Rejected(reply.Reply{Code: 501, Enhanced: [3]int{5, 1, 3}, Text: "Bad recipient address syntax"}, err.Error())
	}
	switch {
	case c.Login != "":
		return policy.Result{Evidence: "authenticated as " + c.Login}
	case c.Trusted:
		return policy.Result{Evidence: "client in relay networks"}
	case inNetworks(c.Addr, u.networks):
		return policy.Result{Evidence: "client " + c.Addr.String() + " in relay networks"}
	case u.domains.Local(a):
		return policy.Result{}
	}
	return policy.Rejected(reply.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: address.Bracket(rcpt) + ": Relay access denied"},
		"recipient "+a.String()+" is not in our domains")
}

// inNetworks reports whether ip is in one of nets; IPv4-mapped IPv6
// addresses count as IPv4.
func inNetworks(ip netip.Addr, nets []netip.Prefix) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
