package main

import (
	"os"
	"strings"
	"testing"
)

// The house rules hold: imports point down, no package over a quarter of
// the code, every package has a floor.
func TestHouseRules(t *testing.T) {
	pkgs, err := Load("../..")
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages", len(pkgs))
	}
	for _, p := range Check(pkgs) {
		t.Error(p)
	}
}

// The committed picture is the code's: regenerate it with
// `go run ./docs/arch` after moving a package or an import.
func TestPictureIsCurrent(t *testing.T) {
	pkgs, err := Load("../..")
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile("../packages.svg")
	if err != nil {
		t.Fatal(err)
	}
	if string(have) != SVG(pkgs) {
		t.Error("docs/packages.svg is not the picture of today's code: run `go run ./docs/arch` from the repository root")
	}
}

// The rules catch what they are for.
func TestCheckCatchesAnImportUpwards(t *testing.T) {
	pkgs := []Package{
		{Dir: "policy", Floor: 3, Lines: 10, Imports: []string{"check/spf"}},
		{Dir: "check/spf", Floor: 4, Lines: 10, Imports: []string{"check/dnsbl"}},
		{Dir: "check/dnsbl", Floor: 4, Lines: 10},
		{Dir: "reply", Floor: 0, Lines: 100},
		{Dir: "mystery", Floor: -1, Lines: 1},
	}
	got := strings.Join(Check(pkgs), "\n")
	for _, want := range []string{"policy (floor 3) imports check/spf (floor 4)", "check/spf (floor 4) imports check/dnsbl (floor 4)", "reply holds 100 of 131 lines, over a quarter", "mystery has no floor"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}
