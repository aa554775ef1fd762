package dns

import (
	"context"
	"errors"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var resolverZone = []string{
	dnstest.SOA("example.test.", 3600, 120),
	"example.test. 300 IN MX 10 mx.example.test.",
	"example.test. 300 IN TXT \"v=spf1 \" \"-all\"",
	"mx.example.test. 60 IN A 192.0.2.25",
	"mx.example.test. 600 IN AAAA 2001:db8::25",
	"alias.example.test. 300 IN CNAME mx.example.test.",
	"tc.example.test. 300 IN TXT \"big answer\"",
	"delay.example.test. 300 IN A 192.0.2.1",
	"a.example.test. 300 IN A 192.0.2.10",
	"b.example.test. 300 IN A 192.0.2.11",
	"c.example.test. 300 IN A 192.0.2.12",
	"25.2.0.192.in-addr.arpa. 300 IN PTR mx.example.test.",
}

func TestResolverAnswers(t *testing.T) {
	s := dnstest.New(t, resolverZone...)
	r := testResolver(t, s)
	tests := []struct {
		name     string
		qtype    uint16
		rcode    int
		nxdomain bool
		nodata   bool
		servfail bool
		records  int
		soa      bool
	}{
		{name: "example.test", qtype: dns.TypeMX, records: 1},
		{name: "EXAMPLE.test.", qtype: dns.TypeMX, records: 1},
		{name: "mx.example.test", qtype: dns.TypeA, records: 1},
		{name: "alias.example.test", qtype: dns.TypeAAAA, records: 1},
		{name: "tc.example.test", qtype: dns.TypeTXT, records: 1},
		{name: "nowhere.example.test", qtype: dns.TypeA, rcode: dns.RcodeNameError, nxdomain: true, soa: true},
		{name: "mx.example.test", qtype: dns.TypeMX, nodata: true, soa: true},
		{name: "servfail.example.test", qtype: dns.TypeA, rcode: dns.RcodeServerFailure, servfail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			a, err := r.Lookup(context.Background(), tt.name, tt.qtype)
			if err != nil {
				t.Fatal(err)
			}
			if a.Rcode != tt.rcode || a.NXDomain() != tt.nxdomain || a.NoData() != tt.nodata || a.ServFail() != tt.servfail {
				t.Errorf("%s: rcode %d nxdomain %v nodata %v servfail %v", a, a.Rcode, a.NXDomain(), a.NoData(), a.ServFail())
			}
			if n := len(a.Records(0)); n != tt.records {
				t.Errorf("%s: %d records, want %d", a, n, tt.records)
			}
			if (a.SOA != nil) != tt.soa {
				t.Errorf("%s: SOA %v", a, a.SOA)
			}
		})
	}
}

func TestResolverTCPRetryOnTruncation(t *testing.T) {
	s := dnstest.New(t, resolverZone...)
	r := testResolver(t, s)
	txts, err := r.LookupTXT(context.Background(), "tc.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(txts, []string{"big answer"}) {
		t.Errorf("TXT %q", txts)
	}
	if u, c := s.Count("tc.example.test", dns.TypeTXT, "udp"), s.Count("tc.example.test", dns.TypeTXT, "tcp"); u != 1 || c != 1 {
		t.Errorf("%d UDP and %d TCP queries, want 1 and 1", u, c)
	}
}

func TestResolverCacheHit(t *testing.T) {
	s := dnstest.New(t, resolverZone...)
	r := testResolver(t, s)
	ctx := context.Background()
	for range 3 {
		if _, err := r.Lookup(ctx, "example.test", dns.TypeMX); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Queries("example.test", dns.TypeMX); n != 1 {
		t.Errorf("server asked %d times, want 1", n)
	}
	st := r.Stats()
	if st.Hits != 2 || st.Misses != 1 || st.Entries != 1 {
		t.Errorf("stats %+v", st)
	}
}

// lookupsAfter looks name up, moves the clock by each step in turn and
// looks up again, and returns how many times the server was asked after
// each step.
func lookupsAfter(t *testing.T, name string, qtype uint16, steps ...time.Duration) []int {
	t.Helper()
	s := dnstest.New(t, resolverZone...)
	r := testResolver(t, s)
	clock := dnstest.NewClock()
	r.now = clock.Now
	var got []int
	if _, err := r.Lookup(context.Background(), name, qtype); err != nil {
		t.Fatal(err)
	}
	for _, d := range steps {
		clock.Advance(d)
		if _, err := r.Lookup(context.Background(), name, qtype); err != nil {
			t.Fatal(err)
		}
		got = append(got, s.Queries(name, qtype))
	}
	return got
}

func TestResolverTTL(t *testing.T) {
	tests := []struct {
		what  string
		name  string
		qtype uint16
		steps []time.Duration
		want  []int
	}{
		// A with TTL 60: cached 60s.
		{"positive", "mx.example.test", dns.TypeA, []time.Duration{59 * time.Second, 2 * time.Second}, []int{1, 2}},
		// CNAME 300 → A 60: the smallest TTL of the chain.
		{"cname chain", "alias.example.test", dns.TypeA, []time.Duration{59 * time.Second, 2 * time.Second}, []int{1, 2}},
		// NXDOMAIN, SOA TTL 3600 MINIMUM 120: RFC 2308 takes the smaller.
		{"nxdomain", "nowhere.example.test", dns.TypeA, []time.Duration{119 * time.Second, 2 * time.Second}, []int{1, 2}},
		{"nodata", "mx.example.test", dns.TypeMX, []time.Duration{119 * time.Second, 2 * time.Second}, []int{1, 2}},
		// No SOA: five minutes.
		{"nxdomain without soa", "elsewhere.invalid", dns.TypeA, []time.Duration{299 * time.Second, 2 * time.Second}, []int{1, 2}},
		{"servfail", "servfail.example.test", dns.TypeA, []time.Duration{29 * time.Second, 2 * time.Second}, []int{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			if got := lookupsAfter(t, tt.name, tt.qtype, tt.steps...); !slices.Equal(got, tt.want) {
				t.Errorf("server asked %v times after %v, want %v", got, tt.steps, tt.want)
			}
		})
	}
}

func TestResolverTimeout(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, resolverZone...)
	r := testResolver(t, s)
	_, err := r.Lookup(context.Background(), "slow.example.test", dns.TypeA)
	var le *LookupError
	if !errors.As(err, &le) || !le.Timeout() {
		t.Fatalf("err %v, want a timeout", err)
	}
	// Not cached: the next lookup asks again.
	_, err = r.LookupMX(context.Background(), "slow.example.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout || !de.IsTemporary {
		t.Fatalf("LookupMX err %#v, want a temporary timeout DNSError", err)
	}
	if st := r.Stats(); st.Failures != 2 || st.Entries != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestResolverContextDeadline(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, resolverZone...)
	r, err := NewResolver(Options{Servers: []string{s.Addr, s.Addr}, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = r.Lookup(ctx, "slow.example.test", dns.TypeA)
	var le *LookupError
	if !errors.As(err, &le) || !le.Timeout() {
		t.Fatalf("err %v, want a timeout", err)
	}
	// The second server is not tried once the deadline passed.
	if n := s.Queries("slow.example.test", dns.TypeA); n != 1 {
		t.Errorf("server asked %d times, want 1", n)
	}
}

func TestResolverContextCancel(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, resolverZone...)
	r, err := NewResolver(Options{Servers: []string{s.Addr}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = r.Lookup(ctx, "slow.example.test", dns.TypeA)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestResolverServersInOrder(t *testing.T) {
	s := dnstest.New(t, resolverZone...)
	// A port nobody listens on: the query is refused at once.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	r, err := NewResolver(Options{Servers: []string{dead, s.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := r.LookupIP4(context.Background(), "mx.example.test")
	if err != nil || !slices.Equal(addrs, []netip.Addr{netip.MustParseAddr("192.0.2.25")}) {
		t.Fatalf("addrs %v err %v", addrs, err)
	}
}

func TestResolverServfailTriesNextServer(t *testing.T) {
	good := dnstest.New(t, resolverZone...)
	failing := dnstest.New(t, "servfail.example.test. 300 IN A 192.0.2.99")
	r, err := NewResolver(Options{Servers: []string{failing.Addr, good.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.Lookup(context.Background(), "servfail.example.test", dns.TypeA)
	if err != nil || !a.ServFail() {
		t.Fatalf("answer %v err %v: want SERVFAIL from both", a, err)
	}
	if n := failing.Queries("servfail.example.test", dns.TypeA) + good.Queries("servfail.example.test", dns.TypeA); n != 2 {
		t.Errorf("%d queries, want one per server", n)
	}
}

func TestResolverCoalesces(t *testing.T) {
	s := dnstest.New(t, resolverZone...)
	r := testResolver(t, s)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := r.Lookup(context.Background(), "delay.example.test", dns.TypeA); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := s.Queries("delay.example.test", dns.TypeA); n != 1 {
		t.Errorf("server asked %d times, want 1", n)
	}
	// Each of the 19 others either waited for the first query or came
	// after it and found its answer in the cache.
	if st := r.Stats(); st.Misses != 1 || st.Hits+st.Coalesced != 19 {
		t.Errorf("stats %+v", st)
	}
}

func TestResolverCacheBounded(t *testing.T) {
	s := dnstest.New(t, resolverZone...)
	r, err := NewResolver(Options{Servers: []string{s.Addr}, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range []string{"a.example.test", "b.example.test", "a.example.test", "c.example.test", "a.example.test", "b.example.test"} {
		if _, err := r.Lookup(ctx, name, dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	// LRU: c evicted b (a was used more recently), then b evicted c.
	if a, b := s.Queries("a.example.test", dns.TypeA), s.Queries("b.example.test", dns.TypeA); a != 1 || b != 2 {
		t.Errorf("a asked %d times, b %d: want 1 and 2", a, b)
	}
	if st := r.Stats(); st.Entries != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestResolverConvenience(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, resolverZone...)
	r := testResolver(t, s)
	ctx := context.Background()

	mxs, err := r.LookupMX(ctx, "example.test")
	if err != nil || len(mxs) != 1 || mxs[0].Mx != "mx.example.test." || mxs[0].Preference != 10 {
		t.Errorf("LookupMX %v %v", mxs, err)
	}
	txts, err := r.LookupTXT(ctx, "example.test")
	if err != nil || !slices.Equal(txts, []string{"v=spf1 -all"}) {
		t.Errorf("LookupTXT %q %v", txts, err)
	}
	addrs, err := r.LookupHost(ctx, "mx.example.test")
	want := []netip.Addr{netip.MustParseAddr("192.0.2.25"), netip.MustParseAddr("2001:db8::25")}
	if err != nil || !slices.Equal(addrs, want) {
		t.Errorf("LookupHost %v %v", addrs, err)
	}
	names, err := r.LookupAddr(ctx, netip.MustParseAddr("192.0.2.25"))
	if err != nil || !slices.Equal(names, []string{"mx.example.test."}) {
		t.Errorf("LookupAddr %v %v", names, err)
	}

	// Errors are shaped like net.Resolver's: not-found, temporary, timeout.
	lookups := []struct {
		what   string
		lookup func() error
		want   [3]bool
	}{
		{"host nxdomain", func() error { _, err := r.LookupHost(ctx, "nowhere.example.test"); return err }, [3]bool{true, false, false}},
		{"mx nodata", func() error { _, err := r.LookupMX(ctx, "mx.example.test"); return err }, [3]bool{true, false, false}},
		{"host servfail", func() error { _, err := r.LookupHost(ctx, "servfail.example.test"); return err }, [3]bool{false, true, false}},
		{"txt timeout", func() error { _, err := r.LookupTXT(ctx, "slow.example.test"); return err }, [3]bool{false, true, true}},
	}
	for _, l := range lookups {
		var de *net.DNSError
		if err := l.lookup(); !errors.As(err, &de) {
			t.Errorf("%s: err %v, want *net.DNSError", l.what, err)
			continue
		}
		if got := [3]bool{de.IsNotFound, de.IsTemporary, de.IsTimeout}; got != l.want {
			t.Errorf("%s: notfound/temporary/timeout %v, want %v", l.what, got, l.want)
		}
	}
}

func TestResolvConfServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("search example.test\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := resolvConfServers(conf)
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("servers %q %v, want %q", got, err, want)
	}
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("search example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := resolvConfServers(empty); err == nil {
		t.Error("resolv.conf without nameserver accepted")
	}
}

func TestResolverBadServer(t *testing.T) {
	if _, err := NewResolver(Options{Servers: []string{"127.0.0.1"}}); err == nil {
		t.Error("server without port accepted")
	}
}

func BenchmarkResolverCacheHit(b *testing.B) {
	s := dnstest.New(b, resolverZone...)
	r := testResolver(b, s)
	ctx := context.Background()
	if _, err := r.Lookup(ctx, "example.test", dns.TypeMX); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Lookup(ctx, "example.test", dns.TypeMX); err != nil {
				b.Error(err)
			}
		}
	})
}

func TestClientName(t *testing.T) {
	srv := dnstest.New(t,
		"7.2.0.192.in-addr.arpa. 300 IN PTR mail.example.org.",
		"mail.example.org. 300 IN A 192.0.2.7",
		"8.2.0.192.in-addr.arpa. 300 IN PTR liar.example.org.",
		"liar.example.org. 300 IN A 192.0.2.99",
	)
	r, err := NewResolver(Options{Servers: []string{srv.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for ip, want := range map[string]string{
		"192.0.2.7": "mail.example.org", // PTR and A agree
		"192.0.2.8": "",                 // PTR not confirmed by A
		"192.0.2.9": "",                 // no PTR
	} {
		if got := r.ClientName(ctx, netip.MustParseAddr(ip)); got != want {
			t.Errorf("ClientName(%s) = %q, want %q", ip, got, want)
		}
	}
}

// testResolver is a resolver that asks only s, with a timeout short
// enough for the "slow" names to fail soon and long enough for a loaded
// machine (-race) to answer the others.
func testResolver(t testing.TB, s *dnstest.Server) *Resolver {
	t.Helper()
	r, err := NewResolver(Options{Servers: []string{s.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
