package address

import (
	"slices"
	"strings"
	"testing"
)

// FuzzParseAddress checks that Parse never panics, that what it
// accepts writes out (String) to a path that parses back to the same
// address, and that the domain it returns is canonical. The seed corpus is
// in testdata/fuzz/FuzzParseAddress.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"user@example.com", `"a\"b"@c.example`, "@a.example,@b.example:u@c.example",
		"u@[IPv6:2001:db8::1]", "user%foreign@ours", "jörg@bücher.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		_ = a.RoutingDomains()
		if strings.Contains(a.Domain, "@") {
			t.Fatalf("Parse(%q): domain %q holds an @", s, a.Domain)
		}
		if !a.Literal {
			if d, err := CanonicalDomain(a.Domain); err != nil || d != a.Domain {
				t.Fatalf("Parse(%q): domain %q not canonical: %q, %v", s, a.Domain, d, err)
			}
		}
		for _, form := range []string{a.String(), "<" + a.String() + ">"} {
			b, err := Parse(form)
			if err != nil {
				t.Fatalf("Parse(%q) = %+v, written %q does not parse: %v", s, a, form, err)
			}
			if b.Domain != a.Domain || b.Local != a.Local || b.Literal != a.Literal || b.Quoted != a.Quoted || !slices.Equal(b.SourceRoute, a.SourceRoute) {
				t.Fatalf("Parse(%q) = %+v; reparse of %q = %+v", s, a, form, b)
			}
		}
	})
}
