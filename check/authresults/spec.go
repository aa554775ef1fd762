package authresults

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Options is checks.authentication_results.
type Options struct {
	// AuthservID names us in the field (default: hostname).
	AuthservID string `yaml:"authserv_id"`
}

// Spec is the authentication_results line of the chain, on (enforce) by
// default: the last whole-message check.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	id := o.AuthservID
	if id == "" {
		id = env.Config.Hostname
	}
	if id == "" {
		return nil, b.Errorf("authserv_id", "no hostname to use: set hostname or authserv_id")
	}
	return New(id), nil
}}
