package session

import (
	"errors"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestLoginServer(t *testing.T) {
	ok := func(identity, login, password string) error {
		if login == "alice" && password == "pw" {
			return nil
		}
		return errAuthInvalid
	}
	type step struct {
		resp      []byte
		challenge string
		done      bool
		code      int // expected SMTP error code, 0 for none
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"no initial response", []step{{nil, "Username:", false, 0}, {[]byte("alice"), "Password:", false, 0}, {[]byte("pw"), "", true, 0}}},
		{"user name as initial response", []step{{[]byte("alice"), "Password:", false, 0}, {[]byte("pw"), "", true, 0}}},
		{"wrong password", []step{{[]byte("alice"), "Password:", false, 0}, {[]byte("nope"), "", true, 535}}},
		{"empty initial response (=) is an empty user name", []step{{[]byte{}, "", true, 535}}},
		{"NUL in user name", []step{{[]byte("al\x00ice"), "", true, 535}}},
		{"NUL in password", []step{{[]byte("alice"), "Password:", false, 0}, {[]byte("pw\x00"), "", true, 535}}},
		{"empty password", []step{{nil, "Username:", false, 0}, {[]byte("alice"), "Password:", false, 0}, {[]byte{}, "", true, 535}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &loginServer{auth: ok}
			for i, s := range tt.steps {
				ch, done, err := l.Next(s.resp)
				if string(ch) != s.challenge || done != s.done {
					t.Fatalf("step %d: challenge %q done %v, want %q %v", i, ch, done, s.challenge, s.done)
				}
				var se *smtp.SMTPError
				switch {
				case s.code == 0 && err != nil:
					t.Fatalf("step %d: unexpected error %v", i, err)
				case s.code != 0 && (!errors.As(err, &se) || se.Code != s.code):
					t.Fatalf("step %d: error %v, want code %d", i, err, s.code)
				}
			}
			if _, _, err := l.Next([]byte("more")); err == nil {
				t.Errorf("Next after the end accepted")
			}
		})
	}
}
