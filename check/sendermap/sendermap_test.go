package sendermap

import (
	"net/netip"
	"testing"

	"github.com/smtpgate/smtpgate/check/checktest"
	"github.com/smtpgate/smtpgate/policy"
)

func TestSenderLoginMismatch(t *testing.T) {
	m := checktest.LoginMap(t)
	k := NewSenderLoginMismatch(m)
	as := func(login string) *policy.Client {
		return &policy.Client{Addr: netip.MustParseAddr("192.0.2.9"), Login: login}
	}
	e := [3]int{5, 7, 1}
	checktest.RunMailCases(t, k, []checktest.MailCase{
		checktest.Mail("own", as("test"), "test@example.com", 0, e, ""),
		checktest.Mail("own case", as("TEST"), "Test@Example.COM", 0, e, ""),
		checktest.Mail("second owner", as("admin"), "foo@example.com", 0, e, ""),
		checktest.Mail("continuation owner", as("carol"), "shared@example.com", 0, e, ""),
		checktest.Mail("domain owner", as("dave"), "x@delegated.example", 0, e, ""),
		checktest.Mail("someone else's", as("foo"), "test@example.com", 553, e, "<test@example.com>: Sender address rejected: not owned by user foo"),
		checktest.Mail("unlisted", as("test"), "other@example.com", 553, e, "<other@example.com>: Sender address rejected: not owned by user test"),
		checktest.Mail("foreign", as("test"), "test@gmail.example", 553, e, "<test@gmail.example>: Sender address rejected: not owned by user test"),
		checktest.Mail("null sender", as("test"), "", 0, e, ""),
		checktest.Mail("unauthenticated", checktest.Stranger, "test@example.com", 0, e, ""),
	})
}
