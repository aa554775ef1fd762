// Package authresults is the authentication_results check: the
// Authentication-Results header field (RFC 8601) with the results the
// checks before it left on the envelope, and no forged one of ours.
package authresults

import (
	"context"
	"strings"

	"github.com/smtpgate/smtpgate/policy"
)

// Name is the check's config and log name.
const Name = "authentication_results"

// AuthResults removes every Authentication-Results field of the message
// that claims our authserv-id (RFC 8601 §5: a field with our name that we
// did not write is a forgery, and a delivery agent or a mail reader
// trusts our name), and prepends our own, with every result on the
// envelope: spf (the spf check), dkim (each signature), dmarc. It is the
// last whole-message check of the chain, so that every result is there.
//
// It never refuses. In warn mode forged fields are only logged.
type AuthResults struct {
	id string
}

// New returns the check with authserv-id id (our hostname by default).
func New(id string) *AuthResults { return &AuthResults{id: id} }

// Name returns Name.
func (*AuthResults) Name() string { return Name }

// CheckHeader implements policy.HeaderChecker: a field claiming our
// authserv-id is dropped.
func (k *AuthResults) CheckHeader(_ context.Context, _ *policy.Client, _ *policy.Envelope, h *policy.Header) policy.Result {
	if !strings.EqualFold(h.Name, "Authentication-Results") || !strings.EqualFold(ServID(h.Value), k.id) {
		return policy.Result{}
	}
	return policy.Result{DropHeader: true, Log: true, Evidence: "Authentication-Results claiming our authserv-id " + k.id + " (removed in enforce mode)"}
}

// CheckWholeMessage implements policy.WholeMessageChecker: our field.
func (k *AuthResults) CheckWholeMessage(_ context.Context, _ *policy.Client, env *policy.Envelope, _ *policy.Message) policy.Result {
	return policy.Result{Prepend: []string{Field(k.id, env.Auth)}}
}

// Field formats an Authentication-Results field (without its final CRLF),
// one result a line.
func Field(id string, results []policy.AuthResult) string {
	var b strings.Builder
	b.WriteString("Authentication-Results: ")
	b.WriteString(value(id))
	if len(results) == 0 {
		b.WriteString("; none")
		return b.String()
	}
	for _, r := range results {
		b.WriteString(";\r\n\t")
		b.WriteString(token(r.Method))
		b.WriteByte('=')
		b.WriteString(token(r.Result))
		if c := comment(r.Comment); c != "" {
			b.WriteString(" (" + c + ")")
		}
		if r.Property != "" && r.Domain != "" {
			b.WriteString(" " + token(r.Property) + "=" + value(r.Domain))
		}
	}
	return b.String()
}

// ServID returns the authserv-id of an Authentication-Results value: its
// first token, comments left out.
func ServID(v string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && depth > 0:
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		case c == ';' || ((c == ' ' || c == '\t') && b.Len() > 0):
			return strings.Trim(b.String(), `"`)
		case c == ' ' || c == '\t':
		default:
			b.WriteByte(c)
		}
	}
	return strings.Trim(b.String(), `"`)
}

func isToken(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`{|}~", c) >= 0
}

// token keeps only token characters (RFC 2045) of a name we chose.
func token(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if isToken(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// value is s as a token when it is one, else a quoted-string: a d= comes
// from the message and must not end the field or the result.
func value(s string) string {
	ok := s != ""
	for i := 0; i < len(s) && ok; i++ {
		ok = isToken(s[i])
	}
	if ok {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c >= 0x7f:
			continue
		case c == '"' || c == '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// comment keeps the plain characters of a comment.
func comment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("=.-_ ", c) >= 0 {
			b.WriteByte(c)
		}
	}
	return b.String()
}
