package sendermap

import (
	"context"
	"fmt"
	"strings"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/table"
)

// Config and log names of the sender login map checks.
const (
	NameLoginMismatch  = "sender_login_mismatch"
	NameHeaderMismatch = "sender_header_mismatch"
)

// SenderLoginMismatch lets an authenticated user send only from addresses
// the sender login map gives them (Postfix's
// reject_authenticated_sender_login_mismatch). Unauthenticated clients and
// the null sender pass: OwnDomainForgery handles the former.
//
// Replies:
//
//	553 5.7.1 <from>: Sender address rejected: not owned by user USER
type SenderLoginMismatch struct {
	m *table.SenderLoginMap
}

// NewSenderLoginMismatch returns the check for the map m.
func NewSenderLoginMismatch(m *table.SenderLoginMap) *SenderLoginMismatch {
	return &SenderLoginMismatch{m: m}
}

// Name returns NameLoginMismatch.
func (*SenderLoginMismatch) Name() string { return NameLoginMismatch }

// CheckMail implements policy.MailChecker.
func (s *SenderLoginMismatch) CheckMail(_ context.Context, c *policy.Client, _ *policy.Envelope, from string) policy.Result {
	if from == "" || from == "<>" || c.Login == "" {
		return policy.Result{}
	}
	owners, where := s.m.Lookup(from)
	for _, o := range owners {
		// Postfix compares SASL login names case-insensitively.
		if strings.EqualFold(o, c.Login) {
			return policy.Result{}
		}
	}
	ev := from + " is not in the sender login map"
	if len(owners) > 0 {
		ev = fmt.Sprintf("%s is owned by %s (%s)", from, strings.Join(owners, ","), where)
	}
	return policy.Rejected(reply.Reply{Code: 553, Enhanced: [3]int{5, 7, 1},
		Text: address.Bracket(from) + ": Sender address rejected: not owned by user " + address.Printable(c.Login)}, ev)
}
