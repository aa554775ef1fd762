package config

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// FuzzParse feeds the configuration loader arbitrary YAML: it must never
// panic, every failure must be an Errors naming the file, and what it
// accepts must be valid (defaults filled in).
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../config.example.yaml"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		"hostname: mx.example.com\ndomains: [example.com]\n",
		"hostname: mx\n",
		"listen:\n  - address: \":25\"\n    tls: starttls\n",
		"upstream: {address: 127.0.0.1:10025, timeout: 5m, xclient: bogus}\n",
		"limits: {max_recipients: 5, max_line_length: 10}\n",
		"checks:\n  spf: {mode: warn, reply: \"550 5.7.1 no\"}\n  dnsbl: {zones: [{zone: zen.spamhaus.org, weight: 2, filter: \"127.0.0.[2..11]\"}]}\n",
		"relay: {networks: [10.0.0.0/8, \"::1\", bogus]}\n",
		"dns: {servers: [\"127.0.0.1:53\", x], timeout: -1s}\n",
		"unknown_key: 1\n",
		"hostname: [\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is a finding too: report the input instead of stalling.
		watchdog := time.AfterFunc(5*time.Second, func() { panic(fmt.Sprintf("Parse hung on %q", data)) })
		defer watchdog.Stop()
		c, err := Parse(data, "fuzz.yaml")
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
			}
			return
		}
		if c.Upstream.Address == "" || c.Limits.MaxLineLength < 1000 || c.DelayReject == nil {
			t.Fatalf("accepted without defaults: %+v", c)
		}
	})
}
