package integration

import (
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// testZones is what the in-process DNS server answers: a real DNS server
// on a loopback port that smtpgate is pointed at with dns.servers.
var testZones = []string{
	"example.org. 300 IN MX 10 mx.example.org.",
	"example.org. 300 IN TXT \"v=spf1 ip4:127.0.0.0/8 -all\"",
	"mx.example.org. 300 IN A 192.0.2.10",
	"example.com. 300 IN MX 10 mx.example.com.",
	"mx.example.com. 300 IN A 192.0.2.20",
	"example.net. 300 IN MX 10 mx.example.net.",
	"mx.example.net. 300 IN A 192.0.2.30",
	"aonly.example. 300 IN A 192.0.2.40",
	"nullmx.example. 300 IN MX 0 .",
	"spffail.example. 300 IN MX 10 mx.example.org.",
	"spffail.example. 300 IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\"",
	"nodata.example. 300 IN TXT \"no mail records here\"",
	// DNSBL: 127.0.0.3 is listed, 127.0.0.1 and 127.0.0.2 are not.
	"3.0.0.127.bl.test. 300 IN A 127.0.0.2",
	"3.0.0.127.bl.test. 300 IN TXT \"listed for testing\"",
}

// Names that answer SERVFAIL.
var servfailNames = map[string]bool{"servfail.example.": true}

type dnsServer struct {
	addr string
	srvs []*dns.Server
}

func startDNS() (*dnsServer, error) {
	records := map[string][]dns.RR{}
	for _, z := range testZones {
		rr, err := dns.NewRR(z)
		if err != nil {
			return nil, err
		}
		name := strings.ToLower(rr.Header().Name)
		records[name] = append(records[name], rr)
	}
	soa, _ := dns.NewRR("example. 300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 60")
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		name := strings.ToLower(q.Question[0].Name)
		switch {
		case servfailNames[name]:
			m.Rcode = dns.RcodeServerFailure
		case records[name] == nil && !hasChildren(records, name):
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{soa}
		default:
			for _, rr := range records[name] {
				if rr.Header().Rrtype == q.Question[0].Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
			if len(m.Answer) == 0 {
				m.Ns = []dns.RR{soa}
			}
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, err
	}
	s := &dnsServer{addr: pc.LocalAddr().String()}
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		wg.Add(1)
		srv.NotifyStartedFunc = wg.Done
		s.srvs = append(s.srvs, srv)
		go srv.ActivateAndServe()
	}
	wg.Wait()
	return s, nil
}

func hasChildren(records map[string][]dns.RR, name string) bool {
	for n := range records {
		if strings.HasSuffix(n, "."+name) {
			return true
		}
	}
	return false
}

func (s *dnsServer) stop() {
	for _, srv := range s.srvs {
		srv.Shutdown()
	}
}
