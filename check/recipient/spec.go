package recipient

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

// Spec is the unknown_recipient line of the chain, enforced by default. It
// reads the top-level recipients: section (the lists and the MTA probe),
// which other parts of smtpgate share.
var Spec = policy.Spec{Name: Name, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
	if err := b.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	cfg := env.Config
	var list RecipientList
	if len(cfg.Recipients.Files) > 0 {
		rl, err := table.LoadRecipientList(cfg.Recipients.Files, cfg.Recipients.DetailDelimiter)
		if err != nil {
			return nil, err
		}
		list = rl
	}
	var prober policy.RecipientProber
	if cfg.Recipients.Verify == "upstream" {
		prober = env.Prober
	}
	u := NewUnknownRecipient(cfg.Domains, list, prober, cfg.Recipients.PositiveTTL.D(), cfg.Recipients.NegativeTTL.D(), cfg.Recipients.CacheSize)
	if u == nil {
		return nil, nil // no list, no probe: nothing to consult
	}
	if u.cache != nil && env.Store != nil {
		// Shared with the other nodes: a probe one node made is not
		// made again by another. A store error is a cache miss.
		u.cache = env.Store
	}
	return u, nil
}}
