package table

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/smtpgate/smtpgate/address"
)

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
		c, err := address.CanonicalDomain(d)
		if err != nil {
			return "", err
		}
		return "@" + c, nil
	}
	a, err := address.Parse(key)
	if err != nil {
		return "", err
	}
	return addrKey(a), nil
}

func addrKey(a address.Address) string {
	return strings.ToLower(a.Local) + "@" + a.Domain
}

// Owners returns the login names that may use addr as sender: those of the
// exact address if listed, else those of its "@domain", else nil.
func (m *SenderLoginMap) Owners(addr string) []string {
	o, _ := m.Lookup(addr)
	return o
}

// Listed reports whether addr has owners in the map.
func (m *SenderLoginMap) Listed(addr string) bool {
	return len(m.Owners(addr)) > 0
}

// Lookup returns the owners and the file:line they come from.
func (m *SenderLoginMap) Lookup(addr string) ([]string, string) {
	if m == nil {
		return nil, ""
	}
	a, err := address.Parse(addr)
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
