package session_test

import (
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
)

// Entry checks of EHLO, MAIL and RCPT that hold whatever checks are
// configured: what the MTA must never be handed.

// RFC 5321 §4.1.1.1, §4.5.3.1.1: the HELO argument is a domain or an
// address literal, at most 255 octets. Control characters and bytes that
// are not UTF-8 name nothing, and the MTA refuses them when smtpgate
// greets it with the client's name.
func TestHeloSyntaxRefusedAtEHLO(t *testing.T) {
	long := strings.Repeat("a", 61) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + ".example.org" // 256 octets
	if len(long) != 256 {
		t.Fatalf("long HELO is %d octets", len(long))
	}
	for _, tt := range []struct{ name, helo string }{
		{"invalid UTF-8", "\xff\xfe.ext.org"},
		{"control character", "host\x01.example.org"},
		{"DEL", "host\x7f.example.org"},
		{"tab", "host\t.example.org"},
		{"over 255 octets", long},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := startMTA(t, nil)
			g := startGate(t, m, gateOptions{delayReject: true})
			c := dialGate(t, g)
			// The first EHLO of the session.
			c.expect("EHLO "+tt.helo, 501, "5.5.2")
			c.expect("MAIL FROM:<a@example.org>", 502, "5.5.1")
			// A later EHLO (RFC 5321 §4.1.4) is held to the same rule.
			c.expect("EHLO client.example.org", 250, "")
			c.expect("EHLO "+tt.helo, 501, "5.5.2")
			c.expect("MAIL FROM:<a@example.org>", 502, "5.5.1")
			c.expect("EHLO client.example.org", 250, "")
			c.envelope("a@example.org", "b@example.com")
			c.expect("QUIT", 221, "")
			m.waitIdle(t)
			for _, x := range m.transactions() {
				if x.From != "a@example.org" {
					t.Errorf("MTA transaction %+v", x)
				}
			}
		})
	}
	// A UTF-8 name (an IDN in U-labels) is a name.
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{})
	c := dialGate(t, g)
	c.expect("EHLO b\u00fccher.example", 250, "")
}

// RFC 5321 §4.1.4: MAIL inside a transaction is refused (Postfix: 503
// 5.5.1 Error: nested MAIL command); the first envelope stays as it was.
func TestNestedMailRefused(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{delayReject: true})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("first@example.org", "b@example.com")
	rep := c.expect("MAIL FROM:<second@example.org>", 503, "5.5.1")
	if rep.text != "Error: nested MAIL command" {
		t.Errorf("reply text %q", rep.text)
	}
	c.expect("RCPT TO:<c@example.com>", 250, "")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	// After the message, MAIL starts a new transaction.
	c.envelope("third@example.org", "b@example.com")
	c.expect("RSET", 250, "")
	c.envelope("fourth@example.org", "b@example.com")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 3 || txns[0].From != "first@example.org" || strings.Join(txns[0].Rcpts, ",") != "b@example.com,c@example.com" || !txns[0].Complete {
		t.Fatalf("MTA transactions: %+v", txns)
	}
}

// A MAIL refused at once (delay_reject off) opens no transaction: the
// next MAIL is not "nested".
func TestRefusedMailOpensNoTransaction(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, mailCheck{"spam@example.org"})})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.expect("MAIL FROM:<spam@example.org>", 553, "5.7.1")
	c.envelope("a@example.org", "b@example.com")
	c.expect("QUIT", 221, "")
}

// RFC 5321 §4.5.1: RCPT TO:<Postmaster> without a domain MUST be
// accepted; it goes to the configured postmaster address.
func TestPostmasterWithoutDomain(t *testing.T) {
	m := startMTA(t, nil)
	g := startGate(t, m, gateOptions{postmaster: "hostmaster@example.com"})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
	c.expect("RCPT TO:<postmaster>", 250, "")
	c.expect("RCPT TO:<PostMaster>", 250, "")
	c.expect("RSET", 250, "")
	c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
	c.expect("RCPT TO:<POSTMASTER>", 250, "")
	// Any other local part still needs a domain.
	c.expect("RCPT TO:<webmaster>", 501, "5.5.2")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 2 || strings.Join(txns[0].Rcpts, ",") != "hostmaster@example.com,hostmaster@example.com" || strings.Join(txns[1].Rcpts, ",") != "hostmaster@example.com" {
		t.Fatalf("MTA transactions: %+v", txns)
	}
}

// RFC 5321 §4.5.3.1.1-2: local parts up to 64 octets, domains up to 255;
// RFC 6531 §3.5: a non-ASCII address needs the SMTPUTF8 MAIL parameter.
// None of these reach the MTA, whatever the checks' modes.
func TestPathLimits(t *testing.T) {
	local65 := strings.Repeat("x", 65)
	local64 := strings.Repeat("x", 64)
	domain256 := strings.Repeat(strings.Repeat("d", 62)+".", 4) + "example"[:4] // 252 + 4 = 256
	if len(domain256) != 256 {
		t.Fatalf("domain is %d octets", len(domain256))
	}
	for _, tt := range []struct {
		name      string
		mail      string // MAIL FROM argument
		rcpt      string // RCPT TO argument ("" to stop after MAIL)
		code      int
		enhanced  string
		delivered bool
	}{
		{"sender local part 65 octets", "<" + local65 + "@example.org>", "", 501, "5.1.7", false},
		{"recipient local part 65 octets", "<a@example.org>", "<" + local65 + "@example.com>", 501, "5.1.3", false},
		{"recipient local part 64 octets", "<a@example.org>", "<" + local64 + "@example.com>", 250, "", true},
		{"quoted local part 65 octets as written", "<a@example.org>", `<"` + local64[:61] + `\ x"@example.com>`, 501, "5.1.3", false},
		{"sender domain 256 octets", "<a@" + domain256 + ">", "", 501, "5.1.7", false},
		{"recipient domain 256 octets", "<a@example.org>", "<b@" + domain256 + ">", 501, "5.1.3", false},
		{"non-ASCII sender without SMTPUTF8", "<j\u00f6rg@example.org>", "", 553, "5.6.7", false},
		{"non-ASCII recipient without SMTPUTF8", "<a@example.org>", "<j\u00f6rg@example.com>", 553, "5.6.7", false},
		{"non-ASCII recipient domain without SMTPUTF8", "<a@example.org>", "<b@b\u00fccher.example>", 553, "5.6.7", false},
		{"non-ASCII recipient with SMTPUTF8", "<a@example.org> SMTPUTF8", "<j\u00f6rg@example.com>", 250, "", true},
		{"non-ASCII sender with SMTPUTF8", "<j\u00f6rg@example.org> SMTPUTF8", "<b@example.com>", 250, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := startMTA(t, func(m *fakeMTA) { m.smtputf8 = true })
			g := startGate(t, m, gateOptions{})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			if tt.rcpt == "" {
				rep := c.expect("MAIL FROM:"+tt.mail, tt.code, tt.enhanced)
				checkASCII(t, rep)
				// No transaction was opened.
				c.envelope("a@example.org", "b@example.com")
			} else {
				c.expect("MAIL FROM:"+tt.mail, 250, "2.1.0")
				if rep := c.expect("RCPT TO:"+tt.rcpt, tt.code, tt.enhanced); tt.code != 250 {
					checkASCII(t, rep)
				}
			}
			c.expect("QUIT", 221, "")
			m.waitIdle(t)
			for _, x := range m.transactions() {
				for _, r := range x.Rcpts {
					if r != "b@example.com" && !tt.delivered {
						t.Errorf("MTA got RCPT %q", r)
					}
				}
				if strings.Contains(x.From, local65) || strings.Contains(x.From, domain256) || (!tt.delivered && x.From != "a@example.org") {
					t.Errorf("MTA got MAIL %q", x.From)
				}
			}
		})
	}
}

func checkASCII(t *testing.T, r reply) {
	t.Helper()
	for i := 0; i < len(r.text); i++ {
		if c := r.text[i]; c < 0x20 || c >= 0x7f {
			t.Errorf("reply text not printable ASCII: %q", r.text)
			return
		}
	}
}
