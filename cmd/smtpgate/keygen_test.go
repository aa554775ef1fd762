package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/check/dkim"
)

func TestDKIMKeygen(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range []string{"rsa", "ed25519"} {
		path := filepath.Join(dir, kind+".key")
		var out, errb bytes.Buffer
		if rc := run([]string{"dkim-keygen", "-type", kind, "-out", path, "example.com", "s1"}, &out, &errb); rc != 0 {
			t.Fatalf("%s: exit %d: %s", kind, rc, errb.String())
		}
		if !strings.Contains(out.String(), `s1._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=`+kind+"; p=") {
			t.Errorf("%s: no TXT record in:\n%s", kind, out.String())
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file %v %v; want mode 0600", kind, fi, err)
		}
		if _, err := dkim.LoadKey(path); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
		// Never over an existing key.
		if rc := run([]string{"dkim-keygen", "-out", path, "example.com", "s1"}, &out, &errb); rc != 1 {
			t.Errorf("%s: overwrote an existing key file (exit %d)", kind, rc)
		}
	}
	var out, errb bytes.Buffer
	if rc := run([]string{"dkim-keygen", "example.com"}, &out, &errb); rc != 2 {
		t.Errorf("one argument: exit %d, want 2", rc)
	}
}
