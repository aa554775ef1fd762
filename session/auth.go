package session

import (
	"bytes"
	"errors"
	"net/netip"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Authenticator checks our users' credentials (users.Users).
type Authenticator interface {
	Authenticate(login, password string) bool
}

// AuthLimiter throttles password guessing per client address and per
// login, across sessions.
type AuthLimiter interface {
	// Locked returns the name of the limit that locks ip (or login from
	// ip, when login is not empty) out, or "".
	Locked(ip netip.Addr, login string) string
	// Failed records a failed attempt.
	Failed(ip netip.Addr, login string)
	// Succeeded records a successful login from ip.
	Succeeded(ip netip.Addr, login string)
}

// Replies of SMTP AUTH (RFC 4954 §4, §6).
var (
	errEncryptionRequired = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
	errAuthInTransaction  = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "AUTH not permitted during a mail transaction"}
	errAuthInvalid        = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errAuthLocked         = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentication attempts, try again later"}
	errAuthTooMany        = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentication attempts, closing connection"}
	errAuthMechanism      = &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unrecognized authentication type"}
	errAuthRequired       = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errAuthUnavailable    = &smtp.SMTPError{Code: 502, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "AUTH not available"}
)

// authOffered reports whether AUTH may be used now: users are configured
// and the connection is encrypted, or the listener allows plain text
// (loopback webmail). RFC 8314 §3 and RFC 4954 §4: no passwords in clear.
func (s *Session) authOffered() bool {
	return s.st.Users != nil && (s.client.TLS || s.peer.AllowInsecureAuth)
}

// AuthMechanisms implements smtp.AuthSession: PLAIN and LOGIN, only where
// AUTH is offered (go-smtp advertises nothing when this is empty).
func (s *Session) AuthMechanisms() []string {
	if !s.authOffered() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth implements smtp.AuthSession.
func (s *Session) Auth(mech string) (sasl.Server, error) {
	switch {
	case s.st.Users == nil:
		return nil, errAuthUnavailable
	case !s.authOffered():
		s.log.Info("auth refused", "stage", "auth", "reply", "538 5.7.11", "reason", "no TLS")
		return nil, errEncryptionRequired
	case s.peer.Busy():
		return nil, errAuthInTransaction
	}
	if s.st.AuthLimiter != nil {
		if limit := s.st.AuthLimiter.Locked(s.client.Addr, ""); limit != "" {
			s.log.Warn("auth locked out", "stage", "auth", "check", "auth_lockout", "mode", "enforce", "limit", limit, "reply", "454 4.7.0")
			s.observe("auth", "auth_lockout", 454, false)
			return nil, errAuthLocked
		}
	}
	switch mech {
	case sasl.Plain:
		return replyErrors{sasl.NewPlainServer(s.authenticate)}, nil
	case sasl.Login:
		return replyErrors{&loginServer{auth: s.authenticate}}, nil
	}
	return nil, errAuthMechanism
}

// replyErrors turns a mechanism's own errors (a PLAIN response without its
// NULs, say) into 501 5.5.2 (RFC 4954 §4) instead of go-smtp's 454 with
// the library's text.
type replyErrors struct{ sasl.Server }

var errAuthMalformed = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Malformed authentication response"}

func (r replyErrors) Next(response []byte) ([]byte, bool, error) {
	c, done, err := r.Server.Next(response)
	if err != nil {
		if _, ok := err.(*smtp.SMTPError); !ok {
			err = errAuthMalformed
		}
	}
	return c, done, err
}

// authenticate checks one login. The password is never logged.
func (s *Session) authenticate(identity, login, password string) error {
	if limit := s.authLocked(login); limit != "" {
		s.log.Warn("auth locked out", "stage", "auth", "check", "auth_lockout", "mode", "enforce", "limit", limit, "login", login, "reply", "454 4.7.0")
		s.observe("auth", "auth_lockout", 454, false)
		return errAuthLocked
	}
	// No proxy authorisation: the authorization identity, if given, must
	// be the login itself (RFC 4616 §2).
	if (identity == "" || identity == login) && s.st.Users.Authenticate(login, password) {
		s.client.Login = login
		if s.st.AuthLimiter != nil {
			s.st.AuthLimiter.Succeeded(s.client.Addr, login)
		}
		s.log.Info("auth", "stage", "auth", "login", login, "reply", "235 2.7.0")
		s.observe("auth", "auth", 235, false)
		// The MTA was told who the client is without the login; the
		// next transaction dials again with XCLIENT LOGIN=.
		s.releaseUpstream()
		return nil
	}
	s.authFailures++
	if s.st.AuthLimiter != nil {
		s.st.AuthLimiter.Failed(s.client.Addr, login)
	}
	if s.authFailures >= s.st.MaxAuthFailures && s.st.MaxAuthFailures > 0 {
		s.log.Warn("auth failed", "stage", "auth", "login", login, "failures", s.authFailures, "reply", "421 4.7.0")
		s.peer.HangUpAfterReply()
		s.observe("auth", "auth_failures", 421, false)
		return errAuthTooMany
	}
	s.log.Info("auth failed", "stage", "auth", "login", login, "failures", s.authFailures, "reply", "535 5.7.8")
	s.observe("auth", "auth", 535, false)
	return errAuthInvalid
}

func (s *Session) authLocked(login string) string {
	if s.st.AuthLimiter == nil {
		return ""
	}
	return s.st.AuthLimiter.Locked(s.client.Addr, login)
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login), which go-sasl has only as a client and
// which Outlook and many printers and scanners still use: "Username:",
// then "Password:", each answered in base64. An initial response is the
// user name.
type loginServer struct {
	auth     func(identity, login, password string) error
	login    string
	haveUser bool
	done     bool
}

var errLoginSyntax = errors.New("smtpgate: LOGIN exchange out of order")

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch {
	case l.done:
		return nil, true, errLoginSyntax
	case !l.haveUser && response == nil:
		return []byte("Username:"), false, nil
	case !l.haveUser:
		if len(response) == 0 || bytes.ContainsAny(response, "\x00\r\n") {
			l.done = true
			return nil, true, errAuthInvalid
		}
		l.login, l.haveUser = string(response), true
		return []byte("Password:"), false, nil
	}
	l.done = true
	if bytes.IndexByte(response, 0) >= 0 {
		return nil, true, errAuthInvalid
	}
	if err := l.auth("", l.login, string(response)); err != nil {
		return nil, true, err
	}
	return nil, true, nil
}
