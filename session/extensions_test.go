package session_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// MAIL is answered "250 2.1.0 Ok" (RFC 3463 X.1.0), not go-smtp's
// "Roger, accepting mail from"; RCPT with the MTA's own words.
func TestMailAndRcptReplyWords(t *testing.T) {
	m := startMTA(t, func(m *fakeMTA) {
		m.rcptErr = func(to string) error {
			return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 1, 5}, Message: "Destination address valid: Recipient ok"}
		}
	})
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.example.org", 250, "")
	if rep := c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0"); rep.text != "Ok" {
		t.Errorf("MAIL: %v, want 250 2.1.0 Ok", rep)
	}
	if rep := c.expect("RCPT TO:<b@example.com>", 250, "2.1.5"); rep.text != "Destination address valid: Recipient ok" {
		t.Errorf("RCPT: %v, want the MTA's 250 2.1.5 Destination address valid: Recipient ok", rep)
	}
}

// An MTA reply without an enhanced code gets RFC 3463's X.1.5 for an
// accepted recipient, with the MTA's text (Exim: "250 Accepted").
func TestRcptReplyWithoutEnhancedCode(t *testing.T) {
	m := startMTA(t, func(m *fakeMTA) {
		m.rcptErr = func(to string) error {
			return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.NoEnhancedCode, Message: "Accepted"}
		}
	})
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO client.example.org", 250, "")
	c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
	if rep := c.expect("RCPT TO:<b@example.com>", 250, "2.1.5"); rep.text != "Accepted" {
		t.Errorf("RCPT: %v, want 250 2.1.5 Accepted", rep)
	}
}

// DSN (RFC 3461) is offered when the MTA offers it, and RET, ENVID,
// NOTIFY and ORCPT reach the MTA unchanged.
func TestDSNPassedOn(t *testing.T) {
	m := startMTA(t, func(m *fakeMTA) { m.dsn = true })
	g := startGate(t, m, gateOptions{extensions: true})
	c := dialGate(t, g)
	ehlo := c.expect("EHLO client.example.org", 250, "")
	if !strings.Contains(ehlo.text, "\nDSN") {
		t.Fatalf("EHLO does not offer DSN in front of an MTA that does:\n%s", ehlo.text)
	}
	c.expect("MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2B314159", 250, "2.1.0")
	c.expect("RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@example.com", 250, "")
	c.expect("DATA", 354, "")
	c.send("Subject: dsn\r\n\r\nbody\r\n.\r\n")
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 1 {
		t.Fatalf("%d transactions at the MTA", len(txns))
	}
	x := txns[0]
	if x.MailOpts.Return != smtp.DSNReturnHeaders || x.MailOpts.EnvelopeID != "QQ+314159" {
		t.Errorf("MAIL at the MTA: RET=%q ENVID=%q, want HDRS and QQ+314159", x.MailOpts.Return, x.MailOpts.EnvelopeID)
	}
	ro := x.RcptOpts[0]
	if !reflect.DeepEqual(ro.Notify, []smtp.DSNNotify{smtp.DSNNotifySuccess, smtp.DSNNotifyFailure}) || ro.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || ro.OriginalRecipient != "b+x@example.com" {
		t.Errorf("RCPT at the MTA: %+v", ro)
	}
}

// In front of an MTA without DSN or SMTPUTF8 neither is offered, and
// their parameters get 555 5.5.4 (RFC 5321 §4.1.1.11), not 504.
func TestExtensionsNotOfferedWithoutMTA(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{extensions: true})
	c := dialGate(t, g)
	ehlo := c.expect("EHLO client.example.org", 250, "")
	if strings.Contains(ehlo.text, "\nDSN") || strings.Contains(ehlo.text, "SMTPUTF8") {
		t.Fatalf("EHLO offers what the MTA lacks:\n%s", ehlo.text)
	}
	c.expect("MAIL FROM:<a@example.org> SMTPUTF8", 555, "5.5.4")
	c.expect("MAIL FROM:<a@example.org> RET=FULL", 555, "5.5.4")
	c.expect("MAIL FROM:<a@example.org> XYZZY=1", 555, "5.5.4")
	c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
	c.expect("RCPT TO:<b@example.com> NOTIFY=NEVER", 555, "5.5.4")
	c.expect("RCPT TO:<b@example.com>", 250, "")
}

// Offered SMTPUTF8 and DSN, but the MTA connection lacks them (the MTA
// changed since): DSN parameters and SMTPUTF8 for an all-ASCII envelope
// are dropped; a non-ASCII envelope is refused with 553 5.6.7 (RFC 6531
// §3.5) and nothing reaches the MTA.
func TestExtensionsDroppedForMTAWithout(t *testing.T) {
	m := startMTA(t, nil)
	// Offered as if the MTA had them.
	g := startGate(t, m, gateOptions{extensions: true, offer: func(string) bool { return true }})
	c := dialGate(t, g)
	c.expect("EHLO client.example.org", 250, "")
	c.expect("MAIL FROM:<a@example.org> SMTPUTF8 RET=HDRS", 250, "2.1.0")
	c.expect("RCPT TO:<b@example.com> NOTIFY=SUCCESS", 250, "")
	c.expect("RSET", 250, "")
	c.expect("MAIL FROM:<a@example.org> SMTPUTF8", 250, "2.1.0")
	c.expect("RCPT TO:<j\u00f6rg@example.com>", 553, "5.6.7")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) == 0 || len(txns[0].Rcpts) != 1 || txns[0].MailOpts.UTF8 || txns[0].MailOpts.Return != "" || txns[0].RcptOpts[0].Notify != nil {
		t.Errorf("at the MTA: %+v", txns)
	}
	for _, x := range txns {
		for _, r := range x.Rcpts {
			if strings.Contains(r, "\u00f6") {
				t.Errorf("the non-ASCII recipient reached the MTA")
			}
		}
	}
}

// ENVID is bounded (RFC 3461 §4.4: 100 characters).
func TestEnvelopeIDTooLong(t *testing.T) {
	m := startMTA(t, func(m *fakeMTA) { m.dsn = true })
	g := startGate(t, m, gateOptions{extensions: true})
	c := dialGate(t, g)
	c.expect("EHLO client.example.org", 250, "")
	c.expect("MAIL FROM:<a@example.org> ENVID="+strings.Repeat("x", 101), 501, "5.5.4")
	c.expect("MAIL FROM:<a@example.org> ENVID="+strings.Repeat("x", 100), 250, "2.1.0")
}
