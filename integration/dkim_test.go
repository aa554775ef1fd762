package integration

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// exampleKey is example.com's DKIM key in the tests (selector "it"),
// published in testZones: mail we signed that comes back through a list.
var exampleKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

func dkimRecord(name string, pub ed25519.PublicKey) string {
	return name + ` 300 IN TXT "v=DKIM1; k=ed25519; p=` + base64.StdEncoding.EncodeToString(pub) + `"`
}

// dkimSign signs msg (LF line ends) for domain with key, selector "it",
// and returns it with LF line ends for swaks.
func dkimSign(t *testing.T, msg, domain string, key ed25519.PrivateKey) string {
	t.Helper()
	var b bytes.Buffer
	err := msgdkim.Sign(&b, strings.NewReader(strings.ReplaceAll(msg, "\n", "\r\n")), &msgdkim.SignOptions{Domain: domain, Selector: "it", Signer: key,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed, BodyCanonicalization: msgdkim.CanonicalizationRelaxed})
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(b.String(), "\r\n", "\n")
}

// Our own mail coming back through a list that kept our signature is
// accepted; the same message with its body changed is refused.
func TestCheckOwnDomainHeaderForgeryDKIM(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	ok := newToken("listok")
	signed := dkimSign(t, "From: CEO <ceo@example.com>\nTo: <list@example.org>\nSubject: "+ok+"\n\nminutes attached\n", "example.com", exampleKey)
	msg{from: "list-bounces@example.org", to: "alice@example.com", data: signed, token: ok}.mustAccept(t, g)

	broken := newToken("listbroken")
	signed = dkimSign(t, "From: CEO <ceo@example.com>\nTo: <list@example.org>\nSubject: "+broken+"\n\nminutes attached\n", "example.com", exampleKey)
	signed = strings.Replace(signed, "minutes attached", "wire the money", 1)
	msg{from: "list-bounces@example.org", to: "alice@example.com", data: signed, token: broken}.mustRefuse(t, g, ".",
		"<** 550 5.7.1 <ceo@example.com>: From: header address rejected: not logged in")

	mta.settle(t)
	if n := delivered(t, "alice", ok); n != 1 {
		t.Errorf("our signed mail via a list: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", broken); n != 0 {
		t.Errorf("signature broken by a changed body: delivered %d times", n)
	}
}
