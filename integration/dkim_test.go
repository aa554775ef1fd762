package integration

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// Our Authentication-Results field carries the spf, dkim and dmarc
// results, and a forged one claiming our name never reaches the mailbox.
func TestAuthenticationResults(t *testing.T) {
	mta.clearMailboxes()
	g := startGate(t, "")
	tok := newToken("authres")
	id := "gw." + domain
	signed := dkimSign(t, "From: CEO <ceo@example.com>\nTo: <list@example.org>\nSubject: "+tok+"\n\nminutes attached\n", "example.com", exampleKey)
	data := "Authentication-Results: " + id + "; dkim=pass header.d=bank.example; dmarc=pass header.from=bank.example\n" + signed
	msg{from: "list-bounces@example.org", to: "alice@example.com", data: data, token: tok}.mustAccept(t, g)
	mta.settle(t)
	var got string
	for _, m := range mta.messages(t, "alice") {
		if strings.Contains(m, tok) {
			got = m
		}
	}
	if got == "" {
		t.Fatal("message not delivered")
	}
	if strings.Contains(got, "bank.example") {
		t.Errorf("the forged Authentication-Results reached the mailbox:\n%s", got)
	}
	want := "Authentication-Results: " + id + ";\n\tspf=pass smtp.mailfrom=example.org;\n\tdkim=pass (s=it) header.d=example.com;\n\tdmarc=pass (p=none) header.from=example.com"
	if !strings.Contains(strings.ReplaceAll(got, "\r\n", "\n"), want) {
		t.Errorf("delivered message lacks\n%s\n:\n%s", want, got)
	}
}

// DMARC p=reject: logged by default (warn), refused in enforce, and the
// refused message never reaches the mailbox.
func TestCheckDMARC(t *testing.T) {
	mta.clearMailboxes()
	const want = "550 5.7.1 Rejected by DMARC policy for reject.example"
	warned := newToken("dmarcwarn")
	data := "From: Bank <alerts@reject.example>\nTo: <alice@example.com>\nSubject: " + warned + "\n\nverify your account\n"
	g := startGate(t, "")
	msg{from: "x@example.org", to: "alice@example.com", data: data, token: warned}.mustAccept(t, g)
	decision(t, g, `msg="would reject"`, "stage=message", "check=dmarc", "mode=warn", `reply="`+want+`"`)

	ge := startGate(t, "checks:\n  dmarc:\n    mode: enforce\n")
	refused := newToken("dmarcreject")
	data = "From: Bank <alerts@reject.example>\nTo: <alice@example.com>\nSubject: " + refused + "\n\nverify your account\n"
	msg{from: "x@example.org", to: "alice@example.com", data: data, token: refused}.mustRefuse(t, ge, ".", "<** "+want)
	decision(t, ge, "msg=reject", "stage=message", "check=dmarc", "mode=enforce", `reply="`+want+`"`)

	mta.settle(t)
	if n := delivered(t, "alice", warned); n != 1 {
		t.Errorf("DMARC fail in warn mode: alice has %d copies, want 1", n)
	}
	if n := delivered(t, "alice", refused); n != 0 {
		t.Errorf("DMARC p=reject in enforce mode delivered %d times", n)
	}
}

// Mail from an authenticated user is signed by smtpgate, and the copy in
// the mailbox verifies against the key published in DNS.
func TestDKIMSigning(t *testing.T) {
	mta.clearMailboxes()
	der, err := x509.MarshalPKCS8PrivateKey(exampleKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "it.example.com.key")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	g := startAuthGate(t, "checks:\n  dkim:\n    sign:\n      - {domain: example.com, selector: it, key_file: "+keyFile+"}\n")
	tok := newToken("signed")
	out, err := swaks(t, "", "--server", g.submission, "--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-secret",
		"--from", "alice@example.com", "--to", "carol@example.com", "--header", "Subject: "+tok)
	if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as") {
		t.Fatalf("want delivery, got %v:\n%s", err, out)
	}
	mta.settle(t)
	var got string
	for _, m := range mta.messages(t, "carol") {
		if strings.Contains(m, tok) {
			got = m
		}
	}
	if got == "" {
		t.Fatal("not delivered")
	}
	record := strings.TrimSuffix(strings.SplitN(dkimRecord("x", exampleKey.Public().(ed25519.PublicKey)), `"`, 2)[1], `"`)
	verifs, err := msgdkim.VerifyWithOptions(strings.NewReader(strings.ReplaceAll(got, "\n", "\r\n")), &msgdkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if name != "it._domainkey.example.com" {
				return nil, fmt.Errorf("unexpected key lookup %s", name)
			}
			return []string{record}, nil
		},
	})
	if err != nil || len(verifs) != 1 || verifs[0].Err != nil || verifs[0].Domain != "example.com" {
		t.Fatalf("delivered message does not verify: %v %+v:\n%s", err, verifs, got)
	}
	// An independent implementation agrees: dkimpy (Debian's python3-dkim),
	// with the key record handed to it instead of a DNS lookup.
	verify := exec.Command("/usr/bin/python3", "-c", dkimpyVerify, record)
	verify.Stdin = strings.NewReader(strings.ReplaceAll(got, "\n", "\r\n"))
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("dkimpy does not verify the delivered message: %v\n%s", err, out)
	}
	// and refuses it once the body changed.
	verify = exec.Command("/usr/bin/python3", "-c", dkimpyVerify, record)
	verify.Stdin = strings.NewReader(strings.ReplaceAll(got, "\n", "\r\n") + "tampered\r\n")
	if err := verify.Run(); err == nil {
		t.Fatal("dkimpy verifies a message whose body was changed")
	}
}

// dkimpyVerify verifies the message on stdin with dkimpy, answering the key
// lookup of it._domainkey.example.com with argv[1]; exit 0 on pass.
const dkimpyVerify = `
import sys, dkim
record = sys.argv[1].encode()
def dnsfunc(name, timeout=5):
    if name.rstrip(b".") == b"it._domainkey.example.com":
        return record
    return None
msg = sys.stdin.buffer.read()
ok = dkim.verify(msg, dnsfunc=dnsfunc)
print("dkimpy:", "pass" if ok else "fail")
sys.exit(0 if ok else 1)
`
