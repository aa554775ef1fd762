package verify

import (
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestUsers(t *testing.T) {
	bc, err := HashPassword("s3cret", 4)
	if err != nil {
		t.Fatal(err)
	}
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte("hunter2"), salt, 1, 1024, 1, 32)
	a2 := "{ARGON2ID}$argon2id$v=19$m=1024,t=1,p=1$" + base64.RawStdEncoding.EncodeToString(salt) + "$" + base64.RawStdEncoding.EncodeToString(key)
	u, err := ParseUsers(strings.NewReader("# users\nalice:"+bc+"\n\nbob:"+a2+"\n"), "users")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		login, pw string
		want      bool
	}{
		{"alice", "s3cret", true},
		{"alice", "S3cret", false},
		{"bob", "hunter2", true},
		{"bob", "hunter3", false},
		{"carol", "s3cret", false},
		{"", "", false},
	} {
		if got := u.Authenticate(tt.login, tt.pw); got != tt.want {
			t.Errorf("Authenticate(%q, %q) = %v", tt.login, tt.pw, got)
		}
	}
}

func TestUsersErrorsNameLine(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice\n", "users:1: want login:hash"},
		{"alice:$2a$04$short\n", "users:1: alice: bad bcrypt hash"},
		{"# c\nalice:plaintext\n", "users:2: alice: unsupported hash"},
		{"bob:{ARGON2ID}$argon2id$v=19$m=0,t=1,p=1$c2FsdA$aGFzaA\n", "users:1: bob: bad argon2id parameters"},
	} {
		_, err := ParseUsers(strings.NewReader(tt.in), "users")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.in, err, tt.want)
		}
	}
	bc, _ := HashPassword("x", 4)
	if _, err := ParseUsers(strings.NewReader("a:"+bc+"\na:"+bc+"\n"), "users"); err == nil || !strings.Contains(err.Error(), "users:2: login \"a\" listed twice") {
		t.Errorf("duplicate login: %v", err)
	}
}
