package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/smtpgate/smtpgate/reply"
)

// A transaction from the first recipient to the MTA's verdict: MAIL goes
// with the first RCPT, Open follows the MTA, and the reply values carry
// code, enhanced code and text.
func TestTxCommit(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<a@example.org> SIZE=10")
		m.expect("RCPT TO:<b@example.com>")
		m.send("250 2.1.0 Ok", "550 5.1.1 <b@example.com>: Recipient address rejected: User unknown")
		m.expect("RCPT TO:<c@example.com> NOTIFY=NEVER")
		m.send("250 2.1.5 Ok")
		m.expect("DATA")
		m.send("354 End data with <CR><LF>.<CR><LF>")
		if got := m.data(); got != "..x\r\n" {
			t.Errorf("MTA got %q", got)
		}
		m.send("250-2.0.0 Ok:", "250 2.0.0 queued as 3XyZ")
		m.quit()
	})
	ctx := context.Background()
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()
	tx := c.NewTx("a@example.org", []string{"SIZE=10"})
	if tx.Open() {
		t.Fatal("Open before the first Rcpt")
	}
	rep, err := tx.Rcpt(ctx, "b@example.com", nil)
	if want := reply.New(550, [3]int{5, 1, 1}, "<b@example.com>: Recipient address rejected: User unknown"); err != nil || rep != want {
		t.Fatalf("first Rcpt = %+v, %v; want %+v", rep, err, want)
	}
	if !tx.Open() || tx.Retryable() {
		t.Fatalf("after MAIL 250: Open %v, Retryable %v; want true, false", tx.Open(), tx.Retryable())
	}
	if rep, err = tx.Rcpt(ctx, "c@example.com", []string{"NOTIFY=NEVER"}); err != nil || rep != reply.New(250, [3]int{2, 1, 5}, "Ok") {
		t.Fatalf("second Rcpt = %+v, %v", rep, err)
	}
	w, rep, err := tx.Data(ctx)
	if err != nil || w == nil || rep.Code != 354 {
		t.Fatalf("Data = %v, %+v, %v", w, rep, err)
	}
	io.WriteString(w, ".x\r\n")
	rep, err = tx.Commit(ctx)
	if want := reply.New(250, [3]int{2, 0, 0}, "Ok:\nqueued as 3XyZ"); err != nil || rep != want {
		t.Fatalf("Commit = %+v, %v; want %+v", rep, err, want)
	}
	if tx.Open() || !c.Reused() {
		t.Errorf("after Commit: Open %v, Reused %v; want false, true", tx.Open(), c.Reused())
	}
}

// A refused MAIL or DATA ends the transaction; what was left standing at
// the MTA is reset (RSET pipelined with the next MAIL).
func TestTxRefusals(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<spam@example.org>")
		m.expect("RCPT TO:<b@example.com>")
		m.send("553 5.7.1 <spam@example.org>: Sender address rejected", "503 5.5.1 Error: need MAIL command")
		m.expect("MAIL FROM:<a@example.org>")
		m.expect("RCPT TO:<b@example.com>")
		m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
		m.expect("DATA")
		m.send("554 5.5.1 Error: no valid recipients")
		m.expect("RSET")
		m.expect("MAIL FROM:<a@example.org>")
		m.expect("RCPT TO:<b@example.com>")
		m.send("250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok")
		m.expect("RSET")
		m.expect("MAIL FROM:<d@example.org>")
		m.expect("RCPT TO:<b@example.com>")
		m.send("250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok")
		m.quit()
	})
	ctx := context.Background()
	c := dial(t, addr, testOpts, nil)
	defer c.Quit()

	tx := c.NewTx("spam@example.org", nil)
	rep, err := tx.Rcpt(ctx, "b@example.com", nil)
	if want := reply.New(553, [3]int{5, 7, 1}, "<spam@example.org>: Sender address rejected"); err != nil || rep != want {
		t.Fatalf("Rcpt after a refused MAIL = %+v, %v; want MAIL's %+v", rep, err, want)
	}
	if tx.Open() || tx.Retryable() {
		t.Fatalf("refused MAIL on a fresh connection: Open %v, Retryable %v; want false, false", tx.Open(), tx.Retryable())
	}

	tx = c.NewTx("a@example.org", nil)
	if _, err := tx.Rcpt(ctx, "b@example.com", nil); err != nil || !tx.Open() {
		t.Fatalf("Rcpt: %v, Open %v", err, tx.Open())
	}
	w, rep, err := tx.Data(ctx)
	if w != nil || err != nil || rep != reply.New(554, [3]int{5, 5, 1}, "Error: no valid recipients") {
		t.Fatalf("refused Data = %v, %+v, %v", w, rep, err)
	}
	if tx.Open() {
		t.Fatal("Open after a refused DATA")
	}

	tx = c.NewTx("a@example.org", nil)
	if _, err := tx.Rcpt(ctx, "b@example.com", nil); err != nil {
		t.Fatal(err)
	}
	tx.Reset()
	if tx.Open() {
		t.Fatal("Open after Reset")
	}
	tx = c.NewTx("d@example.org", nil)
	if rep, err := tx.Rcpt(ctx, "b@example.com", nil); err != nil || rep.Code != 250 {
		t.Fatalf("Rcpt after Reset = %+v, %v", rep, err)
	}
	tx.Reset()
	var nilTx *Tx
	nilTx.Reset()
	if nilTx.Open() || nilTx.Retryable() {
		t.Error("a nil Tx is open or retryable")
	}
}

// Retryable: what a fresh connection may not repeat, and only that.
func TestTxRetryable(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reused  bool
		replies []string // to MAIL and RCPT
		code    int
		retry   bool
		open    bool // MAIL stands
	}{
		{"421 to MAIL", false, []string{"421 4.3.2 Service shutting down"}, 421, true, false},
		{"421 to the first RCPT", false, []string{"250 2.1.0 Ok", "421 4.3.2 Service shutting down"}, 421, true, false},
		{"452 to MAIL, fresh connection", false, []string{"452 4.3.1 Insufficient system storage", "503 5.5.1 Error: need MAIL command"}, 452, false, false},
		{"452 to MAIL, reused connection", true, []string{"452 4.5.3 Too many messages sent", "503 5.5.1 Error: need MAIL command"}, 452, true, false},
		{"550 to MAIL, reused connection", true, []string{"550 5.7.1 no", "503 5.5.1 Error: need MAIL command"}, 550, false, false},
		{"450 to the first RCPT", false, []string{"250 2.1.0 Ok", "450 4.1.1 try later"}, 450, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startMTA(t, func(m *fakeMTA) {
				m.hello("gate.test", "PIPELINING")
				if tc.reused {
					m.expect("MAIL FROM:<a@example.org>")
					m.expect("RCPT TO:<b@example.com>")
					m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
					m.expect("DATA")
					m.send("354 go ahead")
					m.data()
					m.send("250 2.0.0 Ok")
				}
				m.expect("MAIL FROM:<a@example.org>")
				m.expect("RCPT TO:<b@example.com>")
				m.send(tc.replies...)
				m.hang()
			})
			ctx := context.Background()
			c := dial(t, addr, testOpts, nil)
			defer c.Close()
			if tc.reused {
				tx := c.NewTx("a@example.org", nil)
				tx.Rcpt(ctx, "b@example.com", nil)
				w, _, err := tx.Data(ctx)
				if err != nil || w == nil {
					t.Fatalf("Data: %v", err)
				}
				if _, err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			tx := c.NewTx("a@example.org", nil)
			rep, err := tx.Rcpt(ctx, "b@example.com", nil)
			if err != nil || rep.Code != tc.code {
				t.Fatalf("Rcpt = %+v, %v; want code %d", rep, err, tc.code)
			}
			if tx.Retryable() != tc.retry || tx.Open() != tc.open {
				t.Errorf("Retryable %v, Open %v; want %v, %v", tx.Retryable(), tx.Open(), tc.retry, tc.open)
			}
		})
	}
}

// A connection that fails while the transaction begins is worth a retry
// on a fresh one; once a MAIL stands, a failure ends the transaction.
func TestTxConnectionLost(t *testing.T) {
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<a@example.org>")
		m.expect("RCPT TO:<b@example.com>")
		// gone without a word
	})
	c := dial(t, addr, testOpts, nil)
	defer c.Close()
	tx := c.NewTx("a@example.org", nil)
	_, err := tx.Rcpt(context.Background(), "b@example.com", nil)
	if !errors.Is(err, ErrLost) || !tx.Retryable() || tx.Open() {
		t.Fatalf("Rcpt: %v (ErrLost %v), Retryable %v, Open %v; want ErrLost, true, false", err, errors.Is(err, ErrLost), tx.Retryable(), tx.Open())
	}

	addr = startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<a@example.org>")
		m.expect("RCPT TO:<b@example.com>")
		m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
		m.expect("RCPT TO:<c@example.com>")
	})
	c = dial(t, addr, testOpts, nil)
	defer c.Close()
	tx = c.NewTx("a@example.org", nil)
	if _, err := tx.Rcpt(context.Background(), "b@example.com", nil); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Rcpt(context.Background(), "c@example.com", nil)
	if !errors.Is(err, ErrLost) || tx.Retryable() || tx.Open() {
		t.Fatalf("second Rcpt: %v, Retryable %v, Open %v; want ErrLost, false, false", err, tx.Retryable(), tx.Open())
	}
}

// Abort in the middle of DATA closes the connection without the final
// dot: the MTA sees the connection end inside DATA and queues nothing.
func TestTxAbort(t *testing.T) {
	got := make(chan string, 1)
	addr := startMTA(t, func(m *fakeMTA) {
		m.hello("gate.test", "PIPELINING")
		m.expect("MAIL FROM:<a@example.org>")
		m.expect("RCPT TO:<b@example.com>")
		m.send("250 2.1.0 Ok", "250 2.1.5 Ok")
		m.expect("DATA")
		m.send("354 go ahead")
		b, _ := io.ReadAll(m.r)
		got <- string(b)
	})
	ctx := context.Background()
	c := dial(t, addr, testOpts, nil)
	tx := c.NewTx("a@example.org", nil)
	if _, err := tx.Rcpt(ctx, "b@example.com", nil); err != nil {
		t.Fatal(err)
	}
	w, _, err := tx.Data(ctx)
	if err != nil || w == nil {
		t.Fatalf("Data: %v", err)
	}
	io.WriteString(w, "Subject: half\r\n")
	tx.Abort()
	if tx.Open() || !c.Broken() {
		t.Errorf("after Abort: Open %v, Broken %v; want false, true", tx.Open(), c.Broken())
	}
	if b := <-got; b != "" && b != "Subject: half\r\n" {
		t.Errorf("MTA got %q after DATA, want no more than the line (and no final dot)", b)
	}
}

// Each *Error is exactly one kind of failure, so that the session's reply
// follows from errors.Is alone.
func TestErrorKinds(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	emfile := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	kinds := []error{ErrUnavailable, ErrTimeout, ErrLost, ErrProtocol, ErrIdentityRefused}
	for _, tc := range []struct {
		err  *Error
		kind error
		more []error // further sentinels that hold
	}{
		{&Error{Op: "dial", Err: errors.New("connection refused")}, ErrUnavailable, nil},
		{&Error{Op: "dial", Err: timeout}, ErrUnavailable, nil},
		{&Error{Op: "dial", Err: emfile}, ErrUnavailable, []error{ErrLocalResources}},
		{&Error{Op: "greeting", Err: io.ErrUnexpectedEOF}, ErrUnavailable, nil},
		{&Error{Op: "greeting", Err: fmt.Errorf("%w: GREETING answered with 354", ErrProtocol)}, ErrProtocol, nil},
		{&Error{Op: "rcpt", Err: timeout}, ErrTimeout, nil},
		{&Error{Op: "dot", Err: timeout}, ErrTimeout, []error{ErrOutcomeUnknown}},
		{&Error{Op: "rcpt", Err: io.ErrUnexpectedEOF}, ErrLost, nil},
		{&Error{Op: "dot", Err: io.ErrUnexpectedEOF}, ErrLost, []error{ErrOutcomeUnknown}},
		{&Error{Op: "data", Err: fmt.Errorf("%w: DATA answered with 250", ErrProtocol)}, ErrProtocol, nil},
		{&Error{Op: "xclient", Err: fmt.Errorf("%w: XCLIENT answered 550", ErrIdentityRefused)}, ErrIdentityRefused, nil},
		{&Error{Op: "xclient", Err: errors.New("MTA refused XCLIENT on reuse")}, ErrLost, nil},
	} {
		for _, k := range kinds {
			if got := errors.Is(tc.err, k); got != (k == tc.kind) {
				t.Errorf("errors.Is(%v, %v) = %v", tc.err, k, got)
			}
		}
		for _, k := range []error{ErrLocalResources, ErrOutcomeUnknown} {
			want := false
			for _, m := range tc.more {
				want = want || m == k
			}
			if got := errors.Is(tc.err, k); got != want {
				t.Errorf("errors.Is(%v, %v) = %v", tc.err, k, got)
			}
		}
	}
}
