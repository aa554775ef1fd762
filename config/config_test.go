package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigParsesWithDefaults(t *testing.T) {
	c, err := Load("../config.example.yaml")
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	if c.Upstream.Address != DefaultUpstream || c.Upstream.XClient != "auto" || c.Upstream.DataTimeout.D() != 10*time.Minute {
		t.Errorf("upstream defaults: %+v", c.Upstream)
	}
	if c.Limits.MaxMessageBytes != DefaultMaxMessageBytes || c.Limits.MaxRecipients != DefaultMaxRecipients {
		t.Errorf("limits: %+v", c.Limits)
	}
	if p := c.Upstream.Pool; !*p.Enabled || p.MaxMessages != DefaultPoolMaxMessages || p.MaxAge.D() != DefaultPoolMaxAge || p.MaxIdle != DefaultPoolMaxIdle || p.IdleTimeout.D() != DefaultPoolIdleTimeout {
		t.Errorf("upstream.pool defaults: %+v", p)
	}
	if c.Recipients.PositiveTTL.D() != 7*24*time.Hour || c.Recipients.NegativeTTL.D() != 3*time.Hour {
		t.Errorf("probe TTLs: %+v", c.Recipients)
	}
	// The example must show the defaults: an empty config gives the same.
	e, err := Parse([]byte("hostname: mx.example.com\ndomains: [example.com]\n"), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	eu, cu := e.Upstream, c.Upstream
	if *eu.Pool.Enabled != *cu.Pool.Enabled {
		t.Errorf("upstream.pool.enabled: example %v, default %v", *cu.Pool.Enabled, *eu.Pool.Enabled)
	}
	eu.Pool.Enabled, cu.Pool.Enabled = nil, nil
	if e.Limits != c.Limits || eu != cu || e.DNS.Timeout != c.DNS.Timeout || *e.DelayReject != *c.DelayReject || e.Postmaster != c.Postmaster || e.Auth != c.Auth {
		t.Errorf("config.example.yaml and the built-in defaults differ:\n%+v\n%+v", c.Limits, e.Limits)
	}
	if e.Store != c.Store || e.Store.Redis.Timeout.D() != 50*time.Millisecond || e.Store.Redis.Enabled() {
		t.Errorf("store: example %+v, default %+v", c.Store, e.Store)
	}
	if e.Postmaster != "postmaster@example.com" || e.Auth.FailuresPerLoginTotal != 50 {
		t.Errorf("defaults: postmaster %q, failures_per_login_total %d", e.Postmaster, e.Auth.FailuresPerLoginTotal)
	}
}

func TestErrorsNameFileLineKey(t *testing.T) {
	tests := []struct {
		yaml string
		want []string
	}{
		{"hostname: mx.example.com\nlimits:\n  max_recipient: 5\n", []string{"t.yaml:3: max_recipient: unknown key"}},
		{"hostname: mx.example.com\nupstream:\n  xclient: maybe\n", []string{"t.yaml:3: upstream.xclient: \"maybe\""}},
		{"hostname: mx.example.com\nlisten:\n  - address: \":25\"\n    tls: starttls\n", []string{"t.yaml:4: listen.0.tls: tls: starttls needs tls.cert_file"}},
		{"hostname: localhost\n", []string{"t.yaml:1: hostname: \"localhost\" is not a fully-qualified"}},
		{"hostname: mx.example.com\nrelay:\n  networks: [10.0.0.0/33]\n", []string{"t.yaml:3: relay.networks.0:"}},
		{"hostname: mx.example.com\nchecks:\n  spf:\n    mode: maybe\n", []string{"t.yaml:4: checks.spf.mode"}},
		{"hostname: mx.example.com\nchecks:\n  spf:\n    reply: \"550 4.7.1 no\"\n", []string{"t.yaml:4: checks.spf.reply"}},
		{"hostname: mx.example.com\nupstream:\n  timeout: soon\n", []string{"t.yaml:3:", "not a duration"}},
		{"hostname: mx.example.com\nlog:\n  format: xml\n", []string{"t.yaml:3: log.format"}},
		{"hostname: mx.example.com\nstore:\n  redis:\n    address: \"redis.example.com\"\n", []string{"t.yaml:4: store.redis.address: \"redis.example.com\": want host:port"}},
		{"hostname: mx.example.com\nstore:\n  redis:\n    url: \"http://x:6379\"\n", []string{"t.yaml:4: store.redis.url: \"http://x:6379\""}},
		{"hostname: mx.example.com\nstore:\n  redis:\n    address: \"a:6379\"\n    url: \"redis://a:6379\"\n", []string{"t.yaml:5: store.redis.url: give store.redis.address or store.redis.url, not both"}},
		{"hostname: mx.example.com\nstore:\n  redis:\n    address: \"a:6379\"\n    timeout: 30s\n", []string{"t.yaml:5: store.redis.timeout:"}},
		{"hostname: mx.example.com\nstore:\n  redis:\n    address: \"a:1,b:1\"\n    db: 2\n", []string{"t.yaml:5: store.redis.db: a Redis Cluster has database 0 only"}},
		{"hostname: mx.example.com\npostmaster: nobody\n", []string{"t.yaml:2: postmaster: \"nobody\""}},
		{"hostname: mx.example.com\nupstream:\n  pool:\n    max_messages: -1\n", []string{"t.yaml:4: upstream.pool.max_messages"}},
		{"hostname: mx.example.com\nupstream:\n  pool:\n    max_age: -1s\n", []string{"t.yaml:4:", "not a duration"}},
		{"hostname: mx.example.com\nlimits:\n  spool_memory_bytes: -1\n", []string{"t.yaml:3: limits.spool_memory_bytes"}},
		{"hostname: mx.example.com\nlimits:\n  spool_dir: /nonexistent/spool\n", []string{"t.yaml:3: limits.spool_dir"}},
		{"hostname: mx.example.com\nlimits:\n  spool_dir: ../config.example.yaml\n", []string{"t.yaml:3: limits.spool_dir", "not a directory"}},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml), "t.yaml")
		if err == nil {
			t.Errorf("%q: no error", tt.yaml)
			continue
		}
		var es Errors
		if !errors.As(err, &es) {
			t.Errorf("%q: error is %T, want Errors", tt.yaml, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", tt.yaml, err, w)
			}
		}
	}
}

func TestSTARTTLSByDefaultWithACertificate(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(cert, []byte("x"), 0o644)
	os.WriteFile(key, []byte("x"), 0o644)
	c, err := Parse([]byte("hostname: mx.example.com\nlisten:\n  - address: \":25\"\n  - address: \":465\"\n    mode: submissions\n  - address: \":2525\"\n    tls: none\nauth:\n  users_file: "+cert+"\ntls:\n  cert_file: "+cert+"\n  key_file: "+key+"\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"starttls", "implicit", "none"} {
		if got := c.Listen[i].TLS; got != want {
			t.Errorf("listen.%d.tls = %q, want %q", i, got, want)
		}
	}
	c, _ = Parse([]byte("hostname: mx.example.com\n"), "t.yaml")
	if c.Listen[0].TLS != "none" {
		t.Errorf("without a certificate: tls = %q, want none", c.Listen[0].TLS)
	}
}
