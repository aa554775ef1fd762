package integration

import (
	"crypto/ed25519"

	"github.com/smtpgate/smtpgate/dns/dnstest"
)

// testZones is what the in-process DNS server (dns/dnstest) answers: a
// real DNS server on a loopback port that smtpgate is pointed at with
// dns.servers. Names under a "servfail" label answer SERVFAIL
// (servfail.example).
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
	// DKIM: example.com's key (selector "it").
	dkimRecord("it._domainkey.example.com.", exampleKey.Public().(ed25519.PublicKey)),
	// DMARC: example.com monitors (p=none); reject.example refuses.
	"_dmarc.example.com. 300 IN TXT \"v=DMARC1; p=none\"",
	"_dmarc.reject.example. 300 IN TXT \"v=DMARC1; p=reject\"",
	"reject.example. 300 IN MX 10 mx.example.org.",
	// Negative answers carry the SOA of their zone (RFC 2308).
	dnstest.SOA("example.", 300, 60),
	dnstest.SOA("org.", 300, 60),
	dnstest.SOA("com.", 300, 60),
	dnstest.SOA("net.", 300, 60),
	dnstest.SOA("test.", 300, 60),
}
