// Package policy is smtpgate's policy engine: the stage interfaces a check
// implements, the per-session Run that asks the checks of each stage in
// order and applies each check's mode (enforce, warn, off), and the
// results checks leave on the envelope for later checks.
//
// policy knows no check: the checks live in check/<name>/, and the chain
// (package check) lists them in order, cheap first. policy knows nothing
// of the SMTP wire or of sockets to the MTA either: where a check needs
// the MTA (recipient probes) it uses an interface that the caller
// satisfies.
package policy

import (
	"fmt"
	"net/netip"

	"github.com/smtpgate/smtpgate/reply"
)

// Action is what a check decided.
type Action int

const (
	// Pass lets the stage go on to the next check.
	Pass Action = iota
	// Reject refuses with the Result's Reply (5xx or 4xx).
	Reject
	// Discard accepts towards the client but delivers nothing.
	Discard
)

func (a Action) String() string {
	switch a {
	case Reject:
		return "reject"
	case Discard:
		return "discard"
	}
	return "pass"
}

// Result is the outcome of one check.
type Result struct {
	Action Action
	Reply  reply.Reply
	// Evidence explains the decision for the log: the DNS answer, the
	// matched rule with file:line, the address form that was refused.
	Evidence string
	// Log asks for a passing result to be logged too (with its Evidence),
	// e.g. a DNSBL zone that timed out and was counted as not listed.
	Log bool
	// Prepend lists header fields to add to the message (Received-SPF,
	// a PREPEND action), each without its trailing CRLF.
	Prepend []string
	// DropHeader removes the header field being checked (IGNORE).
	DropHeader bool
}

// Rejected builds a rejecting Result.
func Rejected(r reply.Reply, evidence string) Result {
	return Result{Action: Reject, Reply: r, Evidence: evidence}
}

// Mode is how a check's refusals are applied.
type Mode int

const (
	// Enforce refuses.
	Enforce Mode = iota
	// Warn logs "would reject" with the reply it would have sent and lets
	// the mail through (Postfix's warn_if_reject).
	Warn
	// Off does not run the check.
	Off
)

func (m Mode) String() string {
	switch m {
	case Warn:
		return "warn"
	case Off:
		return "off"
	}
	return "enforce"
}

// ParseMode parses enforce|warn|off.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "enforce":
		return Enforce, nil
	case "warn":
		return Warn, nil
	case "off":
		return Off, nil
	}
	return Off, fmt.Errorf("mode %q: want enforce, warn or off", s)
}

// Client is what the policy knows of the connected client. It is filled by
// the session and only grows during a session.
type Client struct {
	Addr     netip.Addr
	Port     int
	Hostname string // reverse DNS name, if looked up
	Helo     string
	// ESMTP is true after EHLO rather than HELO.
	ESMTP bool
	TLS   bool
	// Login is the SASL authentication identity, empty if not authenticated.
	Login string
	// Trusted is true for clients in relay.networks.
	Trusted bool
}

// Envelope is the current transaction, and what checks found out about
// it for later checks to use (SPF's result for DMARC).
type Envelope struct {
	From       string // reverse-path without brackets; "" is the null sender
	Recipients []string
	// Auth are the authentication results of the transaction so far, in
	// the order the checks ran (RFC 8601 methods: spf, dkim ...).
	Auth []AuthResult
}

// AuthResult is one authentication method's result, as RFC 8601's
// Authentication-Results header field reports it.
type AuthResult struct {
	Method string // "spf", "dkim"
	Result string // "pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"
	// Domain is the domain the result is about: the MAIL FROM or HELO
	// domain for SPF, the d= of a DKIM signature.
	Domain string
	// Property is the RFC 8601 property the result was found on
	// ("smtp.mailfrom", "smtp.helo", "header.d").
	Property string
	// Comment is what the result adds for a reader of the
	// Authentication-Results field and the log: a DKIM signature's
	// selector, the DMARC policy applied. Plain ASCII, no parentheses.
	Comment string
}

// AddAuth records a result for later checks. A nil Envelope ignores it.
func (e *Envelope) AddAuth(r AuthResult) {
	if e != nil {
		e.Auth = append(e.Auth, r)
	}
}

// AuthFor returns the results of one method.
func (e *Envelope) AuthFor(method string) []AuthResult {
	if e == nil {
		return nil
	}
	var out []AuthResult
	for _, r := range e.Auth {
		if r.Method == method {
			out = append(out, r)
		}
	}
	return out
}
