package spf

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"github.com/smtpgate/smtpgate/policy"
)

var spfZone = []string{
	dnstest.SOA("test.", 3600, 300),
	`pass.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"`,
	`fail.test. 300 IN TXT "v=spf1 -all"`,
	`softfail.test. 300 IN TXT "v=spf1 ~all"`,
	`neutral.test. 300 IN TXT "v=spf1 ?all"`,
	`nospf.test. 300 IN TXT "google-site-verification=x"`,
	`twice.test. 300 IN TXT "v=spf1 -all"`,
	`twice.test. 300 IN TXT "v=spf1 +all"`,
	`broken.test. 300 IN TXT "v=spf1 bogus:x -all"`,
	`loop.test. 300 IN TXT "v=spf1 include:loop.test -all"`,
	`inctemp.test. 300 IN TXT "v=spf1 include:servfail.test -all"`,
	`mx.test. 300 IN TXT "v=spf1 mx -all"`,
	`mx.test. 300 IN MX 10 mail.mx.test.`,
	`mail.mx.test. 300 IN A 192.0.2.50`,
	`mail.mx.test. 300 IN AAAA 2001:db8::50`,
	`ptr.test. 300 IN TXT "v=spf1 ptr:ptr.test -all"`,
	`60.2.0.192.in-addr.arpa. 300 IN PTR host.ptr.test.`,
	`host.ptr.test. 300 IN A 192.0.2.60`,
	`tc.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
	`helo.test. 300 IN TXT "v=spf1 ip4:192.0.2.9 -all"`,
	`xn--bcher-kva.test. 300 IN TXT "v=spf1 -all"`,
}

func TestSPF(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, spfZone...)
	check := NewSPF(checktest.Resolver(t, s), "gate.example")
	tests := []struct {
		what     string
		ip       string
		helo     string
		from     string
		login    string
		action   policy.Action
		code     int
		enhanced [3]int
		spf      string // the result in Received-SPF, "" for no header
	}{
		{what: "pass", ip: "192.0.2.1", from: "a@pass.test", action: policy.Pass, spf: "pass"},
		{what: "pass ipv6", ip: "2001:db8::7", from: "a@pass.test", action: policy.Pass, spf: "pass"},
		{what: "pass mx", ip: "192.0.2.50", from: "a@mx.test", action: policy.Pass, spf: "pass"},
		{what: "pass mx ipv6", ip: "2001:db8::50", from: "a@mx.test", action: policy.Pass, spf: "pass"},
		{what: "pass ptr", ip: "192.0.2.60", from: "a@ptr.test", action: policy.Pass, spf: "pass"},
		{what: "pass over tcp", ip: "192.0.2.1", from: "a@tc.test", action: policy.Pass, spf: "pass"},
		{what: "fail", ip: "198.51.100.1", from: "a@pass.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 7, 23}},
		{what: "fail mx", ip: "198.51.100.1", from: "a@mx.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 7, 23}},
		{what: "fail all", ip: "192.0.2.1", from: "a@fail.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 7, 23}},
		{what: "fail idn", ip: "192.0.2.1", from: "a@bücher.test", action: policy.Reject, code: 550, enhanced: [3]int{5, 7, 23}},
		{what: "softfail", ip: "192.0.2.1", from: "a@softfail.test", action: policy.Pass, spf: "softfail"},
		{what: "neutral", ip: "192.0.2.1", from: "a@neutral.test", action: policy.Pass, spf: "neutral"},
		{what: "none no record", ip: "192.0.2.1", from: "a@nospf.test", action: policy.Pass, spf: "none"},
		{what: "none nxdomain", ip: "192.0.2.1", from: "a@nowhere.test", action: policy.Pass, spf: "none"},
		{what: "none address literal", ip: "192.0.2.1", from: "a@[192.0.2.1]", action: policy.Pass, spf: "none"},
		{what: "permerror two records", ip: "192.0.2.1", from: "a@twice.test", action: policy.Pass, spf: "permerror"},
		{what: "permerror bad term", ip: "192.0.2.1", from: "a@broken.test", action: policy.Pass, spf: "permerror"},
		{what: "permerror lookup limit", ip: "192.0.2.1", from: "a@loop.test", action: policy.Pass, spf: "permerror"},
		{what: "temperror servfail", ip: "192.0.2.1", from: "a@servfail.test", action: policy.Reject, code: 451, enhanced: [3]int{4, 7, 24}},
		{what: "temperror include", ip: "192.0.2.1", from: "a@inctemp.test", action: policy.Reject, code: 451, enhanced: [3]int{4, 7, 24}},
		{what: "temperror timeout", ip: "192.0.2.1", from: "a@slow.test", action: policy.Reject, code: 451, enhanced: [3]int{4, 7, 24}},
		{what: "null sender helo pass", ip: "192.0.2.9", helo: "helo.test", from: "", action: policy.Pass, spf: "pass"},
		{what: "null sender helo fail", ip: "192.0.2.10", helo: "helo.test", from: "", action: policy.Reject, code: 550, enhanced: [3]int{5, 7, 23}},
		{what: "null sender helo literal", ip: "192.0.2.10", helo: "[192.0.2.10]", from: "", action: policy.Pass, spf: "none"},
		{what: "authenticated", ip: "198.51.100.1", from: "a@fail.test", login: "a", action: policy.Pass},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			helo := tt.helo
			if helo == "" {
				helo = "client.example"
			}
			c := &policy.Client{Addr: netip.MustParseAddr(tt.ip), Helo: helo, Login: tt.login}
			res := check.CheckMail(context.Background(), c, nil, tt.from)
			if res.Action != tt.action || res.Reply.Code != tt.code || res.Reply.Enhanced != tt.enhanced {
				t.Fatalf("got %v %q (%s), want %v %d %v", res.Action, res.Reply, res.Evidence, tt.action, tt.code, tt.enhanced)
			}
			switch {
			case tt.spf == "" && len(res.Prepend) != 0:
				t.Errorf("header %q, want none", res.Prepend)
			case tt.spf != "" && (len(res.Prepend) != 1 || !strings.HasPrefix(res.Prepend[0], "Received-SPF: "+tt.spf+" ")):
				t.Errorf("header %q, want Received-SPF: %s (%s)", res.Prepend, tt.spf, res.Evidence)
			}
		})
	}
}

func TestSPFHeader(t *testing.T) {
	s := dnstest.New(t, spfZone...)
	check := NewSPF(checktest.Resolver(t, s), "gate.example")
	tests := []struct {
		ip, helo, from string
		want           string
	}{
		{"192.0.2.1", "foo.example", "myname@pass.test",
			`Received-SPF: pass (gate.example: domain of myname@pass.test designates 192.0.2.1 as permitted sender) ` +
				`client-ip=192.0.2.1; envelope-from="myname@pass.test"; helo=foo.example; receiver=gate.example; identity=mailfrom;`},
		{"2001:db8::7", "foo.example", "",
			`Received-SPF: none (gate.example: domain of postmaster@foo.example does not designate permitted sender hosts) ` +
				`client-ip="2001:db8::7"; envelope-from=""; helo=foo.example; receiver=gate.example; identity=helo;`},
		// policy.Client-chosen text cannot break out of the comment or the value.
		{"192.0.2.1", "x\"y", `"a(b)\"c"@softfail.test`,
			`Received-SPF: softfail (gate.example: domain of transitioning "a\(b\)\\"c"@softfail.test does not designate 192.0.2.1 as permitted sender) ` +
				`client-ip=192.0.2.1; envelope-from="\"a(b)\\\"c\"@softfail.test"; helo="x\"y"; receiver=gate.example; identity=mailfrom;`},
	}
	for _, tt := range tests {
		res := check.CheckMail(context.Background(), &policy.Client{Addr: netip.MustParseAddr(tt.ip), Helo: tt.helo}, nil, tt.from)
		if len(res.Prepend) != 1 || res.Prepend[0] != tt.want {
			t.Errorf("from %q:\n got %q\nwant %q", tt.from, res.Prepend, tt.want)
		}
	}
	res := check.CheckMail(context.Background(), &policy.Client{Addr: netip.MustParseAddr("192.0.2.1"), Helo: "h.example"}, nil, "a@twice.test")
	if len(res.Prepend) != 1 || !strings.Contains(res.Prepend[0], `problem="multiple matching DNS records"`) || !res.Log {
		t.Errorf("permerror: %q log %v", res.Prepend, res.Log)
	}
}

// The result travels on the envelope for later checks (DMARC): the
// method, the result, the domain checked and the identity it came from.
func TestSPFResultOnEnvelope(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, spfZone...)
	check := NewSPF(checktest.Resolver(t, s), "gate.example")
	for _, tc := range []struct {
		from, helo string
		want       policy.AuthResult
	}{
		{"a@pass.test", "h.example", policy.AuthResult{Method: "spf", Result: "pass", Domain: "pass.test", Property: "smtp.mailfrom"}},
		{"a@fail.test", "h.example", policy.AuthResult{Method: "spf", Result: "fail", Domain: "fail.test", Property: "smtp.mailfrom"}},
		{"", "helo.test", policy.AuthResult{Method: "spf", Result: "pass", Domain: "helo.test", Property: "smtp.helo"}},
	} {
		env := &policy.Envelope{From: tc.from}
		c := &policy.Client{Addr: netip.MustParseAddr("192.0.2.9"), Helo: tc.helo}
		check.CheckMail(context.Background(), c, env, tc.from)
		if got := env.AuthFor("spf"); len(got) != 1 || got[0] != tc.want {
			t.Errorf("MAIL FROM %q: results %+v, want %+v", tc.from, env.Auth, tc.want)
		}
	}
}
