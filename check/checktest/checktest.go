// Package checktest has what the checks' tests share: a resolver that asks
// only an in-process test DNS server.
package checktest

import (
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/dns/dnstest"
)

// Resolver is a resolver that asks only s, with a timeout short enough
// for the "slow" names to fail soon and long enough for a loaded machine
// (-race) to answer the others.
func Resolver(t testing.TB, s *dnstest.Server) *dns.Resolver {
	t.Helper()
	r, err := dns.NewResolver(dns.Options{Servers: []string{s.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
