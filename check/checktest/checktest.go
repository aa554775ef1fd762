// Package checktest has what the checks' tests share: a resolver that asks
// only an in-process test DNS server, a stranger, the MAIL FROM table
// runner and a sender login map.
package checktest

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

// Resolver is a resolver that asks only s, with a timeout short enough
// for the "slow" names to fail soon and long enough for a loaded machine
// (-race) to answer the others.
func Resolver(t testing.TB, s *dnstest.Server) *dns.Resolver {
	t.Helper()
	r, err := dns.NewResolver(dns.Options{Servers: []string{s.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Stranger is an unauthenticated client outside the relay networks.
var Stranger = &policy.Client{Addr: netip.MustParseAddr("192.0.2.66"), Helo: "spam.example.net"}

// MailCase is one MAIL FROM of a check's table test.
type MailCase struct {
	Name  string
	C     *policy.Client
	From  string
	Code  int // 0: pass
	Enh   [3]int
	Reply string
}

// Mail is a MailCase, written as a table row.
func Mail(name string, c *policy.Client, from string, code int, enh [3]int, reply string) MailCase {
	return MailCase{Name: name, C: c, From: from, Code: code, Enh: enh, Reply: reply}
}

// RunMailCases runs k's CheckMail on each case and asserts the reply:
// code, enhanced code and text.
func RunMailCases(t *testing.T, k policy.MailChecker, tests []MailCase) {
	t.Helper()
	for _, tt := range tests {
		r := k.CheckMail(context.Background(), tt.C, nil, tt.From)
		if tt.Code == 0 {
			if r.Action != policy.Pass {
				t.Errorf("%s: MAIL FROM %q: %v %v; want pass", tt.Name, tt.From, r.Action, r.Reply)
			}
			continue
		}
		if r.Action != policy.Reject || r.Reply.Code != tt.Code || r.Reply.Enhanced != tt.Enh || r.Reply.Text != tt.Reply {
			t.Errorf("%s: MAIL FROM %q: %v %v; want %d %v %q", tt.Name, tt.From, r.Action, r.Reply, tt.Code, tt.Enh, tt.Reply)
		}
	}
}

// LoginMap is a sender login map (smtpd_sender_login_maps) for the tests
// of the checks that use one.
func LoginMap(t testing.TB) *table.SenderLoginMap {
	t.Helper()
	m, err := table.ParseSenderLoginMap(strings.NewReader(`# smtpd_sender_login_maps
test@example.com test
foo@example.com foo, Admin
shared@example.com	alice,bob
  carol
@delegated.example   dave

Boss@Partner.Example eve
`), "logins")
	if err != nil {
		t.Fatal(err)
	}
	return m
}
