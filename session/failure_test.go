package session

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/smtpgate/smtpgate/upstream"
)

// Each kind of failure to talk to the MTA gets its own 451 (RFC 3463:
// 4.4.1 no answer, 4.4.2 connection broken, 4.3.5 our configuration,
// 4.3.0 our resources), and a failure at the final dot is noted as one
// where the MTA may have the message.
func TestFailureReplies(t *testing.T) {
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	const (
		unreachable = "451 4.4.1 Service temporarily unavailable: mail server not reachable, try again later"
		late        = "451 4.4.1 Service temporarily unavailable: mail server did not answer in time, try again later"
		lost        = "451 4.4.2 Service temporarily unavailable: connection to mail server lost, try again later"
		protocol    = "451 4.4.2 Service temporarily unavailable: mail server sent an unexpected reply, try again later"
		identity    = "451 4.3.5 Service temporarily unavailable: mail server refuses our XCLIENT/XFORWARD (configuration error), try again later"
		resources   = "451 4.3.0 Service temporarily unavailable: local resource shortage (out of file descriptors), try again later"
	)
	for _, tc := range []struct {
		err   error
		reply string
		level slog.Level
		note  string // what the log's note starts with
	}{
		{&upstream.Error{Op: "dial", Err: errors.New("connection refused")}, unreachable, slog.LevelWarn, ""},
		{&upstream.Error{Op: "dial", Err: timeout}, unreachable, slog.LevelWarn, ""},
		{&upstream.Error{Op: "greeting", Err: io.ErrUnexpectedEOF}, unreachable, slog.LevelWarn, ""},
		{errors.New("not from upstream"), unreachable, slog.LevelWarn, ""},
		{&upstream.Error{Op: "dial", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.ENFILE)}}, resources, slog.LevelError, "out of file descriptors"},
		{&upstream.Error{Op: "xclient", Err: fmt.Errorf("%w: XCLIENT answered 550 5.7.0 no", upstream.ErrIdentityRefused)}, identity, slog.LevelError, "the MTA does not authorise"},
		{&upstream.Error{Op: "greeting", Err: fmt.Errorf("%w: GREETING answered with 354", upstream.ErrProtocol)}, protocol, slog.LevelWarn, ""},
		{&upstream.Error{Op: "dot", Err: fmt.Errorf("%w: more than one reply", upstream.ErrProtocol)}, protocol, slog.LevelWarn, "after the final dot"},
		{&upstream.Error{Op: "rcpt", Err: timeout}, late, slog.LevelWarn, ""},
		{&upstream.Error{Op: "dot", Err: timeout}, late, slog.LevelWarn, "after the final dot"},
		{&upstream.Error{Op: "mail", Err: io.ErrUnexpectedEOF}, lost, slog.LevelWarn, ""},
		{&upstream.Error{Op: "dot", Err: io.ErrUnexpectedEOF}, lost, slog.LevelWarn, "after the final dot"},
		{&upstream.Error{Op: "xclient", Err: errors.New("MTA refused XCLIENT on reuse: 550 5.7.0 no")}, lost, slog.LevelWarn, ""},
		{errTransactionLost, lost, slog.LevelWarn, ""},
	} {
		r, level, note := failureReply(tc.err)
		if r.String() != tc.reply || level != tc.level || !strings.HasPrefix(note, tc.note) || (tc.note == "") != (note == "") {
			t.Errorf("%v: %q, %v, note %q; want %q, %v, note %v", tc.err, r, level, note, tc.reply, tc.level, tc.note)
		}
		if e := smtpError(r); e.Code != 451 || fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message) != tc.reply {
			t.Errorf("%v: client gets %d %v %q, want %q", tc.err, e.Code, e.EnhancedCode, e.Message, tc.reply)
		}
	}
}
