package relay

import (
	"context"
	"net/netip"
	"testing"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/policy"
)

func relayCheck() *UnauthDestination {
	return NewUnauthDestination([]string{"ours.example", "Second.Example.", "bücher.example"},
		[]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:1::/48")})
}

// TestRelayBattery tries encodings of a foreign recipient from an
// unauthenticated, untrusted client: every one must be refused.
func TestRelayBattery(t *testing.T) {
	u := relayCheck()
	battery := []string{
		"user@foreign.com",
		"USER@FOREIGN.COM",
		"user@foreign.com.",
		"<user@foreign.com>",
		"user%foreign.com@ours.example",
		"user%foreign.com@OURS.EXAMPLE.",
		"foreign.com!user@ours.example",
		"ours.example!foreign.com!user@ours.example",
		"user%foreign.com%ours.example@ours.example",
		`"user@foreign.com"@ours.example`,
		`<"user%foreign.com"@ours.example>`,
		`"foreign.com!user"@ours.example`,
		"user@foreign.com@ours.example", // go-smtp's form of the quoted one
		"user@foreign.com.@ours.example",
		"@ours.example:user@foreign.com",
		"<@ours.example,@ours.example:user@foreign.com>",
		"@foreign.com:user@ours.example",
		"@ours.example,@foreign.com:user@ours.example",
		"@[192.0.2.1]:user@ours.example",
		"user@[192.0.2.1]",
		"user@[IPv6:2001:db8::1]",
		"user@[127.0.0.1]",
		"user@ours.example.foreign.com",
		"user@oursexample",
		"user@ours.examplefoo",
		"user@xours.example",
		"user@sub.ours.example",
		"user@оurs.example", // Cyrillic о
		"user@ours.exаmple", // Cyrillic а
		"user@bucher.example",
		"user@ｏｕｒｓ.example",       // full-width
		"user@ours。example",       // ideographic full stop
		"user@OURS.EXAMPLE\u200b", // zero-width space
		"user%[192.0.2.1]@ours.example",
		"user%foreign.com.@ours.example",
		"user%@ours.example",
		"@ours.example:user%foreign.com@ours.example",
		"\"user%foreign.com\"@ours.example",
	}
	if len(battery) < 20 {
		t.Fatal("battery too small")
	}
	for _, rcpt := range battery {
		r := u.CheckRcpt(context.Background(), checktest.Stranger, &policy.Envelope{From: "a@b.example"}, rcpt)
		if r.Action != policy.Reject || r.Reply.Code/100 != 5 {
			t.Errorf("%q: %v %v; want 5xx reject", rcpt, r.Action, r.Reply)
			continue
		}
		if r.Reply.Code != 554 && r.Reply.Code != 501 {
			t.Errorf("%q: reply %v; want 554 or 501", rcpt, r.Reply)
		}
		if r.Reply.Code == 554 && (r.Reply.Enhanced != [3]int{5, 7, 1} || r.Reply.Text != address.Bracket(rcpt)+": Relay access denied") {
			t.Errorf("%q: reply %v", rcpt, r.Reply)
		}
	}
}

func TestUnauthDestination(t *testing.T) {
	u := relayCheck()
	authed := &policy.Client{Addr: netip.MustParseAddr("198.51.100.7"), Login: "alice"}
	trusted := &policy.Client{Addr: netip.MustParseAddr("198.51.100.8"), Trusted: true}
	inNet := &policy.Client{Addr: netip.MustParseAddr("10.1.2.3")}
	inNet6 := &policy.Client{Addr: netip.MustParseAddr("2001:db8:1::25")}
	mapped := &policy.Client{Addr: netip.MustParseAddr("::ffff:10.9.9.9")}
	tests := []struct {
		c     *policy.Client
		rcpt  string
		code  int
		enh   [3]int
		reply string
	}{
		{checktest.Stranger, "user@ours.example", 0, [3]int{}, ""},
		{checktest.Stranger, "User@OURS.EXAMPLE", 0, [3]int{}, ""},
		{checktest.Stranger, "user@ours.example.", 0, [3]int{}, ""},
		{checktest.Stranger, "<user@second.example>", 0, [3]int{}, ""},
		{checktest.Stranger, `"john doe"@ours.example`, 0, [3]int{}, ""},
		{checktest.Stranger, "john doe@ours.example", 0, [3]int{}, ""},
		{checktest.Stranger, "user+tag@ours.example", 0, [3]int{}, ""},
		{checktest.Stranger, "user%ours.example@ours.example", 0, [3]int{}, ""},
		{checktest.Stranger, "@ours.example:user@second.example", 0, [3]int{}, ""},
		{checktest.Stranger, "jörg@bücher.example", 0, [3]int{}, ""},
		{checktest.Stranger, "j@xn--bcher-kva.example", 0, [3]int{}, ""},
		{checktest.Stranger, "j@BÜCHER.EXAMPLE", 0, [3]int{}, ""},
		{checktest.Stranger, "user@foreign.com", 554, [3]int{5, 7, 1}, "<user@foreign.com>: Relay access denied"},
		{checktest.Stranger, "user@", 501, [3]int{5, 1, 3}, "Bad recipient address syntax"},
		{checktest.Stranger, "user", 501, [3]int{5, 1, 3}, "Bad recipient address syntax"},
		{checktest.Stranger, "us\x01er@ours.example", 501, [3]int{5, 1, 3}, "Bad recipient address syntax"},
		{authed, "user@foreign.com", 0, [3]int{}, ""},
		{trusted, "user@foreign.com", 0, [3]int{}, ""},
		{inNet, "user@foreign.com", 0, [3]int{}, ""},
		{inNet6, "user@foreign.com", 0, [3]int{}, ""},
		{mapped, "user%foreign.com@ours.example", 0, [3]int{}, ""},
		{authed, "user@[192.0.2.1]", 0, [3]int{}, ""},
		{authed, "bad@", 501, [3]int{5, 1, 3}, "Bad recipient address syntax"},
		{&policy.Client{}, "user@foreign.com", 554, [3]int{5, 7, 1}, "<user@foreign.com>: Relay access denied"},
	}
	for _, tt := range tests {
		r := u.CheckRcpt(context.Background(), tt.c, &policy.Envelope{}, tt.rcpt)
		if tt.code == 0 {
			if r.Action != policy.Pass {
				t.Errorf("%v %q: %v %v; want pass", tt.c.Addr, tt.rcpt, r.Action, r.Reply)
			}
			continue
		}
		if r.Action != policy.Reject || r.Reply.Code != tt.code || r.Reply.Enhanced != tt.enh || r.Reply.Text != tt.reply {
			t.Errorf("%v %q: %v %v; want %d %v %q", tt.c.Addr, tt.rcpt, r.Action, r.Reply, tt.code, tt.enh, tt.reply)
		}
	}
	if u.Name() != "unauth_destination" {
		t.Errorf("Name() = %q", u.Name())
	}
	var _ policy.RcptChecker = u
}
