package content

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

const testHeaderTable = `# header_checks under test
/^Subject: reject me/		REJECT
/^Subject: reject text/		REJECT go away
/^Subject: reject (\w+)/	reject bad word $1
/^Subject: coded/		REJECT 554 5.7.9 coded text
/^Subject: enhanced only/	REJECT 5.7.2 enhanced text
/^Subject: temp enhanced/	REJECT 4.7.3 later
/^Subject: code only/		REJECT 551 code text
/^Subject: defer-if/		DEFER_IF_PERMIT maybe
/^Subject: defer/		DEFER
/^Subject: virus/		DISCARD virus notification
/^Subject: warn/		WARN looks odd
/^X-Mailer: spamware/		IGNORE
/^X-Tag: (\w+)/			PREPEND X-Seen-Tag: $1
/^Subject: dunno/		DUNNO
/^Subject: ok/			OK
/^Subject: (dunno|ok|other)/	REJECT never reached after DUNNO
`

type wantResult struct {
	action   policy.Action
	code     int
	enhanced [3]int
	text     string
	drop     bool
	prepend  string
	log      bool
}

func checkResult(t *testing.T, r policy.Result, want wantResult) {
	t.Helper()
	if r.Action != want.action || r.Reply.Code != want.code || r.Reply.Enhanced != want.enhanced {
		t.Errorf("got %v %d %v; want %v %d %v (evidence %q)", r.Action, r.Reply.Code, r.Reply.Enhanced, want.action, want.code, want.enhanced, r.Evidence)
	}
	if want.text != "" && r.Reply.Text != want.text {
		t.Errorf("reply text %q; want %q", r.Reply.Text, want.text)
	}
	if r.DropHeader != want.drop {
		t.Errorf("DropHeader %v; want %v", r.DropHeader, want.drop)
	}
	var prepend string
	if len(r.Prepend) > 0 {
		prepend = strings.Join(r.Prepend, "|")
	}
	if prepend != want.prepend {
		t.Errorf("Prepend %q; want %q", prepend, want.prepend)
	}
	if r.Log != want.log {
		t.Errorf("Log %v; want %v", r.Log, want.log)
	}
	if (r.Action != policy.Pass || r.Log) && !strings.HasPrefix(r.Evidence, "test:") {
		t.Errorf("evidence %q; want file:line: ...", r.Evidence)
	}
}

var (
	e571 = [3]int{5, 7, 1}
	e471 = [3]int{4, 7, 1}
)

func TestHeaderChecks(t *testing.T) {
	hc, err := NewHeaderChecks(mustTable(t, testHeaderTable))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		header string
		want   wantResult
	}{
		{"Subject: hello", wantResult{action: policy.Pass}},
		{"Subject: reject me", wantResult{action: policy.Reject, code: 550, enhanced: e571, text: "Message content rejected"}},
		{"subject: REJECT ME", wantResult{action: policy.Reject, code: 550, enhanced: e571}},
		{"Subject: reject text", wantResult{action: policy.Reject, code: 550, enhanced: e571, text: "go away"}},
		{"Subject: reject viagra now", wantResult{action: policy.Reject, code: 550, enhanced: e571, text: "bad word viagra"}},
		{"Subject: coded", wantResult{action: policy.Reject, code: 554, enhanced: [3]int{5, 7, 9}, text: "coded text"}},
		{"Subject: enhanced only", wantResult{action: policy.Reject, code: 550, enhanced: [3]int{5, 7, 2}, text: "enhanced text"}},
		{"Subject: temp enhanced", wantResult{action: policy.Reject, code: 450, enhanced: [3]int{4, 7, 3}, text: "later"}},
		{"Subject: code only", wantResult{action: policy.Reject, code: 551, enhanced: e571, text: "code text"}},
		{"Subject: defer", wantResult{action: policy.Reject, code: 450, enhanced: e471}},
		{"Subject: defer-if", wantResult{action: policy.Reject, code: 450, enhanced: e471, text: "maybe"}},
		{"Subject: virus found", wantResult{action: policy.Discard, code: 250, enhanced: [3]int{2, 0, 0}}},
		{"Subject: warn", wantResult{action: policy.Pass, log: true}},
		{"X-Mailer: spamware 1.0", wantResult{action: policy.Pass, drop: true, log: true}},
		{"X-Tag: blue", wantResult{action: policy.Pass, prepend: "X-Seen-Tag: blue", log: true}},
		{"Subject: dunno", wantResult{action: policy.Pass}},
		{"Subject: ok", wantResult{action: policy.Pass}},
		{"Subject: other", wantResult{action: policy.Reject, code: 550, enhanced: e571, text: "never reached after DUNNO"}},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			name, value, _ := strings.Cut(tt.header, ": ")
			r := hc.CheckHeader(context.Background(), &policy.Client{}, &policy.Envelope{}, &policy.Header{Name: name, Value: value})
			checkResult(t, r, tt.want)
		})
	}
}

func TestHeaderChecksRaw(t *testing.T) {
	hc, err := NewHeaderChecks(mustTable(t, "/^Subject:x$/ REJECT\n/^Received: from a[[:space:]]+by b$/ REJECT folded\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The raw field is matched as received, without its line breaks.
	r := hc.CheckHeader(context.Background(), nil, nil, &policy.Header{Name: "Subject", Value: "x", Raw: []byte("Subject:x\r\n")})
	if r.Action != policy.Reject {
		t.Errorf("Subject:x: %v; want reject", r.Action)
	}
	r = hc.CheckHeader(context.Background(), nil, nil, &policy.Header{Name: "Received", Value: "from a\tby b", Raw: []byte("Received: from a\r\n\tby b\r\n")})
	if r.Action != policy.Reject || r.Reply.Text != "folded" {
		t.Errorf("folded: %v %q; want reject folded", r.Action, r.Reply.Text)
	}
}

func TestContentReplySanitized(t *testing.T) {
	hc, err := NewHeaderChecks(mustTable(t, "/^Subject: (.*)/ REJECT no $1\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := hc.CheckHeader(context.Background(), nil, nil, &policy.Header{Name: "Subject", Value: "a\x01b\xffc" + strings.Repeat("x", 1000)})
	if strings.ContainsAny(r.Reply.Text, "\x01\xff") || len(r.Reply.Text) > 400 {
		t.Errorf("reply text not sanitized: %q", r.Reply.Text)
	}
}

func TestBodyChecks(t *testing.T) {
	bc, err := NewBodyChecks(mustTable(t, `~^[[:alnum:]+/]{60,}$~	OK
/^[> ]*Received: +from +(porcupine\.org) /
	reject forged client name in Received: header: $1
/<iframe src=(3D)?cid:/	DISCARD
/^click here/		WARN spammy
/^tempfail/		DEFER 451 4.3.0 try later
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string
		want wantResult
	}{
		{"Hello world", wantResult{action: policy.Pass}},
		{"> Received: from porcupine.org (1.2.3.4)", wantResult{action: policy.Reject, code: 550, enhanced: e571, text: "forged client name in Received: header: porcupine.org"}},
		{"Received: from hostname.porcupine.org (1.2.3.4)", wantResult{action: policy.Pass}},
		{strings.Repeat("QUJD", 19), wantResult{action: policy.Pass}},
		{`<iframe src=3Dcid:x height=3D0>`, wantResult{action: policy.Discard, code: 250, enhanced: [3]int{2, 0, 0}}},
		{"click here now", wantResult{action: policy.Pass, log: true}},
		{"tempfail", wantResult{action: policy.Reject, code: 451, enhanced: [3]int{4, 3, 0}, text: "try later"}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			checkResult(t, bc.CheckBodyLine(context.Background(), nil, nil, []byte(tt.line)), tt.want)
		})
	}
}

func TestContentActionErrors(t *testing.T) {
	tests := []struct {
		name   string
		table  string
		header bool
		want   string
	}{
		{"unknown action", "/a/ OK\n/b/ FROB it\n", true, `test:2: unknown action "FROB"`},
		{"unsupported action", "/a/\n  hold\n", true, "test:1: action HOLD is not supported"},
		{"substituted action", "/(a)/ $1\n", true, "test:1: action \"$1\""},
		{"IGNORE in body", "/a/ IGNORE\n", false, "test:1: action IGNORE is for header_checks only"},
		{"PREPEND in body", "/a/ PREPEND X-A: b\n", false, "test:1: action PREPEND is for header_checks only"},
		{"PREPEND not a header", "/a/ PREPEND not a header\n", true, "test:1: PREPEND"},
		{"PREPEND empty", "/a/ PREPEND\n", true, "test:1: PREPEND needs"},
		{"IGNORE with text", "/a/ IGNORE me\n", true, "test:1: IGNORE takes no text"},
		{"bad code", "/a/ REJECT 250 ok\n", true, "test:1: reply code 250"},
		{"code class mismatch", "/a/ REJECT 550 4.7.1 x\n", true, "test:1: reply code 550 and enhanced code 4.7.1 disagree"},
		{"bad enhanced", "/a/ REJECT 3.7.1 x\n", true, "test:1: enhanced status code"},
		{"DEFER 5xx", "/a/ DEFER 550 x\n", true, "test:1: DEFER with reply code 550"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := mustTable(t, tt.table)
			var err error
			if tt.header {
				_, err = NewHeaderChecks(tab)
			} else {
				_, err = NewBodyChecks(tab)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v; want %q", err, tt.want)
			}
		})
	}
}

// The rules of Postfix's BACKSCATTER_README, as an operator pastes them:
// results on indented continuation lines, and the long Received: pattern
// wrapped where the README's text version wraps it.
const readmeHeaderChecks = `/^Received: +from +(porcupine\.org) +/
    reject forged client name in Received: header: $1
/^Received: +from +[^ ]+ +\(([^ ]+ +[he]+lo=|[he]+lo +)
    (porcupine\.org)\)/
    reject forged client name in Received: header: $2
/^Message-ID:.*@(porcupine\.org)/
    reject forged domain name in Message-ID: header: $1
/^(From|Return-Path):.*[[:<:]](user@domain\.tld)[[:>:]]/
    reject forged sender address in $1: header: $2
/^Subject: *Your email contains VIRUSES/ DISCARD virus notification
/^Content-Disposition:.*VIRUS1_DETECTED_AND_REMOVED/
    DISCARD virus notification
/^Content-Disposition:.*VirusWarning.txt/ DISCARD virus notification
`

const readmeBodyChecks = `/^[> ]*Received: +from +(porcupine\.org) /
    reject forged client name in Received: header: $1
/^[> ]*Received: +from +[^ ]+ +\(([^ ]+ +[he]+lo=|[he]+lo +)
    (porcupine\.org)\)/
    reject forged client name in Received: header: $2
/^[> ]*Message-ID:.*@(porcupine\.org)/
    reject forged domain name in Message-ID: header: $1
/^[> ]*(From|Return-Path):.*[[:<:]](user@domain\.tld)[[:>:]]/
    reject forged sender address in $1: header: $2
`

func TestBackscatterREADME(t *testing.T) {
	hc, err := NewHeaderChecks(mustTable(t, readmeHeaderChecks))
	if err != nil {
		t.Fatal(err)
	}
	bc, err := NewBodyChecks(mustTable(t, readmeBodyChecks))
	if err != nil {
		t.Fatal(err)
	}
	forged := func(text string) wantResult {
		return wantResult{action: policy.Reject, code: 550, enhanced: e571, text: text}
	}
	discard := wantResult{action: policy.Discard, code: 250, enhanced: [3]int{2, 0, 0}}
	tests := []struct {
		line string
		want wantResult
	}{
		{"Received: from porcupine.org (1.2.3.4) by x", forged("forged client name in Received: header: porcupine.org")},
		{"Received: from hostname.porcupine.org (1.2.3.4) by x", wantResult{}},
		{"Received: from host.example.com ([1.2.3.4] helo=porcupine.org) by x", forged("forged client name in Received: header: porcupine.org")},
		{"Received: from [1.2.3.4] (port=12345 helo=porcupine.org) by x", forged("forged client name in Received: header: porcupine.org")},
		{"Received: from host.example.com (HELO porcupine.org) by x", forged("forged client name in Received: header: porcupine.org")},
		{"Received: from host.example.com (EHLO porcupine.org) by x", forged("forged client name in Received: header: porcupine.org")},
		{"Received: from host.example.com (EHLO hostname.porcupine.org) by x", wantResult{}},
		{"Message-ID: <1cb479435d8eb9.2beb1.qmail@porcupine.org>", forged("forged domain name in Message-ID: header: porcupine.org")},
		{"Message-ID: <yulszqocfzsficvzzju@porcupine.org>", forged("forged domain name in Message-ID: header: porcupine.org")},
		{"Message-ID: <stuff@hostname.porcupine.org>", wantResult{}},
		{"From: Someone <user@domain.tld>", forged("forged sender address in From: header: user@domain.tld")},
		{"Return-Path: <user@domain.tld>", forged("forged sender address in Return-Path: header: user@domain.tld")},
		{"From: <otheruser@domain.tld>", wantResult{}},
		{"Subject: Your email contains VIRUSES", discard},
		{"Content-Disposition: attachment; filename=VirusWarning.txt", discard},
		{"Content-Disposition: inline; x=VIRUS1_DETECTED_AND_REMOVED", discard},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			name, value, _ := strings.Cut(tt.line, ": ")
			checkResult(t, hc.CheckHeader(context.Background(), nil, nil, &policy.Header{Name: name, Value: value}), tt.want)
			if strings.HasPrefix(tt.line, "Subject") || strings.HasPrefix(tt.line, "Content-") {
				return
			}
			// The same forgeries quoted in the body of a bounce.
			checkResult(t, bc.CheckBodyLine(context.Background(), nil, nil, []byte("> "+tt.line)), tt.want)
		})
	}
}

func loadExample(t testing.TB, file string) *table.RegexpTable {
	t.Helper()
	f, err := os.Open("../../examples/" + file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := table.ParseRegexpTable(f, file)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestExampleTables(t *testing.T) {
	hc, err := NewHeaderChecks(loadExample(t, "header_checks"))
	if err != nil {
		t.Fatal(err)
	}
	bc, err := NewBodyChecks(loadExample(t, "body_checks"))
	if err != nil {
		t.Fatal(err)
	}
	rejected := wantResult{action: policy.Reject, code: 550, enhanced: e571}
	discard := wantResult{action: policy.Discard, code: 250, enhanced: [3]int{2, 0, 0}}
	headers := []struct {
		line string
		want wantResult
	}{
		{"Received: from example.com (spam.example.net [198.51.100.7]) by mx.example.org", rejected},
		{"Received: from spam.example.net (HELO example.com) (198.51.100.7) by mx.example.org", rejected},
		{"Received: from spam.example.net ([198.51.100.7] helo=example.com) by mx.example.org", rejected},
		{"Received: from mail.example.com (mail.example.com [192.0.2.25]) by mx.example.org", wantResult{}},
		{"Received: from spam.example.net (HELO mail.example.com) by mx.example.org", wantResult{}},
		{"Message-ID: <abc.qmail@example.com>", rejected},
		{"Message-ID: <20240101.abc@mail.example.com>", wantResult{}},
		{"From: Old <old-user@example.com>", rejected},
		{"From: Current <user@example.com>", wantResult{}},
		{"Subject: Your email contains VIRUSES", discard},
		{"Content-Disposition: attachment; filename=\"VirusWarning.txt\"", discard},
		{"Subject: lunch?", wantResult{}},
	}
	for _, tt := range headers {
		t.Run(tt.line, func(t *testing.T) {
			name, value, _ := strings.Cut(tt.line, ": ")
			r := hc.CheckHeader(context.Background(), nil, nil, &policy.Header{Name: name, Value: value})
			tt.want.text = r.Reply.Text
			checkResult2(t, r, tt.want, "header_checks:")
		})
	}
	body := []struct {
		line string
		want wantResult
	}{
		{"> Received: from example.com (spam.example.net [198.51.100.7])", rejected},
		{"Received: from spam.example.net (EHLO example.com) (198.51.100.7)", rejected},
		{"Received: from mail.example.com (mail.example.com [192.0.2.25])", wantResult{}},
		{"Message-ID: <abc.qmail@example.com>", rejected},
		{">> Return-Path: <old-user@example.com>", rejected},
		{strings.Repeat("QUJD", 19), wantResult{}},
		{"Thanks for lunch", wantResult{}},
	}
	for _, tt := range body {
		t.Run(tt.line, func(t *testing.T) {
			checkResult2(t, bc.CheckBodyLine(context.Background(), nil, nil, []byte(tt.line)), tt.want, "body_checks:")
		})
	}
}

// checkResult2 is checkResult for tables not named "test".
func checkResult2(t *testing.T, r policy.Result, want wantResult, evidencePrefix string) {
	t.Helper()
	if r.Action != want.action || r.Reply.Code != want.code || r.Reply.Enhanced != want.enhanced {
		t.Errorf("got %v %d %v; want %v %d %v (evidence %q)", r.Action, r.Reply.Code, r.Reply.Enhanced, want.action, want.code, want.enhanced, r.Evidence)
	}
	if r.Action != policy.Pass && !strings.HasPrefix(r.Evidence, evidencePrefix) {
		t.Errorf("evidence %q; want %s<line>: ...", r.Evidence, evidencePrefix)
	}
}

func TestContentEvidence(t *testing.T) {
	hc, err := NewHeaderChecks(mustTable(t, "/x/ OK\n\n/^Subject: bad/ REJECT\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := hc.CheckHeader(context.Background(), nil, nil, &policy.Header{Name: "Subject", Value: "bad\x00one"})
	if want := `test:3: "Subject: bad\x00one"`; r.Evidence != want {
		t.Errorf("evidence %q; want %q", r.Evidence, want)
	}
}

func TestPolicyRunsContentChecks(t *testing.T) {
	hc, err := NewHeaderChecks(mustTable(t, "/^X-Drop:/ IGNORE\n/^X-Add:/ PREPEND X-Added: yes\n/^Subject: virus/ DISCARD\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := policy.NewPolicy(policy.Check{Mode: policy.Enforce, Checker: hc}).Start(context.Background(), nil)
	ctx := context.Background()
	if out := p.Header(ctx, nil, nil, &policy.Header{Name: "X-Drop", Value: "1"}); !out.DropHeader {
		t.Errorf("IGNORE: DropHeader not set")
	}
	if out := p.Header(ctx, nil, nil, &policy.Header{Name: "X-Add", Value: "1"}); len(out.Prepend) != 1 || out.Prepend[0] != "X-Added: yes" {
		t.Errorf("PREPEND: %q", out.Prepend)
	}
	out := p.Header(ctx, nil, nil, &policy.Header{Name: "Subject", Value: "virus"})
	if d, ok := out.Refusal(); !ok || d.Result.Action != policy.Discard {
		t.Errorf("DISCARD: %+v", out)
	}
}

func benchBody() [][]byte {
	var lines [][]byte
	text := "Hello Bob,\n\nthanks for the notes from Tuesday; the numbers look right to me.\n" +
		"> On Tuesday, Alice wrote:\n> Received: from mail.example.com (mail.example.com [192.0.2.25])\n" +
		strings.Repeat(strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5", 1)+"\n", 20) +
		strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n", 20)
	for l := range bytes.SplitSeq([]byte(text), []byte("\n")) {
		lines = append(lines, l)
	}
	return lines
}

func BenchmarkBodyChecks(b *testing.B) {
	bc, err := NewBodyChecks(loadExample(b, "body_checks"))
	if err != nil {
		b.Fatal(err)
	}
	lines := benchBody()
	n := 0
	for _, l := range lines {
		n += len(l) + 2
	}
	ctx := context.Background()
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		for _, l := range lines {
			if r := bc.CheckBodyLine(ctx, nil, nil, l); r.Action != policy.Pass {
				b.Fatalf("%q: %v", l, r.Evidence)
			}
		}
	}
}

func BenchmarkHeaderChecks(b *testing.B) {
	hc, err := NewHeaderChecks(loadExample(b, "header_checks"))
	if err != nil {
		b.Fatal(err)
	}
	headers := []*policy.Header{
		{Name: "Received", Value: "from mail.example.org (mail.example.org [198.51.100.1]) by mx.example.com (Postfix) with ESMTPS id 4F1; Tue, 2 Jan 2024 10:00:00 +0000", Raw: []byte("Received: from mail.example.org (mail.example.org [198.51.100.1])\r\n\tby mx.example.com (Postfix) with ESMTPS id 4F1;\r\n\tTue, 2 Jan 2024 10:00:00 +0000\r\n")},
		{Name: "Message-ID", Value: "<20240102100000.abc@mail.example.org>"},
		{Name: "From", Value: "Alice <alice@example.org>"},
		{Name: "To", Value: "Bob <bob@example.com>"},
		{Name: "Subject", Value: "notes from Tuesday"},
		{Name: "Date", Value: "Tue, 2 Jan 2024 10:00:00 +0000"},
		{Name: "Content-Type", Value: "text/plain; charset=utf-8"},
	}
	n := 0
	for _, h := range headers {
		n += len(h.Name) + len(h.Value) + 4
	}
	ctx := context.Background()
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for b.Loop() {
		for _, h := range headers {
			if r := hc.CheckHeader(ctx, nil, nil, h); r.Action != policy.Pass {
				b.Fatalf("%s: %v", h.Name, r.Evidence)
			}
		}
	}
}

func mustTable(t testing.TB, text string) *table.RegexpTable {
	t.Helper()
	tab, err := table.ParseRegexpTable(strings.NewReader(text), "test")
	if err != nil {
		t.Fatalf("ParseRegexpTable: %v", err)
	}
	return tab
}
