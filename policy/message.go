package policy

import (
	"context"
	"io"
)

// StageMessage names, in logs, the checks that saw the whole message.
const StageMessage = "message"

// Message is a whole received message, as a check that needs all of it
// (a content filter, a DKIM signer) sees it before the MTA gets any of it.
// The fields' Raw bytes and the body's readers are valid only during the
// check's call: the message is freed once it was answered.
type Message struct {
	// Header holds the message's header fields in order, unfolded, as
	// the MTA will get them below the fields smtpgate adds (Received:,
	// the checks' added fields); fields that header checks IGNOREd are
	// left out.
	Header []Header
	// Body returns a reader of the body from its first byte; each call
	// returns a new reader, so several checks can read it. Lines end in
	// CRLF, dot-stuffing is undone, and the end-of-data terminator is not
	// part of it.
	Body func() io.Reader
	// Size is the message's size as received: header and body bytes.
	Size int64
}

// WholeMessageChecker looks at the whole message once it was received and
// before the MTA is sent DATA. Its Result may reject or discard the
// message, or add header fields (Prepend), which the MTA gets in front of
// the message. A policy with such a check receives messages in spool mode
// (see Policy.NeedsWholeMessage).
type WholeMessageChecker interface {
	CheckWholeMessage(ctx context.Context, c *Client, env *Envelope, m *Message) Result
}

// NeedsWholeMessage reports whether a check needs the whole message before
// the MTA may be sent any of it: the message is then spooled rather than
// streamed.
func (p *Policy) NeedsWholeMessage() bool { return p != nil && len(p.stages[wholeStage]) > 0 }

// WholeMessage runs the whole-message checks in order.
func (r *Run) WholeMessage(ctx context.Context, c *Client, env *Envelope, m *Message) Outcome {
	var out Outcome
	r.run(StageMessage, wholeStage, &out, func(i int) Result {
		return pick[WholeMessageChecker](r, i).CheckWholeMessage(ctx, c, env, m)
	})
	return out
}
