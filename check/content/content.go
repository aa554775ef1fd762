package content

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/table"
)

// HeaderChecks is the header_checks check: each unfolded header field of a
// message, as "Name: value", is looked up in a Postfix-format regexp
// table, and the action of the first matching rule (header_checks(5)) is
// taken before any of the message goes to the MTA.
//
// Actions, case-insensitive:
//
//	REJECT [text]   550 5.7.1 text (text may start with its own code,
//	                "554 5.7.1 text", "4.7.1 text" or "451 text")
//	DEFER [text]    450 4.7.1 text (DEFER_IF_REJECT, DEFER_IF_PERMIT alike)
//	DISCARD [text]  the client gets 250, nothing is delivered
//	WARN [text]     log and go on
//	IGNORE          remove this header field
//	PREPEND text    add the header field "text" before this one
//	DUNNO, OK       stop looking at this field
type HeaderChecks struct {
	content
}

// BodyChecks is the body_checks check: each body line, without its CRLF,
// is looked up in a Postfix-format regexp table while the body streams to
// the MTA. Actions are those of HeaderChecks except IGNORE and PREPEND,
// which would need the body to be rewritten.
//
// Body checks run on every line of every message: when no rule matches, a
// line costs the regexp matches and no allocation. A table that starts by
// skipping base64 lines (see examples/body_checks) keeps that cost low.
type BodyChecks struct {
	content
}

// NewHeaderChecks builds header_checks from a table; every result must
// start with a known action.
func NewHeaderChecks(t *table.RegexpTable) (*HeaderChecks, error) {
	c, err := newContent(t, true)
	if err != nil {
		return nil, err
	}
	return &HeaderChecks{c}, nil
}

// NewBodyChecks builds body_checks from a table; every result must start
// with a known action other than IGNORE and PREPEND.
func NewBodyChecks(t *table.RegexpTable) (*BodyChecks, error) {
	c, err := newContent(t, false)
	if err != nil {
		return nil, err
	}
	return &BodyChecks{c}, nil
}

// Name is the check's config and log name.
func (*HeaderChecks) Name() string { return NameHeader }

// Name is the check's config and log name.
func (*BodyChecks) Name() string { return NameBody }

// Config and log names of the content table checks.
const (
	NameHeader = "header_checks"
	NameBody   = "body_checks"
)

// maxHeaderInspect bounds how much of one header field is looked at, as
// Postfix's header_size_limit does.
const maxHeaderInspect = 100 * 1024

var headerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// CheckHeader looks at one header field, unfolded: the field as received
// with its line breaks removed, so "Subject:x" stays as the sender wrote
// it, or "Name: Value" when the raw field is not known.
func (k *HeaderChecks) CheckHeader(_ context.Context, _ *policy.Client, _ *policy.Envelope, h *policy.Header) policy.Result {
	bp := headerBufs.Get().(*[]byte)
	b := unfold((*bp)[:0], h)
	r := k.check(b)
	*bp = b
	headerBufs.Put(bp)
	return r
}

func unfold(b []byte, h *policy.Header) []byte {
	if len(h.Raw) == 0 {
		b = append(b, h.Name...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
	} else {
		for _, c := range h.Raw {
			if c != '\r' && c != '\n' {
				b = append(b, c)
			}
		}
	}
	if len(b) > maxHeaderInspect {
		b = b[:maxHeaderInspect]
	}
	return b
}

// CheckBodyLine looks at one body line.
func (k *BodyChecks) CheckBodyLine(_ context.Context, _ *policy.Client, _ *policy.Envelope, line []byte) policy.Result {
	return k.check(line)
}

// content is what header and body checks share: the table and, per rule,
// its action.
type content struct {
	table   *table.RegexpTable
	actions []table.Action
}

var discardReply = reply.New(250, [3]int{2, 0, 0}, "Ok")

func newContent(t *table.RegexpTable, header bool) (content, error) {
	acts, err := t.Actions(func(v table.Verb) error {
		if !header && (v == table.Ignore || v == table.Prepend) {
			return errors.New("is for header_checks only")
		}
		return nil
	})
	if err != nil {
		return content{}, err
	}
	return content{table: t, actions: acts}, nil
}

// check looks input up and turns the matching rule's action into a Result.
func (c *content) check(input []byte) policy.Result {
	i, result := c.table.MatchBytes(input)
	if i < 0 {
		return policy.Result{}
	}
	a := c.actions[i]
	if a.Verb == table.Dunno {
		// The base64-skipping rule: the common case, keep it free.
		return policy.Result{}
	}
	text := a.Text(result)
	evidence := c.evidence(i, input)
	switch a.Verb {
	case table.Reject, table.Defer:
		r, err := table.ActionReply(text, a.Verb)
		if err != nil {
			// Only substituted text can get here; refuse all the same.
			r = table.DefaultReject
			if a.Verb == table.Defer {
				r = table.DefaultDefer
			}
		}
		return policy.Result{Action: policy.Reject, Reply: r, Evidence: evidence}
	case table.Discard:
		return policy.Result{Action: policy.Discard, Reply: discardReply, Evidence: withText(evidence, text)}
	case table.Warn:
		return policy.Result{Log: true, Evidence: withText(evidence, text)}
	case table.Ignore:
		return policy.Result{DropHeader: true, Log: true, Evidence: evidence}
	case table.Prepend:
		if !table.IsHeaderField(text) {
			return policy.Result{Log: true, Evidence: withText(evidence, "PREPEND result is not a header field, not added: "+strconv.Quote(clip(text, 60)))}
		}
		return policy.Result{Prepend: []string{text}, Log: true, Evidence: evidence}
	}
	return policy.Result{}
}

// maxEvidenceInput bounds how much of the matched input goes to the log.
const maxEvidenceInput = 200

func (c *content) evidence(rule int, input []byte) string {
	in := input
	if len(in) > maxEvidenceInput {
		in = in[:maxEvidenceInput]
	}
	return fmt.Sprintf("%s:%d: %q", c.table.Name(), c.table.Line(rule), in)
}

func withText(evidence, text string) string {
	if text == "" {
		return evidence
	}
	return evidence + ": " + text
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
