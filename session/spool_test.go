package session_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/policy"
	smtpreply "github.com/smtpgate/smtpgate/reply"
)

// Spool mode: a check that needs the whole message makes the session
// spool the body, and the MTA is sent DATA only after every verdict.

var contentRefusal = smtpreply.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message content rejected: test signature found"}

// wholeCheck is a test-only whole-message check. It reads the body line
// by line, refuses a message with a line containing reject, and adds its
// fields to any other.
type wholeCheck struct {
	reject string
	add    []string
	keep   bool // keep what it saw (small messages only)

	mu     sync.Mutex
	calls  int
	fields []string // "Name: value"
	body   []byte
	size   int64
	read   int64
}

func (k *wholeCheck) CheckWholeMessage(_ context.Context, _ *policy.Client, _ *policy.Envelope, m *policy.Message) policy.Result {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	k.size = m.Size
	k.fields, k.body, k.read = nil, nil, 0
	for _, h := range m.Header {
		k.fields = append(k.fields, h.Name+": "+h.Value)
	}
	found := false
	br := bufio.NewReader(m.Body())
	for {
		line, err := br.ReadSlice('\n')
		k.read += int64(len(line))
		if k.keep {
			k.body = append(k.body, line...)
		}
		if k.reject != "" && bytes.Contains(line, []byte(k.reject)) {
			found = true
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			break
		}
	}
	if found {
		return policy.Rejected(contentRefusal, "test signature")
	}
	return policy.Result{Prepend: k.add}
}

func (k *wholeCheck) seen() (calls int, fields []string, body []byte, size, read int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.calls, k.fields, k.body, k.size, k.read
}

// spfLike adds a field at MAIL, as the spf check adds Received-SPF.
type spfLike struct{}

func (*wholeCheck) Name() string  { return "whole" }
func (spfLike) Name() string      { return "spf" }
func (discardCheck) Name() string { return "discard" }

func (spfLike) CheckMail(context.Context, *policy.Client, *policy.Envelope, string) policy.Result {
	return policy.Result{Prepend: []string{"Received-SPF: none (test)"}}
}

// recordingMTA is a scripted MTA that accepts the envelope and then
// records every line it gets until QUIT or the end of the connection,
// answering RSET. What it recorded arrives on the channel.
func recordingMTA(t *testing.T) (*rawMTA, <-chan []string) {
	got := make(chan []string, 1)
	m := startRawMTA(t, func(c *rawConn) {
		c.greet()
		c.envelope()
		var lines []string
		defer func() { got <- lines }()
		for {
			l, err := c.r.ReadString('\n')
			if err != nil {
				if l != "" {
					lines = append(lines, l)
				}
				return
			}
			lines = append(lines, l)
			switch l {
			case "RSET\r\n":
				c.send("250 2.0.0 Ok")
			case "QUIT\r\n":
				c.send("221 2.0.0 Bye")
				return
			}
		}
	})
	return m, got
}

// bdat sends msg as BDAT chunks of at most n bytes, the last with LAST,
// and reads the replies to all but the last.
func bdat(c *client, msg string, n int) {
	c.t.Helper()
	for len(msg) > n {
		c.send(fmt.Sprintf("BDAT %d\r\n%s", n, msg[:n]))
		c.expect("", 250, "")
		msg = msg[n:]
	}
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
}

// A whole-message check refuses on a line near the end of a 6 MB message:
// the client gets the check's reply and the MTA, which holds the
// transaction's MAIL and RCPT, gets no DATA and no byte of the message.
func TestSpoolRefusalNothingReachesMTA(t *testing.T) {
	body := strings.Repeat("an innocent line of text, nothing to see here at all\r\n", 6<<20/54) +
		"X5O!P%@AP TEST-SIGNATURE-7CC)7}\r\n" + "the end\r\n"
	msg := "From: a@example.org\r\nSubject: big\r\n\r\n" + body
	for _, mode := range []string{"DATA", "BDAT"} {
		t.Run(mode, func(t *testing.T) {
			m, got := recordingMTA(t)
			k := &wholeCheck{reject: "TEST-SIGNATURE"}
			g := startGate(t, nil, gateOptions{mtaAddr: m.addr, policy: onePolicy(policy.Enforce, k), spoolDir: t.TempDir()})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			if mode == "DATA" {
				c.expect("DATA", 354, "")
				c.send(stuff(msg))
			} else {
				bdat(c, msg, 1<<20)
			}
			rep := c.expect("", 554, "5.7.1")
			if rep.text != contentRefusal.Text {
				t.Errorf("reply text %q, want %q", rep.text, contentRefusal.Text)
			}
			c.expect("QUIT", 221, "")
			lines := <-got
			// Only QUIT: the reset transaction's RSET is sent with the
			// next MAIL, and there is none.
			if len(lines) != 1 || lines[0] != "QUIT\r\n" {
				t.Errorf("MTA got %d lines after RCPT, want only QUIT: %q", len(lines), head(lines, 5))
			}
			if m.dotCount() != 0 {
				t.Errorf("MTA got %d final dots", m.dotCount())
			}
			if calls, _, _, size, read := k.seen(); calls != 1 || size != int64(len(msg)) || read != int64(len(body)) {
				t.Errorf("check ran %d times on %d bytes and read %d body bytes, want once on %d and %d", calls, size, read, len(msg), len(body))
			}
		})
	}
}

func head(lines []string, n int) []string {
	if len(lines) > n {
		return lines[:n]
	}
	return lines
}

// A whole-message check adds fields: the MTA gets them after our
// Received: and the envelope checks' fields, and the message byte-exact
// (dot-stuffed lines, a last line without CRLF under BDAT), whether the
// body was held in memory or in the file. The check sees the body without
// the end-of-data terminator.
func TestSpoolAddsFieldsBodyByteExact(t *testing.T) {
	hdr := "From: a@example.org\r\n" +
		"Subject: dots\r\n" +
		"X-Folded: one\r\n\ttwo\r\n" +
		"\r\n"
	body := ".leading dot\r\n" +
		"..two dots\r\n" +
		".\r\n" +
		"..\r\n" +
		". \r\n" +
		"\r\n" +
		"trailing space \r\n" +
		"8bit: h\xc3\xa9llo\r\n" +
		strings.Repeat("long", 240) + "\r\n" +
		"middle.dot\r\n" +
		".\r\n"
	for _, tc := range []struct {
		name     string
		send     func(c *client)
		wantBody string
	}{
		{"DATA", func(c *client) {
			c.expect("DATA", 354, "")
			c.send(stuff(hdr + body))
		}, body},
		{"BDAT", func(c *client) { bdat(c, hdr+body, 7) }, body},
		{"BDAT without a last CRLF", func(c *client) { bdat(c, hdr+body+".last line", 50) }, body + ".last line\r\n"},
	} {
		for _, memory := range []int64{0, 16} {
			t.Run(fmt.Sprintf("%s/spool_memory_bytes=%d", tc.name, memory), func(t *testing.T) {
				m := startMTA(t, nil)
				k := &wholeCheck{reject: "never", add: []string{"X-Spool-Check: passed", "X-Spool-Second: two"}, keep: true}
				p := policy.NewPolicy(
					policy.Check{Mode: policy.Enforce, Checker: spfLike{}},
					policy.Check{Mode: policy.Enforce, Checker: k},
				)
				dir := t.TempDir()
				g := startGate(t, m, gateOptions{policy: p, spoolDir: dir, spoolMemoryBytes: memory})
				c := dialGate(t, g)
				c.expect("EHLO client.test", 250, "")
				c.envelope("a@example.org", "b@example.com")
				tc.send(c)
				c.expect("", 250, "2.0.0")
				c.expect("QUIT", 221, "")
				m.waitIdle(t)
				txns := m.transactions()
				if len(txns) != 1 || !txns[0].Complete {
					t.Fatalf("MTA transactions: %+v", txns)
				}
				data := string(txns[0].Data)
				rest, ok := afterReceived(data)
				if !ok {
					t.Fatalf("MTA got no Received: first: %q", data)
				}
				want := "Received-SPF: none (test)\r\nX-Spool-Check: passed\r\nX-Spool-Second: two\r\n" + hdr + tc.wantBody
				if rest != want {
					t.Errorf("MTA got after Received:\n%q\nwant\n%q", rest, want)
				}
				_, fields, seen, _, _ := k.seen()
				if string(seen) != tc.wantBody {
					t.Errorf("check saw body %q, want %q", seen, tc.wantBody)
				}
				if strings.Join(fields, "|") != "From: a@example.org|Subject: dots|X-Folded: one\ttwo" {
					t.Errorf("check saw fields %q", fields)
				}
				if ents, _ := os.ReadDir(dir); len(ents) != 0 {
					t.Errorf("spool directory holds %d files", len(ents))
				}
			})
		}
	}
}

// afterReceived returns what follows the first field, which must be a
// Received: field.
func afterReceived(data string) (string, bool) {
	if !strings.HasPrefix(data, "Received: ") {
		return "", false
	}
	i := 0
	for {
		nl := strings.Index(data[i:], "\r\n")
		if nl < 0 {
			return "", false
		}
		i += nl + 2
		if i >= len(data) || (data[i] != ' ' && data[i] != '\t') {
			return data[i:], true
		}
	}
}

// openFiles returns how many files this process has open, how many of
// them are (or were) in dir, and how many of those have no name any more
// ("dir/name (deleted)").
func openFiles(t testing.TB, dir string) (total, inDir, unlinked int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the directory's own fd, closed by now
		}
		total++
		if strings.HasPrefix(target, dir+string(filepath.Separator)) {
			inDir++
			if strings.HasSuffix(target, " (deleted)") {
				unlinked++
			}
		}
	}
	return total, inDir, unlinked
}

// waitFiles polls until ok holds for the open files; the guard is against
// a hang, not a timing assertion.
func waitFiles(t testing.TB, dir string, what string, ok func(total, inDir, unlinked int) bool) {
	t.Helper()
	guard := time.Now().Add(20 * time.Second)
	for {
		total, inDir, unlinked := openFiles(t, dir)
		if ok(total, inDir, unlinked) {
			return
		}
		if time.Now().After(guard) {
			t.Fatalf("waiting for %s: %d files open, %d of them in the spool directory", what, total, inDir)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSpoolMemoryBounded spools a 50 MB message: the heap grows by less
// than 4 MB, the temporary file has no name in the spool directory while
// it is written, and it is closed once the message was answered.
func TestSpoolMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("spools 50 MB")
	}
	const size = 50 << 20
	m := startMTA(t, func(m *fakeMTA) { m.discard = true })
	k := &wholeCheck{reject: "never there"}
	dir := t.TempDir()
	g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, k), spoolDir: dir, maxMessageBytes: 2 * size})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send("From: a@example.org\r\nSubject: big\r\n\r\n")

	heap := watchHeap()
	// 4 MB first: past the memory part, so the file is open.
	for n := 0; n < 4<<20; n += len(bodyChunk) {
		if _, err := c.nc.Write(bodyChunk); err != nil {
			t.Fatalf("client write: %v", err)
		}
	}
	// The name is removed right after the file was made: wait for
	// that, then the directory must stay empty.
	waitFiles(t, dir, "the spool file", func(_, _, unlinked int) bool { return unlinked == 1 })
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("spool directory during the spool: %d names (%v), want none", len(ents), err)
	}
	sendBody(c, size-4<<20)
	rep := c.expect("", 250, "2.0.0")
	base, peak, samples := heap.stop()

	growth := int64(peak) - int64(base)
	t.Logf("50 MB spooled and relayed (%s): heap %d KiB at start, peak growth %d KiB over %d samples", rep.text, base>>10, growth>>10, samples)
	if growth >= 4<<20 {
		t.Errorf("heap grew by %d KiB while spooling 50 MB, want < 4 MiB", growth>>10)
	}
	// The file is closed before the reply is sent.
	if _, inDir, _ := openFiles(t, dir); inDir != 0 {
		t.Errorf("%d spool files still open after the reply", inDir)
	}
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	if txns := m.transactions(); len(txns) != 1 || !txns[0].Complete || txns[0].Size < size {
		t.Errorf("MTA transactions: %+v", txns)
	}
	if calls, _, _, _, read := k.seen(); calls != 1 || read < size {
		t.Errorf("check ran %d times and read %d bytes", calls, read)
	}
}

// Every way a spooled message can end (refused, too big, smuggled,
// client gone, MTA refusing or gone) closes the spool's file: no file of
// ours is left open and no name in the spool directory, and nothing
// reaches the MTA's queue.
func TestSpoolFreedOnEveryPath(t *testing.T) {
	// No collection: the finalizer of an *os.File left open would close
	// it and hide the leak.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	sig := "Subject: s\r\n\r\n" + strings.Repeat(strings.Repeat("w", 98)+"\r\n", 1000)
	for _, tc := range []struct {
		name string
		mta  func(m *fakeMTA)
		raw  func(c *rawConn)
		o    gateOptions
		run  func(t *testing.T, c *client, dir string)
	}{
		{name: "refused by the check", run: func(t *testing.T, c *client, _ string) {
			c.expect("DATA", 354, "")
			c.send(stuff(sig + "TEST-SIGNATURE\r\n"))
			c.expect("", 554, "5.7.1")
		}},
		{name: "too large", o: gateOptions{maxMessageBytes: 50_000}, run: func(t *testing.T, c *client, _ string) {
			c.expect("DATA", 354, "")
			c.send(stuff(sig))
			c.expect("", 552, "5.3.4")
		}},
		{name: "bare LF", run: func(t *testing.T, c *client, _ string) {
			c.expect("DATA", 354, "")
			c.send(sig + "smuggled\n.\r\nMAIL FROM:<evil@example.org>\r\n.\r\n")
			c.expect("", 550, "5.5.2")
		}},
		{name: "client gone", run: func(t *testing.T, c *client, dir string) {
			c.expect("DATA", 354, "")
			c.send(sig)
			waitFiles(t, dir, "the spool file", func(_, _, unlinked int) bool { return unlinked == 1 })
		}},
		{name: "MTA refuses the message", mta: func(m *fakeMTA) {
			m.dataHook = func(_ *smtp.Conn, r io.Reader) error {
				io.Copy(io.Discard, r)
				return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "MTA says no"}
			}
		}, run: func(t *testing.T, c *client, _ string) {
			c.expect("DATA", 354, "")
			c.send(stuff(sig))
			c.expect("", 554, "5.7.0")
		}},
		{name: "MTA dies during the replay", mta: func(m *fakeMTA) {
			m.dataHook = func(c *smtp.Conn, r io.Reader) error {
				io.CopyN(io.Discard, r, 1000)
				c.Conn().Close()
				return io.ErrUnexpectedEOF
			}
		}, run: func(t *testing.T, c *client, _ string) {
			c.expect("DATA", 354, "")
			c.send(stuff(sig + strings.Repeat(strings.Repeat("y", 998)+"\r\n", 2000)))
			c.expect("", 451, "4.4.2")
		}},
		{name: "MTA refuses DATA", raw: func(c *rawConn) {
			c.greet()
			c.envelope()
			c.expect("DATA")
			c.send("554 5.5.1 Error: no valid recipients")
			c.rest()
		}, run: func(t *testing.T, c *client, _ string) {
			c.expect("DATA", 354, "")
			c.send(stuff(sig))
			c.expect("", 554, "5.5.1")
		}},
		{name: "MTA gone before DATA", raw: func(c *rawConn) {
			c.greet()
			c.envelope()
		}, run: func(t *testing.T, c *client, _ string) {
			c.expect("DATA", 354, "")
			c.send(stuff(sig))
			c.expect("", 451, "4.4.2")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m *fakeMTA
			var raw *rawMTA
			if tc.raw != nil {
				raw = startRawMTA(t, tc.raw)
				tc.o.mtaAddr = raw.addr
			} else {
				m = startMTA(t, tc.mta)
			}
			dir := t.TempDir()
			tc.o.policy = onePolicy(policy.Enforce, &wholeCheck{reject: "TEST-SIGNATURE"})
			tc.o.spoolDir, tc.o.spoolMemoryBytes = dir, 4096
			g := startGate(t, m, tc.o)
			before, _, _ := openFiles(t, dir)

			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			tc.run(t, c, dir)
			c.nc.Close()
			g.pl.wg.Wait()
			waitFiles(t, dir, "the session's files to close", func(total, inDir, _ int) bool { return inDir == 0 && total <= before })
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
				t.Errorf("spool directory: %d names (%v), want none", len(ents), err)
			}
			if m != nil {
				m.waitIdle(t)
				if n := m.completed(); n != 0 {
					t.Errorf("MTA completed %d transactions", n)
				}
				if tc.mta == nil {
					for _, x := range m.transactions() {
						if x.DataStarted {
							t.Errorf("MTA got DATA: %+v", x)
						}
					}
				}
			} else if n := raw.dotCount(); n != 0 {
				t.Errorf("MTA got %d final dots", n)
			}
		})
	}
}

// A spool that cannot be made (here: its directory is gone) is our own
// trouble: 451 4.3.0, nothing reaches the MTA, and the session goes on; a
// message that fits in memory needs no file and is delivered.
func TestSpoolDirUnusable(t *testing.T) {
	m := startMTA(t, nil)
	gone := filepath.Join(t.TempDir(), "gone")
	g := startGate(t, m, gateOptions{policy: onePolicy(policy.Enforce, &wholeCheck{}), spoolDir: gone, spoolMemoryBytes: 4096})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff("Subject: s\r\n\r\n" + strings.Repeat(strings.Repeat("v", 98)+"\r\n", 100)))
	rep := c.expect("", 451, "4.3.0")
	if rep.text != "Requested action aborted: local error in processing, try again later" {
		t.Errorf("reply text %q", rep.text)
	}
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send(stuff(testMsg))
	c.expect("", 250, "2.0.0")
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	txns := m.transactions()
	if len(txns) != 2 || txns[0].DataStarted || !txns[1].Complete {
		t.Errorf("MTA transactions: first must have no DATA, second complete: %+v", txns)
	}
}

// discardCheck discards every message at the whole-message stage.
type discardCheck struct{}

func (discardCheck) CheckWholeMessage(context.Context, *policy.Client, *policy.Envelope, *policy.Message) policy.Result {
	return policy.Result{Action: policy.Discard, Reply: contentRefusal, Evidence: "test"}
}

// A whole-message check in warn mode lets the message through; one that
// discards answers 250 and the MTA gets no DATA (its transaction is
// reset).
func TestSpoolWarnAndDiscard(t *testing.T) {
	for _, tc := range []struct {
		name     string
		check    policy.Checker
		mode     policy.Mode
		wantData bool
	}{
		{"warn", &wholeCheck{reject: "Hello"}, policy.Warn, true},
		{"discard", discardCheck{}, policy.Enforce, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := startMTA(t, nil)
			g := startGate(t, m, gateOptions{policy: onePolicy(tc.mode, tc.check), spoolDir: t.TempDir()})
			c := dialGate(t, g)
			c.expect("EHLO client.test", 250, "")
			c.envelope("a@example.org", "b@example.com")
			c.expect("DATA", 354, "")
			c.send(stuff(testMsg))
			c.expect("", 250, "2.0.0")
			c.expect("QUIT", 221, "")
			m.waitIdle(t)
			txns := m.transactions()
			if len(txns) != 1 || txns[0].DataStarted != tc.wantData || txns[0].Complete != tc.wantData {
				t.Fatalf("MTA transactions (want DATA: %v): %+v", tc.wantData, txns)
			}
			if tc.wantData && !bytes.HasSuffix(txns[0].Data, []byte(testMsg)) {
				t.Errorf("MTA got %q", txns[0].Data)
			}
		})
	}
}
