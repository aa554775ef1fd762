package ownforgery

import (
	"net/netip"
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/policy"
)

func TestOwnDomainForgery(t *testing.T) {
	m := checktest.LoginMap(t)
	own := []netip.Addr{netip.MustParseAddr("198.51.100.25"), netip.MustParseAddr("2001:db8::25")}
	k := NewOwnDomainForgery([]string{"example.com", "Example.Org"}, own, m.Listed, false)
	kTrust := NewOwnDomainForgery([]string{"example.com"}, own, nil, true)
	trusted := &policy.Client{Addr: netip.MustParseAddr("10.0.0.5"), Trusted: true}
	authed := &policy.Client{Addr: netip.MustParseAddr("192.0.2.9"), Login: "test"}
	nli := [3]int{5, 7, 1}
	const suffix = ": Sender address rejected: not logged in"
	checktest.RunMailCases(t, k, []checktest.MailCase{
		checktest.Mail("seed case", checktest.Stranger, "test@example.com", 553, nli, "<test@example.com>"+suffix),
		checktest.Mail("unlisted local", checktest.Stranger, "nobody@example.com", 553, nli, "<nobody@example.com>"+suffix),
		checktest.Mail("case", checktest.Stranger, "Test@EXAMPLE.COM.", 553, nli, "<Test@EXAMPLE.COM.>"+suffix),
		checktest.Mail("second domain", checktest.Stranger, "x@example.org", 553, nli, "<x@example.org>"+suffix),
		checktest.Mail("login map address", checktest.Stranger, "boss@partner.example", 553, nli, "<boss@partner.example>"+suffix),
		checktest.Mail("login map domain", checktest.Stranger, "anyone@Delegated.Example", 553, nli, "<anyone@Delegated.Example>"+suffix),
		checktest.Mail("quoted", checktest.Stranger, `"test"@example.com`, 553, nli, `<"test"@example.com>`+suffix),
		checktest.Mail("odd but ours", checktest.Stranger, "a b@@example.com", 553, nli, "<a b@@example.com>"+suffix),
		checktest.Mail("unparseable but ours", checktest.Stranger, "x@example.com..", 553, nli, "<x@example.com..>"+suffix),
		checktest.Mail("trusted not exempt", trusted, "test@example.com", 553, nli, "<test@example.com>"+suffix),
		checktest.Mail("our address literal", checktest.Stranger, "x@[198.51.100.25]", 553, nli, "<x@[198.51.100.25]>"+suffix),
		checktest.Mail("our IPv6 literal", checktest.Stranger, "x@[IPv6:2001:DB8::25]", 553, nli, "<x@[IPv6:2001:DB8::25]>"+suffix),
		checktest.Mail("loopback literal", checktest.Stranger, "root@[127.0.0.1]", 553, nli, "<root@[127.0.0.1]>"+suffix),
		checktest.Mail("foreign literal", checktest.Stranger, "x@[192.0.2.66]", 0, nli, ""),
		checktest.Mail("our literal, authenticated", authed, "x@[198.51.100.25]", 0, nli, ""),
		checktest.Mail("foreign", checktest.Stranger, "someone@gmail.example", 0, nli, ""),
		checktest.Mail("subdomain is not ours", checktest.Stranger, "someone@sub.example.com", 0, nli, ""),
		checktest.Mail("partner other address", checktest.Stranger, "other@partner.example", 0, nli, ""),
		checktest.Mail("null sender", checktest.Stranger, "", 0, nli, ""),
		checktest.Mail("authenticated", authed, "test@example.com", 0, nli, ""),
	})
	checktest.RunMailCases(t, kTrust, []checktest.MailCase{
		checktest.Mail("trusted exempt", trusted, "test@example.com", 0, nli, ""),
		checktest.Mail("checktest.Stranger", checktest.Stranger, "test@example.com", 553, nli, "<test@example.com>"+suffix),
	})
}
