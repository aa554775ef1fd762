package nonfqdnsender

import (
	"context"
	"net/netip"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
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

// stranger is an unauthenticated, untrusted client.
var stranger = &policy.Client{Addr: netip.MustParseAddr("192.0.2.66"), Helo: "spam.example.net"}
