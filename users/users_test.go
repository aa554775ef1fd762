package users

import (
	"encoding/base64"
	"fmt"
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
	u, err := Parse(strings.NewReader("# users\nalice:"+bc+"\n\nbob:"+a2+"\n"), "users")
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
		_, err := Parse(strings.NewReader(tt.in), "users")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.in, err, tt.want)
		}
	}
	bc, _ := HashPassword("x", 4)
	if _, err := Parse(strings.NewReader("a:"+bc+"\na:"+bc+"\n"), "users"); err == nil || !strings.Contains(err.Error(), "users:2: login \"a\" listed twice") {
		t.Errorf("duplicate login: %v", err)
	}
}

func argon2Line(t *testing.T, pw string, m, tm uint32, p uint8, saltLen, keyLen int) string {
	t.Helper()
	salt := []byte(strings.Repeat("s", saltLen))
	key := argon2.IDKey([]byte(pw), salt, tm, m, p, uint32(keyLen))
	return fmt.Sprintf("{ARGON2ID}$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", m, tm, p,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

// An unknown login must cost what a real one costs: the dummy it is
// compared against has the scheme and parameters of the real hashes (no
// timing: which hash the dummy is). A file that mixes schemes or costs is
// warned about, and the dummy follows the most common kind.
func TestUsersDummyMatchesRealHashes(t *testing.T) {
	bc := func(cost int) string {
		h, err := HashPassword("pw", cost)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	a2 := argon2Line(t, "pw", 2048, 2, 1, 16, 32)
	for _, tt := range []struct {
		name    string
		file    string
		dummy   string // the dummy's profile
		warning string // "" for none
	}{
		{"argon2id only", "a:" + a2 + "\nb:" + a2 + "\n", "argon2id m=2048,t=2,p=1 salt=16 key=32", ""},
		{"argon2id other salt and key sizes", "a:" + argon2Line(t, "pw", 1024, 1, 2, 8, 16) + "\n", "argon2id m=1024,t=1,p=2 salt=8 key=16", ""},
		{"bcrypt only", "a:" + bc(5) + "\nb:" + bc(5) + "\n", "bcrypt cost 5", ""},
		{"bcrypt mixed costs", "a:" + bc(4) + "\nb:" + bc(5) + "\nc:" + bc(5) + "\n", "bcrypt cost 5", "mixes 2 kinds of hash"},
		{"bcrypt and argon2id", "a:" + bc(4) + "\nb:" + a2 + "\nc:" + a2 + "\n", "argon2id m=2048,t=2,p=1 salt=16 key=32", "mixes 2 kinds of hash"},
		{"empty", "", "bcrypt cost 4", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := Parse(strings.NewReader(tt.file), "users")
			if err != nil {
				t.Fatal(err)
			}
			if got := u.dummy.profile(); got != tt.dummy {
				t.Errorf("dummy is %q, want %q", got, tt.dummy)
			}
			w := strings.Join(u.Warnings(), "\n")
			if (tt.warning == "") != (w == "") || !strings.Contains(w, tt.warning) {
				t.Errorf("warnings %q, want %q", w, tt.warning)
			}
			if u.Authenticate("nobody", "pw") {
				t.Errorf("unknown login authenticated")
			}
		})
	}
}
