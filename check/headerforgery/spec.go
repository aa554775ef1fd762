package headerforgery

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Options is checks.own_domain_header_forgery.
type Options struct {
	// Allow lists who may put our domains in From: without logging in:
	// envelope senders ("bounce@mailer.example"), their domains
	// ("@mailer.example") and client networks ("192.0.2.0/24").
	Allow []string `yaml:"allow"`
	// MissingFrom is "warn" (log only, the default) or "enforce" for a
	// message without a From: field.
	MissingFrom string `yaml:"missing_from"`
	// DisplayName is "warn" (the default) or "enforce" for a display
	// name that shows an address in our domains.
	DisplayName string `yaml:"display_name"`
}

// Spec is the own_domain_header_forgery line of the chain, enforced by
// default; nil without domains.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	a, err := ParseAllow(o.Allow)
	if err != nil {
		return nil, b.Errorf("allow", "%v", err)
	}
	missing, err := subMode(b, "missing_from", o.MissingFrom)
	if err != nil {
		return nil, err
	}
	display, err := subMode(b, "display_name", o.DisplayName)
	if err != nil {
		return nil, err
	}
	if len(env.Config.Domains) == 0 {
		return nil, nil
	}
	return New(env.Config.Domains, a, missing, display), nil
}}

func subMode(b *config.Block, key, v string) (enforce bool, err error) {
	switch v {
	case "", "warn":
		return false, nil
	case "enforce":
		return true, nil
	}
	return false, b.Errorf(key, "%q: want warn or enforce", v)
}
