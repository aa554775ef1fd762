package senderdomain

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Spec is the unknown_sender_domain line of the chain, enforced by
// default.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	if err := b.Decode(&struct{}{}); err != nil || env.Resolver == nil {
		return nil, err
	}
	return NewUnknownSenderDomain(env.Resolver), nil
}}
