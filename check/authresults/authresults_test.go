package authresults

import (
	"context"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
)

func TestField(t *testing.T) {
	got := Field("gw.example.com", []policy.AuthResult{
		{Method: "spf", Result: "pass", Domain: "example.org", Property: "smtp.mailfrom"},
		{Method: "dkim", Result: "pass", Domain: "example.com", Property: "header.d", Comment: "s=it"},
		{Method: "dkim", Result: "none"},
		{Method: "dkim", Result: "fail", Domain: "evil;dmarc=pass\r\n (x)", Property: "header.d", Comment: "s=a);b"},
		{Method: "dmarc", Result: "pass", Domain: "example.com", Property: "header.from", Comment: "p=reject"},
	})
	want := "Authentication-Results: gw.example.com;\r\n" +
		"\tspf=pass smtp.mailfrom=example.org;\r\n" +
		"\tdkim=pass (s=it) header.d=example.com;\r\n" +
		"\tdkim=none;\r\n" +
		"\tdkim=fail (s=ab) header.d=\"evil;dmarc=pass (x)\";\r\n" +
		"\tdmarc=pass (p=reject) header.from=example.com"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if got := Field("gw.example.com", nil); got != "Authentication-Results: gw.example.com; none" {
		t.Errorf("no results: %q", got)
	}
}

func TestForgedFieldsRemoved(t *testing.T) {
	k := New("gw.example.com")
	for _, tt := range []struct {
		name, value string
		drop        bool
	}{
		{"Authentication-Results", "gw.example.com; dkim=pass header.d=example.com", true},
		{"authentication-results", "GW.Example.COM 1; dmarc=pass", true},
		{"Authentication-Results", "(comment) gw.example.com;spf=pass", true},
		{"Authentication-Results", "\"gw.example.com\"; spf=pass", true},
		{"Authentication-Results", "mx.google.com; dkim=pass", false},
		{"Authentication-Results", "gw.example.com.evil.test; dkim=pass", false},
		{"X-Authentication-Results", "gw.example.com; dkim=pass", false},
	} {
		r := k.CheckHeader(context.Background(), &policy.Client{}, nil, &policy.Header{Name: tt.name, Value: tt.value})
		if r.DropHeader != tt.drop || r.Action != policy.Pass {
			t.Errorf("%s: %s: drop %v, want %v", tt.name, tt.value, r.DropHeader, tt.drop)
		}
	}
}
