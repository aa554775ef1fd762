package ownforgery

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Options is checks.own_domain_forgery.
type Options struct {
	// ExemptRelayNetworks lets clients in relay.networks use our domains
	// without logging in (an internal server).
	ExemptRelayNetworks bool `yaml:"exempt_relay_networks"`
}

// Spec is the own_domain_forgery line of the chain, enforced by default.
// Addresses in auth.sender_login_maps count as ours too.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	m, err := env.SenderLoginMap()
	if err != nil {
		return nil, err
	}
	listed := func(string) bool { return false }
	if m != nil {
		listed = m.Listed
	}
	return NewOwnDomainForgery(env.Config.Domains, env.OwnIPs, listed, o.ExemptRelayNetworks), nil
}}
