package verify

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

type mailCase struct {
	name  string
	c     *Client
	from  string
	code  int // 0: pass
	enh   [3]int
	reply string
}

func runMailCases(t *testing.T, k MailChecker, tests []mailCase) {
	t.Helper()
	for _, tt := range tests {
		r := k.CheckMail(context.Background(), tt.c, tt.from)
		if tt.code == 0 {
			if r.Action != Pass {
				t.Errorf("%s: MAIL FROM %q: %v %v; want pass", tt.name, tt.from, r.Action, r.Reply)
			}
			continue
		}
		if r.Action != Reject || r.Reply.Code != tt.code || r.Reply.Enhanced != tt.enh || r.Reply.Text != tt.reply {
			t.Errorf("%s: MAIL FROM %q: %v %v; want %d %v %q", tt.name, tt.from, r.Action, r.Reply, tt.code, tt.enh, tt.reply)
		}
	}
}

func TestNonFQDNSender(t *testing.T) {
	c := stranger
	need := [3]int{5, 5, 2}
	tests := []mailCase{
		{"null sender", c, "", 0, need, ""},
		{"null sender bracketed", c, "<>", 0, need, ""},
		{"fqdn", c, "user@example.com", 0, need, ""},
		{"fqdn trailing dot", c, "user@example.com.", 0, need, ""},
		{"literal allowed", c, "user@[192.0.2.1]", 0, need, ""},
		{"no dot", c, "user@localhost", 504, need, "<user@localhost>: Sender address rejected: need fully-qualified address"},
		{"no dot trailing", c, "user@host.", 504, need, "<user@host.>: Sender address rejected: need fully-qualified address"},
		{"no at", c, "user", 504, need, "<user>: Sender address rejected: need fully-qualified address"},
		{"syntax", c, "user@exa mple.com", 501, [3]int{5, 1, 7}, "Bad sender address syntax"},
	}
	runMailCases(t, NewNonFQDNSender(true), tests)
	runMailCases(t, NewNonFQDNSender(false), []mailCase{
		{"literal refused", c, "user@[192.0.2.1]", 504, need, "<user@[192.0.2.1]>: Sender address rejected: need fully-qualified address"},
		{"null sender", c, "", 0, need, ""},
	})
	if NewNonFQDNSender(true).Name() != "non_fqdn_sender" {
		t.Error("name")
	}
}

const loginMapText = `# smtpd_sender_login_maps
test@example.com test
foo@example.com foo, Admin
shared@example.com	alice,bob
  carol
@delegated.example   dave

Boss@Partner.Example eve
`

func TestOwnDomainForgery(t *testing.T) {
	m, err := ParseSenderLoginMap(strings.NewReader(loginMapText), "logins")
	if err != nil {
		t.Fatal(err)
	}
	own := []netip.Addr{netip.MustParseAddr("198.51.100.25"), netip.MustParseAddr("2001:db8::25")}
	k := NewOwnDomainForgery([]string{"example.com", "Example.Org"}, own, m.Listed, false)
	kTrust := NewOwnDomainForgery([]string{"example.com"}, own, nil, true)
	trusted := &Client{Addr: netip.MustParseAddr("10.0.0.5"), Trusted: true}
	authed := &Client{Addr: netip.MustParseAddr("192.0.2.9"), Login: "test"}
	nli := [3]int{5, 7, 1}
	const suffix = ": Sender address rejected: not logged in"
	runMailCases(t, k, []mailCase{
		{"seed case", stranger, "test@example.com", 553, nli, "<test@example.com>" + suffix},
		{"unlisted local", stranger, "nobody@example.com", 553, nli, "<nobody@example.com>" + suffix},
		{"case", stranger, "Test@EXAMPLE.COM.", 553, nli, "<Test@EXAMPLE.COM.>" + suffix},
		{"second domain", stranger, "x@example.org", 553, nli, "<x@example.org>" + suffix},
		{"login map address", stranger, "boss@partner.example", 553, nli, "<boss@partner.example>" + suffix},
		{"login map domain", stranger, "anyone@Delegated.Example", 553, nli, "<anyone@Delegated.Example>" + suffix},
		{"quoted", stranger, `"test"@example.com`, 553, nli, `<"test"@example.com>` + suffix},
		{"odd but ours", stranger, "a b@@example.com", 553, nli, "<a b@@example.com>" + suffix},
		{"unparseable but ours", stranger, "x@example.com..", 553, nli, "<x@example.com..>" + suffix},
		{"trusted not exempt", trusted, "test@example.com", 553, nli, "<test@example.com>" + suffix},
		{"our address literal", stranger, "x@[198.51.100.25]", 553, nli, "<x@[198.51.100.25]>" + suffix},
		{"our IPv6 literal", stranger, "x@[IPv6:2001:DB8::25]", 553, nli, "<x@[IPv6:2001:DB8::25]>" + suffix},
		{"loopback literal", stranger, "root@[127.0.0.1]", 553, nli, "<root@[127.0.0.1]>" + suffix},
		{"foreign literal", stranger, "x@[192.0.2.66]", 0, nli, ""},
		{"our literal, authenticated", authed, "x@[198.51.100.25]", 0, nli, ""},
		{"foreign", stranger, "someone@gmail.example", 0, nli, ""},
		{"subdomain is not ours", stranger, "someone@sub.example.com", 0, nli, ""},
		{"partner other address", stranger, "other@partner.example", 0, nli, ""},
		{"null sender", stranger, "", 0, nli, ""},
		{"authenticated", authed, "test@example.com", 0, nli, ""},
	})
	runMailCases(t, kTrust, []mailCase{
		{"trusted exempt", trusted, "test@example.com", 0, nli, ""},
		{"stranger", stranger, "test@example.com", 553, nli, "<test@example.com>" + suffix},
	})
}

func TestSenderLoginMismatch(t *testing.T) {
	m, err := ParseSenderLoginMap(strings.NewReader(loginMapText), "logins")
	if err != nil {
		t.Fatal(err)
	}
	k := NewSenderLoginMismatch(m)
	as := func(login string) *Client { return &Client{Addr: netip.MustParseAddr("192.0.2.9"), Login: login} }
	e := [3]int{5, 7, 1}
	runMailCases(t, k, []mailCase{
		{"own", as("test"), "test@example.com", 0, e, ""},
		{"own case", as("TEST"), "Test@Example.COM", 0, e, ""},
		{"second owner", as("admin"), "foo@example.com", 0, e, ""},
		{"continuation owner", as("carol"), "shared@example.com", 0, e, ""},
		{"domain owner", as("dave"), "x@delegated.example", 0, e, ""},
		{"someone else's", as("foo"), "test@example.com", 553, e, "<test@example.com>: Sender address rejected: not owned by user foo"},
		{"unlisted", as("test"), "other@example.com", 553, e, "<other@example.com>: Sender address rejected: not owned by user test"},
		{"foreign", as("test"), "test@gmail.example", 553, e, "<test@gmail.example>: Sender address rejected: not owned by user test"},
		{"null sender", as("test"), "", 0, e, ""},
		{"unauthenticated", stranger, "test@example.com", 0, e, ""},
	})
}

func TestParseSenderLoginMap(t *testing.T) {
	m, err := ParseSenderLoginMap(strings.NewReader(loginMapText), "logins")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want []string
	}{
		{"test@example.com", []string{"test"}},
		{"TEST@example.com.", []string{"test"}},
		{"foo@example.com", []string{"foo", "Admin"}},
		{"shared@example.com", []string{"alice", "bob", "carol"}},
		{"x@delegated.example", []string{"dave"}},
		{"boss@partner.example", []string{"eve"}},
		{"nobody@example.com", nil},
		{"not an address", nil},
	}
	for _, tt := range tests {
		if got := m.Owners(tt.addr); !slices.Equal(got, tt.want) {
			t.Errorf("Owners(%q) = %q; want %q", tt.addr, got, tt.want)
		}
		if m.Listed(tt.addr) != (tt.want != nil) {
			t.Errorf("Listed(%q) wrong", tt.addr)
		}
	}
	bad := []struct{ text, err string }{
		{"a@b.example\n", "logins:1: \"a@b.example\": no owner"},
		{"# c\n\nuser x\n", "logins:3: \"user\": want an address or @domain"},
		{"a@b.example x\n@bad..example y\n", "logins:2:"},
		{"a@b.example x\nA@B.example. y\n", "logins:2: \"A@B.example.\": duplicate key (first on line 1)"},
		{"  x\n", "logins:1: continuation line"},
	}
	for _, tt := range bad {
		_, err := ParseSenderLoginMap(strings.NewReader(tt.text), "logins")
		if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
			t.Errorf("ParseSenderLoginMap(%q) error %v; want prefix %q", tt.text, err, tt.err)
		}
	}
	var nilMap *SenderLoginMap
	if nilMap.Listed("a@b.example") {
		t.Error("nil map lists")
	}
}
