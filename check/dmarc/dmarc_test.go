package dmarc

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"github.com/smtpgate/smtpgate/policy"
)

var zone = []string{
	dnstest.SOA("test.", 3600, 300),
	`_dmarc.reject.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.quarantine.test. 300 IN TXT "v=DMARC1; p=quarantine"`,
	`_dmarc.none.test. 300 IN TXT "v=DMARC1; p=none; rua=mailto:d@none.test"`,
	`_dmarc.strict.test. 300 IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"`,
	`_dmarc.sub.test. 300 IN TXT "v=DMARC1; p=none; sp=reject"`,
	`_dmarc.half.test. 300 IN TXT "v=DMARC1; p=reject; pct=50"`,
	`_dmarc.broken.test. 300 IN TXT "v=DMARC1; p=bogus"`,
	`_dmarc.twice.test. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.twice.test. 300 IN TXT "v=DMARC1; p=none"`,
	`_dmarc.nodmarc.test. 300 IN TXT "google-site-verification=x"`,
	`_dmarc.servfail.test. 300 IN TXT "v=DMARC1; p=reject"`,
}

func msg(from string) *policy.Message {
	return &policy.Message{
		Header: []policy.Header{{Name: "From", Value: from, Raw: []byte("From: " + from + "\r\n")}, {Name: "Subject", Value: "x", Raw: []byte("Subject: x\r\n")}},
		Body:   func() io.Reader { return strings.NewReader("hi\r\n") },
	}
}

func spf(res, d string) policy.AuthResult {
	return policy.AuthResult{Method: "spf", Result: res, Domain: d, Property: "smtp.mailfrom"}
}

func dkim(res, d string) policy.AuthResult {
	return policy.AuthResult{Method: "dkim", Result: res, Domain: d, Property: "header.d"}
}

func TestDMARC(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, zone...)
	k := New(checktest.Resolver(t, s), false)
	kq := New(checktest.Resolver(t, s), true)
	stranger := &policy.Client{Addr: netip.MustParseAddr("192.0.2.66")}
	const (
		pass = iota
		reject
		quarantined
	)
	tests := []struct {
		name   string
		k      *DMARC
		c      *policy.Client
		from   string
		auth   []policy.AuthResult
		sample int // pct= draw
		want   int
		reply  string // for reject
		result string // the dmarc result on the envelope, with its comment
	}{
		{name: "aligned DKIM pass", from: "a@reject.test", auth: []policy.AuthResult{dkim("pass", "reject.test")}, result: "pass p=reject"},
		{name: "aligned SPF pass", from: "a@reject.test", auth: []policy.AuthResult{spf("pass", "reject.test")}, result: "pass p=reject"},
		{name: "relaxed DKIM, subdomain d=", from: "a@reject.test", auth: []policy.AuthResult{dkim("pass", "mail.reject.test")}, result: "pass p=reject"},
		{name: "relaxed SPF, subdomain MAIL FROM", from: "a@reject.test", auth: []policy.AuthResult{spf("pass", "bounce.reject.test")}, result: "pass p=reject"},
		{name: "strict DKIM, subdomain d=", from: "a@strict.test", auth: []policy.AuthResult{dkim("pass", "mail.strict.test")},
			want: reject, reply: "Rejected by DMARC policy for strict.test", result: "fail p=reject"},
		{name: "strict SPF, subdomain MAIL FROM", from: "a@strict.test", auth: []policy.AuthResult{spf("pass", "bounce.strict.test")},
			want: reject, reply: "Rejected by DMARC policy for strict.test", result: "fail p=reject"},
		{name: "strict, exact", from: "a@strict.test", auth: []policy.AuthResult{dkim("pass", "strict.test")}, result: "pass p=reject"},
		{name: "unaligned d=", from: "CEO <ceo@reject.test>", auth: []policy.AuthResult{dkim("pass", "attacker.test"), spf("pass", "attacker.test")},
			want: reject, reply: "Rejected by DMARC policy for reject.test", result: "fail p=reject"},
		{name: "DKIM fail (body changed)", from: "a@reject.test", auth: []policy.AuthResult{dkim("fail", "reject.test")},
			want: reject, reply: "Rejected by DMARC policy for reject.test", result: "fail p=reject"},
		{name: "no signature, SPF fail", from: "a@reject.test", auth: []policy.AuthResult{{Method: "dkim", Result: "none"}, spf("fail", "reject.test")},
			want: reject, reply: "Rejected by DMARC policy for reject.test", result: "fail p=reject"},
		{name: "quarantine, header", from: "a@quarantine.test", want: quarantined, result: "fail p=quarantine"},
		{name: "quarantine, refuse", k: kq, from: "a@quarantine.test", want: reject, reply: "Rejected by DMARC policy for quarantine.test", result: "fail p=quarantine"},
		{name: "p=none", from: "a@none.test", result: "fail p=none"},
		{name: "subdomain policy sp=", from: "a@x.sub.test", want: reject, reply: "Rejected by DMARC policy for x.sub.test", result: "fail p=reject"},
		{name: "organizational domain itself: p=", from: "a@sub.test", result: "fail p=none"},
		{name: "subdomain inherits p= without sp=", from: "a@mail.reject.test", want: reject, reply: "Rejected by DMARC policy for mail.reject.test", result: "fail p=reject"},
		{name: "pct sampled", from: "a@half.test", sample: 49, want: reject, reply: "Rejected by DMARC policy for half.test", result: "fail p=reject"},
		{name: "pct not sampled: quarantine", from: "a@half.test", sample: 50, want: quarantined, result: "fail p=quarantine"},
		{name: "unparseable From:", from: `"Bank <alerts@reject.test>`, want: reject, reply: "Rejected by DMARC policy for reject.test", result: "fail p=reject"},
		{name: "no record", from: "a@nodmarc.test", result: "none "},
		{name: "no such name", from: "a@nxdomain.test", result: "none "},
		{name: "two records are none", from: "a@twice.test", result: "none "},
		{name: "broken record", from: "a@broken.test", result: "permerror "},
		{name: "DNS failure", from: "a@servfail.test", want: reject, reply: "DMARC policy for servfail.test unavailable, try again later", result: "temperror "},
		{name: "authenticated", c: &policy.Client{Login: "alice"}, from: "a@reject.test"},
		{name: "trusted", c: &policy.Client{Trusted: true}, from: "a@reject.test"},
	}
	for _, tt := range tests {
		kk, c := tt.k, tt.c
		if kk == nil {
			kk = k
		}
		if c == nil {
			c = stranger
		}
		sample := tt.sample
		kk.sample = func() int { return sample }
		env := &policy.Envelope{Auth: tt.auth}
		r := kk.CheckWholeMessage(context.Background(), c, env, msg(tt.from))
		var got string
		for _, a := range env.AuthFor("dmarc") {
			got = a.Result + " " + a.Comment
		}
		if got != tt.result {
			t.Errorf("%s: dmarc result %q, want %q (%s)", tt.name, got, tt.result, r.Evidence)
		}
		switch tt.want {
		case pass:
			if r.Action != policy.Pass || len(r.Prepend) > 0 {
				t.Errorf("%s: %v %v %q; want pass", tt.name, r.Action, r.Reply, r.Prepend)
			}
		case quarantined:
			if r.Action != policy.Pass || len(r.Prepend) != 1 || r.Prepend[0] != QuarantineField {
				t.Errorf("%s: %v %v %q; want pass with %q", tt.name, r.Action, r.Reply, r.Prepend, QuarantineField)
			}
		case reject:
			code, enh := 550, [3]int{5, 7, 1}
			if strings.Contains(tt.reply, "unavailable") {
				code, enh = 451, [3]int{4, 7, 1}
			}
			if r.Action != policy.Reject || r.Reply.Code != code || r.Reply.Enhanced != enh || r.Reply.Text != tt.reply {
				t.Errorf("%s: %v %v; want %d %v %q", tt.name, r.Action, r.Reply, code, enh, tt.reply)
			}
		}
	}
}
