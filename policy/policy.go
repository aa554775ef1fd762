package policy

import (
	"context"
	"fmt"

	"github.com/smtpgate/smtpgate/reply"
)

// Checker is one check. Name is its key under checks: in the
// configuration and its name in the logs. A check takes part in every
// stage whose interface it implements (ConnChecker ... MessageChecker),
// as go-smtp finds AuthSession.
type Checker interface {
	Name() string
}

// The stage interfaces.

// ConnChecker looks at a new connection, before HELO.
type ConnChecker interface {
	CheckConn(ctx context.Context, c *Client) Result
}

// HeloChecker looks at the HELO/EHLO argument (c.Helo).
type HeloChecker interface {
	CheckHelo(ctx context.Context, c *Client) Result
}

// MailChecker looks at the MAIL FROM reverse-path ("" for <>). env is the
// transaction being opened (env.From is from); a check may leave results
// on it (env.AddAuth) for later checks.
type MailChecker interface {
	CheckMail(ctx context.Context, c *Client, env *Envelope, from string) Result
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

// Stateful is a check that keeps state for one SMTP session: a connection
// to a milter or a policy server held from connect to logout, or what it
// learnt at HELO for use at DATA (maddy's CheckStateForMsg). Start is
// called once per session, when the session begins; the Instance it
// returns takes the check's place at every stage for that session (it
// implements the stage interfaces the Checker does), and Close is called
// when the session ends, however it ends.
//
// A Start that fails does not stop the session: the check answers each
// of its stages with 451 4.3.0 (its mode applies), since an unavailable
// filter is a reason to try again later, not to accept unchecked.
type Stateful interface {
	Checker
	Start(ctx context.Context, c *Client) (Instance, error)
}

// Instance is a stateful check's state for one session.
type Instance interface {
	Close() error
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

// Check is one configured check: its mode, optional reply override, and
// the Checker.
type Check struct {
	Mode    Mode
	Reply   *reply.Reply // overrides the check's own reply when set
	Checker Checker
}

// Name is the check's name.
func (c Check) Name() string { return c.Checker.Name() }

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

// stage indexes into Policy.stages.
type stage int

const (
	connStage stage = iota
	heloStage
	mailStage
	rcptStage
	headerStage
	bodyStage
	messageStage
	wholeStage
	nStages
)

// Policy is the ordered chain of checks, per stage. The zero Policy passes
// everything. A Policy is immutable once built and safe for concurrent
// use; each session asks it through its own Run.
type Policy struct {
	checks []Check
	// stages lists, per stage, the indexes into checks that take part.
	stages [nStages][]int
	// stateful lists the indexes of the Stateful checks.
	stateful []int
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
		i := len(p.checks)
		p.checks = append(p.checks, c)
		k := c.Checker
		for st, ok := range [nStages]bool{
			connStage:    is[ConnChecker](k),
			heloStage:    is[HeloChecker](k),
			mailStage:    is[MailChecker](k),
			rcptStage:    is[RcptChecker](k),
			headerStage:  is[HeaderChecker](k),
			bodyStage:    is[BodyChecker](k),
			messageStage: is[MessageChecker](k),
			wholeStage:   is[WholeMessageChecker](k),
		} {
			if ok {
				p.stages[st] = append(p.stages[st], i)
			}
		}
		if is[Stateful](k) {
			p.stateful = append(p.stateful, i)
		}
	}
	return p
}

func is[T any](v any) bool {
	_, ok := v.(T)
	return ok
}

// Names lists the active checks in order, for the startup log.
func (p *Policy) Names() []string {
	if p == nil {
		return nil
	}
	names := make([]string, len(p.checks))
	for i, c := range p.checks {
		names[i] = c.Name()
	}
	return names
}

// HasBodyChecks reports whether body lines need to be looked at.
func (p *Policy) HasBodyChecks() bool { return p != nil && len(p.stages[bodyStage]) > 0 }

// HasHeaderChecks reports whether header fields need to be looked at.
func (p *Policy) HasHeaderChecks() bool { return p != nil && len(p.stages[headerStage]) > 0 }

// Run is one session's run through the policy: created when the session
// begins (Start), asked at each stage, closed when the session ends. It
// holds the session's instances of stateful checks. A Run is used by one
// session at a time.
type Run struct {
	p *Policy
	// inst holds, per check index, the session's Instance of a stateful
	// check, or the error its Start returned; nil without stateful checks.
	inst    []Instance
	failed  []error
	started bool
}

// Start begins a session's run: each stateful check's Start is called
// once. The zero and the nil Policy give a Run that passes everything.
func (p *Policy) Start(ctx context.Context, c *Client) *Run {
	r := &Run{p: p}
	if p == nil || len(p.stateful) == 0 {
		return r
	}
	r.inst = make([]Instance, len(p.checks))
	r.failed = make([]error, len(p.checks))
	for _, i := range p.stateful {
		inst, err := p.checks[i].Checker.(Stateful).Start(ctx, c)
		if err != nil {
			r.failed[i] = err
			continue
		}
		r.inst[i] = inst
	}
	r.started = true
	return r
}

// Close ends the run: every stateful check's instance is closed. Close is
// idempotent.
func (r *Run) Close() error {
	var first error
	for i, inst := range r.inst {
		if inst == nil {
			continue
		}
		if err := inst.Close(); err != nil && first == nil {
			first = fmt.Errorf("%s: %w", r.p.checks[i].Name(), err)
		}
		r.inst[i] = nil
	}
	return first
}

// unavailable is the result of a stateful check whose Start failed.
func unavailable(name string, err error) Result {
	return Rejected(reply.New(451, [3]int{4, 3, 0}, name+" is temporarily unavailable, try again later"), "start: "+err.Error())
}

// pick is what answers stage T for check i in this session: the session's
// instance of a stateful check when it implements T, else the check.
func pick[T any](r *Run, i int) T {
	if r.inst != nil && r.inst[i] != nil {
		if t, ok := r.inst[i].(T); ok {
			return t
		}
	}
	return r.p.checks[i].Checker.(T)
}

func (r *Run) run(name string, st stage, out *Outcome, f func(i int) Result) {
	if r.p == nil {
		return
	}
	for _, i := range r.p.stages[st] {
		c := r.p.checks[i]
		var res Result
		if r.failed != nil && r.failed[i] != nil {
			res = unavailable(c.Name(), r.failed[i])
		} else {
			res = f(i)
		}
		if len(res.Prepend) > 0 {
			out.Prepend = append(out.Prepend, res.Prepend...)
		}
		if res.DropHeader && c.Mode == Enforce {
			out.DropHeader = true
		}
		if res.Action == Pass {
			if res.Evidence != "" && res.Log {
				out.Decisions = append(out.Decisions, Decision{Stage: name, Check: c.Name(), Mode: c.Mode, Result: res})
			}
			continue
		}
		if c.Reply != nil && res.Action == Reject {
			res.Reply = *c.Reply
		}
		d := Decision{Stage: name, Check: c.Name(), Mode: c.Mode, Result: res}
		out.Decisions = append(out.Decisions, d)
		if d.Enforced() {
			return
		}
	}
}

// Connect runs the connection checks.
func (r *Run) Connect(ctx context.Context, c *Client) Outcome {
	var out Outcome
	r.run(StageConnect, connStage, &out, func(i int) Result { return pick[ConnChecker](r, i).CheckConn(ctx, c) })
	return out
}

// Helo runs the HELO checks on c.Helo.
func (r *Run) Helo(ctx context.Context, c *Client) Outcome {
	var out Outcome
	r.run(StageHelo, heloStage, &out, func(i int) Result { return pick[HeloChecker](r, i).CheckHelo(ctx, c) })
	return out
}

// Mail runs the sender checks.
func (r *Run) Mail(ctx context.Context, c *Client, env *Envelope, from string) Outcome {
	var out Outcome
	r.run(StageMail, mailStage, &out, func(i int) Result { return pick[MailChecker](r, i).CheckMail(ctx, c, env, from) })
	return out
}

// Rcpt runs the recipient checks.
func (r *Run) Rcpt(ctx context.Context, c *Client, env *Envelope, rcpt string) Outcome {
	var out Outcome
	r.run(StageRcpt, rcptStage, &out, func(i int) Result { return pick[RcptChecker](r, i).CheckRcpt(ctx, c, env, rcpt) })
	return out
}

// Header runs the header checks on one field.
func (r *Run) Header(ctx context.Context, c *Client, env *Envelope, h *Header) Outcome {
	var out Outcome
	r.run(StageHeader, headerStage, &out, func(i int) Result { return pick[HeaderChecker](r, i).CheckHeader(ctx, c, env, h) })
	return out
}

// BodyLine runs the body checks on one line.
func (r *Run) BodyLine(ctx context.Context, c *Client, env *Envelope, line []byte) Outcome {
	var out Outcome
	r.run(StageBody, bodyStage, &out, func(i int) Result { return pick[BodyChecker](r, i).CheckBodyLine(ctx, c, env, line) })
	return out
}

// Message runs the end-of-message checks.
func (r *Run) Message(ctx context.Context, c *Client, env *Envelope) Outcome {
	var out Outcome
	r.run(StageData, messageStage, &out, func(i int) Result { return pick[MessageChecker](r, i).CheckMessage(ctx, c, env) })
	return out
}
