package nonfqdnsender

import (
	"context"
	"strings"

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// Name is the check's config and log name.
const Name = "non_fqdn_sender"

// NonFQDNSender refuses a MAIL FROM whose domain is not fully qualified
// (Postfix's reject_non_fqdn_sender): no "@" at all, or a domain without a
// dot, which the MTA would complete with its own domain or could never
// bounce to. The null sender always passes (RFC 5321 §4.5.5).
//
// Replies:
//
//	504 5.5.2 <from>: Sender address rejected: need fully-qualified address
//	501 5.1.7 Bad sender address syntax              (unparseable path)
type NonFQDNSender struct {
	allowLiteral bool
}

// NewNonFQDNSender returns the check; allowLiteral lets address-literal
// senders (user@[192.0.2.1]) through, as Postfix does (the default).
func NewNonFQDNSender(allowLiteral bool) *NonFQDNSender {
	return &NonFQDNSender{allowLiteral: allowLiteral}
}

// Name returns Name.
func (*NonFQDNSender) Name() string { return Name }

// CheckMail implements policy.MailChecker.
func (n *NonFQDNSender) CheckMail(_ context.Context, _ *policy.Client, _ *policy.Envelope, from string) policy.Result {
	if from == "" || from == "<>" {
		return policy.Result{}
	}
	needFQDN := reply.Reply{Code: 504, Enhanced: [3]int{5, 5, 2}, Text: address.Bracket(from) + ": Sender address rejected: need fully-qualified address"}
	if !strings.Contains(from, "@") {
		return policy.Rejected(needFQDN, "no domain")
	}
	a, err := address.Parse(from)
	if err != nil {
		return policy.Rejected(reply.Reply{Code: 501, Enhanced: [3]int{5, 1, 7}, Text: "Bad sender address syntax"}, err.Error())
	}
	if a.Literal {
		if n.allowLiteral {
			return policy.Result{}
		}
		return policy.Rejected(needFQDN, "address literal "+a.Domain)
	}
	if !strings.Contains(a.Domain, ".") {
		return policy.Rejected(needFQDN, "domain "+a.Domain+" has no dot")
	}
	return policy.Result{}
}
