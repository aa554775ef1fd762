package content

import (
	"bytes"
	"context"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

// FuzzParseRegexpTable: parsing any input must not panic or hang, and a
// table that parses must be usable as header and body checks on any input.
func FuzzParseRegexpTable(f *testing.F) {
	f.Add([]byte(readmeHeaderChecks), []byte("Received: from porcupine.org x"))
	f.Add([]byte(testHeaderTable), []byte("Subject: reject viagra"))
	f.Add([]byte("if !/^a/i\n/(b)(c)?/!/d/ REJECT 554 5.7.1 $1${2}$$\nendif\n"), []byte("bc"))
	f.Fuzz(func(t *testing.T, text, input []byte) {
		tab, err := table.ParseRegexpTable(bytes.NewReader(text), "fuzz")
		if err != nil {
			return
		}
		tab.Match(string(input))
		tab.MatchBytes(input)
		ctx := context.Background()
		if hc, err := NewHeaderChecks(tab); err == nil {
			r := hc.CheckHeader(ctx, nil, nil, &policy.Header{Name: "Subject", Value: string(input), Raw: input})
			if r.Action == policy.Reject && (r.Reply.Code < 400 || r.Reply.Code > 599 || r.Reply.Code/100 != r.Reply.Enhanced[0]) {
				t.Errorf("bad reply %v", r.Reply)
			}
		}
		if bc, err := NewBodyChecks(tab); err == nil {
			bc.CheckBodyLine(ctx, nil, nil, input)
		}
	})
}
