package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/smtpgate/smtpgate/config"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/store"
	"github.com/smtpgate/smtpgate/table"
)

// RecipientProber asks the MTA whether it would accept a recipient (an
// RCPT probe with the null sender on a connection of its own, then RSET,
// as Postfix's ADDRESS_VERIFICATION_README does towards other MTAs). proxy
// passes the upstream client; checks see only this interface. client is
// the address of the client the probe is made for: its MTA connection
// counts in that client's share (upstream.max_connections_per_ip). An
// error with a Reply method (a cap of ours refused the probe) is that
// reply to the RCPT.
type RecipientProber interface {
	ProbeRecipient(ctx context.Context, client netip.Addr, rcpt string) (reply.Reply, error)
}

// Env is what checks are built from: the configuration and the parts of
// the outside world they use.
type Env struct {
	Config   *config.Config
	Resolver *dns.Resolver // nil when no check needs DNS
	Prober   RecipientProber
	// OwnIPs are our listener and host addresses, for forged_helo and
	// own_domain_forgery.
	OwnIPs []netip.Addr
	Logger *slog.Logger
	// Store is the state shared with other nodes (store.redis), nil
	// when each node keeps its own: a check that caches (the recipient
	// probes) uses it instead of its own memory, and says what a store
	// error does.
	Store store.Store

	shared map[string]any
}

// Shared loads a value once per build and hands the same value to every
// check that asks for key: a table two checks use (the sender login map).
func (e *Env) Shared(key string, load func() (any, error)) (any, error) {
	if v, ok := e.shared[key]; ok {
		if err, isErr := v.(error); isErr {
			return nil, err
		}
		return v, nil
	}
	if e.shared == nil {
		e.shared = map[string]any{}
	}
	v, err := load()
	if err != nil {
		e.shared[key] = err
		return nil, err
	}
	e.shared[key] = v
	return v, nil
}

// SenderLoginMap returns the sender login map auth.sender_login_maps
// names (Postfix smtpd_sender_login_maps), loaded once per build and
// shared by every check that uses it; nil when none is configured.
func (e *Env) SenderLoginMap() (*table.SenderLoginMap, error) {
	path := e.Config.Auth.SenderLoginMaps
	if path == "" {
		return nil, nil
	}
	v, err := e.Shared("sender_login_maps", func() (any, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return table.ParseSenderLoginMap(f, path)
	})
	if err != nil {
		return nil, err
	}
	return v.(*table.SenderLoginMap), nil
}

// Spec is one line of the chain: a check's name (its key under checks:
// and in the logs), its mode when the configuration names none, and how
// it is built from its block. New returns a nil Checker when the
// configuration gives the check nothing to do (no DNSBL zones, no table).
type Spec struct {
	Name    string
	Default Mode
	New     func(env *Env, b *config.Block) (Checker, error)
}

// Build makes the Policy of the chain: each check, in the chain's order,
// built from its block under checks:, with its mode and reply override.
// Errors name the file, line and key. A block no check of the chain has
// is an error too.
func Build(chain []Spec, env *Env) (*Policy, error) {
	cfg := env.Config
	var errs []error
	known := map[string]bool{}
	var checks []Check
	for _, s := range chain {
		known[s.Name] = true
		b := cfg.Block(s.Name)
		cm, err := b.Common()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mode := s.Default
		if cm.Mode != "" {
			m, err := ParseMode(cm.Mode)
			if err != nil {
				errs = append(errs, b.Errorf("mode", "%v", err))
				continue
			}
			mode = m
		}
		var override *reply.Reply
		if cm.Reply != "" {
			r, err := reply.ParseRefusal(cm.Reply)
			if err != nil {
				errs = append(errs, b.Errorf("reply", "%v", err))
				continue
			}
			override = &r
		}
		chk, err := s.New(env, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if chk == nil {
			continue
		}
		if !joinsAStage(chk) {
			// A misspelt stage method would otherwise leave the check
			// silently out of every stage.
			errs = append(errs, fmt.Errorf("check %q implements no stage interface", s.Name))
			continue
		}
		if chk.Name() != s.Name {
			errs = append(errs, fmt.Errorf("check %q calls itself %q", s.Name, chk.Name()))
			continue
		}
		checks = append(checks, Check{Mode: mode, Reply: override, Checker: chk})
	}
	var unknown []string
	for _, name := range cfg.Checks.Names() {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		names := make([]string, 0, len(known))
		for n := range known {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, u := range unknown {
			errs = append(errs, cfg.Block(u).Errorf("", "unknown check (the checks are: %s)", strings.Join(names, ", ")))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return NewPolicy(checks...), nil
}

// joinsAStage reports whether k implements at least one stage interface.
func joinsAStage(k Checker) bool {
	return is[ConnChecker](k) || is[HeloChecker](k) || is[MailChecker](k) || is[RcptChecker](k) ||
		is[HeaderChecker](k) || is[BodyChecker](k) || is[MessageChecker](k) || is[WholeMessageChecker](k)
}
