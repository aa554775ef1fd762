// Package reply is the one SMTP reply value of smtpgate: a basic code
// (RFC 5321 §4.2), an enhanced status code (RFC 3463) and text, with the
// parser and the formatter every other package uses.
//
// reply is a leaf: it imports nothing of smtpgate.
package reply

import (
	"fmt"
	"strconv"
	"strings"
)

// Reply is an SMTP reply. Enhanced is zero when the reply has no enhanced
// code. Text holds the reply's lines joined by "\n", without codes.
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
}

// New builds a reply from a code, an enhanced code and text.
func New(code int, enhanced [3]int, text string) Reply {
	return Reply{Code: code, Enhanced: enhanced, Text: text}
}

// HasEnhanced reports whether the reply carries an enhanced code.
func (r Reply) HasEnhanced() bool { return r.Enhanced[0] != 0 }

// EnhancedString is "5.1.1", or "" without an enhanced code.
func (r Reply) EnhancedString() string {
	if !r.HasEnhanced() {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
}

// Lines splits Text into the reply's lines.
func (r Reply) Lines() []string { return strings.Split(r.Text, "\n") }

// String formats the reply on one line, as the logs show it: "550 5.1.1
// text", the lines of a multiline reply joined by " / ".
func (r Reply) String() string {
	text := strings.ReplaceAll(r.Text, "\n", " / ")
	if r.HasEnhanced() {
		return fmt.Sprintf("%d %s %s", r.Code, r.EnhancedString(), text)
	}
	return fmt.Sprintf("%d %s", r.Code, text)
}

// Positive reports a 2xx or 3xx reply.
func (r Reply) Positive() bool { return r.Code >= 200 && r.Code < 400 }

// Temporary reports a 4xx reply.
func (r Reply) Temporary() bool { return r.Code/100 == 4 }

// Permanent reports a 5xx reply.
func (r Reply) Permanent() bool { return r.Code/100 == 5 }

// Closing reports a 421: the server is closing the connection (RFC 5321
// §3.8), whatever command it answered.
func (r Reply) Closing() bool { return r.Code == 421 }

// ParseRefusal parses an operator's reply, "550 5.7.1 text", as a check's
// reply override takes it: a 4xx or 5xx code, an enhanced code of the same
// class (RFC 3463 §2) and text.
func ParseRefusal(s string) (Reply, error) {
	syntax := fmt.Errorf("%q: want \"CODE X.Y.Z text\", e.g. \"550 5.7.1 Relay access denied\"", s)
	codeStr, rest, _ := strings.Cut(strings.TrimSpace(s), " ")
	code, err := strconv.Atoi(codeStr)
	if err != nil || len(codeStr) != 3 || codeStr[0] < '2' || codeStr[0] > '5' {
		return Reply{}, syntax
	}
	enh, text, _ := strings.Cut(rest, " ")
	e, err := ParseEnhanced(enh)
	if err != nil || strings.TrimSpace(text) == "" || text[0] == ' ' {
		return Reply{}, syntax
	}
	if code/100 != e[0] {
		return Reply{}, fmt.Errorf("%q: reply code %d and enhanced code class %d differ", s, code, e[0])
	}
	if code < 400 {
		return Reply{}, fmt.Errorf("%q: a refusal needs a 4xx or 5xx code", s)
	}
	return Reply{Code: code, Enhanced: e, Text: text}, nil
}

// ParseEnhanced parses an enhanced status code, "class.subject.detail"
// (RFC 3463 §2): three numbers of 1 to 3 digits, class 2, 4 or 5.
func ParseEnhanced(w string) ([3]int, error) {
	var e [3]int
	parts := strings.Split(w, ".")
	if len(parts) != 3 {
		return e, fmt.Errorf("enhanced status code %q: want class.subject.detail", w)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if p == "" || len(p) > 3 || err != nil || n < 0 || p[0] == '+' {
			return [3]int{}, fmt.Errorf("enhanced status code %q", w)
		}
		e[i] = n
	}
	if e[0] != 2 && e[0] != 4 && e[0] != 5 {
		return [3]int{}, fmt.Errorf("enhanced status code %q: class must be 2, 4 or 5", w)
	}
	return e, nil
}

// SplitEnhanced splits "5.1.1 text" into the enhanced code and the rest
// when the text starts with an enhanced code whose class matches code.
// Otherwise ok is false and rest is s.
func SplitEnhanced(s string, code int) (e [3]int, rest string, ok bool) {
	head, rest, _ := strings.Cut(s, " ")
	e, err := ParseEnhanced(head)
	if err != nil || e[0] != code/100 {
		return [3]int{}, s, false
	}
	return e, rest, true
}
