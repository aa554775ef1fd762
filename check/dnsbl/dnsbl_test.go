package dnsbl

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/dns"
	"github.com/smtpgate/smtpgate/dns/dnstest"
	"github.com/smtpgate/smtpgate/policy"
)

func TestDNSBLFilterSyntax(t *testing.T) {
	tests := []struct {
		filter string
		ok     bool
		match  []string
		miss   []string
	}{
		{"127.0.0.2", true, []string{"127.0.0.2"}, []string{"127.0.0.3", "127.0.1.2"}},
		{"127.0.0.[2..11]", true, []string{"127.0.0.2", "127.0.0.11"}, []string{"127.0.0.1", "127.0.0.12"}},
		{"127.0.0.[2;4;6]", true, []string{"127.0.0.4"}, []string{"127.0.0.3", "127.0.0.7"}},
		{"127.0.[0..1].[2;4..6]", true, []string{"127.0.1.5", "127.0.0.2"}, []string{"127.0.2.2", "127.0.0.3"}},
		{"127.0.0", false, nil, nil},
		{"127.0.0.256", false, nil, nil},
		{"127.0.0.2.5", false, nil, nil},
		{"127.0.0.[2..]", false, nil, nil},
		{"127.0.0.[11..2]", false, nil, nil},
		{"127.0.0.[2", false, nil, nil},
		{"127.0.0.[]", false, nil, nil},
		{"127.0.0.-1", false, nil, nil},
		{"a.b.c.d", false, nil, nil},
		{"127..0.2", false, nil, nil},
	}
	for _, tt := range tests {
		f, err := parseDNSBLFilter(tt.filter)
		if (err == nil) != tt.ok {
			t.Errorf("%q: err %v", tt.filter, err)
			continue
		}
		for _, ip := range tt.match {
			if !f.match(netip.MustParseAddr(ip)) {
				t.Errorf("%q does not match %s", tt.filter, ip)
			}
		}
		for _, ip := range tt.miss {
			if f.match(netip.MustParseAddr(ip)) {
				t.Errorf("%q matches %s", tt.filter, ip)
			}
		}
	}
}

func TestNewDNSBLValidates(t *testing.T) {
	r := &dns.Resolver{}
	for _, zones := range [][]DNSBLZone{
		nil,
		{{Zone: ""}},
		{{Zone: "bl.test", Filter: "127.0.0.[2"}},
		{{Zone: "good.test"}, {Zone: "bad..test"}},
	} {
		if _, err := NewDNSBL(r, zones, 1); err == nil {
			t.Errorf("%+v accepted", zones)
		}
	}
}

func TestParseDNSBLZone(t *testing.T) {
	tests := []struct {
		in   string
		want DNSBLZone
		ok   bool
	}{
		{"zen.spamhaus.org", DNSBLZone{Zone: "zen.spamhaus.org"}, true},
		{"zen.spamhaus.org*3", DNSBLZone{Zone: "zen.spamhaus.org", Weight: 3}, true},
		{"zen.spamhaus.org=127.0.0.[2..11]*3", DNSBLZone{Zone: "zen.spamhaus.org", Filter: "127.0.0.[2..11]", Weight: 3}, true},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-2", DNSBLZone{Zone: "list.dnswl.org", Filter: "127.0.[0..255].[1..3]", Weight: -2}, true},
		{"zen.spamhaus.org*x", DNSBLZone{}, false},
		{"zen.spamhaus.org=127.0.0", DNSBLZone{}, false},
	}
	for _, tt := range tests {
		got, err := ParseDNSBLZone(tt.in)
		if (err == nil) != tt.ok || tt.ok && got != tt.want {
			t.Errorf("%q: %+v %v", tt.in, got, err)
		}
	}
}

func TestReverseIP(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.1":         "1.2.0.192",
		"::ffff:192.0.2.1":  "1.2.0.192",
		"2001:db8::1":       "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2",
		"2001:db8:1:2::abc": "c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2",
	} {
		if got := reverseIP(netip.MustParseAddr(ip).Unmap()); got != want {
			t.Errorf("%s: %s, want %s", ip, got, want)
		}
	}
}

func TestDNSBL(t *testing.T) {
	s := dnstest.New(t,
		dnstest.SOA("bl.test.", 3600, 300),
		dnstest.DNSBL("bl.test", "192.0.2.1", "127.0.0.2"),
		dnstest.DNSBL("bl.test", "192.0.2.2", "127.0.0.1"),  // outside the filter
		dnstest.DNSBL("bl.test", "192.0.2.5", "127.0.0.11"), // inside the filter
		dnstest.DNSBL("bl.test", "2001:db8::1", "127.0.0.3"),
		dnstest.DNSBL("w2.test", "192.0.2.1", "127.0.0.2"),
		dnstest.DNSBL("w2.test", "192.0.2.4", "127.0.0.2"),
		dnstest.DNSBL("any.test", "192.0.2.6", "127.0.0.9"),
		dnstest.DNSBL("any.test", "192.0.2.7", "127.255.255.254"), // "query refused"
		dnstest.DNSBL("allow.test", "192.0.2.1", "127.0.10.2"),
	)
	r := checktest.Resolver(t, s)
	must := func(d *DNSBL, err error) *DNSBL {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	single := must(NewDNSBL(r, []DNSBLZone{
		{Zone: "bl.test", Filter: "127.0.0.[2..11]"},
		{Zone: "servfail.test"},
		{Zone: "any.test"},
	}, 0))
	weighted := must(NewDNSBL(r, []DNSBLZone{
		{Zone: "bl.test", Filter: "127.0.0.[2..11]"},
		{Zone: "w2.test", Weight: 2, Filter: "127.0.0.2"},
	}, 3))
	allowed := must(NewDNSBL(r, []DNSBLZone{
		{Zone: "bl.test"},
		{Zone: "w2.test", Weight: 2},
		{Zone: "allow.test", Weight: -2, Filter: "127.0.10.2"},
	}, 2))

	tests := []struct {
		what     string
		check    *DNSBL
		ip       string
		trusted  bool
		action   policy.Action
		code     int
		enhanced [3]int
		text     string
		log      bool
	}{
		{what: "listed", check: single, ip: "192.0.2.1", action: policy.Reject, code: 554, enhanced: [3]int{5, 7, 1},
			text: "Service unavailable; client [192.0.2.1] blocked using bl.test"},
		{what: "listed ipv4-mapped", check: single, ip: "::ffff:192.0.2.5", action: policy.Reject, code: 554, enhanced: [3]int{5, 7, 1},
			text: "Service unavailable; client [192.0.2.5] blocked using bl.test"},
		{what: "listed ipv6", check: single, ip: "2001:db8::1", action: policy.Reject, code: 554, enhanced: [3]int{5, 7, 1},
			text: "Service unavailable; client [2001:db8::1] blocked using bl.test"},
		{what: "default filter", check: single, ip: "192.0.2.6", action: policy.Reject, code: 554, enhanced: [3]int{5, 7, 1},
			text: "Service unavailable; client [192.0.2.6] blocked using any.test"},
		{what: "error code answer ignored", check: single, ip: "192.0.2.7", action: policy.Pass, log: true},
		{what: "answer outside filter", check: single, ip: "192.0.2.2", action: policy.Pass, log: true},
		{what: "not listed, zones failing", check: single, ip: "192.0.2.3", action: policy.Pass, log: true},
		{what: "trusted", check: single, ip: "192.0.2.1", trusted: true, action: policy.Pass},
		{what: "over threshold", check: weighted, ip: "192.0.2.1", action: policy.Reject, code: 554, enhanced: [3]int{5, 7, 1},
			text: "Service unavailable; client [192.0.2.1] blocked using bl.test, w2.test"},
		{what: "under threshold", check: weighted, ip: "192.0.2.4", action: policy.Pass, log: true},
		{what: "not listed", check: weighted, ip: "192.0.2.3", action: policy.Pass},
		{what: "allow list offsets", check: allowed, ip: "192.0.2.1", action: policy.Pass, log: true},
		{what: "no allow list entry", check: allowed, ip: "192.0.2.4", action: policy.Reject, code: 554, enhanced: [3]int{5, 7, 1},
			text: "Service unavailable; client [192.0.2.4] blocked using w2.test"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			c := &policy.Client{Addr: netip.MustParseAddr(tt.ip), Trusted: tt.trusted}
			res := tt.check.CheckConn(context.Background(), c)
			if res.Action != tt.action || res.Reply.Code != tt.code || res.Reply.Enhanced != tt.enhanced {
				t.Fatalf("got %v %q (%s), want %v %d %v", res.Action, res.Reply, res.Evidence, tt.action, tt.code, tt.enhanced)
			}
			if tt.text != "" && res.Reply.Text != tt.text {
				t.Errorf("text %q, want %q", res.Reply.Text, tt.text)
			}
			if res.Action == policy.Pass && res.Log != tt.log {
				t.Errorf("log %v (%s), want %v", res.Log, res.Evidence, tt.log)
			}
			if (res.Action == policy.Reject || res.Log) && res.Evidence == "" {
				t.Error("no evidence")
			}
		})
	}
}

func TestDNSBLEvidenceNamesFailingZones(t *testing.T) {
	t.Parallel()
	s := dnstest.New(t, dnstest.DNSBL("bl.test", "192.0.2.1", "127.0.0.2"))
	d, err := NewDNSBL(checktest.Resolver(t, s), []DNSBLZone{{Zone: "bl.test"}, {Zone: "servfail.test"}, {Zone: "slow.test"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	res := d.CheckConn(context.Background(), &policy.Client{Addr: netip.MustParseAddr("192.0.2.1")})
	if res.Action != policy.Reject {
		t.Fatalf("got %v", res.Action)
	}
	for _, want := range []string{"bl.test=127.0.0.2*1", "servfail.test: SERVFAIL", "slow.test: dns "} {
		if !strings.Contains(res.Evidence, want) {
			t.Errorf("evidence %q lacks %q", res.Evidence, want)
		}
	}
}
