package table

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
)

// RecipientList is a list of recipients (recipients.files), loaded: exact addresses and @domain
// catch-alls. Lookups are case-insensitive, as Postfix's are: RFC 5321 §2.4
// lets a host treat local parts case-sensitively, but no MTA behind us does.
type RecipientList struct {
	exact     map[string]struct{}
	catchAll  map[string]struct{}
	domains   map[string]struct{}
	delimiter string
}

// LoadRecipientList reads files, one address per line, # comments.
func LoadRecipientList(files []string, detailDelimiter string) (*RecipientList, error) {
	rl := &RecipientList{
		exact:     map[string]struct{}{},
		catchAll:  map[string]struct{}{},
		domains:   map[string]struct{}{},
		delimiter: detailDelimiter,
	}
	var errs []error
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("recipients.files: %w", err))
			continue
		}
		sc := bufio.NewScanner(fh)
		line := 0
		for sc.Scan() {
			line++
			s := strings.TrimSpace(sc.Text())
			if i := strings.IndexByte(s, '#'); i >= 0 {
				s = strings.TrimSpace(s[:i])
			}
			if s == "" {
				continue
			}
			if err := rl.add(s); err != nil {
				errs = append(errs, fmt.Errorf("%s:%d: %w", f, line, err))
			}
		}
		if err := sc.Err(); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", f, line, err))
		}
		fh.Close()
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return rl, nil
}

func (rl *RecipientList) add(s string) error {
	s = strings.Trim(s, "<>")
	at := strings.LastIndexByte(s, '@')
	if at < 0 || strings.ContainsAny(s, " \t") {
		return fmt.Errorf("%q: want user@domain or @domain", s)
	}
	local, domain := s[:at], strings.TrimSuffix(strings.ToLower(s[at+1:]), ".")
	if domain == "" || !strings.Contains(domain, ".") && domain != "localhost" {
		return fmt.Errorf("%q: domain is not fully qualified", s)
	}
	rl.domains[domain] = struct{}{}
	if local == "" {
		rl.catchAll[domain] = struct{}{}
		return nil
	}
	rl.exact[strings.ToLower(local)+"@"+domain] = struct{}{}
	return nil
}

// Covers reports whether the list says anything about domain: a domain
// that no line names is not decided by the list.
func (rl *RecipientList) Covers(domain string) bool {
	_, ok := rl.domains[strings.ToLower(domain)]
	return ok
}

// Contains reports whether local@domain is a known recipient.
func (rl *RecipientList) Contains(local, domain string) bool {
	domain = strings.ToLower(domain)
	if _, ok := rl.catchAll[domain]; ok {
		return true
	}
	if rl.has(local, domain) {
		return true
	}
	if rl.delimiter != "" {
		if i := strings.Index(local, rl.delimiter); i > 0 {
			return rl.has(local[:i], domain)
		}
	}
	return false
}

func (rl *RecipientList) has(local, domain string) bool {
	_, ok := rl.exact[strings.ToLower(local)+"@"+domain]
	return ok
}

// Len is the number of entries.
func (rl *RecipientList) Len() int { return len(rl.exact) + len(rl.catchAll) }
