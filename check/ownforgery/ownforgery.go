package ownforgery

import (
	"context"
	"net/netip"
	"strings"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// Name is the check's config and log name.
const Name = "own_domain_forgery"

// OwnDomainForgery refuses mail claiming to come from one of our domains,
// from an address literal of one of our own addresses (as forged_helo
// counts them: ours, loopback, unspecified), or from an address listed in
// the sender login map, from a client that did not authenticate: outsiders have no business sending as us (the Postfix
// setup of reject_sender_login_mismatch with smtpd_sender_login_maps).
// Clients in the relay networks are exempt only when configured so.
//
// Replies:
//
//	553 5.7.1 <from>: Sender address rejected: not logged in
type OwnDomainForgery struct {
	domains       address.DomainSet
	ips           address.OwnAddrs
	loginMapped   func(addr string) bool
	exemptTrusted bool
}

// NewOwnDomainForgery returns the check for our domains and our own
// addresses (those forged_helo is given). loginMapped, if
// not nil, reports whether an address ("local@domain", domain canonical)
// is listed in the sender login map (table.SenderLoginMap.Listed).
// exemptTrusted lets clients with policy.Client.Trusted through.
func NewOwnDomainForgery(domains []string, ownIPs []netip.Addr, loginMapped func(addr string) bool, exemptTrusted bool) *OwnDomainForgery {
	return &OwnDomainForgery{domains: address.NewDomainSet(domains), ips: address.NewOwnAddrs(ownIPs), loginMapped: loginMapped, exemptTrusted: exemptTrusted}
}

// Name returns Name.
func (*OwnDomainForgery) Name() string { return Name }

// CheckMail implements policy.MailChecker.
func (o *OwnDomainForgery) CheckMail(_ context.Context, c *policy.Client, _ *policy.Envelope, from string) policy.Result {
	if from == "" || from == "<>" || c.Login != "" || (c.Trusted && o.exemptTrusted) {
		return policy.Result{}
	}
	var domain, addr string
	if a, err := address.Parse(from); err == nil {
		domain, addr = a.Domain, a.Local+"@"+a.Domain
	} else {
		// Unparseable senders are other checks' business, but a domain
		// that is plainly ours is still ours.
		addr = strings.ToLower(from)
		domain = strings.TrimRight(addr[strings.LastIndexByte(addr, '@')+1:], ".>")
	}
	notLoggedIn := reply.Reply{Code: 553, Enhanced: [3]int{5, 7, 1}, Text: address.Bracket(from) + ": Sender address rejected: not logged in"}
	if o.domains[domain] {
		return policy.Rejected(notLoggedIn, "sender domain "+domain+" is ours")
	}
	if ip, err := address.ParseLiteral(domain); err == nil && o.ips.Contains(ip) {
		return policy.Rejected(notLoggedIn, "sender domain "+domain+" is our own address")
	}
	if o.loginMapped != nil && o.loginMapped(addr) {
		return policy.Rejected(notLoggedIn, "sender "+addr+" is in the sender login map")
	}
	return policy.Result{}
}
