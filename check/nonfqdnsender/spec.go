package nonfqdnsender

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Options is checks.non_fqdn_sender.
type Options struct {
	// RejectLiterals refuses address-literal senders (user@[192.0.2.1]),
	// which Postfix lets through.
	RejectLiterals bool `yaml:"reject_address_literals"`
}

// Spec is the non_fqdn_sender line of the chain, enforced by default.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(_ *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	return NewNonFQDNSender(!o.RejectLiterals), nil
}}
