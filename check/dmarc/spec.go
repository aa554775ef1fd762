package dmarc

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Options is checks.dmarc.
type Options struct {
	// Quarantine is what p=quarantine does to a failing message:
	// "header" (the default) adds X-Spam-Flag: YES, "refuse" answers
	// 550 5.7.1 as p=reject does.
	Quarantine string `yaml:"quarantine"`
}

// Spec is the dmarc line of the chain: warn by default (the verdicts are
// logged, p=reject is refused only in enforce).
var Spec = policy.Spec{Name: Name, Default: policy.Warn, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	var refuse bool
	switch o.Quarantine {
	case "", "header":
	case "refuse":
		refuse = true
	default:
		return nil, b.Errorf("quarantine", "%q: want header or refuse", o.Quarantine)
	}
	if env.Resolver == nil {
		return nil, nil
	}
	return New(env.Resolver, refuse), nil
}}
