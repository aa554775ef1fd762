package senderdomain

import (
	"context"
	"fmt"
	"strings"

	miekg "github.com/miekg/dns"
	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// UnknownSenderDomain is the unknown_sender_domain check: mail from a
// domain that cannot receive mail is refused at MAIL FROM, because its
// bounces could not be delivered (Postfix's reject_unknown_sender_domain).
//
// A domain passes when it has an MX record with a host, or, without MX
// records, an A or AAAA record (the implicit MX of RFC 5321 §5.1). As in
// Postfix, MX hosts are not resolved: an MX that exists is enough.
type UnknownSenderDomain struct {
	r *dns.Resolver
}

// NewUnknownSenderDomain builds the check on r.
func NewUnknownSenderDomain(r *dns.Resolver) *UnknownSenderDomain {
	return &UnknownSenderDomain{r: r}
}

// Name is the check's configuration and log name.
func (*UnknownSenderDomain) Name() string { return Name }

// Name is the check's config and log name.
const Name = "unknown_sender_domain"

func senderDomainNotFound(from string) reply.Reply {
	return reply.Reply{Code: 550, Enhanced: [3]int{5, 1, 8}, Text: fmt.Sprintf("<%s>: Sender address rejected: Domain not found", from)}
}

// RFC 7505 §4.2 asks to refuse mail whose sender domain publishes a null MX.
func senderDomainNoMail(from string) reply.Reply {
	return reply.Reply{Code: 550, Enhanced: [3]int{5, 1, 8}, Text: fmt.Sprintf("<%s>: Sender address rejected: Domain does not accept mail", from)}
}

// A DNS failure may heal: 4xx so that the client retries (RFC 5321 §4.2.5).
func senderDomainTempFail(from string) reply.Reply {
	return reply.Reply{Code: 450, Enhanced: [3]int{4, 1, 8}, Text: fmt.Sprintf("<%s>: Sender address rejected: Domain not found (DNS temporary failure)", from)}
}

// CheckMail looks up the MAIL FROM domain. The null sender and address
// literals (user@[192.0.2.1]) are not looked at.
func (u *UnknownSenderDomain) CheckMail(ctx context.Context, c *policy.Client, _ *policy.Envelope, from string) policy.Result {
	domain := address.Domain(from)
	if domain == "" || strings.HasPrefix(domain, "[") {
		return policy.Result{}
	}
	name, err := address.LookupName(domain)
	if err != nil {
		return policy.Rejected(senderDomainNotFound(from), fmt.Sprintf("domain %q: %v", domain, err))
	}

	mx, err := u.r.Lookup(ctx, name, miekg.TypeMX)
	if err != nil {
		return policy.Rejected(senderDomainTempFail(from), err.Error())
	}
	switch {
	case mx.ServFail():
		return policy.Rejected(senderDomainTempFail(from), mx.String())
	case mx.NXDomain():
		return policy.Rejected(senderDomainNotFound(from), mx.String())
	}
	if mxs := mx.Records(miekg.TypeMX); len(mxs) > 0 {
		if nullMX(mxs) {
			return policy.Rejected(senderDomainNoMail(from), mx.String())
		}
		return policy.Result{}
	}

	// No MX: the domain's own addresses stand in for it.
	var a6 *dns.Answer
	var err6 error
	done := make(chan struct{})
	go func() {
		defer close(done)
		a6, err6 = u.r.Lookup(ctx, name, miekg.TypeAAAA)
	}()
	a4, err4 := u.r.Lookup(ctx, name, miekg.TypeA)
	<-done
	evidence := []string{mx.String()}
	failed := false
	for _, l := range []struct {
		a   *dns.Answer
		err error
	}{{a4, err4}, {a6, err6}} {
		switch {
		case l.err != nil:
			evidence = append(evidence, l.err.Error())
			failed = true
		case len(l.a.Records(0)) > 0:
			return policy.Result{}
		default:
			evidence = append(evidence, l.a.String())
			failed = failed || l.a.ServFail()
		}
	}
	if failed {
		return policy.Rejected(senderDomainTempFail(from), strings.Join(evidence, "; "))
	}
	return policy.Rejected(senderDomainNotFound(from), strings.Join(evidence, "; "))
}

// nullMX reports whether the MX set names no host: the null MX of RFC 7505
// ("MX 0 .") or, equally useless, any set whose hosts are all ".".
func nullMX(mxs []miekg.RR) bool {
	for _, rr := range mxs {
		if rr.(*miekg.MX).Mx != "." {
			return false
		}
	}
	return true
}
