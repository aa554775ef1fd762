package session

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
)

// The entry checks of EHLO, MAIL and RCPT: what RFC 5321 and RFC 6531
// require of every command whatever checks are configured, so that
// nothing the MTA must refuse (and would refuse in a way that reads as
// temporary) is handed to it. They are not policy: no mode, no override,
// never delayed to RCPT.

// maxHeloOctets is the longest HELO argument taken: a domain is at most
// 255 octets (RFC 5321 §4.5.3.1.2), and an address literal is shorter.
const maxHeloOctets = 255

// heloSyntax returns why name cannot be a HELO/EHLO argument (RFC 5321
// §4.1.1.1: a Domain or an address-literal): bytes that are not UTF-8
// (RFC 6531 allows UTF-8, nothing else), control characters, or more than
// 255 octets. "" when it can. Whether it is a valid host name is
// invalid_helo's business.
func heloSyntax(name string) string {
	switch {
	case len(name) > maxHeloOctets:
		return fmt.Sprintf("longer than %d octets", maxHeloOctets)
	case !utf8.ValidString(name):
		return "not UTF-8"
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Sprintf("control character %U", r)
		}
	}
	return ""
}

// refuseHelo logs and returns the reply to a HELO argument heloSyntax
// refused. The name is not echoed: it is what could not be written.
func (s *Session) refuseHelo(name, why string) error {
	reply := &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Syntax: EHLO hostname: argument " + why + " (RFC 5321 4.1.1.1)"}
	s.refuse("helo", "helo_syntax", reply, "helo", name)
	return reply
}

// errNestedMail answers MAIL inside a transaction (RFC 5321 §4.1.4: MAIL
// may not be sent while one is open), with Postfix's words.
var errNestedMail = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Error: nested MAIL command"}

// checkPath applies RFC 6531 §3.5 and RFC 5321 §4.5.3.1.1-2 to a
// reverse-path (stage mail) or forward-path (stage rcpt); utf8 says
// whether MAIL carried SMTPUTF8.
//
// Replies:
//
//	553 5.6.7 Non-ASCII address without SMTPUTF8 ...     (RFC 6531 §3.5)
//	501 5.1.7 Bad sender address syntax: ...             (MAIL, RFC 3463)
//	501 5.1.3 Bad recipient address syntax: ...          (RCPT, RFC 3463)
func (s *Session) checkPath(stage, path string, utf8 bool) error {
	if path == "" {
		return nil // the null sender
	}
	role, enhanced := "sender", smtp.EnhancedCode{5, 1, 7}
	if stage == policy.StageRcpt {
		role, enhanced = "recipient", smtp.EnhancedCode{5, 1, 3}
	}
	if !utf8 && !isASCII(path) {
		reply := &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII " + role + " address needs the SMTPUTF8 parameter of MAIL (RFC 6531 3.5)"}
		s.refuse(stage, "smtputf8", reply, pathAttr(stage), path)
		return reply
	}
	if err := address.CheckPathLimits(path); err != nil {
		reply := &smtp.SMTPError{Code: 501, EnhancedCode: enhanced, Message: "Bad " + role + " address syntax: " + err.Error() + " (RFC 5321 4.5.3.1)"}
		s.refuse(stage, "address_syntax", reply, pathAttr(stage), path)
		return reply
	}
	return nil
}

func pathAttr(stage string) string {
	if stage == policy.StageRcpt {
		return "rcpt"
	}
	return "from"
}

// postmasterPath returns where a forward-path goes: RCPT TO:<Postmaster>
// without a domain, in any case, is the configured postmaster address
// (RFC 5321 §4.1.1.3 and §4.5.1: it MUST be accepted).
func (s *Session) postmasterPath(to string) string {
	if strings.EqualFold(to, "postmaster") && s.st.Postmaster != "" {
		return s.st.Postmaster
	}
	return to
}

// refuse logs one refusal of an entry check and counts it.
func (s *Session) refuse(stage, check string, reply *smtp.SMTPError, attrs ...any) {
	s.log.Info("reject", append([]any{"stage", stage, "check", check, "mode", "enforce", "reply", replyOf(reply).String()}, attrs...)...)
	s.observe(stage, check, reply.Code, false)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
