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
	// Sign lists the keys that sign mail from authenticated clients, one
	// per From: domain.
	Sign []SignOption `yaml:"sign"`
}

// SignOption is one signing key of checks.dkim.sign.
type SignOption struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	// KeyFile is a PEM private key, RSA (2048 bits) or Ed25519, as
	// "smtpgate dkim-keygen" writes it.
	KeyFile string `yaml:"key_file"`
}

// Spec is the dkim line of the chain: on (enforce) by default; it never
// refuses, and off leaves the other checks without DKIM results and
// turns signing off.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	var o Options
	if err := b.Decode(&o); err != nil {
		return nil, err
	}
	if o.MaxSignatures < 0 {
		return nil, b.Errorf("max_signatures", "must not be negative")
	}
	var keys []SignKey
	for i, s := range o.Sign {
		if s.Domain == "" || s.Selector == "" || s.KeyFile == "" {
			return nil, b.Errorf("sign", "entry %d: domain, selector and key_file are required", i+1)
		}
		k, err := LoadKey(s.KeyFile)
		if err != nil {
			return nil, b.Errorf("sign", "%v", err)
		}
		keys = append(keys, SignKey{Domain: s.Domain, Selector: s.Selector, Signer: k})
	}
	if env.Resolver == nil && len(keys) == 0 {
		return nil, nil
	}
	return New(env.Resolver, o.MaxSignatures).WithKeys(keys), nil
}}
