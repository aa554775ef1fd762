package relay

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Spec is the unauth_destination line of the chain, enforced by default:
// relay control comes before recipient existence.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	if err := b.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	return NewUnauthDestination(env.Config.Domains, env.Config.RelayNetworks), nil
}}
