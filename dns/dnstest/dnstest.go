// Package dnstest is an in-process DNS server for tests: every package whose
// code asks DNS (the resolver, the DNS-backed checks, the integration
// suite) serves its test zones with it, so no test talks to the network.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is an in-process DNS server on 127.0.0.1 (UDP and TCP on the same
// random port) that answers from a set of records, for the resolver and
// every DNS-backed check. It never forwards anything to the real network.
//
// Besides the records, a label in the query name selects a behaviour:
//
//	servfail  any query under it gets SERVFAIL
//	slow      no answer at all (the client times out)
//	delay     the answer comes after 50ms (to coalesce concurrent queries)
//	tc        over UDP an empty answer with the TC bit; over TCP the records
//
// Names without records get NXDOMAIN, names with records but none of the
// type asked get NODATA; both carry the SOA of the enclosing zone when the
// records have one (RFC 2308). CNAMEs are followed within the records.
type Server struct {
	Addr string

	records   map[string][]dns.RR // by canonical owner name
	stop      chan struct{}
	servers   []*dns.Server
	closeOnce sync.Once

	mu     sync.Mutex
	counts map[string]int // "name TYPE udp|tcp"
}

// New starts a server answering from rrs, each in zone file syntax
// ("example.com. 300 IN MX 10 mx.example.com."), and stops it at the end of
// the test.
func New(t testing.TB, rrs ...string) *Server {
	t.Helper()
	s, err := Start(rrs...)
	if err != nil {
		t.Fatalf("test dns: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start starts a server answering from rrs, for a TestMain that has no
// testing.TB; Close stops it.
func Start(rrs ...string) (*Server, error) {
	s := &Server{records: map[string][]dns.RR{}, stop: make(chan struct{}), counts: map[string]int{}}
	for _, line := range rrs {
		rr, err := dns.NewRR(line)
		if err != nil {
			return nil, fmt.Errorf("test zone: %q: %v", line, err)
		}
		name := dns.CanonicalName(rr.Header().Name)
		s.records[name] = append(s.records[name], rr)
	}
	pc, l, err := listenUDPAndTCP()
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: l, Handler: s}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		<-started
		s.servers = append(s.servers, srv)
	}
	return s, nil
}

// Close stops the server.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		for _, srv := range s.servers {
			_ = srv.Shutdown()
		}
	})
}

// listenUDPAndTCP binds UDP and TCP on the same random loopback port.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
	}
	return nil, nil, errors.New("no port free for both UDP and TCP")
}

// Count is how many queries for name and type came over network
// ("udp" or "tcp").
func (s *Server) Count(name string, qtype uint16, network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[fmt.Sprintf("%s %s %s", dns.CanonicalName(name), dns.TypeToString[qtype], network)]
}

// Queries is how many queries for name and type came over UDP and TCP.
func (s *Server) Queries(name string, qtype uint16) int {
	return s.Count(name, qtype, "udp") + s.Count(name, qtype, "tcp")
}

func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		_ = w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	network := "tcp"
	if _, ok := w.LocalAddr().(*net.UDPAddr); ok {
		network = "udp"
	}
	s.mu.Lock()
	s.counts[fmt.Sprintf("%s %s %s", name, dns.TypeToString[q.Qtype], network)]++
	s.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	labels := dns.SplitDomainName(name)
	switch {
	case slices.Contains(labels, "slow"):
		select {
		case <-s.stop:
		case <-time.After(10 * time.Second):
		}
		return
	case slices.Contains(labels, "servfail"):
		m.Rcode = dns.RcodeServerFailure
		_ = w.WriteMsg(m)
		return
	case slices.Contains(labels, "delay"):
		time.Sleep(50 * time.Millisecond)
	case slices.Contains(labels, "tc") && network == "udp":
		m.Truncated = true
		_ = w.WriteMsg(m)
		return
	}
	s.answer(m, name, q.Qtype)
	_ = w.WriteMsg(m)
}

func (s *Server) answer(m *dns.Msg, name string, qtype uint16) {
	for range 8 { // CNAME chain
		rrs, exists := s.records[name], s.exists(name)
		if !exists {
			m.Rcode = dns.RcodeNameError
			m.Ns = s.soa(name)
			return
		}
		var cname *dns.CNAME
		for _, rr := range rrs {
			if rr.Header().Rrtype == qtype {
				m.Answer = append(m.Answer, rr)
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(m.Answer) > 0 && m.Answer[len(m.Answer)-1].Header().Rrtype == qtype {
			return
		}
		if cname == nil || qtype == dns.TypeCNAME {
			m.Ns = s.soa(name)
			return
		}
		m.Answer = append(m.Answer, cname)
		name = dns.CanonicalName(cname.Target)
	}
}

// exists reports whether name has records or is an empty non-terminal.
func (s *Server) exists(name string) bool {
	for owner := range s.records {
		if owner == name || strings.HasSuffix(owner, "."+name) {
			return true
		}
	}
	return false
}

// soa returns the SOA of the closest enclosing zone, if the records have one.
func (s *Server) soa(name string) []dns.RR {
	for i, end := 0, false; !end; i, end = dns.NextLabel(name, i) {
		for _, rr := range s.records[name[i:]] {
			if rr.Header().Rrtype == dns.TypeSOA {
				return []dns.RR{rr}
			}
		}
	}
	return nil
}

// SOA is a SOA record for zone with the given TTL and MINIMUM.
func SOA(zone string, ttl, minimum uint32) string {
	return fmt.Sprintf("%s %d IN SOA ns.%s hostmaster.%s 1 3600 600 86400 %d", zone, ttl, zone, zone, minimum)
}

// DNSBL lists ip in a DNSBL zone with the given answer (127.0.0.x).
func DNSBL(zone, ip, answer string) string {
	rev, err := dns.ReverseAddr(netip.MustParseAddr(ip).String())
	if err != nil {
		panic(err)
	}
	// ReverseAddr ends in in-addr.arpa. or ip6.arpa.; keep the reversed part.
	rev = strings.TrimSuffix(strings.TrimSuffix(rev, "in-addr.arpa."), "ip6.arpa.")
	return fmt.Sprintf("%s%s 300 IN A %s", rev, dns.Fqdn(zone), answer)
}

// Clock is the resolver cache's clock in tests, moved by hand.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

func NewClock() *Clock { return &Clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
