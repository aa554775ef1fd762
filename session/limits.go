package session

import (
	"net/netip"

	"github.com/emersion/go-smtp"
)

// Limiter holds the message and recipient rates shared by all sessions
// (limits.messages_per_ip, limits.recipients_per_ip,
// limits.recipients_per_sender). Each method takes one token and returns
// the name of the limit that refused, or "" when allowed.
type Limiter interface {
	AllowMessage(client netip.Addr) string
	AllowRecipient(client netip.Addr, sender string) string
}

// Metrics observes what sessions decide; the proxy exports it. Calls must
// be cheap and safe for concurrent use.
type Metrics interface {
	// Decision is one reply given (or, in warn mode, that would have been
	// given) by a check at a stage; code 0 is a pass, warn says warn mode.
	Decision(stage, check string, code int, warn bool)
	// Transaction is the end of a DATA: the reply the client got.
	Transaction(code int)
}

// LimitError is what Settings.Dial returns when a limit of ours, not the
// MTA, refused to open a connection to the MTA (the proxy's
// upstream.max_connections caps): the client gets Reply at RCPT and the
// log names Check.
type LimitError struct {
	Check string
	Reply *smtp.SMTPError
}

func (e *LimitError) Error() string { return e.Check + ": " + e.Reply.Message }

// limitRefusal answers a RCPT that a LimitError refused, logged once.
func (s *Session) limitRefusal(le *LimitError, to string) error {
	r := le.Reply
	s.log.Info("reject", append([]any{"stage", "rcpt", "check", le.Check, "reply", replyOf(r).String(), "rcpt", to}, s.envAttrs()...)...)
	s.observe("rcpt", le.Check, r.Code, false)
	return r
}

// rateLimit takes the tokens for one more recipient (and, at the
// transaction's first, for one more message). Over a limit it is 450
// 4.7.1, like Postfix's anvil limits: the client may retry later.
func (s *Session) rateLimit(to string) error {
	lim := s.st.Limiter
	if lim == nil || s.client.Trusted {
		return nil
	}
	check := ""
	if s.limitedTxn != s.txn {
		s.limitedTxn = s.txn
		check = lim.AllowMessage(s.client.Addr)
	}
	if check == "" {
		check = lim.AllowRecipient(s.client.Addr, s.env.From)
	}
	if check == "" {
		return nil
	}
	reply := &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Error: too much mail from " + s.client.Addr.String() + ", try again later"}
	if check == "recipients_per_sender" {
		reply.Message = "<" + s.env.From + ">: Sender address rejected: too many recipients, try again later"
	}
	s.log.Info("reject", append([]any{"stage", "rcpt", "check", check, "reply", replyOf(reply).String(), "rcpt", to}, s.envAttrs()...)...)
	s.observe("rcpt", check, 450, false)
	return reply
}

// refusedEarlier reports whether a refusal is already held for RCPT, so
// that later stages skip their checks: a client that will be refused
// anyway costs no DNS queries.
func (s *Session) refusedEarlier() bool {
	return s.connRefusal != nil || s.heloRefusal != nil
}

func (s *Session) observe(stage, check string, code int, warn bool) {
	if s.st.Metrics != nil {
		s.st.Metrics.Decision(stage, check, code, warn)
	}
}

func (s *Session) observeTransaction(code int) {
	if s.st.Metrics != nil {
		s.st.Metrics.Transaction(code)
	}
}
