package headerforgery

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
)

// message builds a policy.Message from header lines "Name: value".
func message(fields ...string) *policy.Message {
	m := &policy.Message{Body: func() io.Reader { return bytes.NewReader([]byte("hi\r\n")) }}
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		m.Header = append(m.Header, policy.Header{Name: name, Value: strings.TrimSpace(value), Raw: []byte(f + "\r\n")})
	}
	return m
}

var (
	stranger = &policy.Client{Addr: netip.MustParseAddr("192.0.2.66")}
	saas     = &policy.Client{Addr: netip.MustParseAddr("198.51.100.7")}
	authed   = &policy.Client{Addr: netip.MustParseAddr("192.0.2.9"), Login: "ceo"}
	trusted  = &policy.Client{Addr: netip.MustParseAddr("10.0.0.5"), Trusted: true}
)

func TestHeaderForgery(t *testing.T) {
	allow, err := ParseAllow([]string{"bounce@mailer.test", "@newsletter.test", "198.51.100.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	k := New([]string{"example.com", "Example.ORG"}, allow, false, false)
	strict := New([]string{"example.com"}, Allow{}, true, true)
	dkim := func(d, res string) []policy.AuthResult {
		return []policy.AuthResult{{Method: "dkim", Result: res, Domain: d, Property: "header.d"}}
	}
	const nli = ": From: header address rejected: not logged in"
	tests := []struct {
		name  string
		k     *HeaderForgery
		c     *policy.Client
		from  string // envelope
		auth  []policy.AuthResult
		hdr   []string
		code  int // 0: pass
		reply string
		log   bool // a passing result that is logged
	}{
		{name: "the seed attack", c: stranger, from: "x@attacker.test", hdr: []string{"From: CEO <ceo@example.com>"},
			code: 550, reply: "<ceo@example.com>" + nli},
		{name: "bare address, case", c: stranger, from: "x@attacker.test", hdr: []string{"from: CEO@Example.COM"},
			code: 550, reply: "<CEO@Example.COM>" + nli},
		{name: "second domain", c: stranger, hdr: []string{"From: a@example.org"}, code: 550, reply: "<a@example.org>" + nli},
		{name: "one of several mailboxes", c: stranger, hdr: []string{"From: a@other.test, b@example.com"}, code: 550, reply: "<b@example.com>" + nli},
		{name: "unparseable", c: stranger, hdr: []string{`From: "CEO <ceo@example.com>`}, code: 550, reply: "<ceo@example.com>" + nli},
		{name: "sender field", c: stranger, hdr: []string{"From: a@other.test", "Sender: ceo@example.com"},
			code: 550, reply: "<ceo@example.com>: Sender: header address rejected: not logged in"},
		{name: "two From fields", c: stranger, hdr: []string{"From: a@other.test", "From: b@other.test"},
			code: 550, reply: "Message has 2 From: header fields, RFC 5322 allows exactly one"},
		{name: "two From fields, trusted", c: trusted, hdr: []string{"From: a@other.test", "From: b@other.test"}},
		{name: "no From field", c: stranger, hdr: []string{"Subject: x"}, log: true},
		{name: "no From field, enforced", k: strict, c: stranger, hdr: []string{"Subject: x"},
			code: 550, reply: "Message has no From: header field, RFC 5322 requires one"},
		{name: "display name trick", c: stranger, hdr: []string{`From: "ceo@example.com" <x@attacker.test>`}, log: true},
		{name: "display name trick, enforced", k: strict, c: stranger, hdr: []string{`From: "ceo@example.com" <x@attacker.test>`},
			code: 550, reply: "<x@attacker.test>: From: header display name rejected: it names our domain example.com"},
		{name: "foreign", c: stranger, hdr: []string{"From: a@other.test"}},
		{name: "subdomain is not ours", c: stranger, hdr: []string{"From: a@sub.example.com"}},
		{name: "authenticated", c: authed, hdr: []string{"From: ceo@example.com"}},
		{name: "relay network", c: trusted, hdr: []string{"From: ceo@example.com"}},
		{name: "aligned DKIM pass", c: stranger, auth: dkim("example.com", "pass"), hdr: []string{"From: ceo@example.com"}, log: true},
		{name: "relaxed-aligned DKIM pass", c: stranger, auth: dkim("lists.example.com", "pass"), hdr: []string{"From: ceo@example.com"}, log: true},
		{name: "DKIM fail", c: stranger, auth: dkim("example.com", "fail"), hdr: []string{"From: ceo@example.com"}, code: 550, reply: "<ceo@example.com>" + nli},
		{name: "aligned DKIM temperror", c: stranger, auth: dkim("example.com", "temperror"), hdr: []string{"From: ceo@example.com"},
			code: 451, reply: "<ceo@example.com>: From: header address rejected: DKIM key lookup failed, try again later"},
		{name: "unaligned DKIM pass", c: stranger, auth: dkim("attacker.test", "pass"), hdr: []string{"From: ceo@example.com"}, code: 550, reply: "<ceo@example.com>" + nli},
		{name: "allowed envelope sender", c: stranger, from: "Bounce@mailer.test", hdr: []string{"From: news@example.com"}, log: true},
		{name: "allowed envelope domain", c: stranger, from: "x@newsletter.test", hdr: []string{"From: news@example.com"}, log: true},
		{name: "allowed network", c: saas, from: "x@other.test", hdr: []string{"From: news@example.com"}, log: true},
		{name: "not allowed: other address at the domain", c: stranger, from: "x@mailer.test", hdr: []string{"From: news@example.com"},
			code: 550, reply: "<news@example.com>" + nli},
	}
	for _, tt := range tests {
		kk := tt.k
		if kk == nil {
			kk = k
		}
		env := &policy.Envelope{From: tt.from, Auth: tt.auth}
		r := kk.CheckWholeMessage(context.Background(), tt.c, env, message(tt.hdr...))
		if tt.code == 0 {
			if r.Action != policy.Pass || r.Log != tt.log {
				t.Errorf("%s: %v %v log=%v %q; want pass, log=%v", tt.name, r.Action, r.Reply, r.Log, r.Evidence, tt.log)
			}
			continue
		}
		enh := [3]int{tt.code / 100, 7, 1}
		if r.Action != policy.Reject || r.Reply.Code != tt.code || r.Reply.Enhanced != enh || r.Reply.Text != tt.reply {
			t.Errorf("%s: %v %v; want %d %v %q", tt.name, r.Action, r.Reply, tt.code, enh, tt.reply)
		}
	}
}

func TestParseAllow(t *testing.T) {
	for _, bad := range []string{"not an address", "10.0.0.0/33"} {
		if _, err := ParseAllow([]string{bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
