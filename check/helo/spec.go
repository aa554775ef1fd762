package helo

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// The helo lines of the chain: syntax before identity. invalid_helo and
// non_fqdn_helo only warn by default (many legitimate senders get HELO
// wrong); forged_helo is enforced.
var (
	InvalidSpec = policy.Spec{Name: NameInvalid, Default: policy.Warn, New: func(_ *policy.Env, b *config.Block) (policy.Checker, error) {
		return NewInvalidHelo(), b.Decode(&struct{}{})
	}}
	NonFQDNSpec = policy.Spec{Name: NameNonFQDN, Default: policy.Warn, New: func(_ *policy.Env, b *config.Block) (policy.Checker, error) {
		return NewNonFQDNHelo(), b.Decode(&struct{}{})
	}}
	ForgedSpec = policy.Spec{Name: NameForged, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
		return NewForgedHelo(env.Config.Hostname, env.Config.Domains, env.OwnIPs), b.Decode(&struct{}{})
	}}
)
