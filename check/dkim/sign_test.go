package dkim

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"github.com/smtpgate/smtpgate/policy"
)

// TestSignVerifies signs with keys from GenerateKey, publishes the records
// it printed, and verifies what was signed, as a receiver would.
func TestSignVerifies(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	zone := []string{dnstest.SOA("test.", 3600, 300)}
	var keys []SignKey
	for _, kind := range []string{"rsa", "ed25519"} {
		pemKey, rec, err := GenerateKey(kind, kind+".test", "sel")
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, kind+".key")
		if err := os.WriteFile(path, pemKey, 0o600); err != nil {
			t.Fatal(err)
		}
		signer, err := LoadKey(path)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, SignKey{Domain: kind + ".test", Selector: "sel", Signer: signer})
		zone = append(zone, rec)
	}
	s := dnstest.New(t, zone...)
	r := checktest.Resolver(t, s)
	signer := New(nil, 0).WithKeys(keys)
	verifier := New(r, 0)
	user := &policy.Client{Login: "alice"}
	for _, kind := range []string{"rsa", "ed25519"} {
		raw := strings.ReplaceAll(plain, "alice@signed.test", "alice@"+kind+".test")
		res := signer.CheckWholeMessage(context.Background(), user, &policy.Envelope{}, parse(raw))
		if res.Action != policy.Pass || len(res.Prepend) != 1 || !strings.HasPrefix(res.Prepend[0], "DKIM-Signature:") {
			t.Fatalf("%s: %v %q %s; want a DKIM-Signature", kind, res.Action, res.Prepend, res.Evidence)
		}
		signed := res.Prepend[0] + "\r\n" + raw
		for _, tt := range []struct {
			name, msg, want string
		}{
			{"as signed", signed, "pass"},
			{"From: added below (oversigned)", strings.Replace(signed, "\r\n\r\n", "\r\nFrom: ceo@"+kind+".test\r\n\r\n", 1), "fail"},
			{"body changed", signed + "P.S. wire the money\r\n", "fail"},
		} {
			env := &policy.Envelope{}
			verifier.CheckWholeMessage(context.Background(), &policy.Client{}, env, parse(tt.msg))
			got := env.AuthFor("dkim")
			if len(got) != 1 || got[0].Result != tt.want || got[0].Domain != kind+".test" {
				t.Errorf("%s, %s: %+v; want %s for d=%s.test", kind, tt.name, got, tt.want, kind)
			}
		}
	}
	// Not signed: a domain without a key, an unauthenticated client.
	for _, tc := range []struct {
		c   *policy.Client
		raw string
	}{{user, plain}, {&policy.Client{}, strings.ReplaceAll(plain, "alice@signed.test", "alice@rsa.test")}} {
		if res := signer.CheckWholeMessage(context.Background(), tc.c, &policy.Envelope{}, parse(tc.raw)); len(res.Prepend) != 0 {
			t.Errorf("signed %q for %+v", tc.raw[:30], tc.c)
		}
	}
}

func TestLoadKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"empty": "", "garbage": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := LoadKey(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, _, err := GenerateKey("dsa", "x.test", "s"); err == nil {
		t.Error("dsa: no error")
	}
}
