// Command dnsd is the benchmark's DNS server: a few static records on a
// loopback port (UDP and TCP), so that smtpgate's DNS checks run against
// real DNS traffic without depending on the machine's resolver.
//
// It is not a general DNS server: names outside its table get NXDOMAIN.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/miekg/dns"
)

var records = []string{
	"example.org. 300 IN MX 10 mx.example.org.",
	"example.org. 300 IN TXT \"v=spf1 ip4:127.0.0.0/8 -all\"",
	"mx.example.org. 300 IN A 192.0.2.10",
	"example.com. 300 IN MX 10 mx.example.com.",
	"mx.example.com. 300 IN A 192.0.2.20",
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "UDP and TCP address to serve on")
	flag.Parse()
	byName := map[string][]dns.RR{}
	for _, z := range records {
		rr, err := dns.NewRR(z)
		if err != nil {
			log.Fatal(err)
		}
		n := strings.ToLower(rr.Header().Name)
		byName[n] = append(byName[n], rr)
	}
	soa, _ := dns.NewRR("example. 300 IN SOA ns.example. hostmaster.example. 1 3600 600 86400 60")
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		name := strings.ToLower(q.Question[0].Name)
		rrs, ok := byName[name]
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Question[0].Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{soa}
		}
		w.WriteMsg(m)
	})
	pc, ln, err := listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	go (&dns.Server{PacketConn: pc, Handler: h}).ActivateAndServe()
	go (&dns.Server{Listener: ln, Handler: h}).ActivateAndServe()
	fmt.Println(pc.LocalAddr().String())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// listen opens UDP and TCP on the same port; with port 0 the UDP port
// chosen may be taken for TCP, so it tries again.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if i == 20 {
			return nil, nil, err
		}
	}
}
