package sendermap

import (
	"context"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

func TestSenderHeaderMismatch(t *testing.T) {
	m, err := table.ParseSenderLoginMap(strings.NewReader("alice@example.com alice\npostmaster@example.com alice, bob\n@example.org carol\n"), "maps")
	if err != nil {
		t.Fatal(err)
	}
	chk := NewSenderHeaderMismatch(m)
	tests := []struct {
		login, name, value string
		code               int
	}{
		{"alice", "From", "Alice <alice@example.com>", 0},
		{"alice", "from", "postmaster@example.com", 0},
		{"bob", "From", "\"Postmaster\" <postmaster@example.com>", 0},
		{"carol", "From", "anyone@example.org", 0},
		{"bob", "From", "Alice <alice@example.com>", 550},
		{"alice", "From", "alice@example.com, ceo@example.com", 550},
		{"alice", "From", "Boss <boss@elsewhere.example>", 550},
		{"alice", "From", "not an address", 550},
		{"alice", "Subject", "alice@example.com is not checked here", 0},
		{"", "From", "ceo@example.com", 0}, // unauthenticated: other checks decide
	}
	for _, tt := range tests {
		r := chk.CheckHeader(context.Background(), &policy.Client{Login: tt.login}, &policy.Envelope{}, &policy.Header{Name: tt.name, Value: tt.value})
		if tt.code == 0 {
			if r.Action != policy.Pass {
				t.Errorf("%s %s: %q refused: %v", tt.login, tt.name, tt.value, r.Reply)
			}
			continue
		}
		if r.Action != policy.Reject || r.Reply.Code != tt.code || r.Reply.Enhanced != [3]int{5, 7, 1} {
			t.Errorf("%s %s: %q: got %v %v, want %d 5.7.1", tt.login, tt.name, tt.value, r.Action, r.Reply, tt.code)
		}
	}
	r := chk.CheckHeader(context.Background(), &policy.Client{Login: "bob"}, &policy.Envelope{}, &policy.Header{Name: "From", Value: "alice@example.com"})
	if want := "<alice@example.com>: From: header address rejected: not owned by user bob"; r.Reply.Text != want {
		t.Errorf("reply text %q, want %q", r.Reply.Text, want)
	}
}
