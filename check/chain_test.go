package check

import (
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/config"
)

// The example configuration's checks: blocks are decoded by the checks
// themselves (config only reads mode and reply): every block of it must
// build, and every check of the chain must be in it, so that an operator
// reading the example sees every key there is.
func TestExampleConfigBuilds(t *testing.T) {
	cfg, err := config.Load("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(cfg, Deps{}); err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	for _, s := range Chain {
		if _, ok := cfg.Checks[s.Name]; !ok {
			t.Errorf("config.example.yaml has no checks.%s block", s.Name)
		}
	}
}

// Every check of the chain has a name of its own.
func TestChainNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Chain {
		if seen[s.Name] || s.Name == "" || strings.ToLower(s.Name) != s.Name {
			t.Errorf("chain name %q repeated, empty or not lower case", s.Name)
		}
		seen[s.Name] = true
	}
}
