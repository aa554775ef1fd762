package spf

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Spec is the spf line of the chain: warn by default (a Received-SPF
// header and a log line; enforce refuses on fail).
var Spec = policy.Spec{Name: Name, Default: policy.Warn, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	if err := b.Decode(&struct{}{}); err != nil || env.Resolver == nil {
		return nil, err
	}
	return NewSPF(env.Resolver, env.Config.Hostname), nil
}}
