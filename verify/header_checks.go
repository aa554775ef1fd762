package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
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
func NewHeaderChecks(t *RegexpTable) (*HeaderChecks, error) {
	c, err := newContent(t, true)
	if err != nil {
		return nil, err
	}
	return &HeaderChecks{c}, nil
}

// NewBodyChecks builds body_checks from a table; every result must start
// with a known action other than IGNORE and PREPEND.
func NewBodyChecks(t *RegexpTable) (*BodyChecks, error) {
	c, err := newContent(t, false)
	if err != nil {
		return nil, err
	}
	return &BodyChecks{c}, nil
}

// Name is the check's config and log name.
func (*HeaderChecks) Name() string { return "header_checks" }

// Name is the check's config and log name.
func (*BodyChecks) Name() string { return "body_checks" }

// maxHeaderInspect bounds how much of one header field is looked at, as
// Postfix's header_size_limit does.
const maxHeaderInspect = 100 * 1024

var headerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// CheckHeader looks at one header field, unfolded: the field as received
// with its line breaks removed, so "Subject:x" stays as the sender wrote
// it, or "Name: Value" when the raw field is not known.
func (k *HeaderChecks) CheckHeader(_ context.Context, _ *Client, _ *Envelope, h *Header) Result {
	bp := headerBufs.Get().(*[]byte)
	b := unfold((*bp)[:0], h)
	r := k.check(b)
	*bp = b
	headerBufs.Put(bp)
	return r
}

func unfold(b []byte, h *Header) []byte {
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
func (k *BodyChecks) CheckBodyLine(_ context.Context, _ *Client, _ *Envelope, line []byte) Result {
	return k.check(line)
}

type contentAction uint8

const (
	actDunno contentAction = iota
	actReject
	actDefer
	actDiscard
	actWarn
	actIgnore
	actPrepend
)

var contentActions = map[string]contentAction{
	"DUNNO":           actDunno,
	"OK":              actDunno,
	"REJECT":          actReject,
	"DEFER":           actDefer,
	"DEFER_IF_REJECT": actDefer,
	"DEFER_IF_PERMIT": actDefer,
	"DISCARD":         actDiscard,
	"WARN":            actWarn,
	"IGNORE":          actIgnore,
	"PREPEND":         actPrepend,
}

// Postfix actions smtpgate does not take: they need a queue (HOLD, FILTER,
// REDIRECT, BCC, DELAY) or rewriting the message in flight.
var unsupportedActions = []string{"HOLD", "FILTER", "REDIRECT", "BCC", "DELAY", "REPLACE", "STRIP", "INFO", "PASS"}

// content is what header and body checks share: the table and, per rule,
// its action.
type content struct {
	table   *RegexpTable
	actions []ruleAction
}

type ruleAction struct {
	act contentAction
	// kwLen is the length of the action keyword at the start of the
	// result, which is literal: only the text after it is substituted.
	kwLen int
}

var (
	defaultReject = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Message content rejected"}
	defaultDefer  = Reply{Code: 450, Enhanced: [3]int{4, 7, 1}, Text: "Message content deferred, try again later"}
	discardReply  = Reply{Code: 250, Enhanced: [3]int{2, 0, 0}, Text: "Ok"}
)

func newContent(t *RegexpTable, header bool) (content, error) {
	c := content{table: t, actions: make([]ruleAction, len(t.rules))}
	for i, r := range t.rules {
		if r.kind != ruleMatch {
			continue
		}
		kw := r.result
		if n := strings.IndexAny(kw, " \t"); n >= 0 {
			kw = kw[:n]
		}
		text := strings.TrimLeft(r.result[len(kw):], " \t")
		if strings.Contains(kw, "$") {
			return content{}, t.errorf(r.line, "action %q: the action must be written out, not substituted", kw)
		}
		up := strings.ToUpper(kw)
		act, ok := contentActions[up]
		if !ok {
			for _, u := range unsupportedActions {
				if up == u {
					return content{}, t.errorf(r.line, "action %s is not supported by smtpgate", up)
				}
			}
			return content{}, t.errorf(r.line, "unknown action %q (want REJECT, DEFER, DISCARD, WARN, IGNORE, PREPEND, DUNNO or OK)", clip(kw, 30))
		}
		if !header && (act == actIgnore || act == actPrepend) {
			return content{}, t.errorf(r.line, "action %s is for header_checks only", up)
		}
		literal := r.maxSub == 0
		switch act {
		case actReject, actDefer:
			if literal {
				if _, err := parseReply(text, act); err != nil {
					return content{}, t.errorf(r.line, "%v", err)
				}
			}
		case actPrepend:
			if text == "" {
				return content{}, t.errorf(r.line, "PREPEND needs a header field to add")
			}
			if literal && !isHeaderField(text) {
				return content{}, t.errorf(r.line, "PREPEND %q: not a header field (Name: value)", clip(text, 30))
			}
		case actIgnore, actDunno:
			if text != "" {
				return content{}, t.errorf(r.line, "%s takes no text", up)
			}
		}
		c.actions[i] = ruleAction{act: act, kwLen: len(kw)}
	}
	return c, nil
}

// check looks input up and turns the matching rule's action into a Result.
func (c *content) check(input []byte) Result {
	i, result := c.table.matchBytes(input)
	if i < 0 {
		return Result{}
	}
	a := c.actions[i]
	if a.act == actDunno {
		// The base64-skipping rule: the common case, keep it free.
		return Result{}
	}
	text := strings.TrimLeft(result[a.kwLen:], " \t")
	evidence := c.evidence(i, input)
	switch a.act {
	case actReject, actDefer:
		reply, err := parseReply(text, a.act)
		if err != nil {
			// Only substituted text can get here; refuse all the same.
			reply = defaultReject
			if a.act == actDefer {
				reply = defaultDefer
			}
		}
		return Result{Action: Reject, Reply: reply, Evidence: evidence}
	case actDiscard:
		return Result{Action: Discard, Reply: discardReply, Evidence: withText(evidence, text)}
	case actWarn:
		return Result{Log: true, Evidence: withText(evidence, text)}
	case actIgnore:
		return Result{DropHeader: true, Log: true, Evidence: evidence}
	case actPrepend:
		if !isHeaderField(text) {
			return Result{Log: true, Evidence: withText(evidence, "PREPEND result is not a header field, not added: "+strconv.Quote(clip(text, 60)))}
		}
		return Result{Prepend: []string{text}, Log: true, Evidence: evidence}
	}
	return Result{}
}

// maxEvidenceInput bounds how much of the matched input goes to the log.
const maxEvidenceInput = 200

func (c *content) evidence(rule int, input []byte) string {
	in := input
	if len(in) > maxEvidenceInput {
		in = in[:maxEvidenceInput]
	}
	return fmt.Sprintf("%s:%d: %q", c.table.name, c.table.rules[rule].line, in)
}

func withText(evidence, text string) string {
	if text == "" {
		return evidence
	}
	return evidence + ": " + text
}

// isHeaderField reports whether s starts with a header field name and a
// colon (RFC 5322 §2.2) and has no line breaks.
func isHeaderField(s string) bool {
	name, _, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.ContainsAny(s, "\r\n") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 33 || name[i] > 126 {
			return false
		}
	}
	return true
}

// maxReplyText keeps a reply line under the 512 octets of RFC 5321
// §4.5.3.1.5.
const maxReplyText = 400

// parseReply builds the reply of REJECT or DEFER text. As Postfix does,
// text may start with a basic code, an enhanced code (RFC 3463), or both;
// what is missing is taken from the default (550 5.7.1, or 450 4.7.1 for
// DEFER), with the class of the code that was given.
func parseReply(text string, act contentAction) (Reply, error) {
	def := defaultReject
	if act == actDefer {
		def = defaultDefer
	}
	r := def
	codeSet, enhSet := false, false
	if w, rest, _ := strings.Cut(text, " "); len(w) == 3 && allDigits(w) {
		n, _ := strconv.Atoi(w)
		if n < 400 || n > 599 {
			return Reply{}, fmt.Errorf("reply code %d: want 4xx or 5xx", n)
		}
		r.Code, codeSet = n, true
		text = strings.TrimLeft(rest, " ")
	}
	if w, rest, _ := strings.Cut(text, " "); looksEnhanced(w) {
		e, err := parseEnhanced(w)
		if err != nil {
			return Reply{}, err
		}
		r.Enhanced, enhSet = e, true
		text = strings.TrimLeft(rest, " ")
	}
	switch {
	case codeSet && enhSet:
		if r.Code/100 != r.Enhanced[0] {
			return Reply{}, fmt.Errorf("reply code %d and enhanced code %d.%d.%d disagree", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
		}
	case codeSet:
		r.Enhanced[0] = r.Code / 100
	case enhSet:
		r.Code = r.Enhanced[0]*100 + 50
	}
	if act == actDefer && r.Code/100 != 4 {
		return Reply{}, fmt.Errorf("DEFER with reply code %d: want 4xx", r.Code)
	}
	if text != "" {
		r.Text = sanitizeReplyText(text)
	}
	return r, nil
}

// looksEnhanced reports whether w has the shape of an enhanced status
// code: digits and two dots.
func looksEnhanced(w string) bool {
	if strings.Count(w, ".") != 2 {
		return false
	}
	return allDigits(strings.ReplaceAll(w, ".", ""))
}

// parseEnhanced parses class.subject.detail (RFC 3463 §2).
func parseEnhanced(w string) ([3]int, error) {
	var e [3]int
	for i, f := range strings.Split(w, ".") {
		n, err := strconv.Atoi(f)
		if f == "" || err != nil || len(f) > 3 {
			return e, fmt.Errorf("enhanced status code %q", w)
		}
		e[i] = n
	}
	if e[0] != 4 && e[0] != 5 {
		return e, fmt.Errorf("enhanced status code %q: class must be 4 or 5", w)
	}
	return e, nil
}

// sanitizeReplyText keeps a reply printable ASCII on one line: substituted
// text comes from the message.
func sanitizeReplyText(s string) string {
	if len(s) > maxReplyText {
		s = s[:maxReplyText]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 32 || c > 126 {
			b[i] = '?'
		}
	}
	return string(b)
}
