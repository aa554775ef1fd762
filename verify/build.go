package verify

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"reflect"

	"github.com/smtpgate/smtpgate/config"
)

// Deps are the parts of the outside world checks use.
type Deps struct {
	Resolver *Resolver
	Prober   RecipientProber
	// OwnIPs are our listener addresses, for forged_helo.
	OwnIPs []netip.Addr
	Logger *slog.Logger
}

// Build makes the Policy that cfg describes, loading the tables it names
// (errors name file and line). Each stage runs cheap checks first: syntax,
// then local tables, then DNS, then the MTA.
func Build(cfg *config.Config, deps Deps) (*Policy, error) {
	c := &cfg.Checks
	var errs []error

	var loginMap *SenderLoginMap
	if f := cfg.Auth.SenderLoginMaps; f != "" {
		m, err := loadFile(f, ParseSenderLoginMap)
		if err != nil {
			errs = append(errs, err)
		}
		loginMap = m
	}
	loginMapped := func(string) bool { return false }
	if loginMap != nil {
		loginMapped = loginMap.Listed
	}

	var list RecipientList
	if cfg.RecipientList != nil {
		list = cfg.RecipientList
	}
	var prober RecipientProber
	if cfg.Recipients.Verify == "upstream" {
		prober = deps.Prober
	}

	var dnsbl any
	if len(c.DNSBL.Zones) > 0 {
		zones := make([]DNSBLZone, len(c.DNSBL.Zones))
		for i, z := range c.DNSBL.Zones {
			zones[i] = DNSBLZone{Zone: z.Zone, Weight: z.Weight, Filter: z.Filter}
		}
		d, err := NewDNSBL(deps.Resolver, zones, c.DNSBL.Threshold)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: checks.dnsbl: %w", cfg.Path, err))
		}
		dnsbl = d
	}
	var headerChecks, bodyChecks any
	if f := c.HeaderChecks.File; f != "" && c.HeaderChecks.Mode != "off" {
		t, err := loadFile(f, ParseRegexpTable)
		if err == nil {
			headerChecks, err = NewHeaderChecks(t)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if f := c.BodyChecks.File; f != "" && c.BodyChecks.Mode != "off" {
		t, err := loadFile(f, ParseRegexpTable)
		if err == nil {
			bodyChecks, err = NewBodyChecks(t)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	var loginMismatch, headerMismatch any
	if loginMap != nil {
		loginMismatch = NewSenderLoginMismatch(loginMap)
		headerMismatch = NewSenderHeaderMismatch(loginMap)
	}

	steps := []struct {
		name string
		cc   config.Check
		def  Mode
		chk  any
	}{
		// connect
		{"dnsbl", c.DNSBL.Check, Enforce, dnsbl},
		// HELO: syntax before identity
		{NameInvalidHelo, c.InvalidHelo, Warn, NewInvalidHelo()},
		{NameNonFQDNHelo, c.NonFQDNHelo, Warn, NewNonFQDNHelo()},
		{NameForgedHelo, c.ForgedHelo, Enforce, NewForgedHelo(cfg.Hostname, cfg.Domains, deps.OwnIPs)},
		// MAIL: syntax, then local facts, then DNS
		{NameNonFQDNSender, c.NonFQDNSender.Check, Enforce, NewNonFQDNSender(!c.NonFQDNSender.RejectLiterals)},
		{NameOwnDomainForgery, c.OwnDomainForgery.Check, Enforce, NewOwnDomainForgery(cfg.Domains, deps.OwnIPs, loginMapped, c.OwnDomainForgery.ExemptRelayNetworks)},
		{NameSenderLoginMismatch, c.SenderLoginMismatch, Enforce, loginMismatch},
		{"unknown_sender_domain", c.UnknownSenderDomain, Enforce, resolverCheck(deps.Resolver, func(r *Resolver) any { return NewUnknownSenderDomain(r) })},
		{"spf", c.SPF, Warn, resolverCheck(deps.Resolver, func(r *Resolver) any { return NewSPF(r, cfg.Hostname) })},
		// RCPT: relay control before existence
		{NameUnauthDestination, c.UnauthDestination, Enforce, NewUnauthDestination(cfg.Domains, cfg.RelayNetworks)},
		{UnknownRecipientName, c.UnknownRecipient, Enforce, NewUnknownRecipient(cfg.Domains, list, prober, cfg.Recipients.PositiveTTL.D(), cfg.Recipients.NegativeTTL.D(), cfg.Recipients.CacheSize)},
		// DATA
		{NameSenderHeaderMismatch, c.SenderHeaderMismatch, Warn, headerMismatch},
		{"header_checks", c.HeaderChecks.Check, Enforce, headerChecks},
		{"body_checks", c.BodyChecks.Check, Enforce, bodyChecks},
	}
	var checks []Check
	for _, s := range steps {
		chk, err := newCheck(s.name, s.cc, s.def, s.chk)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", cfg.Path, err))
			continue
		}
		if chk != nil {
			checks = append(checks, *chk)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return NewPolicy(checks...), nil
}

func newCheck(name string, cc config.Check, def Mode, impl any) (*Check, error) {
	mode := def
	if cc.Mode != "" {
		m, err := ParseMode(cc.Mode)
		if err != nil {
			return nil, fmt.Errorf("checks.%s.mode: %w", name, err)
		}
		mode = m
	}
	var override *Reply
	if cc.Reply != "" {
		r, err := config.ParseReply(cc.Reply)
		if err != nil {
			return nil, fmt.Errorf("checks.%s.reply: %w", name, err)
		}
		override = &Reply{r.Code, r.Enhanced, r.Text}
	}
	if isNil(impl) {
		return nil, nil
	}
	return &Check{Name: name, Mode: mode, Reply: override, Checker: impl}, nil
}

func resolverCheck(r *Resolver, mk func(*Resolver) any) any {
	if r == nil {
		return nil
	}
	return mk(r)
}

// loadFile opens path and parses it with parse, which names path in its
// errors.
func loadFile[T any](path string, parse func(r io.Reader, name string) (T, error)) (T, error) {
	f, err := os.Open(path)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return parse(f, path)
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
