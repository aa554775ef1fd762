package verify

import (
	"fmt"
	"log/slog"
	"reflect"

	"github.com/smtpgate/smtpgate/config"
)

// Deps are the parts of the outside world checks use.
type Deps struct {
	Prober RecipientProber
	Logger *slog.Logger
}

// Build makes the Policy that cfg describes. The order of the stage lists
// is cheap first: local tables before DNS, DNS before the MTA.
func Build(cfg *config.Config, deps Deps) (*Policy, error) {
	var checks []Check
	add := func(name string, cc config.Check, def Mode, chk any) error {
		mode := def
		if cc.Mode != "" {
			m, err := ParseMode(cc.Mode)
			if err != nil {
				return fmt.Errorf("checks.%s.mode: %w", name, err)
			}
			mode = m
		}
		var override *Reply
		if cc.Reply != "" {
			r, err := config.ParseReply(cc.Reply)
			if err != nil {
				return fmt.Errorf("checks.%s.reply: %w", name, err)
			}
			override = &Reply{r.Code, r.Enhanced, r.Text}
		}
		if isNil(chk) {
			return nil
		}
		checks = append(checks, Check{Name: name, Mode: mode, Reply: override, Checker: chk})
		return nil
	}
	c := &cfg.Checks
	var list RecipientList
	if cfg.RecipientList != nil {
		list = cfg.RecipientList
	}
	var prober RecipientProber
	if cfg.Recipients.Verify == "upstream" {
		prober = deps.Prober
	}
	steps := []struct {
		name string
		cc   config.Check
		def  Mode
		chk  any
	}{
		{UnknownRecipientName, c.UnknownRecipient, Enforce, NewUnknownRecipient(cfg.Domains, list, prober, cfg.Recipients.PositiveTTL.D(), cfg.Recipients.NegativeTTL.D(), cfg.Recipients.CacheSize)},
	}
	for _, s := range steps {
		if err := add(s.name, s.cc, s.def, s.chk); err != nil {
			return nil, err
		}
	}
	return NewPolicy(checks...), nil
}

// isNil reports a nil check (an interface holding a nil pointer: a
// constructor that had nothing to check).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}
