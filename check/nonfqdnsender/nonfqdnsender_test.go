package nonfqdnsender

import (
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
)

func TestNonFQDNSender(t *testing.T) {
	c := checktest.Stranger
	need := [3]int{5, 5, 2}
	tests := []checktest.MailCase{
		checktest.Mail("null sender", c, "", 0, need, ""),
		checktest.Mail("null sender bracketed", c, "<>", 0, need, ""),
		checktest.Mail("fqdn", c, "user@example.com", 0, need, ""),
		checktest.Mail("fqdn trailing dot", c, "user@example.com.", 0, need, ""),
		checktest.Mail("literal allowed", c, "user@[192.0.2.1]", 0, need, ""),
		checktest.Mail("no dot", c, "user@localhost", 504, need, "<user@localhost>: Sender address rejected: need fully-qualified address"),
		checktest.Mail("no dot trailing", c, "user@host.", 504, need, "<user@host.>: Sender address rejected: need fully-qualified address"),
		checktest.Mail("no at", c, "user", 504, need, "<user>: Sender address rejected: need fully-qualified address"),
		checktest.Mail("syntax", c, "user@exa mple.com", 501, [3]int{5, 1, 7}, "Bad sender address syntax"),
	}
	checktest.RunMailCases(t, NewNonFQDNSender(true), tests)
	checktest.RunMailCases(t, NewNonFQDNSender(false), []checktest.MailCase{
		checktest.Mail("literal refused", c, "user@[192.0.2.1]", 504, need, "<user@[192.0.2.1]>: Sender address rejected: need fully-qualified address"),
		checktest.Mail("null sender", c, "", 0, need, ""),
	})
	if NewNonFQDNSender(true).Name() != "non_fqdn_sender" {
		t.Error("name")
	}
}
