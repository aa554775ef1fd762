package session

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
)

// DefaultSpoolMemoryBytes is how much of a spooled body is held in memory
// before the rest goes to a temporary file (limits.spool_memory_bytes).
const DefaultSpoolMemoryBytes = 1 << 20

// Replies when the spool itself fails: our own trouble, so the client
// keeps the message and retries (RFC 5321 §4.2.5; RFC 3463 X.3.1 and
// X.3.0).
var (
	replySpoolFull  = reply.New(452, [3]int{4, 3, 1}, "Insufficient system storage, try again later")
	replySpoolError = reply.New(451, [3]int{4, 3, 0}, "Requested action aborted: local error in processing, try again later")
)

// spoolData receives the message in spool mode, when a check needs the
// whole of it: the header is held as in streaming mode, the body goes to a
// spool, and the MTA is sent DATA only after every verdict passed. The
// reading rules (bare CR/LF, NUL, line length, size, timeouts) are the
// streaming mode's, from the same code. The spool is freed on every path.
func (s *Session) spoolData(br *bufio.Reader) error {
	sp := &spool{max: s.st.SpoolMemoryBytes, dir: s.st.SpoolDir}
	defer sp.Close()
	hdr, first, err := s.readHeader(br)
	if err != nil {
		return s.dataError(err, false)
	}
	prepend, refusal, err := s.checkHeader(hdr)
	if err != nil {
		return s.dataError(err, false)
	}
	if refusal != nil {
		return s.refuseSpooled(*refusal)
	}
	size, err := s.streamBody(br, first, sp)
	size += int64(len(hdr))
	if err == nil {
		err = sp.finish()
	}
	var se *spoolError
	if errors.As(err, &se) {
		return s.spoolFailure(se)
	}
	if err != nil {
		return s.dataError(err, false)
	}
	if s.discarded {
		s.resetTransaction()
		return discardedOK
	}
	out := s.run.Message(s.ctx, &s.client, &s.env)
	if d, ok := s.record(&out, policy.StageData); ok {
		return s.refuseSpooled(d)
	}
	msg := &policy.Message{Header: s.headerFields(hdr), Body: sp.Reader, Size: size}
	whole := s.run.WholeMessage(s.ctx, &s.client, &s.env, msg)
	if d, ok := s.record(&whole, policy.StageMessage); ok {
		return s.refuseSpooled(d)
	}

	w, refused := s.startData()
	if w == nil {
		return refused
	}
	if err := s.writeTrace(w); err != nil {
		return s.upstreamFailure("data", err)
	}
	// Our fields in the order their stages ran: envelope, header,
	// whole message.
	for _, fields := range [][]string{s.prepend, prepend, whole.Prepend} {
		for _, p := range fields {
			io.WriteString(w, p)
			io.WriteString(w, "\r\n")
		}
	}
	if err := s.writeHeader(w, hdr); err != nil {
		return s.upstreamFailure("data", err)
	}
	if _, err := io.Copy(w, sp.Reader()); err != nil {
		if errors.As(err, &se) {
			s.abortUpstream()
			return s.spoolFailure(se)
		}
		return s.upstreamFailure("data", err)
	}
	return s.endData(size)
}

// refuseSpooled answers an enforced refusal (already logged) of a spooled
// message: the MTA has seen its MAIL and RCPT and nothing of the message,
// so its transaction is reset.
func (s *Session) refuseSpooled(d policy.Decision) error {
	s.resetTransaction()
	if d.Result.Action == policy.Discard {
		return discardedOK
	}
	return smtpError(d.Result.Reply)
}

// resetTransaction makes the MTA's open transaction end (an RSET owed,
// sent before the next MAIL).
func (s *Session) resetTransaction() {
	s.tx.Reset()
}

// spoolFailure answers a failure to store the message: the client keeps
// it and retries.
func (s *Session) spoolFailure(se *spoolError) error {
	s.resetTransaction()
	r := replySpoolError
	if errors.Is(se, syscall.ENOSPC) || errors.Is(se, syscall.EDQUOT) {
		r = replySpoolFull
	}
	s.log.Log(s.ctx, slog.LevelError, "tempfail", "stage", "data", "check", "spool", "reply", r.String(), "error", se.Error(),
		"note", "the message could not be spooled: check the space and permissions of limits.spool_dir and the open-file limit")
	s.observe("data", "spool", r.Code, false)
	return smtpError(r)
}

// headerFields lists the header fields of hdr, unfolded, without the ones
// header checks IGNOREd (s.dropped).
func (s *Session) headerFields(hdr []byte) []policy.Header {
	var fields []policy.Header
	dropped := s.dropped
	for off := 0; off < len(hdr); {
		end := fieldEnd(hdr, off)
		for len(dropped) > 0 && dropped[0][1] <= off {
			dropped = dropped[1:]
		}
		if len(hdr[off:end]) > 2 && (len(dropped) == 0 || dropped[0][0] != off) {
			fields = append(fields, *unfold(hdr[off:end]))
		}
		off = end
	}
	return fields
}

// spoolBufs are the memory parts of spools, and spoolWriters the
// buffers in front of their files, reused across messages.
var (
	spoolBufs    = sync.Pool{New: func() any { return new([]byte) }}
	spoolWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}
)

// spool holds a message body: up to max bytes in memory, the rest in a
// temporary file whose name is removed as soon as it is created, so
// nothing is left on disk whatever happens to the process; the open file
// lives until Close. Written line by line by streamBody, then read any
// number of times through Reader.
type spool struct {
	max int64
	dir string

	mem   *[]byte
	f     *os.File
	fw    *bufio.Writer
	fsize int64
	err   error
}

// spoolError is a failure of the spool itself (disk full, no file
// descriptors), not of the client or the MTA.
type spoolError struct{ err error }

func (e *spoolError) Error() string { return "spool: " + e.err.Error() }
func (e *spoolError) Unwrap() error { return e.err }

func (sp *spool) Write(p []byte) (int, error) {
	if sp.err != nil {
		return 0, sp.err
	}
	if sp.f == nil {
		if sp.mem == nil {
			sp.mem = spoolBufs.Get().(*[]byte)
		}
		limit := sp.max
		if limit <= 0 {
			limit = DefaultSpoolMemoryBytes
		}
		if m := *sp.mem; int64(len(m)+len(p)) <= limit {
			if len(m)+len(p) > cap(m) {
				m = grow(m, len(p), limit)
			}
			*sp.mem = append(m, p...)
			return len(p), nil
		}
		if err := sp.spill(); err != nil {
			sp.err = &spoolError{err}
			return 0, sp.err
		}
	}
	n, err := sp.fw.Write(p)
	sp.fsize += int64(n)
	if err != nil {
		sp.err = &spoolError{err}
	}
	return n, sp.err
}

// grow returns b with room for n more bytes: twice the room, up to limit,
// so that filling the memory part leaves about as much garbage as it
// holds (append grows large slices by a quarter, which left five times as
// much).
func grow(b []byte, n int, limit int64) []byte {
	c := max(2*cap(b), len(b)+n, 16<<10)
	if int64(c) > limit {
		c = int(limit)
	}
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// spill opens the temporary file that takes what does not fit in memory.
func (sp *spool) spill() error {
	f, err := os.CreateTemp(sp.dir, "smtpgate-spool-")
	if err != nil {
		return err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return err
	}
	sp.f = f
	sp.fw = spoolWriters.Get().(*bufio.Writer)
	sp.fw.Reset(f)
	return nil
}

// finish makes everything written readable.
func (sp *spool) finish() error {
	if sp.err == nil && sp.fw != nil {
		if err := sp.fw.Flush(); err != nil {
			sp.err = &spoolError{err}
		}
	}
	return sp.err
}

// Reader returns a new reader of the body from its start; call finish
// first.
func (sp *spool) Reader() io.Reader {
	var mem []byte
	if sp.mem != nil {
		mem = *sp.mem
	}
	if sp.f == nil {
		return bytes.NewReader(mem)
	}
	return io.MultiReader(bytes.NewReader(mem), &spoolFileReader{io.NewSectionReader(sp.f, 0, sp.fsize)})
}

// spoolFileReader marks read errors of the file as the spool's own.
type spoolFileReader struct{ r io.Reader }

func (r *spoolFileReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &spoolError{err}
	}
	return n, err
}

// Close frees the memory and closes the file (whose name is already gone).
// It may be called more than once.
func (sp *spool) Close() error {
	var err error
	if sp.f != nil {
		err = sp.f.Close()
		sp.fw.Reset(nil)
		spoolWriters.Put(sp.fw)
		sp.f, sp.fw, sp.fsize = nil, nil, 0
	}
	if sp.mem != nil {
		if int64(cap(*sp.mem)) <= 4*DefaultSpoolMemoryBytes {
			*sp.mem = (*sp.mem)[:0]
			spoolBufs.Put(sp.mem)
		}
		sp.mem = nil
	}
	sp.err = errors.New("spool closed")
	return err
}
