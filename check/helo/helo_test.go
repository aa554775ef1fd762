package helo

import (
	"context"
	"net/netip"
	"testing"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
)

type heloCase struct {
	from string // client address
	helo string
	code int // 0: pass
	enh  [3]int
}

func runHeloCases(t *testing.T, k policy.HeloChecker, text string, tests []heloCase) {
	t.Helper()
	for _, tt := range tests {
		c := &policy.Client{Addr: netip.MustParseAddr(tt.from), Helo: tt.helo}
		r := k.CheckHelo(context.Background(), c)
		if tt.code == 0 {
			if r.Action != policy.Pass {
				t.Errorf("%s HELO %q: %v %v; want pass", tt.from, tt.helo, r.Action, r.Reply)
			}
			continue
		}
		want := address.Bracket(tt.helo) + ": Helo command rejected: " + text
		if r.Action != policy.Reject || r.Reply.Code != tt.code || r.Reply.Enhanced != tt.enh || r.Reply.Text != want {
			t.Errorf("%s HELO %q: %v %v; want %d %v %q", tt.from, tt.helo, r.Action, r.Reply, tt.code, tt.enh, want)
		}
	}
}

func TestForgedHelo(t *testing.T) {
	f := NewForgedHelo("mx.example.com", []string{"example.com", "example.org"},
		[]netip.Addr{netip.MustParseAddr("198.51.100.25"), netip.MustParseAddr("2001:db8::25")})
	e := [3]int{5, 7, 1}
	const out = "192.0.2.66"
	runHeloCases(t, f, "forged hostname (that is us)", []heloCase{
		{out, "mx.example.com", 550, e},
		{out, "MX.Example.COM.", 550, e},
		{out, "example.com", 550, e},
		{out, "example.org", 550, e},
		{out, "[198.51.100.25]", 550, e},
		{out, "198.51.100.25", 550, e},
		{out, "[IPv6:2001:db8::25]", 550, e},
		{out, "[127.0.0.1]", 550, e},
		{out, "[IPv6:::1]", 550, e},
		{"2001:db8:99::1", "mx.example.com", 550, e},
		{out, "mail.sender.example", 0, e},
		{out, "mx2.example.com", 0, e},
		{out, "example.com.evil.example", 0, e},
		{out, "[192.0.2.66]", 0, e},
		{out, "not a name!", 0, e},
		{"127.0.0.1", "mx.example.com", 0, e},
		{"::1", "[127.0.0.1]", 0, e},
		{"198.51.100.25", "example.com", 0, e},
		{"::ffff:198.51.100.25", "mx.example.com", 0, e},
		{"2001:db8::25", "[IPv6:2001:db8::25]", 0, e},
	})
	for _, c := range []*policy.Client{
		{Addr: netip.MustParseAddr("10.0.0.3"), Helo: "example.com", Trusted: true},
		{Addr: netip.MustParseAddr("192.0.2.7"), Helo: "example.com", Login: "alice"},
	} {
		if r := f.CheckHelo(context.Background(), c); r.Action != policy.Pass {
			t.Errorf("%+v: %v", c, r.Reply)
		}
	}
}

func TestInvalidHelo(t *testing.T) {
	e := [3]int{5, 5, 2}
	const c = "192.0.2.66"
	runHeloCases(t, NewInvalidHelo(), "Invalid name", []heloCase{
		{c, "mail.example.com", 0, e},
		{c, "mail.example.com.", 0, e},
		{c, "localhost", 0, e},
		{c, "my_pc.example.com", 0, e},
		{c, "bücher.example", 0, e},
		{c, "[192.0.2.1]", 0, e},
		{c, "[IPv6:2001:db8::1]", 0, e},
		{c, "", 501, e},
		{c, "192.0.2.1", 501, e},
		{c, "[192.0.2.256]", 501, e},
		{c, "[2001:db8::1]", 501, e},
		{c, "[192.0.2.1", 501, e},
		{c, "mail..example.com", 501, e},
		{c, "-mail.example.com", 501, e},
		{c, "mail.example.com-", 501, e},
		{c, "mail/example.com", 501, e},
		{c, "mail.example.com\x7f", 501, e},
		{c, "xn--zz.example", 501, e},
	})
}

func TestNonFQDNHelo(t *testing.T) {
	e := [3]int{5, 5, 2}
	const c = "192.0.2.66"
	runHeloCases(t, NewNonFQDNHelo(), "need fully-qualified hostname", []heloCase{
		{c, "mail.example.com", 0, e},
		{c, "[192.0.2.1]", 0, e},
		{c, "[IPv6:2001:db8::1]", 0, e},
		{c, "localhost", 504, e},
		{c, "DESKTOP-1234", 504, e},
		{c, "host.", 504, e},
		{c, "", 504, e},
	})
	var _, _, _ policy.HeloChecker = NewForgedHelo("h.example", nil, nil), NewInvalidHelo(), NewNonFQDNHelo()
}
