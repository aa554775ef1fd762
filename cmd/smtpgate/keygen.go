package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/smtpgate/smtpgate/check/dkim"
)

// dkimKeygen is "smtpgate dkim-keygen [-type ed25519|rsa] [-out FILE]
// DOMAIN SELECTOR": it writes a new DKIM signing key (mode 0600, never
// over an existing file) and prints the DNS TXT record to publish and the
// checks.dkim.sign entry to configure.
func dkimKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smtpgate dkim-keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kind := fs.String("type", "rsa", `key type: "rsa" (2048 bits, verified everywhere) or "ed25519" (RFC 8463; publish an RSA key beside it for older verifiers)`)
	out := fs.String("out", "", "key file to write (default SELECTOR.DOMAIN.key)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: smtpgate dkim-keygen [-type rsa|ed25519] [-out FILE] DOMAIN SELECTOR")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	domain, selector := fs.Arg(0), fs.Arg(1)
	path := *out
	if path == "" {
		path = selector + "." + domain + ".key"
	}
	key, record, err := dkim.GenerateKey(*kind, domain, selector)
	if err != nil {
		fmt.Fprintln(stderr, "smtpgate dkim-keygen:", err)
		return 1
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintln(stderr, "smtpgate dkim-keygen:", err)
		return 1
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		fmt.Fprintln(stderr, "smtpgate dkim-keygen:", err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(stderr, "smtpgate dkim-keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "; publish in DNS:\n%s\n; and configure:\n; checks:\n;   dkim:\n;     sign:\n;       - {domain: %s, selector: %s, key_file: %s}\n", record, domain, selector, path)
	return 0
}
