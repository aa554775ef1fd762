// Package verify is smtpgate's policy: the checks that decide, while the
// client is still connected, whether a connection, HELO, sender, recipient
// or message is refused.
//
// Each check is a small type in its own file with a Name used by the
// configuration and the logs, and it returns a Result whose Reply is the
// SMTP reply the client gets. The Policy runs the checks of one stage in
// order, cheap first, and applies each check's mode (enforce, warn, off).
//
// verify knows nothing of the SMTP wire or of sockets to the MTA: where a
// check needs the MTA (recipient probes) it declares an interface that the
// caller satisfies.
package verify

import (
	"fmt"
	"net/netip"
)

// Reply is an SMTP reply: basic code (RFC 5321 §4.2), enhanced status code
// (RFC 3463) and text.
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
}

// String formats the reply as it appears on the wire (single line).
func (r Reply) String() string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text)
}

// Temporary reports whether the reply is a 4xx.
func (r Reply) Temporary() bool { return r.Code/100 == 4 }

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
	Reply  Reply
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
func Rejected(r Reply, evidence string) Result {
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

// Envelope is the current transaction.
type Envelope struct {
	From       string // reverse-path without brackets; "" is the null sender
	Recipients []string
}
