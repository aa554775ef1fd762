package ownforgery

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

type mailCase struct {
	name  string
	c     *policy.Client
	from  string
	code  int // 0: pass
	enh   [3]int
	reply string
}

func runMailCases(t *testing.T, k policy.MailChecker, tests []mailCase) {
	t.Helper()
	for _, tt := range tests {
		r := k.CheckMail(context.Background(), tt.c, nil, tt.from)
		if tt.code == 0 {
			if r.Action != policy.Pass {
				t.Errorf("%s: MAIL FROM %q: %v %v; want pass", tt.name, tt.from, r.Action, r.Reply)
			}
			continue
		}
		if r.Action != policy.Reject || r.Reply.Code != tt.code || r.Reply.Enhanced != tt.enh || r.Reply.Text != tt.reply {
			t.Errorf("%s: MAIL FROM %q: %v %v; want %d %v %q", tt.name, tt.from, r.Action, r.Reply, tt.code, tt.enh, tt.reply)
		}
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
	m, err := table.ParseSenderLoginMap(strings.NewReader(loginMapText), "logins")
	if err != nil {
		t.Fatal(err)
	}
	own := []netip.Addr{netip.MustParseAddr("198.51.100.25"), netip.MustParseAddr("2001:db8::25")}
	k := NewOwnDomainForgery([]string{"example.com", "Example.Org"}, own, m.Listed, false)
	kTrust := NewOwnDomainForgery([]string{"example.com"}, own, nil, true)
	trusted := &policy.Client{Addr: netip.MustParseAddr("10.0.0.5"), Trusted: true}
	authed := &policy.Client{Addr: netip.MustParseAddr("192.0.2.9"), Login: "test"}
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

// stranger is an unauthenticated, untrusted client.
var stranger = &policy.Client{Addr: netip.MustParseAddr("192.0.2.66"), Helo: "spam.example.net"}
