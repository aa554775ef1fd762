// Package dkim is the dkim check: DKIM signatures (RFC 6376) verified on
// every message, each signature's result left on the envelope for the
// checks that read them (own_domain_header_forgery, dmarc) and for the
// Authentication-Results field.
package dkim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/policy"
)

// Name is the check's config and log name.
const Name = "dkim"

// DefaultMaxSignatures bounds how many signatures of one message are
// verified (each costs a DNS query and a public-key operation).
const DefaultMaxSignatures = 5

// DKIM verifies the DKIM-Signature fields of every message with
// github.com/emersion/go-msgauth/dkim; the keys are looked up through the
// shared resolver (its cache, the session's context). It never refuses:
// verification results are data. Each signature's result (pass, fail,
// neutral, temperror, permerror; none without a signature) goes on the
// envelope as method "dkim" with its d= as domain (property header.d) and
// its selector in the comment.
//
// It is a whole-message check: the body hash needs the whole body, and
// the checks that use the results decide before the MTA sees the header.
//
// With signing keys (WithKeys), mail from authenticated clients whose
// From: domain has a key is signed instead of verified.
type DKIM struct {
	r    *dns.Resolver
	max  int
	keys map[string]SignKey // by domain
}

// New returns the check on r, verifying at most max signatures a message
// (DefaultMaxSignatures when max <= 0).
func New(r *dns.Resolver, max int) *DKIM {
	if max <= 0 {
		max = DefaultMaxSignatures
	}
	return &DKIM{r: r, max: max}
}

// Name returns Name.
func (*DKIM) Name() string { return Name }

// WithKeys makes k sign the mail of authenticated clients with keys.
func (k *DKIM) WithKeys(keys []SignKey) *DKIM {
	k.keys = map[string]SignKey{}
	for _, s := range keys {
		k.keys[strings.ToLower(strings.TrimSuffix(s.Domain, "."))] = s
	}
	return k
}

// CheckWholeMessage implements policy.WholeMessageChecker.
func (k *DKIM) CheckWholeMessage(ctx context.Context, c *policy.Client, env *policy.Envelope, m *policy.Message) policy.Result {
	if c.Login != "" && len(k.keys) > 0 {
		// The submission path: our users' mail is signed, not judged.
		return k.sign(m)
	}
	if k.r == nil {
		return policy.Result{}
	}
	var hdr bytes.Buffer
	var selectors []string
	for _, h := range m.Header {
		hdr.Write(h.Raw)
		if strings.EqualFold(h.Name, "DKIM-Signature") {
			selectors = append(selectors, tag(h.Value, "s"))
		}
	}
	if len(selectors) == 0 {
		env.AddAuth(policy.AuthResult{Method: "dkim", Result: "none"})
		return policy.Result{Evidence: "dkim none: no signature"}
	}
	hdr.WriteString("\r\n")
	opts := &msgdkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return k.r.LookupTXT(ctx, name) },
		MaxVerifications: k.max,
	}
	verifs, err := msgdkim.VerifyWithOptions(io.MultiReader(&hdr, m.Body()), opts)
	var ev []string
	if err != nil && !errors.Is(err, msgdkim.ErrTooManySignatures) {
		for _, v := range verifs {
			if v.Err == nil {
				v.Err = err
			}
		}
		if len(verifs) == 0 {
			// The message could not be read as a signed message at all.
			env.AddAuth(policy.AuthResult{Method: "dkim", Result: "permerror"})
			return policy.Result{Log: true, Evidence: "dkim permerror: " + err.Error()}
		}
	}
	if errors.Is(err, msgdkim.ErrTooManySignatures) {
		ev = append(ev, fmt.Sprintf("only the first %d of %d signatures verified", k.max, len(selectors)))
	}
	for i, v := range verifs {
		res := result(v.Err)
		sel := ""
		if i < len(selectors) {
			sel = selectors[i]
		}
		env.AddAuth(policy.AuthResult{Method: "dkim", Result: res, Domain: strings.ToLower(v.Domain), Property: "header.d", Comment: "s=" + sel})
		e := fmt.Sprintf("dkim %s: d=%s s=%s", res, v.Domain, sel)
		if v.Err != nil {
			e += ": " + v.Err.Error()
		}
		ev = append(ev, e)
	}
	return policy.Result{Log: true, Evidence: strings.Join(ev, "; ")}
}

// result is the RFC 8601 result of one verification.
func result(err error) string {
	switch {
	case err == nil:
		return "pass"
	case msgdkim.IsTempFail(err):
		return "temperror"
	case msgdkim.IsPermFail(err):
		return "permerror"
	}
	return "fail"
}

// tag returns the value of one tag of a DKIM-Signature tag list.
func tag(v, name string) string {
	for _, kv := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == name {
			return strings.Join(strings.Fields(val), "")
		}
	}
	return ""
}
