package session

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/emersion/go-smtp"
)

// readMessage is the test seam for the DATA path: it reads a message (as
// go-smtp hands it over, dot-unstuffed, without the final dot) the way
// Data does, header block then body lines, and returns the header, the
// body lines and the error.
func readMessage(in []byte, maxHeader int) (hdr []byte, body [][]byte, err error) {
	s := &Session{st: &Settings{MaxHeaderBytes: maxHeader}}
	br := bufio.NewReaderSize(bytes.NewReader(in), 64)
	h, first, err := s.readHeader(br)
	if err != nil {
		return nil, nil, err
	}
	hdr = append([]byte(nil), h...)
	if first != nil {
		body = append(body, first)
	}
	for {
		line, err := readLine(br)
		if err == io.EOF {
			return hdr, body, nil
		}
		if err != nil {
			return hdr, body, err
		}
		body = append(body, append([]byte(nil), line...))
	}
}

// FuzzReadMessage checks the DATA reader's rules: every line it passes on
// ends in CRLF with no other CR or LF (bare CR and bare LF are refused,
// Postfix smtpd_forbid_bare_newline) and no NUL, what it passes on is the input
// unchanged, and the header fields never exceed the limit.
func FuzzReadMessage(f *testing.F) {
	for _, s := range []string{
		"Subject: x\r\n\r\nbody\r\n",
		"Subject: folded\r\n\tcontinued\r\nTo: a@b\r\n\r\nbody\r\n\r\nmore\r\n",
		"no header line\r\nbody\r\n",
		"Subject: bare lf\n\r\n",
		"Subject: x\r\n\r\nbare\rcr\r\n",
		"Subject: x\r\n\r\nsmuggle\r\n.\r\nMAIL FROM:<x>\r\n",
		"Subject: x\r\n\r\nno final crlf",
		"X: " + string(bytes.Repeat([]byte("h"), 100)) + "\r\n\r\n",
		"\r\n",
		"",
		" leading space\r\n\r\n",
		"A:\r\n \r\n\r\n",
		"Subject: x\r\n\r\nnul \x00.\r\n",
	} {
		f.Add([]byte(s), uint16(64))
	}
	f.Fuzz(func(t *testing.T, in []byte, maxHeader uint16) {
		limit := int(maxHeader) + 2
		hdr, body, err := readMessage(in, limit)
		if err != nil {
			var se *smtp.SMTPError
			if !errors.Is(err, errBareNewline) && !errors.Is(err, errHeaderTooBig) && !errors.As(err, &se) {
				t.Fatalf("unexpected error %v", err)
			}
			if errors.Is(err, errBareNewline) && !hasBareNewline(in) {
				t.Fatalf("bare newline reported for %q", in)
			}
			return
		}
		// The limit counts the fields; the empty line that ends them
		// may come on top (found by this fuzzer; harmless, 2 bytes).
		if len(hdr) > limit+2 {
			t.Fatalf("header of %d bytes, limit %d", len(hdr), limit)
		}
		out := append([]byte(nil), hdr...)
		for _, l := range body {
			out = append(out, l...)
		}
		// A last line without CRLF (only possible with BDAT) is completed.
		want := in
		if len(in) > 0 && in[len(in)-1] != '\n' {
			want = append(append([]byte(nil), in...), "\r\n"...)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("read %q, input %q", out, in)
		}
		for _, l := range append(splitLines(hdr), body...) {
			n := len(l)
			if n < 2 || l[n-2] != '\r' || l[n-1] != '\n' || bytes.IndexAny(l[:n-2], "\r\n\x00") >= 0 {
				t.Fatalf("line %q passed on", l)
			}
		}
	})
}

// hasBareNewline reports a CR not followed by LF or an LF not preceded by
// CR, or input not ending in CRLF.
func hasBareNewline(in []byte) bool {
	for i, c := range in {
		if c == '\r' && (i+1 >= len(in) || in[i+1] != '\n') {
			return true
		}
		if c == '\n' && (i == 0 || in[i-1] != '\r') {
			return true
		}
	}
	return len(in) > 0 && !bytes.HasSuffix(in, []byte("\r\n"))
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return append(out, b)
		}
		out = append(out, b[:i+1])
		b = b[i+1:]
	}
	return out
}

// FuzzUnfold checks header field splitting and unfolding: fields cover
// the header block exactly, each unfolded value has no CR or LF and no
// surrounding blanks, and the name is what precedes the first colon.
func FuzzUnfold(f *testing.F) {
	for _, s := range []string{
		"Subject: hello\r\n",
		"Subject: folded\r\n\tline two\r\n  line three\r\n",
		"To: a@b\r\nCc: c@d\r\n\te@f\r\n\r\n",
		"X-Empty:\r\n",
		"X-Blank: \t \r\n",
		"NoColon\r\n",
		"Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, hdr []byte) {
		off := 0
		for off < len(hdr) {
			end := fieldEnd(hdr, off)
			if end <= off || end > len(hdr) {
				t.Fatalf("fieldEnd(%q, %d) = %d", hdr, off, end)
			}
			raw := hdr[off:end]
			h := unfold(raw)
			if !bytes.Equal(h.Raw, raw) {
				t.Fatalf("Raw %q, want %q", h.Raw, raw)
			}
			if i := bytes.IndexByte(raw, ':'); i >= 0 && h.Name != string(raw[:i]) {
				t.Fatalf("Name %q from %q", h.Name, raw)
			}
			if bytes.Contains([]byte(h.Value), []byte("\r\n")) {
				t.Fatalf("Value %q still folded", h.Value)
			}
			if v := h.Value; len(v) > 0 && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
				t.Fatalf("Value %q not trimmed", v)
			}
			off = end
		}
	})
}
