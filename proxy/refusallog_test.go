package proxy

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/config"
)

// recordLog is a slog.Handler that keeps every record with its attributes
// (those given to With included) as a map.
type recordLog struct {
	mu    *sync.Mutex
	recs  *[]map[string]string
	attrs []slog.Attr
}

func newRecordLog() *recordLog {
	return &recordLog{mu: &sync.Mutex{}, recs: &[]map[string]string{}}
}

func (h *recordLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, m)
	return nil
}

func (h *recordLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordLog{mu: h.mu, recs: h.recs, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *recordLog) WithGroup(string) slog.Handler { return h }

func (h *recordLog) records() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]string{}, *h.recs...)
}

// Refusals that go-smtp decides without the session (a command out of
// sequence, an unknown command, an unknown MAIL or RCPT parameter, bad
// syntax) are logged once each with session, client, stage, check and
// reply, as the session's own refusals are. Before, they were not logged
// at all.
func TestGoSMTPRefusalsLoggedOnce(t *testing.T) {
	s, logs := startRecorded(t)
	c := dialFromT(t, s.Addrs()[0].String(), "127.0.0.2")
	steps := []struct{ cmd, reply, stage, check string }{
		{"MAIL FROM:<a@example.org>", "502 5.5.1 Please introduce yourself first.", "mail", "bad_sequence"},
		{"EHLO client.example.org", "", "", ""},
		{"XYZW", "500 5.5.2 Syntax errors, XYZW command unrecognized", "session", "unknown_command"},
		{"MAIL FROM:<a@example.org> XYZ=1", "555 5.5.4 Unknown MAIL FROM parameter", "mail", "unknown_parameter"},
		{"MAIL TO:<a@example.org>", "501 5.5.2 Was expecting MAIL arg syntax of FROM:<address>", "mail", "smtp_syntax"},
		{"RCPT TO:<bob@example.com>", "502 5.5.1 Missing MAIL FROM command.", "rcpt", "bad_sequence"},
		{"MAIL FROM:<a@example.org>", "", "", ""},
		// DSN is not offered: the MTA does not offer it.
		{"RCPT TO:<bob@example.com> NOTIFY=NEVER", "555 5.5.4 NOTIFY parameter not supported", "rcpt", "unknown_parameter"},
		// The session's own refusal, logged by the session.
		{"RCPT TO:<x@example.net>", "554 5.7.1 <x@example.net>: Relay access denied", "rcpt", "unauth_destination"},
		{"DATA x", "501 5.5.4 DATA command should not have any arguments", "data", "smtp_syntax"},
	}
	for _, st := range steps {
		got := strings.TrimRight(c.cmd(st.cmd), "\r\n")
		if st.reply != "" && got != st.reply {
			t.Fatalf("%s: %q, want %q", st.cmd, got, st.reply)
		}
	}
	c.cmd("QUIT")
	waitFor(t, func() bool {
		for _, r := range logs.records() {
			if r["msg"] == "disconnect" {
				return true
			}
		}
		return false
	})
	rejects := map[string][]map[string]string{}
	for _, r := range logs.records() {
		if r["msg"] == "reject" {
			rejects[r["reply"]] = append(rejects[r["reply"]], r)
		}
	}
	n := 0
	for _, st := range steps {
		if st.reply == "" {
			continue
		}
		n++
		rs := rejects[st.reply]
		if len(rs) != 1 {
			t.Errorf("%q logged %d times, want once", st.reply, len(rs))
			continue
		}
		r := rs[0]
		if r["session"] == "" || r["client"] != "127.0.0.2" || r["stage"] != st.stage || r["check"] != st.check {
			t.Errorf("%q logged as %v, want stage=%s check=%s with session and client", st.reply, r, st.stage, st.check)
		}
	}
	if len(rejects) != n {
		t.Errorf("%d replies logged as reject, want %d: %v", len(rejects), n, rejects)
	}
}

// waitFor polls cond until it holds (or fails the test after 5s).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i > 500 {
			t.Fatal("condition not met")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startRecorded runs a Server whose log goes to a recordLog.
func startRecorded(t *testing.T) (*Server, *recordLog) {
	t.Helper()
	yml := "hostname: gw.example.com\ndomains: [example.com]\ndns:\n  servers: [127.0.0.1:1]\n  timeout: 100ms\nupstream:\n  address: " + fakeMTA(t) + "\n  xclient: \"off\"\nchecks:\n  unknown_sender_domain: {mode: \"off\"}\n  spf: {mode: \"off\"}\nlisten:\n  - address: 127.0.0.1:0\n"
	cfg, err := config.Parse([]byte(yml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	logs := newRecordLog()
	s, err := New(cfg, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(s.Close)
	return s, logs
}

// A go-smtp refusal whose reply the guard replaced (the third unknown
// command: 421 4.7.0 max_unknown_commands) is logged once, as the
// guard's; the 500 the client never saw is not logged.
func TestGoSMTPRefusalReplacedByGuard(t *testing.T) {
	s, logs := startRecorded(t)
	c := dialFromT(t, s.Addrs()[0].String(), "127.0.0.2")
	c.cmd("EHLO client.example.org")
	c.cmd("XYZW")
	c.cmd("XYZW")
	if l := c.cmd("XYZW"); l != "421 4.7.0 Error: too many unknown commands, closing connection\r\n" {
		t.Fatalf("third unknown command: %q", l)
	}
	waitFor(t, func() bool {
		for _, r := range logs.records() {
			if r["msg"] == "disconnect" {
				return true
			}
		}
		return false
	})
	var got []string
	for _, r := range logs.records() {
		if r["msg"] == "reject" {
			got = append(got, r["check"]+" "+r["reply"])
		}
	}
	want := []string{
		"unknown_command 500 5.5.2 Syntax errors, XYZW command unrecognized",
		"unknown_command 500 5.5.2 Syntax errors, XYZW command unrecognized",
		"max_unknown_commands 421 4.7.0 Error: too many unknown commands, closing connection",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("logged:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
