package verify

import (
	"context"
)

// The stage interfaces. A check implements the ones for the stages it
// looks at; the Policy finds them by type assertion, as go-smtp finds
// AuthSession.

// ConnChecker looks at a new connection, before HELO.
type ConnChecker interface {
	CheckConn(ctx context.Context, c *Client) Result
}

// HeloChecker looks at the HELO/EHLO argument (c.Helo).
type HeloChecker interface {
	CheckHelo(ctx context.Context, c *Client) Result
}

// MailChecker looks at the MAIL FROM reverse-path ("" for <>).
type MailChecker interface {
	CheckMail(ctx context.Context, c *Client, from string) Result
}

// RcptChecker looks at one RCPT TO forward-path. env holds the sender and
// the recipients accepted so far.
type RcptChecker interface {
	CheckRcpt(ctx context.Context, c *Client, env *Envelope, rcpt string) Result
}

// Header is one header field, unfolded: Name without the colon, Value
// without the leading space, continuation lines joined.
type Header struct {
	Name  string
	Value string
	// Raw is the field as received, folded, with its CRLFs.
	Raw []byte
}

// HeaderChecker looks at each header field of a message before any of the
// message goes to the MTA.
type HeaderChecker interface {
	CheckHeader(ctx context.Context, c *Client, env *Envelope, h *Header) Result
}

// BodyChecker looks at each body line (without its CRLF) while the body
// streams to the MTA. A Reject aborts the upstream transaction.
type BodyChecker interface {
	CheckBodyLine(ctx context.Context, c *Client, env *Envelope, line []byte) Result
}

// MessageChecker runs once the whole message was received (before the MTA
// is told the final dot).
type MessageChecker interface {
	CheckMessage(ctx context.Context, c *Client, env *Envelope) Result
}

// Stage names, for logs.
const (
	StageConnect = "connect"
	StageHelo    = "helo"
	StageMail    = "mail"
	StageRcpt    = "rcpt"
	StageHeader  = "header"
	StageBody    = "body"
	StageData    = "data"
)

// Check is one configured check: its name, mode, optional reply override,
// and the value that implements one or more stage interfaces.
type Check struct {
	Name    string
	Mode    Mode
	Reply   *Reply // overrides the check's own reply when set
	Checker any
}

// Decision is what one check decided at one stage, as it is logged.
type Decision struct {
	Stage  string
	Check  string
	Mode   Mode
	Result Result
}

// Enforced reports whether the decision stops the mail (mode enforce and a
// reject or discard).
func (d Decision) Enforced() bool {
	return d.Mode == Enforce && d.Result.Action != Pass
}

// Outcome is the result of one stage: every non-pass decision, in the
// order the checks ran (warn-mode decisions first, then at most one
// enforced decision, which ended the stage), and the header fields checks
// asked to add.
type Outcome struct {
	Decisions []Decision
	Prepend   []string
	// DropHeader is set by header checks that IGNORE the field.
	DropHeader bool
}

// Refusal returns the decision that stops the mail, if any.
func (o *Outcome) Refusal() (Decision, bool) {
	if n := len(o.Decisions); n > 0 && o.Decisions[n-1].Enforced() {
		return o.Decisions[n-1], true
	}
	return Decision{}, false
}

// Policy is the ordered set of checks, per stage. The zero Policy passes
// everything. A Policy is immutable once built and safe for concurrent use.
type Policy struct {
	conn    []Check
	helo    []Check
	mail    []Check
	rcpt    []Check
	header  []Check
	body    []Check
	message []Check
	whole   []Check // WholeMessageChecker (message.go)
}

// NewPolicy builds a policy from checks in the order given; checks in mode
// Off are left out. Each check joins every stage whose interface it
// implements.
func NewPolicy(checks ...Check) *Policy {
	p := &Policy{}
	for _, c := range checks {
		if c.Mode == Off || c.Checker == nil {
			continue
		}
		if _, ok := c.Checker.(ConnChecker); ok {
			p.conn = append(p.conn, c)
		}
		if _, ok := c.Checker.(HeloChecker); ok {
			p.helo = append(p.helo, c)
		}
		if _, ok := c.Checker.(MailChecker); ok {
			p.mail = append(p.mail, c)
		}
		if _, ok := c.Checker.(RcptChecker); ok {
			p.rcpt = append(p.rcpt, c)
		}
		if _, ok := c.Checker.(HeaderChecker); ok {
			p.header = append(p.header, c)
		}
		if _, ok := c.Checker.(BodyChecker); ok {
			p.body = append(p.body, c)
		}
		if _, ok := c.Checker.(MessageChecker); ok {
			p.message = append(p.message, c)
		}
		if _, ok := c.Checker.(WholeMessageChecker); ok {
			p.whole = append(p.whole, c)
		}
	}
	return p
}

// Names lists the active checks in order, for the startup log.
func (p *Policy) Names() []string {
	seen := map[string]bool{}
	var names []string
	for _, stage := range [][]Check{p.conn, p.helo, p.mail, p.rcpt, p.header, p.body, p.message, p.whole} {
		for _, c := range stage {
			if !seen[c.Name] {
				seen[c.Name] = true
				names = append(names, c.Name)
			}
		}
	}
	return names
}

// HasBodyChecks reports whether body lines need to be looked at.
func (p *Policy) HasBodyChecks() bool { return len(p.body) > 0 }

// HasHeaderChecks reports whether header fields need to be looked at.
func (p *Policy) HasHeaderChecks() bool { return len(p.header) > 0 }

func run(stage string, checks []Check, out *Outcome, f func(Check) Result) {
	for _, c := range checks {
		r := f(c)
		if len(r.Prepend) > 0 {
			out.Prepend = append(out.Prepend, r.Prepend...)
		}
		if r.DropHeader && c.Mode == Enforce {
			out.DropHeader = true
		}
		if r.Action == Pass {
			if r.Evidence != "" && r.Log {
				out.Decisions = append(out.Decisions, Decision{Stage: stage, Check: c.Name, Mode: c.Mode, Result: r})
			}
			continue
		}
		if c.Reply != nil && r.Action == Reject {
			r.Reply = *c.Reply
		}
		d := Decision{Stage: stage, Check: c.Name, Mode: c.Mode, Result: r}
		out.Decisions = append(out.Decisions, d)
		if d.Enforced() {
			return
		}
	}
}

// Connect runs the connection checks.
func (p *Policy) Connect(ctx context.Context, c *Client) Outcome {
	var out Outcome
	run(StageConnect, p.conn, &out, func(k Check) Result { return k.Checker.(ConnChecker).CheckConn(ctx, c) })
	return out
}

// Helo runs the HELO checks on c.Helo.
func (p *Policy) Helo(ctx context.Context, c *Client) Outcome {
	var out Outcome
	run(StageHelo, p.helo, &out, func(k Check) Result { return k.Checker.(HeloChecker).CheckHelo(ctx, c) })
	return out
}

// Mail runs the sender checks.
func (p *Policy) Mail(ctx context.Context, c *Client, from string) Outcome {
	var out Outcome
	run(StageMail, p.mail, &out, func(k Check) Result { return k.Checker.(MailChecker).CheckMail(ctx, c, from) })
	return out
}

// Rcpt runs the recipient checks.
func (p *Policy) Rcpt(ctx context.Context, c *Client, env *Envelope, rcpt string) Outcome {
	var out Outcome
	run(StageRcpt, p.rcpt, &out, func(k Check) Result { return k.Checker.(RcptChecker).CheckRcpt(ctx, c, env, rcpt) })
	return out
}

// Header runs the header checks on one field.
func (p *Policy) Header(ctx context.Context, c *Client, env *Envelope, h *Header) Outcome {
	var out Outcome
	run(StageHeader, p.header, &out, func(k Check) Result { return k.Checker.(HeaderChecker).CheckHeader(ctx, c, env, h) })
	return out
}

// BodyLine runs the body checks on one line.
func (p *Policy) BodyLine(ctx context.Context, c *Client, env *Envelope, line []byte) Outcome {
	var out Outcome
	run(StageBody, p.body, &out, func(k Check) Result { return k.Checker.(BodyChecker).CheckBodyLine(ctx, c, env, line) })
	return out
}

// Message runs the end-of-message checks.
func (p *Policy) Message(ctx context.Context, c *Client, env *Envelope) Outcome {
	var out Outcome
	run(StageData, p.message, &out, func(k Check) Result { return k.Checker.(MessageChecker).CheckMessage(ctx, c, env) })
	return out
}
