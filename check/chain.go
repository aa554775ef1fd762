// Package check is the chain: every check smtpgate has, in the order they
// run within a stage, as one list (like CoreDNS's plugin.cfg). Each check
// lives in a folder of its own under check/, decodes its own block under
// checks: and documents its replies; adding one is a new folder and one
// line here.
//
// The order is the cost: within each stage, syntax first, then local
// tables, then DNS, then the MTA.
package check

import (
	"log/slog"
	"net/netip"

	"github.com/smtpgate/smtpgate/check/authresults"
	"github.com/smtpgate/smtpgate/check/content"
	"github.com/smtpgate/smtpgate/check/dkim"
	"github.com/smtpgate/smtpgate/check/dmarc"
	"github.com/smtpgate/smtpgate/check/dnsbl"
	"github.com/smtpgate/smtpgate/check/headerforgery"
	"github.com/smtpgate/smtpgate/check/helo"
	"github.com/smtpgate/smtpgate/check/nonfqdnsender"
	"github.com/smtpgate/smtpgate/check/ownforgery"
	"github.com/smtpgate/smtpgate/check/recipient"
	"github.com/smtpgate/smtpgate/check/relay"
	"github.com/smtpgate/smtpgate/check/senderdomain"
	"github.com/smtpgate/smtpgate/check/sendermap"
	"github.com/smtpgate/smtpgate/check/spf"
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/store"
)

// Chain is every check, in order.
var Chain = []policy.Spec{
	// connect
	dnsbl.Spec,
	// HELO: syntax before identity
	helo.InvalidSpec,
	helo.NonFQDNSpec,
	helo.ForgedSpec,
	// MAIL: syntax, then local facts, then DNS
	nonfqdnsender.Spec,
	ownforgery.Spec,
	sendermap.LoginMismatchSpec,
	senderdomain.Spec,
	spf.Spec,
	// RCPT: relay control before existence
	relay.Spec,
	recipient.Spec,
	// DATA
	sendermap.HeaderMismatchSpec,
	content.HeaderSpec,
	content.BodySpec,
	// the whole message: DKIM's results before the checks that use them
	dkim.Spec,
	headerforgery.Spec,
	dmarc.Spec,
	// last: every result is on the envelope
	authresults.Spec,
}

// Deps are the parts of the outside world checks use.
type Deps struct {
	Resolver *dns.Resolver
	Prober   policy.RecipientProber
	// OwnIPs are our listener addresses, for forged_helo.
	OwnIPs []netip.Addr
	Logger *slog.Logger
	// Store is the state shared with other nodes (store.redis), or nil.
	Store store.Store
}

// Build makes the Policy that cfg describes, loading the tables it names
// (errors name file and line).
func Build(cfg *config.Config, deps Deps) (*policy.Policy, error) {
	return policy.Build(Chain, &policy.Env{Config: cfg, Resolver: deps.Resolver, Prober: deps.Prober, OwnIPs: deps.OwnIPs, Logger: deps.Logger, Store: deps.Store})
}
