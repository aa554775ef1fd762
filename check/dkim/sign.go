package dkim

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"
	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
)

// SignKey is one signing key: mail from authenticated clients with a
// From: in Domain is signed with it.
type SignKey struct {
	Domain   string
	Selector string
	Signer   crypto.Signer
}

// signedFields are the header fields signed (RFC 6376 §5.4.1), when the
// message has them. From is signed once more than it occurs
// (oversigning, §8.15), so that no From: can be added below ours.
var signedFields = []string{"From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-Date", "Resent-From",
	"Resent-To", "Resent-Cc", "In-Reply-To", "References", "List-Id", "List-Help", "List-Unsubscribe",
	"List-Subscribe", "List-Post", "List-Owner", "List-Archive", "Message-ID", "Content-Type",
	"Content-Transfer-Encoding", "MIME-Version"}

// sign signs a message from an authenticated client when its From:
// domain has a key: the DKIM-Signature field goes in front of the
// message (relaxed/relaxed, SHA-256).
func (k *DKIM) sign(m *policy.Message) policy.Result {
	var from string
	count := map[string]int{}
	var hdr bytes.Buffer
	for _, h := range m.Header {
		hdr.Write(h.Raw)
		count[strings.ToLower(h.Name)]++
		if strings.EqualFold(h.Name, "From") && from == "" {
			from = h.Value
		}
	}
	a, err := mail.ParseAddress(from)
	if err != nil {
		return policy.Result{}
	}
	domain := strings.ToLower(address.Domain(a.Address))
	key, ok := k.keys[domain]
	if !ok {
		return policy.Result{}
	}
	var keys []string
	for _, f := range signedFields {
		for range count[strings.ToLower(f)] {
			keys = append(keys, f)
		}
	}
	keys = append(keys, "From")
	hdr.WriteString("\r\n")
	s, err := msgdkim.NewSigner(&msgdkim.SignOptions{Domain: key.Domain, Selector: key.Selector, Signer: key.Signer,
		HeaderCanonicalization: msgdkim.CanonicalizationRelaxed, BodyCanonicalization: msgdkim.CanonicalizationRelaxed,
		HeaderKeys: keys})
	if err == nil {
		_, err = io.Copy(s, io.MultiReader(&hdr, m.Body()))
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		// Unsigned mail still goes out: the receiver judges it by SPF.
		return policy.Result{Log: true, Evidence: fmt.Sprintf("dkim sign d=%s s=%s failed: %v", key.Domain, key.Selector, err)}
	}
	return policy.Result{Prepend: []string{strings.TrimRight(s.Signature(), "\r\n")}, Log: true,
		Evidence: fmt.Sprintf("dkim signed: d=%s s=%s", key.Domain, key.Selector)}
}

// LoadKey reads a PEM private key (PKCS #8, or PKCS #1 for RSA): RSA of
// at least 1024 bits (2048 recommended) or Ed25519 (RFC 8463).
func LoadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	switch blk.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 1024 {
			return nil, fmt.Errorf("%s: RSA key of %d bits, DKIM needs at least 1024 (RFC 8301)", path, k.N.BitLen())
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("%s: not an RSA or Ed25519 key", path)
}

// GenerateKey makes a new signing key: "ed25519" or "rsa" (2048 bits),
// PEM-encoded (PKCS #8), and the DNS TXT record that publishes it.
func GenerateKey(kind, domain, selector string) (pemKey []byte, record string, err error) {
	var priv crypto.Signer
	switch kind {
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, "", errors.New(`key type: want "rsa" or "ed25519"`)
	}
	if err != nil {
		return nil, "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", err
	}
	rec, err := TXTRecord(domain, selector, priv.Public())
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), rec, nil
}

// TXTRecord is the DNS record (zone-file syntax, strings of at most 255
// characters) that publishes a public key for domain and selector.
func TXTRecord(domain, selector string, pub crypto.PublicKey) (string, error) {
	var kind, b64 string
	switch p := pub.(type) {
	case ed25519.PublicKey:
		kind, b64 = "ed25519", base64.StdEncoding.EncodeToString(p)
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			return "", err
		}
		kind, b64 = "rsa", base64.StdEncoding.EncodeToString(der)
	default:
		return "", errors.New("not an RSA or Ed25519 key")
	}
	v := "v=DKIM1; k=" + kind + "; p=" + b64
	var parts []string
	for len(v) > 255 {
		parts = append(parts, `"`+v[:255]+`"`)
		v = v[255:]
	}
	parts = append(parts, `"`+v+`"`)
	return fmt.Sprintf("%s._domainkey.%s. 3600 IN TXT %s", selector, strings.TrimSuffix(domain, "."), strings.Join(parts, " ")), nil
}
