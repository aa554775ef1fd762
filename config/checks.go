package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Check is the part every checks.<name> section has.
type Check struct {
	// Mode is enforce, warn or off; empty means the check's default.
	Mode string `yaml:"mode"`
	// Reply overrides the check's reply: "550 5.7.1 text".
	Reply string `yaml:"reply"`
}

// Checks is the checks: section. Each key is a check's name as the logs
// use it.
type Checks struct {
	UnauthDestination    Check            `yaml:"unauth_destination"`
	UnknownRecipient     Check            `yaml:"unknown_recipient"`
	NonFQDNSender        NonFQDNSender    `yaml:"non_fqdn_sender"`
	UnknownSenderDomain  Check            `yaml:"unknown_sender_domain"`
	OwnDomainForgery     OwnDomainForgery `yaml:"own_domain_forgery"`
	ForgedHelo           Check            `yaml:"forged_helo"`
	InvalidHelo          Check            `yaml:"invalid_helo"`
	NonFQDNHelo          Check            `yaml:"non_fqdn_helo"`
	DNSBL                DNSBL            `yaml:"dnsbl"`
	HeaderChecks         TableCheck       `yaml:"header_checks"`
	BodyChecks           TableCheck       `yaml:"body_checks"`
	SPF                  Check            `yaml:"spf"`
	SenderLoginMismatch  Check            `yaml:"sender_login_mismatch"`
	SenderHeaderMismatch Check            `yaml:"sender_header_mismatch"`
}

// NonFQDNSender is checks.non_fqdn_sender.
type NonFQDNSender struct {
	Check `yaml:",inline"`
	// RejectLiterals refuses address-literal senders (user@[192.0.2.1]),
	// which Postfix lets through.
	RejectLiterals bool `yaml:"reject_address_literals"`
}

// OwnDomainForgery is checks.own_domain_forgery.
type OwnDomainForgery struct {
	Check `yaml:",inline"`
	// ExemptRelayNetworks lets clients in relay.networks use our domains
	// without logging in (an internal server).
	ExemptRelayNetworks bool `yaml:"exempt_relay_networks"`
}

// DNSBL is checks.dnsbl.
type DNSBL struct {
	Check     `yaml:",inline"`
	Zones     []DNSBLZone `yaml:"zones"`
	Threshold int         `yaml:"threshold"`
}

// DNSBLZone is one blocklist.
type DNSBLZone struct {
	Zone   string `yaml:"zone"`
	Weight int    `yaml:"weight"`
	// Filter restricts the answers that count: 127.0.0.2, 127.0.0.[2..11].
	Filter string `yaml:"filter"`
}

// TableCheck is header_checks / body_checks: a Postfix regexp table file.
type TableCheck struct {
	Check `yaml:",inline"`
	File  string `yaml:"file"`
}

// Reply is a parsed reply override.
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
}

var replyRe = regexp.MustCompile(`^([245]\d\d) ([245])\.(\d{1,3})\.(\d{1,3}) (\S.*)$`)

// ParseReply parses "550 5.7.1 text". The class of the enhanced code must
// match the reply code's (RFC 3463 §2).
func ParseReply(s string) (Reply, error) {
	m := replyRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return Reply{}, fmt.Errorf("%q: want \"CODE X.Y.Z text\", e.g. \"550 5.7.1 Relay access denied\"", s)
	}
	var r Reply
	r.Code, _ = strconv.Atoi(m[1])
	for i := 0; i < 3; i++ {
		r.Enhanced[i], _ = strconv.Atoi(m[2+i])
	}
	r.Text = m[5]
	if r.Code/100 != r.Enhanced[0] {
		return Reply{}, fmt.Errorf("%q: reply code %d and enhanced code class %d differ", s, r.Code, r.Enhanced[0])
	}
	if r.Code < 400 {
		return Reply{}, fmt.Errorf("%q: a refusal needs a 4xx or 5xx code", s)
	}
	return r, nil
}

// ModeOf returns the configured mode or def.
func (c Check) ModeOf(def string) string {
	if c.Mode == "" {
		return def
	}
	return c.Mode
}

func (cs *Checks) each() map[string]*Check {
	return map[string]*Check{
		"unauth_destination":     &cs.UnauthDestination,
		"unknown_recipient":      &cs.UnknownRecipient,
		"non_fqdn_sender":        &cs.NonFQDNSender.Check,
		"unknown_sender_domain":  &cs.UnknownSenderDomain,
		"own_domain_forgery":     &cs.OwnDomainForgery.Check,
		"forged_helo":            &cs.ForgedHelo,
		"invalid_helo":           &cs.InvalidHelo,
		"non_fqdn_helo":          &cs.NonFQDNHelo,
		"dnsbl":                  &cs.DNSBL.Check,
		"header_checks":          &cs.HeaderChecks.Check,
		"body_checks":            &cs.BodyChecks.Check,
		"spf":                    &cs.SPF,
		"sender_login_mismatch":  &cs.SenderLoginMismatch,
		"sender_header_mismatch": &cs.SenderHeaderMismatch,
	}
}

func (cs *Checks) validate(c *Config, v *validator) {
	for name, ck := range cs.each() {
		switch ck.Mode {
		case "", "enforce", "warn", "off":
		default:
			v.errorf("checks."+name+".mode", "%q: want enforce, warn or off", ck.Mode)
		}
		if ck.Reply != "" {
			if _, err := ParseReply(ck.Reply); err != nil {
				v.errorf("checks."+name+".reply", "%v", err)
			}
		}
	}
	for i, z := range cs.DNSBL.Zones {
		if z.Zone == "" {
			v.errorf(fmt.Sprintf("checks.dnsbl.zones.%d.zone", i), "missing zone name")
		}
	}
}
