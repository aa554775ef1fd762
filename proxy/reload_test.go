package proxy

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/smtpgate/smtpgate/config"
)

func reloadConfig(t *testing.T, mta, extra string) *config.Config {
	t.Helper()
	yml := "hostname: gw.example.com\ndomains: [example.com]\nlisten:\n  - address: 127.0.0.1:0\nupstream:\n  address: " + mta + "\n  xclient: off\nchecks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\n" + extra
	cfg, err := config.Parse([]byte(yml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// SIGHUP and POST /reload can arrive together: reloads are serialised
// (go test -race), and each one installs a whole configuration.
func TestConcurrentReloads(t *testing.T) {
	mta := fakeMTA(t)
	s, err := New(reloadConfig(t, mta, "dns:\n  servers: [127.0.0.1:1]\n"), slog.New(slog.NewTextHandler(&logBuf{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		// Each configuration changes the resolver, the AUTH limiter
		// and the MTA pool.
		cfg := reloadConfig(t, mta, "")
		cfg.DNS.Servers = []string{fmt.Sprintf("127.0.0.%d:1", i+1)}
		cfg.Auth.FailuresPerIP = i + 1
		cfg.Upstream.Timeout = config.Duration(i + 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Reload(cfg); err != nil {
				t.Errorf("reload: %v", err)
			}
		}()
	}
	wg.Wait()
	// What is installed belongs to one configuration.
	cur := s.cfg.Load()
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.authLim.ipN != cur.Auth.FailuresPerIP {
		t.Errorf("AUTH limiter of another configuration: %d, running %d", s.authLim.ipN, cur.Auth.FailuresPerIP)
	}
	if s.pool.Opts.Timeout != cur.Upstream.Timeout.D() {
		t.Errorf("MTA pool of another configuration: %v, running %v", s.pool.Opts.Timeout, cur.Upstream.Timeout.D())
	}
	if want := fmt.Sprint(cur.DNSServers(), cur.DNS.Timeout); s.resKey != want {
		t.Errorf("resolver of another configuration: %s, running %s", s.resKey, want)
	}
}

// A reload that fails late (here in the header checks) changes nothing:
// not the resolver, not the AUTH limiter, not the MTA pool.
func TestRefusedReloadChangesNothing(t *testing.T) {
	mta := fakeMTA(t)
	s, err := New(reloadConfig(t, mta, "dns:\n  servers: [127.0.0.1:1]\n"), slog.New(slog.NewTextHandler(&logBuf{}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.reloadMu.Lock()
	res, authLim, pool := s.res, s.authLim, s.pool
	s.reloadMu.Unlock()
	bad := filepath.Join(t.TempDir(), "header_checks")
	// RE2 has no look-behind: the table does not compile.
	os.WriteFile(bad, []byte("/(?<=x)y/ REJECT no\n"), 0o644)
	cfg := reloadConfig(t, mta, "  header_checks:\n    file: "+bad+"\ndns:\n  servers: [127.0.0.2:1]\nauth:\n  failures_per_ip: 9\n")
	cfg.Upstream.Timeout = config.Duration(7)
	err = s.Reload(cfg)
	if err == nil || !strings.Contains(err.Error(), "header_checks") {
		t.Fatalf("reload with a broken table: %v", err)
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.res != res {
		t.Errorf("the resolver was replaced by a refused reload")
	}
	if s.authLim != authLim {
		t.Errorf("the AUTH limiter was replaced by a refused reload")
	}
	if s.pool != pool {
		t.Errorf("the MTA pool was replaced by a refused reload")
	}
}
