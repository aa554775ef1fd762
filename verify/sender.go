package verify

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Config and log names of the sender checks.
const (
	NameNonFQDNSender       = "non_fqdn_sender"
	NameOwnDomainForgery    = "own_domain_forgery"
	NameSenderLoginMismatch = "sender_login_mismatch"
)

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

// Name returns NameNonFQDNSender.
func (*NonFQDNSender) Name() string { return NameNonFQDNSender }

// CheckMail implements MailChecker.
func (n *NonFQDNSender) CheckMail(_ context.Context, _ *Client, from string) Result {
	if from == "" || from == "<>" {
		return Result{}
	}
	needFQDN := Reply{Code: 504, Enhanced: [3]int{5, 5, 2}, Text: bracket(from) + ": Sender address rejected: need fully-qualified address"}
	if !strings.Contains(from, "@") {
		return Rejected(needFQDN, "no domain")
	}
	a, err := ParseAddress(from)
	if err != nil {
		return Rejected(Reply{Code: 501, Enhanced: [3]int{5, 1, 7}, Text: "Bad sender address syntax"}, err.Error())
	}
	if a.Literal {
		if n.allowLiteral {
			return Result{}
		}
		return Rejected(needFQDN, "address literal "+a.Domain)
	}
	if !strings.Contains(a.Domain, ".") {
		return Rejected(needFQDN, "domain "+a.Domain+" has no dot")
	}
	return Result{}
}

// OwnDomainForgery refuses mail claiming to come from one of our domains,
// from an address literal of one of our own addresses (as forged_helo
// counts them: ours, loopback, unspecified), or from an address listed in
// the sender login map, from a client that did not authenticate: outsiders have no business sending as us (the Postfix
// setup of reject_sender_login_mismatch with smtpd_sender_login_maps).
// Clients in the relay networks are exempt only when configured so.
//
// Replies:
//
//	553 5.7.1 <from>: Sender address rejected: not logged in
type OwnDomainForgery struct {
	domains       domainSet
	ips           ownAddrs
	loginMapped   func(addr string) bool
	exemptTrusted bool
}

// NewOwnDomainForgery returns the check for our domains and our own
// addresses (those forged_helo is given). loginMapped, if
// not nil, reports whether an address ("local@domain", domain canonical)
// is listed in the sender login map (SenderLoginMap.Listed).
// exemptTrusted lets clients with Client.Trusted through.
func NewOwnDomainForgery(domains []string, ownIPs []netip.Addr, loginMapped func(addr string) bool, exemptTrusted bool) *OwnDomainForgery {
	return &OwnDomainForgery{domains: newDomainSet(domains), ips: newOwnAddrs(ownIPs), loginMapped: loginMapped, exemptTrusted: exemptTrusted}
}

// Name returns NameOwnDomainForgery.
func (*OwnDomainForgery) Name() string { return NameOwnDomainForgery }

// CheckMail implements MailChecker.
func (o *OwnDomainForgery) CheckMail(_ context.Context, c *Client, from string) Result {
	if from == "" || from == "<>" || c.Login != "" || (c.Trusted && o.exemptTrusted) {
		return Result{}
	}
	var domain, addr string
	if a, err := ParseAddress(from); err == nil {
		domain, addr = a.Domain, a.Local+"@"+a.Domain
	} else {
		// Unparseable senders are other checks' business, but a domain
		// that is plainly ours is still ours.
		addr = strings.ToLower(from)
		domain = strings.TrimRight(addr[strings.LastIndexByte(addr, '@')+1:], ".>")
	}
	notLoggedIn := Reply{Code: 553, Enhanced: [3]int{5, 7, 1}, Text: bracket(from) + ": Sender address rejected: not logged in"}
	if o.domains[domain] {
		return Rejected(notLoggedIn, "sender domain "+domain+" is ours")
	}
	if ip, err := ParseAddressLiteral(domain); err == nil && o.ips.contains(ip) {
		return Rejected(notLoggedIn, "sender domain "+domain+" is our own address")
	}
	if o.loginMapped != nil && o.loginMapped(addr) {
		return Rejected(notLoggedIn, "sender "+addr+" is in the sender login map")
	}
	return Result{}
}

// SenderLoginMismatch lets an authenticated user send only from addresses
// the sender login map gives them (Postfix's
// reject_authenticated_sender_login_mismatch). Unauthenticated clients and
// the null sender pass: OwnDomainForgery handles the former.
//
// Replies:
//
//	553 5.7.1 <from>: Sender address rejected: not owned by user USER
type SenderLoginMismatch struct {
	m *SenderLoginMap
}

// NewSenderLoginMismatch returns the check for the map m.
func NewSenderLoginMismatch(m *SenderLoginMap) *SenderLoginMismatch {
	return &SenderLoginMismatch{m: m}
}

// Name returns NameSenderLoginMismatch.
func (*SenderLoginMismatch) Name() string { return NameSenderLoginMismatch }

// CheckMail implements MailChecker.
func (s *SenderLoginMismatch) CheckMail(_ context.Context, c *Client, from string) Result {
	if from == "" || from == "<>" || c.Login == "" {
		return Result{}
	}
	owners, where := s.m.lookup(from)
	for _, o := range owners {
		// Postfix compares SASL login names case-insensitively.
		if strings.EqualFold(o, c.Login) {
			return Result{}
		}
	}
	ev := from + " is not in the sender login map"
	if len(owners) > 0 {
		ev = fmt.Sprintf("%s is owned by %s (%s)", from, strings.Join(owners, ","), where)
	}
	return Rejected(Reply{Code: 553, Enhanced: [3]int{5, 7, 1},
		Text: bracket(from) + ": Sender address rejected: not owned by user " + sanitize(c.Login)}, ev)
}

func sanitize(s string) string {
	b := bracket(s)
	return b[1 : len(b)-1]
}

// SenderLoginMap is a Postfix smtpd_sender_login_maps table: which SASL
// login names may use which MAIL FROM address. It is immutable once parsed.
type SenderLoginMap struct {
	name    string
	entries map[string]loginEntry // key: "local@domain" or "@domain", lower case
}

type loginEntry struct {
	owners []string
	line   int
}

// ParseSenderLoginMap reads a map in Postfix table source format: one
// "key owner[, owner...]" per logical line, where key is an address or
// "@domain"; owners are separated by commas and/or blanks; lines starting
// with "#" and blank lines are ignored; a line starting with whitespace
// continues the previous one (postmap(1)). name (the file name) is used in
// errors, which name the line. Keys are case-insensitive; a duplicate key is
// an error, rather than postmap's silent first-wins.
func ParseSenderLoginMap(r io.Reader, name string) (*SenderLoginMap, error) {
	m := &SenderLoginMap{name: name, entries: map[string]loginEntry{}}
	var logical string
	start := 0
	flush := func() error {
		if logical == "" {
			return nil
		}
		defer func() { logical = "" }()
		return m.add(logical, start)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if logical == "" {
				return nil, fmt.Errorf("%s:%d: continuation line without a preceding entry", name, n)
			}
			logical += " " + trimmed
			continue
		}
		if err := flush(); err != nil {
			return nil, err
		}
		logical, start = trimmed, n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *SenderLoginMap) add(line string, n int) error {
	key, rest, _ := strings.Cut(line, " ")
	if k, r, ok := strings.Cut(line, "\t"); ok && len(k) < len(key) {
		key, rest = k, r
	}
	owners := strings.FieldsFunc(rest, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	if len(owners) == 0 {
		return fmt.Errorf("%s:%d: %q: no owner", m.name, n, key)
	}
	k, err := mapKey(key)
	if err != nil {
		return fmt.Errorf("%s:%d: %q: want an address or @domain: %v", m.name, n, key, err)
	}
	if e, dup := m.entries[k]; dup {
		return fmt.Errorf("%s:%d: %q: duplicate key (first on line %d)", m.name, n, key, e.line)
	}
	m.entries[k] = loginEntry{owners: owners, line: n}
	return nil
}

// mapKey canonicalizes a map key: "@domain" or "local@domain".
func mapKey(key string) (string, error) {
	if d, ok := strings.CutPrefix(key, "@"); ok {
		c, err := CanonicalDomain(d)
		if err != nil {
			return "", err
		}
		return "@" + c, nil
	}
	a, err := ParseAddress(key)
	if err != nil {
		return "", err
	}
	return addrKey(a), nil
}

func addrKey(a Address) string {
	return strings.ToLower(a.Local) + "@" + a.Domain
}

// Owners returns the login names that may use addr as sender: those of the
// exact address if listed, else those of its "@domain", else nil.
func (m *SenderLoginMap) Owners(addr string) []string {
	o, _ := m.lookup(addr)
	return o
}

// Listed reports whether addr has owners in the map.
func (m *SenderLoginMap) Listed(addr string) bool {
	return len(m.Owners(addr)) > 0
}

// lookup returns the owners and the file:line they come from.
func (m *SenderLoginMap) lookup(addr string) ([]string, string) {
	if m == nil {
		return nil, ""
	}
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, ""
	}
	for _, k := range []string{addrKey(a), "@" + a.Domain} {
		if e, ok := m.entries[k]; ok {
			return e.owners, fmt.Sprintf("%s:%d", m.name, e.line)
		}
	}
	return nil, ""
}
