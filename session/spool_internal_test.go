package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
)

// A full disk is "insufficient system storage" (RFC 5321 §4.2.2 452,
// RFC 3463 4.3.1); any other failure of the spool 451 4.3.0.
func TestSpoolFailureReplies(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
		enh  smtp.EnhancedCode
	}{
		{syscall.ENOSPC, 452, smtp.EnhancedCode{4, 3, 1}},
		{syscall.EDQUOT, 452, smtp.EnhancedCode{4, 3, 1}},
		{fmt.Errorf("write /tmp/x: %w", syscall.ENOSPC), 452, smtp.EnhancedCode{4, 3, 1}},
		{syscall.EMFILE, 451, smtp.EnhancedCode{4, 3, 0}},
		{errors.New("something else"), 451, smtp.EnhancedCode{4, 3, 0}},
	} {
		s := &Session{st: &Settings{}, ctx: context.Background(), log: slog.New(slog.DiscardHandler)}
		err := s.spoolFailure(&spoolError{tc.err})
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != tc.code || se.EnhancedCode != tc.enh {
			t.Errorf("%v: got %v, want %d %v", tc.err, err, tc.code, tc.enh)
		}
	}
}

// Close frees the spool whatever state it is in, and twice.
func TestSpoolCloseIdempotent(t *testing.T) {
	dir := t.TempDir()
	sp := &spool{max: 8, dir: dir}
	if _, err := sp.Write([]byte("0123456789\r\n")); err != nil {
		t.Fatal(err)
	}
	if sp.f == nil {
		t.Fatal("no file past the memory bound")
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	if _, err := sp.Write([]byte("x\r\n")); err == nil {
		t.Error("write after Close succeeded")
	}
}
