package sendermap

import (
	"context"
	"net/mail"
	"strings"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/table"
)

// SenderHeaderMismatch applies the sender login map to the From: header of
// mail from authenticated users: the visible From is what a phished reader
// trusts, and an account that is allowed to send as itself must not write
// someone else's address there. Unauthenticated mail passes (other checks
// decide it).
//
// Replies:
//
//	550 5.7.1 <addr>: From: header address rejected: not owned by user USER
type SenderHeaderMismatch struct {
	m *table.SenderLoginMap
}

// NewSenderHeaderMismatch returns the check for the map m.
func NewSenderHeaderMismatch(m *table.SenderLoginMap) *SenderHeaderMismatch {
	return &SenderHeaderMismatch{m: m}
}

// Name returns NameHeaderMismatch.
func (*SenderHeaderMismatch) Name() string { return NameHeaderMismatch }

// CheckHeader implements policy.HeaderChecker.
func (s *SenderHeaderMismatch) CheckHeader(_ context.Context, c *policy.Client, _ *policy.Envelope, h *policy.Header) policy.Result {
	if c.Login == "" || !strings.EqualFold(h.Name, "From") {
		return policy.Result{}
	}
	addrs, err := mail.ParseAddressList(h.Value)
	if err != nil || len(addrs) == 0 {
		return policy.Rejected(reply.New(550, [3]int{5, 7, 1}, "From: header address rejected: cannot parse it"), "From: "+address.Printable(h.Value))
	}
	for _, a := range addrs {
		owned := false
		for _, o := range s.m.Owners(a.Address) {
			if strings.EqualFold(o, c.Login) {
				owned = true
				break
			}
		}
		if !owned {
			return policy.Rejected(reply.New(550, [3]int{5, 7, 1}, address.Bracket(a.Address)+": From: header address rejected: not owned by user "+address.Printable(c.Login)),
				"From: "+a.Address+" is not mapped to "+c.Login)
		}
	}
	return policy.Result{}
}
