package spf

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// SPF is the spf check (RFC 7208): is the client allowed to send mail for
// the MAIL FROM domain, or, for the null sender, for its HELO name (RFC
// 7208 §2.3, checked as postmaster@helo)? The evaluation, including the
// limit of 10 DNS lookups and 2 void lookups (§4.6.4), is
// blitiri.com.ar/go/spf's, fed by the shared dns.Resolver.
//
// fail is refused with 550 5.7.23 and temperror with 451 4.7.24 (RFC 7372
// §3.2); every other result adds a Received-SPF header field (§9.1).
// Authenticated and trusted clients are not checked: SPF judges the path
// a message came by, and theirs is the submission path.
type SPF struct {
	r        *dns.Resolver
	hostname string
}

// NewSPF builds the check on r. hostname is ours, named as the receiver
// in Received-SPF.
func NewSPF(r *dns.Resolver, hostname string) *SPF {
	return &SPF{r: r, hostname: hostname}
}

// Name is the check's configuration and log name.
func (*SPF) Name() string { return Name }

// Name is the check's config and log name.
const Name = "spf"

// CheckMail evaluates SPF for the client's address and the sender, and
// leaves the result on env (method "spf") for later checks.
func (s *SPF) CheckMail(ctx context.Context, c *policy.Client, env *policy.Envelope, from string) policy.Result {
	if c.Login != "" || c.Trusted || !c.Addr.IsValid() {
		return policy.Result{}
	}
	ip := c.Addr.Unmap()
	q := spfQuery{ip: ip, helo: c.Helo, from: from, identity: "mailfrom", sender: from}
	if from == "" {
		q.identity, q.sender = "helo", "postmaster@"+c.Helo
	}
	domain := address.Domain(q.sender)
	if domain == "" || strings.HasPrefix(domain, "[") || !strings.Contains(domain, ".") {
		// RFC 7208 §2.3, §4.3: no domain to check.
		return policy.Result{Prepend: []string{s.header(q, spf.None, "")}, Evidence: "spf none: no domain to check"}
	}
	ascii, err := address.LookupName(domain)
	if err != nil {
		return policy.Result{Prepend: []string{s.header(q, spf.None, "")}, Evidence: fmt.Sprintf("spf none: domain %q: %v", domain, err)}
	}
	q.sender = q.sender[:strings.LastIndexByte(q.sender, '@')+1] + ascii

	res, err := spf.CheckHostWithSender(net.IP(ip.AsSlice()), c.Helo, q.sender,
		spf.WithContext(ctx), spf.WithResolver(spfResolver{s.r}))
	problem := ""
	if err != nil {
		problem = err.Error()
	}
	prop := "smtp.mailfrom"
	if q.identity == "helo" {
		prop = "smtp.helo"
	}
	// The result travels on the envelope for later checks (DMARC).
	env.AddAuth(policy.AuthResult{Method: "spf", Result: string(res), Domain: ascii, Property: prop})
	evidence := fmt.Sprintf("spf %s: identity=%s domain=%s ip=%s", res, q.identity, ascii, ip)
	if problem != "" {
		evidence += ": " + problem
	}
	switch res {
	case spf.Fail:
		return policy.Rejected(reply.Reply{Code: 550, Enhanced: [3]int{5, 7, 23},
			Text: fmt.Sprintf("SPF check failed: %s does not designate %s as permitted sender", ascii, ip)}, evidence)
	case spf.TempError:
		return policy.Rejected(reply.Reply{Code: 451, Enhanced: [3]int{4, 7, 24},
			Text: fmt.Sprintf("SPF temporary error for %s, try again later", ascii)}, evidence)
	case spf.PermError:
		// §2.6.7: the domain's record is broken; the mail is judged
		// without SPF, but the header says why.
		return policy.Result{Prepend: []string{s.header(q, res, problem)}, Evidence: evidence, Log: true}
	}
	return policy.Result{Prepend: []string{s.header(q, res, "")}, Evidence: evidence}
}

// spfQuery is what one SPF check is about.
type spfQuery struct {
	ip       netip.Addr
	helo     string
	from     string // MAIL FROM, "" for the null sender
	identity string // "mailfrom" or "helo"
	sender   string // the address checked: from, or postmaster@helo
}

// header formats a Received-SPF field as RFC 7208 §9.1 shows it.
func (s *SPF) header(q spfQuery, res spf.Result, problem string) string {
	var comment string
	switch res {
	case spf.Pass:
		comment = fmt.Sprintf("domain of %s designates %s as permitted sender", q.sender, q.ip)
	case spf.Fail:
		comment = fmt.Sprintf("domain of %s does not designate %s as permitted sender", q.sender, q.ip)
	case spf.SoftFail:
		comment = fmt.Sprintf("domain of transitioning %s does not designate %s as permitted sender", q.sender, q.ip)
	case spf.Neutral:
		comment = fmt.Sprintf("%s is neither permitted nor denied by domain of %s", q.ip, q.sender)
	case spf.PermError:
		comment = fmt.Sprintf("permanent error in processing domain of %s", q.sender)
	case spf.TempError:
		comment = fmt.Sprintf("temporary error in processing domain of %s", q.sender)
	default:
		comment = fmt.Sprintf("domain of %s does not designate permitted sender hosts", q.sender)
	}
	if s.hostname != "" {
		comment = s.hostname + ": " + comment
	}
	kv := []string{
		"client-ip=" + headerValue(q.ip.String()),
		"envelope-from=" + headerValue(q.from),
		"helo=" + headerValue(q.helo),
	}
	if s.hostname != "" {
		kv = append(kv, "receiver="+headerValue(s.hostname))
	}
	kv = append(kv, "identity="+q.identity)
	if problem != "" {
		kv = append(kv, "problem="+headerValue(problem))
	}
	return fmt.Sprintf("Received-SPF: %s (%s) %s;", res, headerComment(comment), strings.Join(kv, "; "))
}

// headerComment makes s safe inside a comment (RFC 5322 §3.2.2): no
// control characters, parentheses and backslashes quoted. The text comes
// from the client (HELO, MAIL FROM) and must not end the header field.
func headerComment(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			continue
		case r == '(' || r == ')' || r == '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// headerValue is a key-value-pair value of RFC 7208 §9.1: the value as a
// dot-atom when it is one, else a quoted-string.
func headerValue(s string) string {
	if isDotAtom(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f:
			continue
		case r == '"' || r == '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0) {
			return false
		}
	}
	return true
}

// spfResolver gives the SPF library our dns.Resolver, with the cache and the
// session's context, in the shape of net.Resolver it asks for. Errors are
// *net.DNSError, unwrapped, as the library tells not-found from temporary
// failures by type assertion.
type spfResolver struct{ r *dns.Resolver }

func (s spfResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return s.r.LookupTXT(ctx, name)
}

func (s spfResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, err := s.r.LookupMX(ctx, name)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, len(mxs))
	for i, mx := range mxs {
		out[i] = &net.MX{Host: mx.Mx, Pref: mx.Preference}
	}
	return out, nil
}

func (s spfResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	addrs, err := s.r.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, len(addrs))
	for i, a := range addrs {
		out[i] = net.IPAddr{IP: net.IP(a.AsSlice())}
	}
	return out, nil
}

func (s spfResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	return s.r.LookupAddr(ctx, ip)
}
