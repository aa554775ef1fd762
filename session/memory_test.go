package session_test

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpgate/smtpgate/check/content"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/table"
)

// bodyChunk is whole CRLF lines of base64-like text, about 64 KiB.
var bodyChunk = []byte(strings.Repeat(strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 2)+"YWJj\r\n", 840))

// sendBody writes about size bytes of body and the end of data.
func sendBody(c *client, size int) {
	c.t.Helper()
	for n := 0; n < size; n += len(bodyChunk) {
		if _, err := c.nc.Write(bodyChunk); err != nil { // no string conversion: no garbage on our side
			c.t.Fatalf("client write: %v", err)
		}
	}
	c.send(".\r\n")
}

// TestDataMemoryBounded relays a 50 MB message and checks that the heap
// does not grow with the message: DATA is streamed, not buffered.
func TestDataMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("relays 50 MB")
	}
	const size = 50 << 20
	m := startMTA(t, func(m *fakeMTA) { m.discard = true })
	g := startGate(t, m, gateOptions{maxMessageBytes: 2 * size})
	c := dialGate(t, g)
	c.expect("EHLO client.test", 250, "")
	c.envelope("a@example.org", "b@example.com")
	c.expect("DATA", 354, "")
	c.send("From: a@example.org\r\nSubject: big\r\n\r\n")

	heap := watchHeap()
	sendBody(c, size)
	rep := c.expect("", 250, "2.0.0")
	base, peak, samples := heap.stop()

	growth := int64(peak) - int64(base)
	t.Logf("50 MB relayed (%s): heap %d KiB at start, peak growth %d KiB over %d samples", rep.text, base>>10, growth>>10, samples)
	if growth >= 8<<20 {
		t.Errorf("heap grew by %d KiB while relaying 50 MB, want < 8 MiB", growth>>10)
	}
	c.expect("QUIT", 221, "")
	m.waitIdle(t)
	if txns := m.transactions(); len(txns) != 1 || !txns[0].Complete || txns[0].Size < size {
		t.Errorf("MTA transactions: %d", len(txns))
	}
}

// BenchmarkDataStreaming relays 1 MB messages with header checks on, one
// after the other on one client connection (and one MTA connection).
func BenchmarkDataStreaming(b *testing.B) {
	table, err := table.ParseRegexpTable(strings.NewReader(
		"/^Subject:.*viagra/\tREJECT no spam\n"+
			"/^X-Spam-Flag: YES/\tDISCARD\n"+
			"/^Content-Type:.*application\\/x-msdownload/\tREJECT no executables\n"+
			"/^X-Mailer: SpamBot/\tREJECT\n"), "header_checks")
	if err != nil {
		b.Fatal(err)
	}
	hc, err := content.NewHeaderChecks(table)
	if err != nil {
		b.Fatal(err)
	}
	p := policy.NewPolicy(policy.Check{Mode: policy.Enforce, Checker: hc})
	m := startMTA(b, func(m *fakeMTA) { m.discard = true })
	g := startGate(b, m, gateOptions{policy: p})
	c := dialGate(b, g)
	c.expect("EHLO client.test", 250, "")

	header := "From: a@example.org\r\nTo: b@example.com\r\nSubject: benchmark\r\n" +
		"Message-ID: <1@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
	const size = 1 << 20
	msgLen := len(header) + (size+len(bodyChunk)-1)/len(bodyChunk)*len(bodyChunk)
	b.SetBytes(int64(msgLen))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.envelope("a@example.org", "b@example.com")
		c.expect("DATA", 354, "")
		c.send(header)
		sendBody(c, size)
		c.expect("", 250, "2.0.0")
	}
	b.StopTimer()
	c.expect("QUIT", 221, "")
}

// passCheck is a whole-message check that passes everything without
// reading: what spool mode itself costs.
type passCheck struct{}

func (passCheck) Name() string { return "pass" }

func (passCheck) CheckWholeMessage(context.Context, *policy.Client, *policy.Envelope, *policy.Message) policy.Result {
	return policy.Result{}
}

// BenchmarkDataSpool is BenchmarkDataStreaming in spool mode (a
// whole-message check is configured): the body held in memory, or all
// but 4 KiB of it in the temporary file.
func BenchmarkDataSpool(b *testing.B) {
	table, err := table.ParseRegexpTable(strings.NewReader(
		"/^Subject:.*viagra/\tREJECT no spam\n"+
			"/^X-Spam-Flag: YES/\tDISCARD\n"+
			"/^Content-Type:.*application\\/x-msdownload/\tREJECT no executables\n"+
			"/^X-Mailer: SpamBot/\tREJECT\n"), "header_checks")
	if err != nil {
		b.Fatal(err)
	}
	hc, err := content.NewHeaderChecks(table)
	if err != nil {
		b.Fatal(err)
	}
	p := policy.NewPolicy(
		policy.Check{Mode: policy.Enforce, Checker: hc},
		policy.Check{Mode: policy.Enforce, Checker: passCheck{}},
	)
	header := "From: a@example.org\r\nTo: b@example.com\r\nSubject: benchmark\r\n" +
		"Message-ID: <1@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
	const size = 1 << 20
	msgLen := len(header) + (size+len(bodyChunk)-1)/len(bodyChunk)*len(bodyChunk)
	for _, bc := range []struct {
		name   string
		memory int64
	}{{"memory", 8 << 20}, {"file", 4 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			m := startMTA(b, func(m *fakeMTA) { m.discard = true })
			g := startGate(b, m, gateOptions{policy: p, spoolDir: b.TempDir(), spoolMemoryBytes: bc.memory})
			c := dialGate(b, g)
			c.expect("EHLO client.test", 250, "")
			b.SetBytes(int64(msgLen))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.envelope("a@example.org", "b@example.com")
				c.expect("DATA", 354, "")
				c.send(header)
				sendBody(c, size)
				c.expect("", 250, "2.0.0")
			}
			b.StopTimer()
			c.expect("QUIT", 221, "")
		})
	}
}

// heapWatch samples the heap in use until stopped.
type heapWatch struct {
	base, peak uint64
	samples    int
	done       chan struct{}
	wg         sync.WaitGroup
}

// watchHeap collects garbage, notes the heap in use, and samples it every
// 2 ms from then on.
func watchHeap() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{base: ms.HeapAlloc, done: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			h.samples++
			h.peak = max(h.peak, ms.HeapAlloc)
			select {
			case <-h.done:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

// stop ends the sampling and returns the heap at the start, its peak and
// the number of samples.
func (h *heapWatch) stop() (base, peak uint64, samples int) {
	close(h.done)
	h.wg.Wait()
	return h.base, h.peak, h.samples
}
