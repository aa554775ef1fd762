package smtp_test

import (
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// Server.Offer withholds enabled extensions (a proxy offers only what the
// server behind it does); their parameters get 555 5.5.4 (RFC 5321
// §4.1.1.11).
func TestServerOfferWithholds(t *testing.T) {
	_, s, c, scanner, caps := testServerEhlo(t, func(s *smtp.Server) {
		s.EnableSMTPUTF8 = true
		s.EnableDSN = true
		s.Offer = func(kw string) bool { return kw != "SMTPUTF8" }
	})
	defer s.Close()
	defer c.Close()
	if caps["SMTPUTF8"] || !caps["DSN"] {
		t.Fatalf("EHLO offered %v, want DSN without SMTPUTF8", caps)
	}
	for _, tc := range []struct{ line, want string }{
		{"MAIL FROM:<root@nsa.gov> SMTPUTF8", "555 5.5.4 "},
		{"MAIL FROM:<root@nsa.gov> XFOO=1", "555 5.5.4 "},
		{"MAIL FROM:<root@nsa.gov> RET=HDRS ENVID=a+2Bb", "250 "},
		{"RCPT TO:<a@b.example> XFOO=1", "555 5.5.4 "},
	} {
		io.WriteString(c, tc.line+"\r\n")
		scanner.Scan()
		if !strings.HasPrefix(scanner.Text(), tc.want) {
			t.Errorf("%s: %q, want %q", tc.line, scanner.Text(), tc.want)
		}
	}
}

type wordsBackend struct{ smtp.Backend }

type wordsSession struct{ smtp.Session }

func (wordsBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return wordsSession{}, nil }

func (wordsSession) Mail(string, *smtp.MailOptions) error {
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 1, 0}, Message: "Ok"}
}

func (wordsSession) Rcpt(string, *smtp.RcptOptions) error {
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 1, 5}, Message: "Destination address valid"}
}

func (wordsSession) Reset()        {}
func (wordsSession) Logout() error { return nil }

// A 2xx *SMTPError from Mail or Rcpt is the success reply, word for word.
func TestServerSessionSuccessReplies(t *testing.T) {
	_, s, c, scanner := testServerGreeted(t, func(s *smtp.Server) { s.Backend = wordsBackend{} })
	defer s.Close()
	defer c.Close()
	for _, tc := range []struct{ line, want string }{
		{"HELO localhost", "250 2.0.0 Hello localhost"},
		{"MAIL FROM:<root@nsa.gov>", "250 2.1.0 Ok"},
		{"RCPT TO:<a@b.example>", "250 2.1.5 Destination address valid"},
	} {
		io.WriteString(c, tc.line+"\r\n")
		scanner.Scan()
		if scanner.Text() != tc.want {
			t.Errorf("%s: %q, want %q", tc.line, scanner.Text(), tc.want)
		}
	}
}
