// Package table reads the lookup tables operators already have for Postfix
// (regexp_table(5) today; access(5) and cidr_table(5) next) and holds the
// action vocabulary their results share: REJECT, DEFER, DISCARD, WARN,
// IGNORE, PREPEND, DUNNO, OK. It is a leaf library: a table knows nothing
// of SMTP sessions, only of lines, patterns and results.
package table

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// RegexpTable is a lookup table in Postfix regexp_table(5) format, so that
// operators can paste rules written for Postfix (BACKSCATTER_README,
// header_checks(5)) as they are:
//
//	# comment
//	/pattern/flags result
//	!/pattern/flags result          (result when pattern does not match)
//	/pattern1/!/pattern2/ result    (matches pattern1 but not pattern2)
//	if /pattern/flags               (if !/pattern/ negates)
//	...
//	endif
//
// A line that starts with whitespace continues the previous logical line.
// The delimiter can be any character other than whitespace. Flags toggle
// Postfix's defaults: i (case-insensitive by default), m (multi-line mode,
// off by default), x (POSIX basic syntax; accepted and ignored, RE2 has
// only one syntax). Results may use $1..$n, ${n}, $(n) and $$.
//
// Patterns are compiled by Go's regexp (RE2, linear time) with
// leftmost-longest matching as POSIX regexec does; [[:<:]], [[:>:]], \<
// and \> become \b. A pattern RE2 cannot compile (back-references, for
// one) is an error naming the file and line.
//
// One deliberate difference from Postfix: when a pattern itself is
// wrapped onto a continuation line, the continuation's indentation is not
// part of the pattern. Postfix would keep it, which silently breaks rules
// copied from READMEs whose long lines were wrapped.
//
// A RegexpTable is immutable once parsed and safe for concurrent use.
type RegexpTable struct {
	name  string
	rules []tableRule
}

type ruleKind uint8

const (
	ruleMatch ruleKind = iota
	ruleIf
	ruleEndif
)

type tableRule struct {
	kind ruleKind
	line int
	re   *regexp.Regexp
	neg  bool
	// re2 is the optional second pattern of /pattern1/!/pattern2/.
	re2  *regexp.Regexp
	neg2 bool
	// result is the result text as written (after $$ and continuation
	// joining, before substitution); parts is it split for substitution.
	result string
	parts  []resultPart
	maxSub int
	// end is the index of the endif closing an if rule.
	end int
}

// resultPart is literal text (group 0) or a $n reference (group n).
type resultPart struct {
	text  string
	group int
}

// maxTableLine bounds one physical line of a table file.
const maxTableLine = 1 << 20

// ParseRegexpTable reads a table in Postfix regexp_table(5) format. name
// (usually the file path) is used in errors and in the evidence of
// matches.
func ParseRegexpTable(r io.Reader, name string) (*RegexpTable, error) {
	t := &RegexpTable{name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxTableLine)
	var (
		cur    *logicalLine
		lineno int
		ifs    []int // indexes of open if rules
	)
	flush := func() error {
		if cur == nil {
			return nil
		}
		l := cur
		cur = nil
		return t.parseRule(l, &ifs)
	}
	for sc.Scan() {
		lineno++
		text := strings.TrimRight(sc.Text(), " \t\r\v\f")
		body := strings.TrimLeft(text, " \t\v\f")
		if body == "" || body[0] == '#' {
			continue
		}
		if len(body) != len(text) {
			if cur == nil {
				return nil, fmt.Errorf("%s:%d: continuation line (starts with whitespace) without a rule before it", name, lineno)
			}
			cur.add(text)
			continue
		}
		if err := flush(); err != nil {
			return nil, err
		}
		cur = &logicalLine{line: lineno, text: text, indent: make([]bool, len(text))}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, lineno+1, maxTableLine)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if n := len(ifs); n > 0 {
		return nil, fmt.Errorf("%s:%d: if without endif", name, t.rules[ifs[n-1]].line)
	}
	return t, nil
}

// Name is the name the table was parsed with.
func (t *RegexpTable) Name() string { return t.name }

// Len is the number of rules, counting if and endif.
func (t *RegexpTable) Len() int { return len(t.rules) }

// Match looks s up: the result of the first rule that matches, with $n
// substituted, and that rule's line number.
func (t *RegexpTable) Match(s string) (result string, line int, ok bool) {
	i := t.lookup(func(re *regexp.Regexp) bool { return re.MatchString(s) })
	if i < 0 {
		return "", 0, false
	}
	r := &t.rules[i]
	if r.maxSub == 0 {
		return r.result, r.line, true
	}
	return r.expand(r.re.FindStringSubmatchIndex(s), s), r.line, true
}

// matchBytes is Match for the hot path: it allocates nothing when no rule
// matches, and returns the index of the rule that did.
func (t *RegexpTable) matchBytes(b []byte) (rule int, result string) {
	i := t.lookup(func(re *regexp.Regexp) bool { return re.Match(b) })
	if i < 0 {
		return -1, ""
	}
	r := &t.rules[i]
	if r.maxSub == 0 {
		return i, r.result
	}
	return i, r.expand(r.re.FindSubmatchIndex(b), string(b))
}

// lookup returns the index of the first match rule that matches, or -1.
func (t *RegexpTable) lookup(match func(*regexp.Regexp) bool) int {
	for i := 0; i < len(t.rules); i++ {
		r := &t.rules[i]
		switch r.kind {
		case ruleIf:
			if match(r.re) == r.neg {
				i = r.end
			}
		case ruleMatch:
			if match(r.re) == r.neg {
				continue
			}
			if r.re2 != nil && match(r.re2) == r.neg2 {
				continue
			}
			return i
		}
	}
	return -1
}

// expand substitutes $n in the rule's result; an unmatched or empty group
// expands to nothing, as in Postfix.
func (r *tableRule) expand(loc []int, s string) string {
	var b strings.Builder
	for _, p := range r.parts {
		if p.group == 0 {
			b.WriteString(p.text)
			continue
		}
		if 2*p.group+1 < len(loc) && loc[2*p.group] >= 0 {
			b.WriteString(s[loc[2*p.group]:loc[2*p.group+1]])
		}
	}
	return b.String()
}

// logicalLine is one rule: a line and its continuation lines, joined.
// indent marks the bytes that were the continuation lines' leading
// whitespace, which patterns skip.
type logicalLine struct {
	line   int
	text   string
	indent []bool
}

func (l *logicalLine) add(cont string) {
	ws := len(cont) - len(strings.TrimLeft(cont, " \t\v\f"))
	l.text += cont
	for i := range len(cont) {
		l.indent = append(l.indent, i < ws)
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

func (t *RegexpTable) errorf(line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", t.name, line, fmt.Sprintf(format, args...))
}

// keyword reports whether s starts with the keyword kw (case-insensitive)
// followed by a non-alphanumeric byte or the end.
func keyword(s, kw string) bool {
	return len(s) >= len(kw) && strings.EqualFold(s[:len(kw)], kw) && (len(s) == len(kw) || !isAlnum(s[len(kw)]))
}

func (t *RegexpTable) parseRule(l *logicalLine, ifs *[]int) error {
	s := l.text
	switch {
	case !isAlnum(s[0]):
		return t.parseMatchRule(l)
	case keyword(s, "if"):
		re, neg, p, err := t.pattern(l, 2)
		if err != nil {
			return err
		}
		if rest := strings.TrimSpace(s[p:]); rest != "" {
			return t.errorf(l.line, "text after if pattern: %q (rules between if and endif must not be indented)", rest)
		}
		*ifs = append(*ifs, len(t.rules))
		t.rules = append(t.rules, tableRule{kind: ruleIf, line: l.line, re: re, neg: neg})
		return nil
	case keyword(s, "endif"):
		if rest := strings.TrimSpace(s[5:]); rest != "" {
			return t.errorf(l.line, "text after endif: %q", rest)
		}
		n := len(*ifs)
		if n == 0 {
			return t.errorf(l.line, "endif without if")
		}
		t.rules[(*ifs)[n-1]].end = len(t.rules)
		*ifs = (*ifs)[:n-1]
		t.rules = append(t.rules, tableRule{kind: ruleEndif, line: l.line})
		return nil
	}
	return t.errorf(l.line, "not a rule, if or endif: %q", clip(s, 40))
}

func (t *RegexpTable) parseMatchRule(l *logicalLine) error {
	s := l.text
	r := tableRule{kind: ruleMatch, line: l.line}
	var (
		p   int
		err error
	)
	r.re, r.neg, p, err = t.pattern(l, 0)
	if err != nil {
		return err
	}
	if p < len(s) && s[p] == '!' {
		r.re2, r.neg2, p, err = t.pattern(l, p)
		if err != nil {
			return err
		}
		// The ! introducing the second pattern is its negation, as in
		// Postfix: /a/!/b/ is "a and not b", /a/!!/b/ is "a and b".
	}
	if p < len(s) && !isSpace(s[p]) {
		return t.errorf(l.line, "unexpected %q after pattern", s[p])
	}
	result := strings.TrimSpace(s[p:])
	if result == "" {
		return t.errorf(l.line, "no result after pattern")
	}
	r.parts, r.maxSub, err = parseResult(result)
	if err != nil {
		return t.errorf(l.line, "%v", err)
	}
	if r.maxSub > 0 && r.neg {
		return t.errorf(l.line, "$%d in the result of a negated pattern, which captures nothing", r.maxSub)
	}
	if n := r.re.NumSubexp(); r.maxSub > n {
		return t.errorf(l.line, "$%d in the result but the pattern has %d group(s)", r.maxSub, n)
	}
	if r.maxSub == 0 {
		r.result = joinParts(r.parts)
	} else {
		r.result = result
	}
	t.rules = append(t.rules, r)
	return nil
}

func joinParts(parts []resultPart) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString(p.text)
	}
	return b.String()
}

// pattern reads [!...]<delim>regexp<delim>[flags] starting at p and returns
// the compiled pattern, whether it is negated, and where it ended.
func (t *RegexpTable) pattern(l *logicalLine, p int) (*regexp.Regexp, bool, int, error) {
	s := l.text
	neg := false
	for ; p < len(s) && (s[p] == '!' || isSpace(s[p])); p++ {
		if s[p] == '!' {
			neg = !neg
		}
	}
	if p == len(s) {
		return nil, false, p, t.errorf(l.line, "missing pattern")
	}
	delim := s[p]
	if delim >= 0x80 || delim == '\\' {
		return nil, false, p, t.errorf(l.line, "pattern delimiter %q: use an ASCII character other than backslash, such as /", delim)
	}
	p++
	var pat strings.Builder
	closed := false
	for p < len(s) {
		if l.indent[p] {
			p++
			continue
		}
		c := s[p]
		if c == delim {
			closed = true
			p++
			break
		}
		if c == '\\' {
			q := p + 1
			for q < len(s) && l.indent[q] {
				q++
			}
			if q == len(s) {
				break
			}
			pat.WriteByte('\\')
			pat.WriteByte(s[q])
			p = q + 1
			continue
		}
		pat.WriteByte(c)
		p++
	}
	if !closed {
		return nil, false, p, t.errorf(l.line, "no closing %q after pattern", delim)
	}
	icase, multiline := true, false
	for ; p < len(s) && !isSpace(s[p]) && s[p] != '!'; p++ {
		switch s[p] {
		case 'i':
			icase = !icase
		case 'm':
			multiline = !multiline
		case 'x':
			// POSIX basic syntax: RE2 has only one syntax.
		default:
			return nil, false, p, t.errorf(l.line, "unknown pattern flag %q (want i, m or x)", s[p])
		}
	}
	expr, err := translatePOSIX(pat.String())
	if err != nil {
		return nil, false, p, t.errorf(l.line, "%v", err)
	}
	prefix := "(?s)"
	if multiline {
		// POSIX REG_NEWLINE: ^ and $ match at newlines, . does not match one.
		prefix = "(?m)"
	}
	if icase {
		prefix += "(?i)"
	}
	re, err := regexp.Compile(prefix + expr)
	if err != nil {
		return nil, false, p, t.errorf(l.line, "pattern %q: %v", clip(pat.String(), 60), err)
	}
	re.Longest() // POSIX regexec semantics for $n
	return re, neg, p, nil
}

// translatePOSIX rewrites what POSIX extended regular expressions (as
// Postfix tables are written) mean differently in RE2: word boundaries
// [[:<:]] [[:>:]] \< \> become \b, and a backslash inside a bracket
// expression is a literal backslash.
func translatePOSIX(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); {
		if strings.HasPrefix(p[i:], "[[:<:]]") || strings.HasPrefix(p[i:], "[[:>:]]") {
			b.WriteString(`\b`)
			i += len("[[:<:]]")
			continue
		}
		switch c := p[i]; c {
		case '\\':
			if i+1 == len(p) {
				return "", errors.New("pattern ends in a backslash")
			}
			if n := p[i+1]; n == '<' || n == '>' {
				b.WriteString(`\b`)
			} else {
				b.WriteString(p[i : i+2])
			}
			i += 2
		case '[':
			end, expr, err := posixBracket(p, i)
			if err != nil {
				return "", err
			}
			b.WriteString(expr)
			i = end
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

// bracket translates the POSIX bracket expression starting at p[i] == '['
// and returns the index after it.
func posixBracket(p string, i int) (int, string, error) {
	var b strings.Builder
	b.WriteByte('[')
	j := i + 1
	if j < len(p) && p[j] == '^' {
		b.WriteByte('^')
		j++
	}
	first := true
	for j < len(p) {
		c := p[j]
		switch {
		case c == ']' && !first:
			b.WriteByte(']')
			return j + 1, b.String(), nil
		case c == ']':
			b.WriteString(`\]`)
			j++
		case c == '\\':
			b.WriteString(`\\`)
			j++
		case c == '[' && j+1 < len(p) && (p[j+1] == '.' || p[j+1] == '='):
			return 0, "", fmt.Errorf("%q in bracket expression: collating elements and equivalence classes are not supported", p[j:j+2])
		case c == '[' && j+1 < len(p) && p[j+1] == ':':
			end := strings.Index(p[j+2:], string(p[j+1])+"]")
			if end < 0 {
				return 0, "", fmt.Errorf("unterminated %q in bracket expression", p[j:j+2])
			}
			b.WriteString(p[j : j+2+end+2])
			j += 2 + end + 2
		case c == '[':
			b.WriteString(`\[`)
			j++
		default:
			b.WriteByte(c)
			j++
		}
		first = false
	}
	return 0, "", errors.New("missing ] in bracket expression")
}

// parseResult splits a result into literal text and $n references. As
// Postfix's mac_parse, $name takes letters, digits and underscores, and
// only numbers are defined; a $ not followed by a name is literal.
func parseResult(s string) ([]resultPart, int, error) {
	var (
		parts  []resultPart
		lit    strings.Builder
		maxSub int
	)
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			lit.WriteByte(c)
			i++
			continue
		}
		var name string
		switch n := s[i+1]; {
		case n == '$':
			lit.WriteByte('$')
			i += 2
			continue
		case n == '{' || n == '(':
			closer := byte('}')
			if n == '(' {
				closer = ')'
			}
			end := strings.IndexByte(s[i+2:], closer)
			if end < 0 {
				return nil, 0, fmt.Errorf("unterminated $%c in result", n)
			}
			name = s[i+2 : i+2+end]
			i += 2 + end + 1
		case isAlnum(n) || n == '_':
			j := i + 1
			for j < len(s) && (isAlnum(s[j]) || s[j] == '_') {
				j++
			}
			name = s[i+1 : j]
			i = j
		default:
			lit.WriteByte('$')
			i++
			continue
		}
		g := 0
		for _, d := range []byte(name) {
			if d < '0' || d > '9' || g > 99 {
				return nil, 0, fmt.Errorf("$%s in result: only $1, $2, ... (or ${1}) are defined; write $$ for a literal $", clip(name, 20))
			}
			g = g*10 + int(d-'0')
		}
		if name == "" || g < 1 {
			return nil, 0, fmt.Errorf("$%s in result: groups are numbered from 1", name)
		}
		if lit.Len() > 0 {
			parts = append(parts, resultPart{text: lit.String()})
			lit.Reset()
		}
		parts = append(parts, resultPart{group: g})
		maxSub = max(maxSub, g)
	}
	if lit.Len() > 0 {
		parts = append(parts, resultPart{text: lit.String()})
	}
	return parts, maxSub, nil
}

// clip shortens s for messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
