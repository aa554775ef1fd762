package senderdomain

import (
	"context"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"github.com/smtpgate/smtpgate/policy"
)

var senderZone = []string{
	dnstest.SOA("test.", 3600, 300),
	"good.test. 300 IN MX 10 mx.good.test.",
	"mx.good.test. 300 IN A 192.0.2.25",
	"aonly.test. 300 IN A 192.0.2.1",
	"aaaaonly.test. 300 IN AAAA 2001:db8::1",
	"txtonly.test. 300 IN TXT \"v=spf1 -all\"",
	"nullmx.test. 300 IN MX 0 .",
	"nullmx.test. 300 IN A 192.0.2.2",
	"dotmx.test. 300 IN MX 10 .",
	"dotmx.test. 300 IN MX 20 .",
	"halfnull.test. 300 IN MX 0 .",
	"halfnull.test. 300 IN MX 10 mx.good.test.",
	"lostmx.test. 300 IN MX 10 nowhere.test.",
	"alias.test. 300 IN CNAME good.test.",
	"xn--bcher-kva.test. 300 IN MX 10 mx.good.test.",
	"tc.test. 300 IN MX 10 mx.good.test.",
}

func TestUnknownSenderDomain(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, senderZone...)
	check := NewUnknownSenderDomain(checktest.Resolver(t, s))
	tests := []struct {
		from     string
		action   policy.Action
		code     int
		enhanced [3]int
		text     string
	}{
		{from: "user@good.test", action: policy.Pass},
		{from: "User@GOOD.TEST.", action: policy.Pass},
		{from: "user@aonly.test", action: policy.Pass},
		{from: "user@aaaaonly.test", action: policy.Pass},
		{from: "user@alias.test", action: policy.Pass},
		{from: "user@tc.test", action: policy.Pass},
		{from: "user@halfnull.test", action: policy.Pass},
		// Postfix semantics: an MX that exists is enough.
		{from: "user@lostmx.test", action: policy.Pass},
		{from: "user@bücher.test", action: policy.Pass},
		{from: "", action: policy.Pass},
		{from: "user@[192.0.2.1]", action: policy.Pass},
		{from: "user@[IPv6:2001:db8::1]", action: policy.Pass},
		{from: "user@nowhere.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 1, 8},
			text: "<user@nowhere.test>: Sender address rejected: Domain not found"},
		{from: "user@txtonly.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 1, 8},
			text: "<user@txtonly.test>: Sender address rejected: Domain not found"},
		{from: `"a@good.test"@nowhere.test`, action: policy.Reject, code: 550, enhanced: [3]int{5, 1, 8}},
		{from: "user@bücher-nicht.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 1, 8}},
		{from: "user@nullmx.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 1, 8},
			text: "<user@nullmx.test>: Sender address rejected: Domain does not accept mail"},
		{from: "user@dotmx.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 1, 8},
			text: "<user@dotmx.test>: Sender address rejected: Domain does not accept mail"},
		{from: "user@servfail.test", action: policy.Reject, code: 450, enhanced: [3]int{4, 1, 8},
			text: "<user@servfail.test>: Sender address rejected: Domain not found (DNS temporary failure)"},
		{from: "user@slow.test", action: policy.Reject, code: 450, enhanced: [3]int{4, 1, 8}},
	}
	for _, tt := range tests {
		t.Run(tt.from, func(t *testing.T) {
			res := check.CheckMail(context.Background(), &policy.Client{}, nil, tt.from)
			if res.Action != tt.action || res.Reply.Code != tt.code || res.Reply.Enhanced != tt.enhanced {
				t.Fatalf("got %v %q (%s), want %v %d %v", res.Action, res.Reply, res.Evidence, tt.action, tt.code, tt.enhanced)
			}
			if tt.text != "" && res.Reply.Text != tt.text {
				t.Errorf("text %q, want %q", res.Reply.Text, tt.text)
			}
			if res.Action == policy.Reject && res.Evidence == "" {
				t.Error("reject without evidence")
			}
		})
	}
}

func TestUnknownSenderDomainEvidence(t *testing.T) {
	s := dnstest.New(t, senderZone...)
	check := NewUnknownSenderDomain(checktest.Resolver(t, s))
	res := check.CheckMail(context.Background(), &policy.Client{}, nil, "user@txtonly.test")
	for _, want := range []string{"txtonly.test. MX: NODATA", "A: NODATA", "AAAA: NODATA"} {
		if !strings.Contains(res.Evidence, want) {
			t.Errorf("evidence %q lacks %q", res.Evidence, want)
		}
	}
	res = check.CheckMail(context.Background(), &policy.Client{}, nil, "user@nullmx.test")
	if want := "nullmx.test. MX: 0 ."; res.Evidence != want {
		t.Errorf("evidence %q, want %q", res.Evidence, want)
	}
}
