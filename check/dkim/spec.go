package dkim

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Options is checks.dkim.
type Options struct {
	// MaxSignatures is how many signatures of a message are verified
	// (default DefaultMaxSignatures).
	MaxSignatures int `yaml:"max_signatures"`
}

// Spec is the dkim line of the chain: on (enforce) by default; it never
// refuses, and off leaves the other checks without DKIM results.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil || env.Resolver == nil {
		return nil, err
	}
	if o.MaxSignatures < 0 {
		return nil, b.Errorf("max_signatures", "must not be negative")
	}
	return New(env.Resolver, o.MaxSignatures), nil
}}
