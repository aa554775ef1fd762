package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"github.com/smtpgate/smtpgate/policy"
)

// TXTRecord is a DNS TXT record in zone-file syntax publishing the key,
// split into strings of at most 200 characters.
func txtRecord(name string, pub crypto.PublicKey) string {
	var k, b64 string
	switch p := pub.(type) {
	case ed25519.PublicKey:
		k, b64 = "ed25519", base64.StdEncoding.EncodeToString(p)
	default:
		der, _ := x509.MarshalPKIXPublicKey(p)
		k, b64 = "rsa", base64.StdEncoding.EncodeToString(der)
	}
	v := "v=DKIM1; k=" + k + "; p=" + b64
	var parts []string
	for len(v) > 200 {
		parts = append(parts, `"`+v[:200]+`"`)
		v = v[200:]
	}
	parts = append(parts, `"`+v+`"`)
	return name + " 300 IN TXT " + strings.Join(parts, " ")
}

// Sign signs msg (CRLF line ends) for domain and selector.
func sign(t *testing.T, msg, domain, selector string, key crypto.Signer) string {
	t.Helper()
	var b bytes.Buffer
	err := msgdkim.Sign(&b, strings.NewReader(msg), &msgdkim.SignOptions{Domain: domain, Selector: selector, Signer: key,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed, BodyCanonicalization: msgdkim.CanonicalizationRelaxed})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Parse splits a raw message into the policy.Message a check gets.
func parse(raw string) *policy.Message {
	hdr, body, _ := strings.Cut(raw, "\r\n\r\n")
	m := &policy.Message{Body: func() io.Reader { return strings.NewReader(body) }}
	lines := strings.SplitAfter(hdr+"\r\n", "\r\n")
	for _, l := range lines {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(m.Header) > 0 {
			h := &m.Header[len(m.Header)-1]
			h.Raw = append(h.Raw, l...)
			h.Value += " " + strings.TrimSpace(l)
			continue
		}
		name, value, _ := strings.Cut(l, ":")
		m.Header = append(m.Header, policy.Header{Name: name, Value: strings.TrimSpace(value), Raw: []byte(l)})
	}
	return m
}

const plain = "From: Alice <alice@signed.test>\r\nTo: bob@example.com\r\nSubject: hello\r\nDate: Fri, 4 Dec 2026 17:00:00 +0000\r\nMessage-ID: <1@signed.test>\r\n\r\nHello Bob.\r\n"

func TestDKIM(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	s := dnstest.New(t,
		dnstest.SOA("test.", 3600, 300),
		txtRecord("rsa._domainkey.signed.test.", rsaKey.Public()),
		txtRecord("ed._domainkey.signed.test.", edPub),
		txtRecord("rsa._domainkey.other.test.", rsaKey.Public()),
		`revoked._domainkey.signed.test. 300 IN TXT "v=DKIM1; k=rsa; p="`,
	)
	k := New(checktest.Resolver(t, s), 0)
	rsaSigned := sign(t, plain, "signed.test", "rsa", rsaKey)
	tests := []struct {
		name string
		raw  string
		want []string // "result d= s="
	}{
		{"RSA pass", rsaSigned, []string{"pass signed.test s=rsa"}},
		{"Ed25519 pass", sign(t, plain, "signed.test", "ed", edKey), []string{"pass signed.test s=ed"}},
		{"body changed", strings.Replace(rsaSigned, "Hello Bob.", "Hello Bob, wire the money.", 1), []string{"fail signed.test s=rsa"}},
		{"signed header changed", strings.Replace(rsaSigned, "Subject: hello", "Subject: urgent", 1), []string{"fail signed.test s=rsa"}},
		{"unaligned d= still verifies", sign(t, plain, "other.test", "rsa", rsaKey), []string{"pass other.test s=rsa"}},
		{"no signature", plain, []string{"none  "}},
		{"no key published", sign(t, plain, "signed.test", "missing", rsaKey), []string{"permerror signed.test s=missing"}},
		{"revoked key", sign(t, plain, "signed.test", "revoked", rsaKey), []string{"permerror signed.test s=revoked"}},
		{"DNS failure", sign(t, plain, "servfail.test", "rsa", rsaKey), []string{"temperror servfail.test s=rsa"}},
		{"two signatures", sign(t, rsaSigned, "other.test", "rsa", rsaKey), []string{"pass other.test s=rsa", "pass signed.test s=rsa"}},
	}
	for _, tt := range tests {
		env := &policy.Envelope{}
		r := k.CheckWholeMessage(context.Background(), &policy.Client{Addr: netip.MustParseAddr("192.0.2.1")}, env, parse(tt.raw))
		if r.Action != policy.Pass {
			t.Errorf("%s: %v %v; dkim never refuses", tt.name, r.Action, r.Reply)
		}
		var got []string
		for _, a := range env.AuthFor("dkim") {
			got = append(got, fmt.Sprintf("%s %s %s", a.Result, a.Domain, a.Comment))
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%s: results %q, want %q (evidence %q)", tt.name, got, tt.want, r.Evidence)
		}
	}
}

func TestDKIMMaxSignatures(t *testing.T) {
	t.Parallel()
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	s := dnstest.New(t, dnstest.SOA("test.", 3600, 300), txtRecord("ed._domainkey.signed.test.", edPub))
	raw := plain
	for range 4 {
		raw = sign(t, raw, "signed.test", "ed", edKey)
	}
	env := &policy.Envelope{}
	r := New(checktest.Resolver(t, s), 2).CheckWholeMessage(context.Background(), &policy.Client{}, env, parse(raw))
	if n := len(env.AuthFor("dkim")); n != 2 || !strings.Contains(r.Evidence, "only the first 2 of 4") {
		t.Errorf("%d results, evidence %q; want 2 verified of 4", n, r.Evidence)
	}
}
