package table

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/smtpgate/smtpgate/reply"
)

// Verb is the action keyword a table result starts with.
type Verb uint8

// The actions smtpgate takes (Postfix access(5), header_checks(5)).
const (
	Dunno   Verb = iota // DUNNO, OK: stop looking, no action
	Reject              // REJECT [text]: 550 5.7.1 text
	Defer               // DEFER [text] (and DEFER_IF_REJECT/PERMIT): 450 4.7.1 text
	Discard             // DISCARD [text]: accept towards the client, deliver nothing
	Warn                // WARN [text]: log and go on
	Ignore              // IGNORE: remove the header field
	Prepend             // PREPEND text: add the header field text
)

var verbs = map[string]Verb{
	"DUNNO":           Dunno,
	"OK":              Dunno,
	"REJECT":          Reject,
	"DEFER":           Defer,
	"DEFER_IF_REJECT": Defer,
	"DEFER_IF_PERMIT": Defer,
	"DISCARD":         Discard,
	"WARN":            Warn,
	"IGNORE":          Ignore,
	"PREPEND":         Prepend,
}

// Postfix actions smtpgate does not take: they need a queue (HOLD, FILTER,
// REDIRECT, BCC, DELAY) or rewriting the message in flight.
var unsupported = []string{"HOLD", "FILTER", "REDIRECT", "BCC", "DELAY", "REPLACE", "STRIP", "INFO", "PASS"}

// Action is a match rule's result, compiled at load: its verb and where
// the keyword ends (the keyword is literal; only the text after it is
// substituted).
type Action struct {
	Verb  Verb
	kwLen int
}

// Text returns the result's text after the keyword.
func (a Action) Text(result string) string { return strings.TrimLeft(result[a.kwLen:], " \t") }

// Actions compiles the result of every match rule of t into an Action,
// indexed like the rules. allow names the verbs the caller takes: a verb
// it refuses is an error naming the file and line ("action IGNORE is for
// header_checks only").
func (t *RegexpTable) Actions(allow func(Verb) error) ([]Action, error) {
	acts := make([]Action, len(t.rules))
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
			return nil, t.errorf(r.line, "action %q: the action must be written out, not substituted", kw)
		}
		up := strings.ToUpper(kw)
		v, ok := verbs[up]
		if !ok {
			for _, u := range unsupported {
				if up == u {
					return nil, t.errorf(r.line, "action %s is not supported by smtpgate", up)
				}
			}
			return nil, t.errorf(r.line, "unknown action %q (want REJECT, DEFER, DISCARD, WARN, IGNORE, PREPEND, DUNNO or OK)", clip(kw, 30))
		}
		if err := allow(v); err != nil {
			return nil, t.errorf(r.line, "action %s %v", up, err)
		}
		literal := r.maxSub == 0
		switch v {
		case Reject, Defer:
			if literal {
				if _, err := ActionReply(text, v); err != nil {
					return nil, t.errorf(r.line, "%v", err)
				}
			}
		case Prepend:
			if text == "" {
				return nil, t.errorf(r.line, "PREPEND needs a header field to add")
			}
			if literal && !IsHeaderField(text) {
				return nil, t.errorf(r.line, "PREPEND %q: not a header field (Name: value)", clip(text, 30))
			}
		case Ignore, Dunno:
			if text != "" {
				return nil, t.errorf(r.line, "%s takes no text", up)
			}
		}
		acts[i] = Action{Verb: v, kwLen: len(kw)}
	}
	return acts, nil
}

// MatchBytes looks input up and returns the index of the first matching
// rule and its result, substituted; -1 when no rule matches. It does not
// allocate when nothing matches.
func (t *RegexpTable) MatchBytes(input []byte) (rule int, result string) {
	return t.matchBytes(input)
}

// Line is the line number of rule i.
func (t *RegexpTable) Line(i int) int { return t.rules[i].line }

// IsHeaderField reports whether s starts with a header field name and a
// colon (RFC 5322 §2.2) and has no line breaks.
func IsHeaderField(s string) bool {
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

// The replies of REJECT and DEFER without text of their own.
var (
	DefaultReject = reply.New(550, [3]int{5, 7, 1}, "Message content rejected")
	DefaultDefer  = reply.New(450, [3]int{4, 7, 1}, "Message content deferred, try again later")
)

// maxReplyText keeps a reply line under the 512 octets of RFC 5321
// §4.5.3.1.5.
const maxReplyText = 400

// ActionReply builds the reply of REJECT or DEFER text. As Postfix does,
// text may start with a basic code, an enhanced code (RFC 3463), or both;
// what is missing is taken from the default (550 5.7.1, or 450 4.7.1 for
// DEFER), with the class of the code that was given.
func ActionReply(text string, v Verb) (reply.Reply, error) {
	def := DefaultReject
	if v == Defer {
		def = DefaultDefer
	}
	r := def
	codeSet, enhSet := false, false
	if w, rest, _ := strings.Cut(text, " "); len(w) == 3 && allDigits(w) {
		n, _ := strconv.Atoi(w)
		if n < 400 || n > 599 {
			return reply.Reply{}, fmt.Errorf("reply code %d: want 4xx or 5xx", n)
		}
		r.Code, codeSet = n, true
		text = strings.TrimLeft(rest, " ")
	}
	if w, rest, _ := strings.Cut(text, " "); looksEnhanced(w) {
		e, err := parseEnhanced(w)
		if err != nil {
			return reply.Reply{}, err
		}
		r.Enhanced, enhSet = e, true
		text = strings.TrimLeft(rest, " ")
	}
	switch {
	case codeSet && enhSet:
		if r.Code/100 != r.Enhanced[0] {
			return reply.Reply{}, fmt.Errorf("reply code %d and enhanced code %d.%d.%d disagree", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
		}
	case codeSet:
		r.Enhanced[0] = r.Code / 100
	case enhSet:
		r.Code = r.Enhanced[0]*100 + 50
	}
	if v == Defer && r.Code/100 != 4 {
		return reply.Reply{}, fmt.Errorf("DEFER with reply code %d: want 4xx", r.Code)
	}
	if text != "" {
		r.Text = sanitizeReplyText(text)
	}
	return r, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// looksEnhanced reports whether w has the shape of an enhanced status
// code: digits and two dots.
func looksEnhanced(w string) bool {
	if strings.Count(w, ".") != 2 {
		return false
	}
	return allDigits(strings.ReplaceAll(w, ".", ""))
}

// parseEnhanced parses class.subject.detail (RFC 3463 §2) of a refusal:
// class 4 or 5.
func parseEnhanced(w string) ([3]int, error) {
	e, err := reply.ParseEnhanced(w)
	if err != nil {
		return e, err
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

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
