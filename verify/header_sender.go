package verify

import (
	"context"
	"net/mail"
	"strings"
)

// NameSenderHeaderMismatch is the config and log name of the From: header
// ownership check.
const NameSenderHeaderMismatch = "sender_header_mismatch"

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
	m *SenderLoginMap
}

// NewSenderHeaderMismatch returns the check for the map m.
func NewSenderHeaderMismatch(m *SenderLoginMap) *SenderHeaderMismatch {
	return &SenderHeaderMismatch{m: m}
}

// Name returns NameSenderHeaderMismatch.
func (*SenderHeaderMismatch) Name() string { return NameSenderHeaderMismatch }

// CheckHeader implements HeaderChecker.
func (s *SenderHeaderMismatch) CheckHeader(_ context.Context, c *Client, _ *Envelope, h *Header) Result {
	if c.Login == "" || !strings.EqualFold(h.Name, "From") {
		return Result{}
	}
	addrs, err := mail.ParseAddressList(h.Value)
	if err != nil || len(addrs) == 0 {
		return Rejected(Reply{550, [3]int{5, 7, 1}, "From: header address rejected: cannot parse it"}, "From: "+sanitize(h.Value))
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
			return Rejected(Reply{550, [3]int{5, 7, 1}, bracket(a.Address) + ": From: header address rejected: not owned by user " + sanitize(c.Login)},
				"From: "+a.Address+" is not mapped to "+c.Login)
		}
	}
	return Result{}
}
