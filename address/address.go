package address

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Address is a parsed RFC 5321 path (§4.1.2): an optional source route and
// a mailbox.
//
// Domains are canonical: lower case, A-labels for IDNs (RFC 5891), no
// trailing dot, and address literals written as "[192.0.2.1]" or
// "[IPv6:2001:db8::1]". Two addresses name the same domain exactly when
// their Domain strings are equal.
type Address struct {
	// Local is the local part, unquoted: `"a\"b"@c` has Local `a"b`. Its
	// case is kept (RFC 5321 §2.4: only the destination host may fold it).
	Local string
	// Domain is the canonical domain, or the canonical address literal.
	Domain string
	// Quoted is true when Local is not a dot-string and so must be written
	// as a quoted-string.
	Quoted bool
	// SourceRoute lists the canonical hop domains of an "@a,@b:" prefix
	// (RFC 5321 Appendix C), first hop first.
	SourceRoute []string
	// Literal is true when Domain is an address literal (§4.1.3).
	Literal bool
}

// Errors of Parse, wrapped with the offending part.
var (
	ErrEmptyAddress = errors.New("empty address")
	ErrLocalPart    = errors.New("invalid local part")
	ErrDomain       = errors.New("invalid domain")
	ErrSourceRoute  = errors.New("invalid source route")
	// ErrTooLong is wrapped (with ErrLocalPart or ErrDomain) for a part
	// over the limits of RFC 5321 §4.5.3.1.1-2.
	ErrTooLong = errors.New("too long")
)

// Size limits of RFC 5321 §4.5.3.1.1 and §4.5.3.1.2, in octets as the
// part is written on the wire.
const (
	MaxLocalPartOctets = 64
	MaxDomainOctets    = 255
)

// CheckPathLimits checks a path (in any form Parse takes) against
// the size limits of RFC 5321 §4.5.3.1.1-2: a local part of at most 64
// octets as written (quoted when it must be), a domain of at most 255
// octets. Other syntax is not looked at. A MTA need not take longer
// parts, and some truncate them.
func CheckPathLimits(s string) error {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	if strings.HasPrefix(s, "@") {
		if i := strings.IndexByte(s, ':'); i >= 0 {
			s = s[i+1:]
		}
	}
	local, domain, err := splitMailbox(s)
	if err != nil {
		return nil // not a mailbox: Parse says why
	}
	return checkSizes(local, domain)
}

func checkSizes(local, domain string) error {
	if n := localOctets(local); n > MaxLocalPartOctets {
		return fmt.Errorf("%w: %w: %d octets, more than %d", ErrLocalPart, ErrTooLong, n, MaxLocalPartOctets)
	}
	if n := len(domain); n > MaxDomainOctets {
		return fmt.Errorf("%w: %w: %d octets, more than %d", ErrDomain, ErrTooLong, n, MaxDomainOctets)
	}
	return nil
}

// localOctets is the length of a local part as written: a dot-string as
// it is, anything else as a quoted-string.
func localOctets(l string) int {
	if isDotString(l) {
		return len(l)
	}
	return len(Address{Local: l, Quoted: true}.Mailbox()) - 1 // without the "@"
}

// Parse parses a reverse-path or forward-path. It takes both the
// path as written on the wire ("<@a:user@b>", `<"x y"@b>`) and the form
// go-smtp hands to Session.Mail and Session.Rcpt: brackets and source route
// removed and a quoted local part unquoted, so that `"user@foreign"@ours`
// arrives as "user@foreign@ours". Because of that second form, a local part
// that is not quoted runs up to the last "@": the domain is always what
// follows the last "@", which is also where an MTA delivers.
//
// The null path "" (or "<>") is an error: callers handle the null sender
// before parsing.
func Parse(s string) (Address, error) {
	var a Address
	if strings.HasPrefix(s, "<") {
		if !strings.HasSuffix(s, ">") || len(s) < 2 {
			return a, fmt.Errorf("%w: unbalanced angle brackets", ErrLocalPart)
		}
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return a, ErrEmptyAddress
	}
	if s[0] == '@' {
		route, rest, err := parseSourceRoute(s)
		if err != nil {
			return a, err
		}
		a.SourceRoute = route
		s = rest
	}
	local, domain, err := splitMailbox(s)
	if err != nil {
		return a, err
	}
	if err := checkSizes(local, domain); err != nil {
		return a, err
	}
	if err := checkLocal(local); err != nil {
		return a, err
	}
	d, literal, err := canonicalDomainOrLiteral(domain)
	if err != nil {
		return a, err
	}
	a.Local = local
	a.Domain = d
	a.Literal = literal
	a.Quoted = !isDotString(local)
	return a, nil
}

// splitMailbox splits "local@domain". A wire-format quoted-string local
// part is decoded; otherwise the local part is everything before the last
// "@" (see Parse).
func splitMailbox(s string) (local, domain string, err error) {
	if strings.HasPrefix(s, `"`) {
		if l, rest, ok := unquote(s); ok && strings.HasPrefix(rest, "@") && !strings.Contains(rest[1:], "@") {
			if l == "" {
				return "", "", fmt.Errorf("%w: empty", ErrLocalPart)
			}
			return l, rest[1:], nil
		}
	}
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return "", "", fmt.Errorf("%w: no @ in %q", ErrDomain, s)
	}
	if i == 0 {
		return "", "", fmt.Errorf("%w: empty", ErrLocalPart)
	}
	return s[:i], s[i+1:], nil
}

// unquote decodes a leading RFC 5321 quoted-string and returns the rest.
func unquote(s string) (string, string, bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '"':
			return b.String(), s[i+1:], true
		case '\\':
			if i+1 >= len(s) {
				return "", "", false
			}
			i++
			b.WriteByte(s[i])
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false
}

// checkLocal accepts any local part that can be written as an RFC 5321
// (RFC 6531 for UTF-8) quoted-string: valid UTF-8 without control
// characters.
func checkLocal(l string) error {
	if l == "" {
		return fmt.Errorf("%w: empty", ErrLocalPart)
	}
	if !utf8.ValidString(l) {
		return fmt.Errorf("%w: not UTF-8", ErrLocalPart)
	}
	for _, r := range l {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: control character %U", ErrLocalPart, r)
		}
	}
	return nil
}

// isDotString reports whether l is an RFC 5321 Dot-string (with RFC 6531
// UTF-8 atext).
func isDotString(l string) bool {
	if l == "" || l[0] == '.' || l[len(l)-1] == '.' || strings.Contains(l, "..") {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c >= 0x80 || c == '.' || isAlnum(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// parseSourceRoute parses "@a,@b:" and returns the hops and the mailbox.
func parseSourceRoute(s string) ([]string, string, error) {
	var route []string
	for {
		if !strings.HasPrefix(s, "@") {
			return nil, "", fmt.Errorf("%w: hop without @", ErrSourceRoute)
		}
		s = s[1:]
		end := strings.IndexAny(s, ",:")
		if strings.HasPrefix(s, "[") {
			// An IPv6 literal holds colons: the hop ends after "]".
			if j := strings.IndexByte(s, ']'); j >= 0 {
				end = j + 1
				if end < len(s) && s[end] != ',' && s[end] != ':' {
					return nil, "", fmt.Errorf("%w: junk after literal", ErrSourceRoute)
				}
				if end == len(s) {
					end = -1
				}
			}
		}
		if end < 0 {
			return nil, "", fmt.Errorf("%w: no colon", ErrSourceRoute)
		}
		d, _, err := canonicalDomainOrLiteral(s[:end])
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrSourceRoute, err)
		}
		route = append(route, d)
		sep := s[end]
		s = s[end+1:]
		if sep == ':' {
			return route, s, nil
		}
	}
}

// CanonicalDomain returns the canonical form of a domain name: lower case,
// A-labels, no trailing dot. It refuses address literals and names that
// are not valid hostnames (RFC 1123 §2.1, allowing "_" as Postfix does).
// Configuration uses it to check and normalize its domain lists.
func CanonicalDomain(s string) (string, error) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", fmt.Errorf("%w: empty", ErrDomain)
	}
	if !isASCII(s) || strings.Contains(strings.ToLower(s), "xn--") {
		// UTS #46 lookup processing, as resolvers and Postfix's
		// smtputf8 code do: "BÜCHER.example" is "xn--bcher-kva.example".
		if !utf8.ValidString(s) {
			return "", fmt.Errorf("%w: not UTF-8", ErrDomain)
		}
		a, err := idna.Lookup.ToASCII(s)
		if err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrDomain, s, err)
		}
		// The A-labels must read back as they are: a name is only
		// canonical if canonicalizing it again changes nothing.
		if b, err := idna.Lookup.ToASCII(a); err != nil || b != a {
			return "", fmt.Errorf("%w: %q: unstable IDN conversion", ErrDomain, s)
		}
		// UTS #46 also maps look-alikes (full-width letters, "。") to
		// ASCII; those are not U-labels (RFC 5891 §5.3) and a mail
		// domain spelt so is refused rather than taken for ours.
		if u, err := idna.Lookup.ToUnicode(a); err != nil || (!isASCII(s) && u != strings.ToLower(s)) {
			return "", fmt.Errorf("%w: %q: not in U-label form", ErrDomain, s)
		}
		s = a
	}
	s = strings.ToLower(s)
	if err := checkHostname(s); err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrDomain, s, err)
	}
	return s, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// checkHostname checks a lower-case ASCII name.
func checkHostname(s string) error {
	if len(s) > 253 {
		return errors.New("longer than 253 octets")
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" {
			return errors.New("empty label")
		}
		if len(l) > 63 {
			return errors.New("label longer than 63 octets")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("label starts or ends with a hyphen")
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlnum(c) && c != '-' && c != '_' {
				return fmt.Errorf("character %q", c)
			}
		}
	}
	if allDigits(labels[len(labels)-1]) {
		// RFC 1123 §2.1: a numeric top label is an IP address without
		// its brackets.
		return errors.New("numeric top-level label")
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// canonicalDomainOrLiteral canonicalizes a domain or an RFC 5321 §4.1.3
// address literal.
func canonicalDomainOrLiteral(s string) (string, bool, error) {
	if !strings.HasPrefix(s, "[") {
		d, err := CanonicalDomain(s)
		return d, false, err
	}
	ip, err := ParseLiteral(s)
	if err != nil {
		return "", true, err
	}
	return FormatLiteral(ip), true, nil
}

// ParseLiteral parses "[192.0.2.1]" or "[IPv6:2001:db8::1]"
// (RFC 5321 §4.1.3). General address literals ("[tag:...]") are refused:
// nothing routes them.
func ParseLiteral(s string) (netip.Addr, error) {
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return netip.Addr{}, fmt.Errorf("%w: %q: not an address literal", ErrDomain, s)
	}
	in := s[1 : len(s)-1]
	if len(in) >= 5 && strings.EqualFold(in[:5], "IPv6:") {
		ip, err := netip.ParseAddr(in[5:])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("%w: %q: bad IPv6 literal", ErrDomain, s)
		}
		return ip, nil
	}
	ip, err := netip.ParseAddr(in)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: %q: bad address literal", ErrDomain, s)
	}
	return ip, nil
}

// FormatLiteral writes ip as an RFC 5321 address literal.
func FormatLiteral(ip netip.Addr) string {
	if ip.Is4() {
		return "[" + ip.String() + "]"
	}
	return "[IPv6:" + ip.String() + "]"
}

// Mailbox returns local@domain without source route, the local part
// quoted when it must be.
func (a Address) Mailbox() string {
	l := a.Local
	if a.Quoted || !isDotString(l) {
		var b strings.Builder
		b.WriteByte('"')
		for i := 0; i < len(l); i++ {
			if l[i] == '"' || l[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(l[i])
		}
		b.WriteByte('"')
		l = b.String()
	}
	return l + "@" + a.Domain
}

// String returns the path without angle brackets, source route included,
// in a form Parse reads back to the same Address.
func (a Address) String() string {
	if len(a.SourceRoute) == 0 {
		return a.Mailbox()
	}
	return "@" + strings.Join(a.SourceRoute, ",@") + ":" + a.Mailbox()
}

// RoutingDomains returns the domains that the sendmail-era routing hacks in
// the local part name, in the order an MTA that honours them would route:
// "user@foreign" (a quoted "@", or the form go-smtp unquotes), then
// "user%foreign" (the percent hack, rightmost first), then
// "foreign!user" (UUCP bang path). Postfix (resolve_clnt with
// allow_percent_hack and swap_bangpath, both on by default) rewrites
// "user%foreign@ours" to "user@foreign" once it sees that "ours" is local,
// so mail for our domains whose local part names another domain is mail for
// that domain.
//
// Each domain is canonical when it parses, else returned as written (an
// unparseable name never equals a canonical one). Nil when the local part
// has none of "@", "%", "!".
func (a Address) RoutingDomains() []string {
	l := a.Local
	var out []string
	add := func(d string) {
		if c, _, err := canonicalDomainOrLiteral(d); err == nil {
			d = c
		}
		out = append(out, d)
	}
	for {
		if i := strings.LastIndexByte(l, '@'); i >= 0 {
			add(l[i+1:])
			l = l[:i]
		} else if i := strings.LastIndexByte(l, '%'); i >= 0 {
			add(l[i+1:])
			l = l[:i]
		} else if i := strings.IndexByte(l, '!'); i >= 0 {
			add(l[:i])
			l = l[i+1:]
		} else {
			return out
		}
	}
}

// DomainSet is a set of canonical domains.
type DomainSet map[string]bool

// NewDomainSet canonicalizes domains; a name that does not canonicalize is
// kept lower-cased (the configuration checks them with CanonicalDomain).
func NewDomainSet(domains []string) DomainSet {
	s := DomainSet{}
	for _, d := range domains {
		if c, err := CanonicalDomain(d); err == nil {
			s[c] = true
		} else {
			s[strings.ToLower(strings.TrimSuffix(d, "."))] = true
		}
	}
	return s
}

// Local reports whether a is delivered in one of the domains of s: its
// domain, every source-route hop and every domain its local part routes
// through are in s. Address literals are never ours.
func (s DomainSet) Local(a Address) bool {
	if a.Literal || !s[a.Domain] {
		return false
	}
	for _, h := range a.SourceRoute {
		if !s[h] {
			return false
		}
	}
	for _, d := range a.RoutingDomains() {
		if !s[d] {
			return false
		}
	}
	return true
}

// Bracket writes a client-supplied address for a reply text: in angle
// brackets, with bytes that do not belong on the wire replaced.
func Bracket(s string) string {
	var b strings.Builder
	b.WriteByte('<')
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			r = '?'
		}
		b.WriteRune(r)
	}
	b.WriteByte('>')
	return b.String()
}

// Printable is s as Bracket writes it, without the brackets: for a login
// name or header value quoted in a reply text.
func Printable(s string) string {
	b := Bracket(s)
	return b[1 : len(b)-1]
}

// Domain returns the domain of a mailbox, without a trailing dot; "" when
// there is none. The last "@" separates it, since a quoted local part may
// hold an "@" of its own.
func Domain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(addr[i+1:], ".")
}

// LookupName is the DNS name of a mail domain: A-labels for an
// internationalized domain (RFC 6531 allows UTF-8 in MAIL FROM).
func LookupName(domain string) (string, error) {
	for i := 0; i < len(domain); i++ {
		if domain[i] >= 0x80 {
			return idna.Lookup.ToASCII(domain)
		}
	}
	return domain, nil
}

// OwnAddrs are the addresses that are us: our own (listener and host
// addresses), loopback and the unspecified address.
type OwnAddrs []netip.Addr

// NewOwnAddrs makes the set from our listener and host addresses.
func NewOwnAddrs(ips []netip.Addr) OwnAddrs {
	o := make(OwnAddrs, 0, len(ips))
	for _, ip := range ips {
		o = append(o, ip.Unmap().WithZone(""))
	}
	return o
}

// Contains reports whether ip is us.
func (o OwnAddrs) Contains(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	for _, a := range o {
		if ip == a {
			return true
		}
	}
	return false
}
