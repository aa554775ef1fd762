package table

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecipientList(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "r")
	os.WriteFile(f, []byte("# users\nAlice@Example.com\nbob@example.com # comment\n@catchall.example\n"), 0o644)
	rl, err := LoadRecipientList([]string{f}, "+")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		local, domain string
		want          bool
	}{
		{"alice", "example.com", true},
		{"ALICE", "EXAMPLE.COM", true},
		{"bob+lists", "example.com", true},
		{"carol", "example.com", false},
		{"anyone", "catchall.example", true},
	} {
		if got := rl.Contains(tt.local, tt.domain); got != tt.want {
			t.Errorf("Contains(%s@%s) = %v", tt.local, tt.domain, got)
		}
	}
	if !rl.Covers("example.com") || rl.Covers("example.net") {
		t.Errorf("Covers wrong")
	}
	os.WriteFile(f, []byte("alice@example.com\nnot-an-address\n"), 0o644)
	_, err = LoadRecipientList([]string{f}, "")
	if err == nil || !strings.Contains(err.Error(), f+":2:") {
		t.Errorf("bad line error = %v", err)
	}
}
