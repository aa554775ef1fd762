package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// UnknownSenderDomain is the unknown_sender_domain check: mail from a
// domain that cannot receive mail is refused at MAIL FROM, because its
// bounces could not be delivered (Postfix's reject_unknown_sender_domain).
//
// A domain passes when it has an MX record with a host, or, without MX
// records, an A or AAAA record (the implicit MX of RFC 5321 §5.1). As in
// Postfix, MX hosts are not resolved: an MX that exists is enough.
type UnknownSenderDomain struct {
	r *Resolver
}

// NewUnknownSenderDomain builds the check on r.
func NewUnknownSenderDomain(r *Resolver) *UnknownSenderDomain {
	return &UnknownSenderDomain{r: r}
}

// Name is the check's configuration and log name.
func (*UnknownSenderDomain) Name() string { return "unknown_sender_domain" }

func senderDomainNotFound(from string) Reply {
	return Reply{Code: 550, Enhanced: [3]int{5, 1, 8}, Text: fmt.Sprintf("<%s>: Sender address rejected: Domain not found", from)}
}

// RFC 7505 §4.2 asks to refuse mail whose sender domain publishes a null MX.
func senderDomainNoMail(from string) Reply {
	return Reply{Code: 550, Enhanced: [3]int{5, 1, 8}, Text: fmt.Sprintf("<%s>: Sender address rejected: Domain does not accept mail", from)}
}

// A DNS failure may heal: 4xx so that the client retries (RFC 5321 §4.2.5).
func senderDomainTempFail(from string) Reply {
	return Reply{Code: 450, Enhanced: [3]int{4, 1, 8}, Text: fmt.Sprintf("<%s>: Sender address rejected: Domain not found (DNS temporary failure)", from)}
}

// CheckMail looks up the MAIL FROM domain. The null sender and address
// literals (user@[192.0.2.1]) are not looked at.
func (u *UnknownSenderDomain) CheckMail(ctx context.Context, c *Client, from string) Result {
	domain := addressDomain(from)
	if domain == "" || strings.HasPrefix(domain, "[") {
		return Result{}
	}
	name, err := lookupName(domain)
	if err != nil {
		return Rejected(senderDomainNotFound(from), fmt.Sprintf("domain %q: %v", domain, err))
	}

	mx, err := u.r.Lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return Rejected(senderDomainTempFail(from), err.Error())
	}
	switch {
	case mx.ServFail():
		return Rejected(senderDomainTempFail(from), mx.String())
	case mx.NXDomain():
		return Rejected(senderDomainNotFound(from), mx.String())
	}
	if mxs := mx.Records(dns.TypeMX); len(mxs) > 0 {
		if nullMX(mxs) {
			return Rejected(senderDomainNoMail(from), mx.String())
		}
		return Result{}
	}

	// No MX: the domain's own addresses stand in for it.
	var a6 *Answer
	var err6 error
	done := make(chan struct{})
	go func() {
		defer close(done)
		a6, err6 = u.r.Lookup(ctx, name, dns.TypeAAAA)
	}()
	a4, err4 := u.r.Lookup(ctx, name, dns.TypeA)
	<-done
	evidence := []string{mx.String()}
	failed := false
	for _, l := range []struct {
		a   *Answer
		err error
	}{{a4, err4}, {a6, err6}} {
		switch {
		case l.err != nil:
			evidence = append(evidence, l.err.Error())
			failed = true
		case len(l.a.Records(0)) > 0:
			return Result{}
		default:
			evidence = append(evidence, l.a.String())
			failed = failed || l.a.ServFail()
		}
	}
	if failed {
		return Rejected(senderDomainTempFail(from), strings.Join(evidence, "; "))
	}
	return Rejected(senderDomainNotFound(from), strings.Join(evidence, "; "))
}

// nullMX reports whether the MX set names no host: the null MX of RFC 7505
// ("MX 0 .") or, equally useless, any set whose hosts are all ".".
func nullMX(mxs []dns.RR) bool {
	for _, rr := range mxs {
		if rr.(*dns.MX).Mx != "." {
			return false
		}
	}
	return true
}

// addressDomain returns the domain of a mailbox, without a trailing dot;
// "" when there is none. The last "@" separates it, since a quoted local
// part may hold an "@" of its own.
func addressDomain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(addr[i+1:], ".")
}

// lookupName is the DNS name of a mail domain: A-labels for an
// internationalized domain (RFC 6531 allows UTF-8 in MAIL FROM).
func lookupName(domain string) (string, error) {
	for i := 0; i < len(domain); i++ {
		if domain[i] >= 0x80 {
			return idna.Lookup.ToASCII(domain)
		}
	}
	return domain, nil
}
