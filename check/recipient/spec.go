package recipient

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
)

// Spec is the unknown_recipient line of the chain, enforced by default. It
// reads the top-level recipients: section (the lists and the MTA probe),
// which other parts of smtpgate share.
var Spec = policy.Spec{Name: UnknownRecipientName, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	if err := b.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	cfg := env.Config
	var list RecipientList
	if cfg.RecipientList != nil {
		list = cfg.RecipientList
	}
	var prober policy.RecipientProber
	if cfg.Recipients.Verify == "upstream" {
		prober = env.Prober
	}
	u := NewUnknownRecipient(cfg.Domains, list, prober, cfg.Recipients.PositiveTTL.D(), cfg.Recipients.NegativeTTL.D(), cfg.Recipients.CacheSize)
	if u == nil {
		return nil, nil // no list, no probe: nothing to consult
	}
	return u, nil
}}
