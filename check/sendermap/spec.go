package sendermap

import (
	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

// The sender login map lines of the chain: sender_login_mismatch at MAIL
// (enforced), sender_header_mismatch at DATA (warn by default). Without a
// map there is nothing to check.
var (
	LoginMismatchSpec = policy.Spec{Name: NameLoginMismatch, Default: policy.Enforce, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
		m, err := load(env, b)
		if m == nil {
			return nil, err
		}
		return NewSenderLoginMismatch(m), nil
	}}
	HeaderMismatchSpec = policy.Spec{Name: NameHeaderMismatch, Default: policy.Warn, New: func(env *policy.Env, b *config.Block) (policy.Checker, error) {
		m, err := load(env, b)
		if m == nil {
			return nil, err
		}
		return NewSenderHeaderMismatch(m), nil
	}}
)

func load(env *policy.Env, b *config.Block) (*table.SenderLoginMap, error) {
	if err := b.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	return env.SenderLoginMap()
}
