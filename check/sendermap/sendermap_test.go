package sendermap

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

func TestSenderLoginMismatch(t *testing.T) {
	m, err := table.ParseSenderLoginMap(strings.NewReader(loginMapText), "logins")
	if err != nil {
		t.Fatal(err)
	}
	k := NewSenderLoginMismatch(m)
	as := func(login string) *policy.Client {
		return &policy.Client{Addr: netip.MustParseAddr("192.0.2.9"), Login: login}
	}
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

// stranger is an unauthenticated, untrusted client.
var stranger = &policy.Client{Addr: netip.MustParseAddr("192.0.2.66"), Helo: "spam.example.net"}
