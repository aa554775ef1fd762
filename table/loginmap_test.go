package table

import (
	"slices"
	"strings"
	"testing"
)

const loginMapText = `# smtpd_sender_login_maps
test@example.com test
foo@example.com foo, Admin
shared@example.com	alice,bob
  carol
@delegated.example   dave

Boss@Partner.Example eve
`

func TestParseSenderLoginMap(t *testing.T) {
	m, err := ParseSenderLoginMap(strings.NewReader(loginMapText), "logins")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want []string
	}{
		{"test@example.com", []string{"test"}},
		{"TEST@example.com.", []string{"test"}},
		{"foo@example.com", []string{"foo", "Admin"}},
		{"shared@example.com", []string{"alice", "bob", "carol"}},
		{"x@delegated.example", []string{"dave"}},
		{"boss@partner.example", []string{"eve"}},
		{"nobody@example.com", nil},
		{"not an address", nil},
	}
	for _, tt := range tests {
		if got := m.Owners(tt.addr); !slices.Equal(got, tt.want) {
			t.Errorf("Owners(%q) = %q; want %q", tt.addr, got, tt.want)
		}
		if m.Listed(tt.addr) != (tt.want != nil) {
			t.Errorf("Listed(%q) wrong", tt.addr)
		}
	}
	bad := []struct{ text, err string }{
		{"a@b.example\n", "logins:1: \"a@b.example\": no owner"},
		{"# c\n\nuser x\n", "logins:3: \"user\": want an address or @domain"},
		{"a@b.example x\n@bad..example y\n", "logins:2:"},
		{"a@b.example x\nA@B.example. y\n", "logins:2: \"A@B.example.\": duplicate key (first on line 1)"},
		{"  x\n", "logins:1: continuation line"},
	}
	for _, tt := range bad {
		_, err := ParseSenderLoginMap(strings.NewReader(tt.text), "logins")
		if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
			t.Errorf("ParseSenderLoginMap(%q) error %v; want prefix %q", tt.text, err, tt.err)
		}
	}
	var nilMap *SenderLoginMap
	if nilMap.Listed("a@b.example") {
		t.Error("nil map lists")
	}
}
