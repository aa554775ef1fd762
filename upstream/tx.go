package upstream

import (
	"context"
	"errors"
	"io"

	"github.com/smtpgate/smtpgate/reply"
)

// Tx is one mail transaction on the MTA, in step with the client's: MAIL
// goes with the first recipient (Rcpt), the message through Data, and
// Commit sends the final dot; Abort drops it unfinished, Reset abandons it
// before DATA. It knows whether a MAIL stands at the MTA (Open), so that
// the session asks instead of tracking. It is not safe for concurrent
// use, and its Conn serves one Tx at a time.
type Tx struct {
	c          *Conn
	from       string
	mailParams []string
	// open: the MTA accepted MAIL and the transaction has not ended.
	open bool
	// retry: the last Rcpt failed to begin the transaction in a way a
	// fresh connection may not repeat.
	retry bool
}

// NewTx prepares a transaction from the reverse-path from, with the
// MAIL parameters to pass on (already formatted); nothing is sent before
// the first Rcpt.
func (c *Conn) NewTx(from string, mailParams []string) *Tx {
	return &Tx{c: c, from: from, mailParams: mailParams}
}

// Open reports whether MAIL stands at the MTA: accepted, and neither
// ended (Commit, a refused DATA, Reset, Abort) nor lost with the
// connection. False for a nil Tx.
func (t *Tx) Open() bool { return t != nil && t.open && !t.c.broken }

// Rcpt adds a recipient. While no MAIL stands it begins the transaction:
// the owed RSET, MAIL and this RCPT, pipelined where the MTA offers it. The
// reply is MAIL's when the MTA refused MAIL, else RCPT's.
func (t *Tx) Rcpt(ctx context.Context, to string, params []string) (reply.Reply, error) {
	t.retry = false
	if t.open {
		rep, err := t.c.Rcpt(ctx, to, params)
		return value(rep), err
	}
	reused := t.c.Reused()
	mailRep, rcptRep, err := t.c.Begin(ctx, t.from, t.mailParams, to, params)
	if err != nil {
		var ue *Error
		// Not after a timeout: the client would wait twice as long.
		t.retry = errors.As(err, &ue) && !ue.Timeout() && ctx.Err() == nil
		return reply.Reply{}, err
	}
	if mailRep.Code/100 != 2 {
		// A 421 (RFC 5321 §3.8), or a temporary refusal where the MTA
		// limits messages per connection (Exim, OpenSMTPD).
		t.retry = mailRep.Closing() || (reused && mailRep.Code/100 == 4)
		return *mailRep, nil
	}
	t.open = !rcptRep.Closing()
	t.retry = rcptRep.Closing()
	return *rcptRep, nil
}

// Retryable reports whether the last Rcpt failed to begin the transaction
// in a way that a fresh connection to the MTA may not repeat: the MTA
// closing (421), a temporary refusal of MAIL on a connection that already
// carried a message, or a connection that failed without timing out.
// Nothing of the transaction stands at the MTA then.
func (t *Tx) Retryable() bool { return t != nil && t.retry }

// Data sends DATA. On the MTA's 354 it returns the writer for the
// message, which takes CRLF-terminated lines and dot-stuffs them; finish
// with Commit or Abort. A refusal ends the transaction and is returned
// with a nil writer.
func (t *Tx) Data(ctx context.Context) (io.Writer, reply.Reply, error) {
	rep, w, err := t.c.Data(ctx)
	if err != nil {
		t.open = false
		return nil, reply.Reply{}, err
	}
	if w == nil {
		t.open = false
	}
	return w, *rep, nil
}

// Commit sends the final dot and returns the MTA's verdict on the
// message. The transaction ends either way; an error wraps
// ErrOutcomeUnknown where the MTA may have queued the message.
func (t *Tx) Commit(ctx context.Context) (reply.Reply, error) {
	t.open = false
	rep, err := t.c.End(ctx)
	return value(rep), err
}

// Abort drops the transaction in the middle of DATA without the final
// dot, so that the MTA queues nothing of it (Conn.Abort): the connection
// is closed and cannot be used again.
func (t *Tx) Abort() {
	t.open = false
	t.c.Abort()
}

// Reset abandons the transaction before DATA (or after a refused one):
// the MTA gets an RSET, pipelined with the next MAIL on the connection.
// Nothing for a nil Tx.
func (t *Tx) Reset() {
	if t == nil {
		return
	}
	if t.open {
		t.c.Reset()
	}
	t.open = false
}

func value(r *reply.Reply) reply.Reply {
	if r == nil {
		return reply.Reply{}
	}
	return *r
}
