package table

import (
	"strings"
	"testing"
)

func mustTable(t testing.TB, text string) *RegexpTable {
	t.Helper()
	tab, err := ParseRegexpTable(strings.NewReader(text), "test")
	if err != nil {
		t.Fatalf("ParseRegexpTable: %v", err)
	}
	return tab
}

func TestRegexpTableMatch(t *testing.T) {
	tests := []struct {
		name   string
		table  string
		input  string
		result string
		line   int // 0: no match
	}{
		{"simple", "/^foo/ bar\n", "foobar", "bar", 1},
		{"no match", "/^foo/ bar\n", "xfoo", "", 0},
		{"case-insensitive by default", "/^FOO/ bar\n", "foo", "bar", 1},
		{"i flag makes it case-sensitive", "/^FOO/i bar\n", "foo", "", 0},
		{"i flag, matching case", "/^FOO/i bar\n", "FOO", "bar", 1},
		{"ii toggles back", "/^FOO/ii bar\n", "foo", "bar", 1},
		{"x accepted", "/^a+$/x bar\n", "aaa", "bar", 1},
		{"first match wins", "/a/ one\n/a/ two\n", "a", "one", 1},
		{"later rule", "/x/ one\n\n# comment\n/a/ two\n", "a", "two", 4},
		{"other delimiter", "%a/b% slash\n", "a/b", "slash", 1},
		{"# starts a comment, not a pattern", "#a# x\n", "a", "", 0},
		{"pipe delimiter", "|^a| pipe\n", "abc", "pipe", 1},
		{"escaped delimiter", `/a\/b/ slash` + "\n", "a/b", "slash", 1},
		{"negation", "!/^foo/ notfoo\n", "bar", "notfoo", 1},
		{"negation no match", "!/^foo/ notfoo\n", "foo", "", 0},
		{"double negation", "!!/^foo/ foo\n", "foo", "foo", 1},
		{"and not", "/^a/!/b/ anotb\n", "ac", "anotb", 1},
		{"and not, excluded", "/^a/!/b/ anotb\n", "ab", "", 0},
		{"$1", "/^(\\w+)@(\\w+)/ user $1 domain $2\n", "joe@home", "user joe domain home", 1},
		{"${1} and $(2)", "/^(a)(b)/ ${1}x$(2)y\n", "ab", "axby", 1},
		{"$$ literal", "/a/ cost $$5\n", "a", "cost $5", 1},
		{"$$ with $1", "/(a)/ $$$1\n", "a", "$a", 1},
		{"lone $ literal", "/a/ a $ b $\n", "a", "a $ b $", 1},
		{"unmatched group empty", "/(x)?a/ [$1]\n", "a", "[]", 1},
		{"word boundaries posix", "/[[:<:]]cat[[:>:]]/ cat\n", "a cat sat", "cat", 1},
		{"word boundaries posix no", "/[[:<:]]cat[[:>:]]/ cat\n", "concatenate", "", 0},
		{"word boundaries gnu", `/\<cat\>/ cat` + "\n", "the cat", "cat", 1},
		{"escaped backslash before <", `/a\\</ x` + "\n", `a\<`, "x", 1},
		{"backslash literal in bracket", `/^[\.]+$/ x` + "\n", `\.\`, "x", 1},
		{"char class", "/^[[:digit:]]+$/ num\n", "123", "num", 1},
		{"] first in bracket", "/^[]a]+$/ x\n", "]a]", "x", 1},
		{"longest match for groups", "/^(a|ab)(c|bcd)/ $1-$2\n", "abcd", "a-bcd", 1},
		{"dot matches newline without m", "/a.b/ x\n", "a\nb", "x", 1},
		{"m: dot does not match newline", "/a.b/m x\n", "a\nb", "", 0},
		{"m: ^ at line start", "/^b/m x\n", "a\nb", "x", 1},
		{"no m: ^ only at start", "/^b/ x\n", "a\nb", "", 0},
		{"continuation of result", "/a/\n\treject\n  text\n", "a", "reject  text", 1},
		{"continuation inside pattern skips indentation", "/^a\n    b$/ x\n", "ab", "x", 1},
		{"comment between continuation lines", "/a/\n# c\n\tresult\n", "a", "result", 1},
		{"CRLF file", "/a/ x\r\n", "a", "x", 1},
		{"if matches", "if /^a/\n/b/ ab\nendif\n/b/ b\n", "ab", "ab", 2},
		{"if does not match", "if /^a/\n/b/ ab\nendif\n/b/ b\n", "xb", "b", 4},
		{"if negated", "if !/^a/\n/b/ notab\nendif\n", "xb", "notab", 2},
		{"IF upper case", "IF /^a/\n/b/ ab\nENDIF\n", "ab", "ab", 2},
		{"nested if", "if /a/\nif /b/\n/c/ abc\nendif\n/c/ ac\nendif\n/c/ c\n", "ac", "ac", 5},
		{"nested if inner", "if /a/\nif /b/\n/c/ abc\nendif\n/c/ ac\nendif\n/c/ c\n", "abc", "abc", 3},
		{"nested if outer fails", "if /a/\nif /b/\n/c/ abc\nendif\n/c/ ac\nendif\n/c/ c\n", "bc", "c", 7},
		{"if with flags", "if /^A/i\n/b/ x\nendif\n", "ab", "", 0},
		{"empty table", "# nothing\n\n", "a", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustTable(t, tt.table)
			result, line, ok := tab.Match(tt.input)
			if ok != (tt.line != 0) || result != tt.result || line != tt.line {
				t.Errorf("Match(%q) = %q, %d, %v; want %q, %d", tt.input, result, line, ok, tt.result, tt.line)
			}
			// The hot-path variant must agree.
			i, r2 := tab.matchBytes([]byte(tt.input))
			if (i >= 0) != ok || r2 != result {
				t.Errorf("matchBytes(%q) = %d, %q; want %q", tt.input, i, r2, result)
			}
		})
	}
}

func TestParseRegexpTableErrors(t *testing.T) {
	tests := []struct {
		name  string
		table string
		want  string
	}{
		{"RE2 cannot compile back-reference", "/a/ ok\n/(a)\\1/ x\n", "test:2: pattern"},
		{"bad regexp", "\n\n/a(/ x\n", "test:3: pattern"},
		{"no closing delimiter", "/abc x\n", "test:1: no closing"},
		{"no result", "/abc/\n", "test:1: no result"},
		{"unknown flag", "/a/q x\n", "test:1: unknown pattern flag 'q'"},
		{"flag glued to result", "/a/REJECT\n", "test:1: unknown pattern flag 'R'"},
		{"missing pattern", "!\n", "test:1: missing pattern"},
		{"not a rule", "/a/ x\nfoo bar\n", "test:2: not a rule"},
		{"endif without if", "/a/ x\nendif\n", "test:2: endif without if"},
		{"if without endif", "/a/ x\nif /b/\n/c/ d\n", "test:2: if without endif"},
		{"text after if", "if /a/ junk\nendif\n", "test:1: text after if"},
		{"indented rule inside if", "if /a/\n  /b/ x\nendif\n", "test:1: text after if"},
		{"text after endif", "if /a/\nendif x\n", "test:2: text after endif"},
		{"continuation first", "  /a/ x\n", "test:1: continuation line"},
		{"$ group out of range", "/(a)/ $2\n", "test:1: $2 in the result but the pattern has 1 group"},
		{"$ in negated", "!/(a)/ $1\n", "test:1: $1 in the result of a negated"},
		{"$0", "/(a)/ $0\n", "test:1: $0"},
		{"$name", "/(a)/ $foo\n", "test:1: $foo"},
		{"$1x", "/(a)/ $1x\n", "test:1: $1x"},
		{"unterminated ${", "/(a)/ ${1\n", "test:1: unterminated"},
		{"backslash delimiter", "\\a\\ x\n", "test:1: pattern delimiter"},
		{"unterminated bracket", "/[a/ x\n", "test:1: missing ]"},
		{"collating element", "/[[.a.]]/ x\n", "test:1: \"[.\" in bracket"},
		{"line error after continuation", "/a/\n  x\n/(/ y\n", "test:3:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRegexpTable(strings.NewReader(tt.table), "test")
			if err == nil {
				t.Fatalf("no error; want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q; want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseRegexpTableLongLine(t *testing.T) {
	_, err := ParseRegexpTable(strings.NewReader("/a/ x\n/"+strings.Repeat("a", maxTableLine+1)+"/ y\n"), "test")
	if err == nil || !strings.Contains(err.Error(), "test:2: line longer") {
		t.Errorf("error %v; want test:2: line longer", err)
	}
}
