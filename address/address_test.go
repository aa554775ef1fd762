package address

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in      string
		local   string
		domain  string
		quoted  bool
		route   []string
		literal bool
		err     error
	}{
		{in: "user@example.com", local: "user", domain: "example.com"},
		{in: "<user@example.com>", local: "user", domain: "example.com"},
		{in: "User.Name@EXAMPLE.COM", local: "User.Name", domain: "example.com"},
		{in: "user@example.com.", local: "user", domain: "example.com"},
		{in: "user+tag@mail_host.example.com", local: "user+tag", domain: "mail_host.example.com"},
		{in: `"a@b"@c.example`, local: "a@b", domain: "c.example", quoted: true},
		{in: `<"a\"b"@c.example>`, local: `a"b`, domain: "c.example", quoted: true},
		{in: `"john doe"@c.example`, local: "john doe", domain: "c.example", quoted: true},
		{in: `"plain"@c.example`, local: "plain", domain: "c.example"},
		// go-smtp's unquoted forms of the two above.
		{in: `a"b@c.example`, local: `a"b`, domain: "c.example", quoted: true},
		{in: `john doe@c.example`, local: "john doe", domain: "c.example", quoted: true},
		{in: "user@foreign.example@ours.example", local: "user@foreign.example", domain: "ours.example", quoted: true},
		{in: `"x"@y@z.example`, local: `"x"@y`, domain: "z.example", quoted: true},
		{in: "@a.example,@B.example:user@c.example", local: "user", domain: "c.example", route: []string{"a.example", "b.example"}},
		{in: "<@a.example:user@c.example>", local: "user", domain: "c.example", route: []string{"a.example"}},
		{in: "@[IPv6:2001:db8::1],@[192.0.2.1]:u@c.example", local: "u", domain: "c.example", route: []string{"[IPv6:2001:db8::1]", "[192.0.2.1]"}},
		{in: "user@[192.0.2.1]", local: "user", domain: "[192.0.2.1]", literal: true},
		{in: "user@[ipv6:2001:DB8:0::1]", local: "user", domain: "[IPv6:2001:db8::1]", literal: true},
		{in: "jörg@bücher.example", local: "jörg", domain: "xn--bcher-kva.example"},
		{in: "j@BÜCHER.example", local: "j", domain: "xn--bcher-kva.example"},
		{in: "j@xn--bcher-kva.example", local: "j", domain: "xn--bcher-kva.example"},
		{in: "j@localhost", local: "j", domain: "localhost"},

		{in: "", err: ErrEmptyAddress},
		{in: "<>", err: ErrEmptyAddress},
		{in: "<user@example.com", err: ErrLocalPart},
		{in: "user", err: ErrDomain},
		{in: "@example.com", err: ErrSourceRoute},
		{in: "user@", err: ErrDomain},
		{in: "user@example..com", err: ErrDomain},
		{in: "user@example.com..", err: ErrDomain},
		{in: "user@-example.com", err: ErrDomain},
		{in: "user@exa mple.com", err: ErrDomain},
		{in: "user@1.2.3.4", err: ErrDomain},
		{in: "user@[1.2.3]", err: ErrDomain},
		{in: "user@[001.2.3.4]", err: ErrDomain},
		{in: "user@[IPv6:1.2.3.4]", err: ErrDomain},
		{in: "user@[IPv6:fe80::1%eth0]", err: ErrDomain},
		{in: "user@[x-tag:foo]", err: ErrDomain},
		{in: "user@xn--zz.example", err: ErrDomain},
		{in: "user@0\xc30.example", err: ErrDomain},
		{in: "user@ｏｕｒｓ.example", err: ErrDomain},
		{in: "us\x00er@example.com", err: ErrLocalPart},
		{in: "us\xffer@example.com", err: ErrLocalPart},
		{in: `""@example.com`, err: ErrLocalPart},
		{in: "@a.example:user", err: ErrDomain},
		{in: "@a.example,user@c.example", err: ErrSourceRoute},
		{in: "@a..b:user@c.example", err: ErrSourceRoute},
		{in: "@[IPv6:::1]x:user@c.example", err: ErrSourceRoute},
	}
	for _, tt := range tests {
		a, err := Parse(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Parse(%q) = %+v, %v; want error %v", tt.in, a, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if a.Local != tt.local || a.Domain != tt.domain || a.Quoted != tt.quoted || a.Literal != tt.literal || !slices.Equal(a.SourceRoute, tt.route) {
			t.Errorf("Parse(%q) = %+v; want local %q domain %q quoted %v literal %v route %q",
				tt.in, a, tt.local, tt.domain, tt.quoted, tt.literal, tt.route)
		}
		b, err := Parse(a.String())
		if err != nil || b.Local != a.Local || b.Domain != a.Domain || !slices.Equal(b.SourceRoute, a.SourceRoute) {
			t.Errorf("reparse of %q (%q) = %+v, %v", tt.in, a.String(), b, err)
		}
	}
}

func TestAddressString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"User@Example.COM.", "User@example.com"},
		{`"a\"b"@c.example`, `"a\"b"@c.example`},
		{`a"b@c.example`, `"a\"b"@c.example`},
		{`back\slash@c.example`, `"back\\slash"@c.example`},
		{"user@foreign.example@ours.example", `"user@foreign.example"@ours.example`},
		{"<@A.example,@b.example:u@c.example>", "@a.example,@b.example:u@c.example"},
		{"a..b@c.example", `"a..b"@c.example`},
	}
	for _, tt := range tests {
		a, err := Parse(tt.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.in, err)
		}
		if got := a.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestRoutingDomains(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"user@ours.example", nil},
		{"user%foreign.example@ours.example", []string{"foreign.example"}},
		{"foreign.example!user@ours.example", []string{"foreign.example"}},
		{`"user@foreign.example"@ours.example`, []string{"foreign.example"}},
		{"user@FOREIGN.example.@ours.example", []string{"foreign.example"}},
		{"a%b.example%c.example@ours.example", []string{"c.example", "b.example"}},
		{"x.example!y.example!user@ours.example", []string{"x.example", "y.example"}},
		{"h.example!user%p.example@ours.example", []string{"p.example", "h.example"}},
		{"50%off@ours.example", []string{"off"}},
		{"user%@ours.example", []string{""}},
	}
	for _, tt := range tests {
		a, err := Parse(tt.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.in, err)
		}
		if got := a.RoutingDomains(); !slices.Equal(got, tt.want) {
			t.Errorf("RoutingDomains(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestCanonicalDomain(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Example.COM", "example.com", true},
		{"example.com.", "example.com", true},
		{"münchen.de", "xn--mnchen-3ya.de", true},
		{"ＥＸＡＭＰＬＥ.com", "", false}, // UTS #46 would map it to ASCII
		{"example。com", "", false},
		{"bu\u0308cher.example", "", false}, // not NFC
		{"Bücher.Example", "xn--bcher-kva.example", true},
		{"0\xc30", "", false},
		{"[192.0.2.1]", "", false},
		{"", "", false},
		{".", "", false},
		{"a_b.example", "a_b.example", true},
		{"a/b.example", "", false},
	}
	for _, tt := range tests {
		got, err := CanonicalDomain(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("CanonicalDomain(%q) = %q, %v; want %q ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// RFC 5321 §4.5.3.1.1-2: local part at most 64 octets as written, domain
// at most 255.
func TestPathLimits(t *testing.T) {
	l64, l65 := strings.Repeat("x", 64), strings.Repeat("x", 65)
	d255 := strings.Repeat(strings.Repeat("d", 62)+".", 4) + "ab"[:1]
	d255 = d255[:251] + ".com"
	d256 := "e" + d255
	for _, tt := range []struct {
		path string
		want error // nil, ErrLocalPart or ErrDomain
	}{
		{l64 + "@example.com", nil},
		{l65 + "@example.com", ErrLocalPart},
		{"<" + l65 + "@example.com>", ErrLocalPart},
		{"@relay.example:" + l65 + "@example.com", ErrLocalPart},
		{`"` + l64[:61] + ` "@example.com`, nil},          // 64 with its quotes
		{`"` + l64[:62] + ` "@example.com`, ErrLocalPart}, // 65 with its quotes
		{`"` + l64 + `"@example.com`, nil},                // needs no quotes: 64 as forwarded
		{l64[:62] + " x@example.com", ErrLocalPart},       // go-smtp's unquoted form: needs quotes
		{"a@" + d255, nil},
		{"a@" + d256, ErrDomain},
	} {
		err := CheckPathLimits(tt.path)
		if (err == nil) != (tt.want == nil) || (err != nil && (!errors.Is(err, tt.want) || !errors.Is(err, ErrTooLong))) {
			t.Errorf("CheckPathLimits(%.40q...): %v, want %v", tt.path, err, tt.want)
		}
		if tt.want != nil {
			if _, err := Parse(tt.path); !errors.Is(err, ErrTooLong) {
				t.Errorf("Parse(%.40q...): %v, want too long", tt.path, err)
			}
		}
	}
}

func BenchmarkParseAddress(b *testing.B) {
	addrs := []string{"alice@example.com", "\"john doe\"@example.org", "user%relay@example.com", "@a.example,@b.example:user@c.example", "user@[192.0.2.1]", "üser@bücher.example"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Parse(addrs[i%len(addrs)])
	}
}
