package session

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/policy"
)

// Replies of the DATA stage.
var (
	// Postfix smtpd_forbid_bare_newline: a bare LF or CR is how SMTP
	// smuggling hides a second message (CVE-2023-51764 family).
	errBareNewline = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Error: bare <CR> or <LF> received; lines must end in <CR><LF> (RFC 5321 section 2.3.8)"}
	// NUL is not text (RFC 5321 section 4.5.2 and RFC 5322 section 2.1;
	// BINARYMIME is not offered) and some MTAs drop it, so the MTA could
	// see another message than the checks did: refused like a bare
	// newline.
	errNUL          = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "Error: NUL character in message content; not accepted"}
	errHeaderTooBig = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message header too large"}
	errClientGone   = errors.New("client connection lost during DATA")
	// errDataTimeout answers a client that went quiet in the middle of
	// DATA: it may still be there and must retry, not bounce (RFC 5321
	// §4.5.3.2); the text is go-smtp's for a quiet client between
	// commands.
	errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Idle timeout, bye bye"}
)

// lineReaders are reused across messages: a 64 KiB bufio.Reader per
// session would make 10,000 idle sessions cost 640 MB.
var lineReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

// Data receives the message. The header block is held until the header
// checks ran; then DATA goes to the MTA with our Received: field in front
// and the body streams through, line by line, with bounded memory. The
// client hears 250 only after the MTA said 250 for the same bytes. When a
// check needs the whole message the body is spooled instead, and the MTA
// gets the message only after every verdict (spool.go).
func (s *Session) Data(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.peer.HangingUp() {
		// Refused and closing: nothing buffered behind the refusal may
		// reach the MTA.
		return errClosing
	}
	if !s.tx.Open() {
		// Every accepted RCPT opened the transaction upstream; a broken
		// connection since then means the MTA went away.
		return s.upstreamFailure("data", errTransactionLost)
	}
	br := lineReaders.Get().(*bufio.Reader)
	br.Reset(&deadlineReader{r: r, s: s})
	defer func() {
		br.Reset(nil)
		lineReaders.Put(br)
	}()
	if s.st.Policy.NeedsWholeMessage() {
		return s.spoolData(br) // spool.go
	}

	// Without header checks nothing can refuse the message before the
	// MTA sees it: send DATA at once, so that the MTA's 354 travels while
	// the client sends its header (one round trip less per message).
	early := !s.st.Policy.HasHeaderChecks()
	var w io.Writer
	if early {
		var refused error
		if w, refused = s.startData(); w == nil {
			return refused
		}
	}
	hdr, first, err := s.readHeader(br)
	if err != nil {
		return s.dataError(err, early)
	}
	prepend, refusal, err := s.checkHeader(hdr)
	if err != nil {
		return s.dataError(err, early)
	}
	if refusal != nil {
		s.tx.Reset()
		if refusal.Result.Action == policy.Discard {
			return discardedOK
		}
		return smtpError(refusal.Result.Reply)
	}

	if !early {
		var refused error
		if w, refused = s.startData(); w == nil {
			return refused
		}
	}
	if err := s.writeTrace(w); err != nil {
		return s.upstreamFailure("data", err)
	}
	for _, p := range append(s.prepend, prepend...) {
		io.WriteString(w, p)
		io.WriteString(w, "\r\n")
	}
	if err := s.writeHeader(w, hdr); err != nil {
		return s.upstreamFailure("data", err)
	}
	size, err := s.streamBody(br, first, w)
	size += int64(len(hdr))
	if err != nil {
		return s.dataError(err, true)
	}
	if s.discarded {
		s.abortUpstream()
		return discardedOK
	}
	out := s.run.Message(s.ctx, &s.client, &s.env)
	if d, ok := s.record(&out, "data"); ok {
		s.abortUpstream()
		if d.Result.Action == policy.Discard {
			return discardedOK
		}
		return smtpError(d.Result.Reply)
	}
	return s.endData(size)
}

// endData sends the final dot and passes the MTA's verdict on the message
// (size bytes) to the client.
func (s *Session) endData(size int64) error {
	rep, err := s.tx.Commit(s.ctx)
	if err != nil {
		// The MTA may or may not have the message: the client must
		// retry, and a duplicate beats a loss (RFC 5321 §6.1, and the
		// reason RFC 1047 exists).
		return s.upstreamFailure("data", err, "size", size)
	}
	if rep.Code/100 != 2 {
		s.log.Info("reject", "stage", "data", "check", "upstream", "reply", rep.String(), "size", size, "rcpts", len(s.env.Recipients))
		s.observeTransaction(rep.Code)
		return s.relay(rep)
	}
	s.observeTransaction(rep.Code)
	s.log.Info("accept", "stage", "data", "reply", rep.String(), "queue_id", queueID(rep), "size", size, "rcpts", len(s.env.Recipients), "from", s.env.From)
	return fromUpstream(rep)
}

// startData sends DATA to the MTA and returns the body writer, or nil
// and the reply for the client.
func (s *Session) startData() (io.Writer, error) {
	w, rep, err := s.tx.Data(s.ctx)
	if err != nil {
		return nil, s.upstreamFailure("data", err)
	}
	if w == nil {
		s.log.Info("reject", "stage", "data", "check", "upstream", "reply", rep.String())
		return nil, s.relay(rep)
	}
	return w, nil
}

var discardedOK = &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok"}

// dataError turns a failure while reading the client's DATA into a reply.
// If the MTA already got part of the message, its transaction is dropped
// without the final dot so that nothing half-received is queued.
func (s *Session) dataError(err error, upstreamStarted bool) error {
	if upstreamStarted {
		s.abortUpstream()
	} else {
		s.tx.Reset()
	}
	var reply *smtp.SMTPError
	switch {
	case errors.Is(err, errBareNewline), errors.Is(err, errNUL):
		// Postfix replies and disconnects; a client that smuggles does not
		// deserve another command.
		s.peer.HangUpAfterReply()
		errors.As(err, &reply)
	case errors.Is(err, smtp.ErrTooLongLine):
		// RFC 5321 §4.5.3.1.6 lets us refuse; go-smtp closes after it.
		reply = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	case errors.As(err, &reply):
		// ErrDataTooLarge, header too big, ...
	default:
		if isUpstream(err) {
			return s.upstreamFailure("data", err)
		}
		s.log.Info("abort", "stage", "data", "error", err.Error())
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.peer.HangUpAfterReply()
			return errDataTimeout
		}
		// The client went away: nobody to answer.
		return errClientGone
	}
	s.log.Info("reject", "stage", "data", "check", checkOf(reply), "reply", replyOf(reply).String())
	return reply
}

func checkOf(e *smtp.SMTPError) string {
	switch e {
	case errBareNewline:
		return "bare_newline"
	case errNUL:
		return "nul_character"
	case smtp.ErrChunkTruncated:
		return "bdat_chunk"
	case smtp.ErrDataTooLarge:
		return "message_size"
	case errHeaderTooBig:
		return "header_size"
	}
	return "data"
}

// readLine returns the next line including its CRLF, refusing bare CR,
// bare LF and NUL. The slice is valid until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if bytes.IndexByte(line, 0) >= 0 {
		return nil, errNUL
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			// After DATA the terminator always follows a CRLF. A BDAT
			// message (RFC 3030) may end without one: complete the line,
			// as Postfix does, unless it holds a bare CR.
			if bytes.IndexByte(line, '\r') >= 0 {
				return nil, errBareNewline
			}
			return append(append([]byte(nil), line...), "\r\n"...), nil
		}
		if err == bufio.ErrBufferFull {
			return nil, &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
		}
		return nil, err
	}
	n := len(line)
	if n < 2 || line[n-2] != '\r' || bytes.IndexByte(line[:n-2], '\r') >= 0 {
		return nil, errBareNewline
	}
	return line, nil
}

// readHeader reads the header block into s.hdr (reused), up to and
// including the empty line that ends it. A line that is neither a field
// nor a continuation also ends it (a message without a header section);
// it is returned as first, the first body line.
func (s *Session) readHeader(br *bufio.Reader) (hdr []byte, first []byte, err error) {
	hdr = s.hdr[:0]
	defer func() { s.hdr = hdr[:0] }()
	for {
		line, err := readLine(br)
		if err == io.EOF {
			return hdr, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
		if len(line) == 2 { // the empty line
			hdr = append(hdr, line...)
			return hdr, nil, nil
		}
		if !isFieldLine(line) && !(len(hdr) > 0 && (line[0] == ' ' || line[0] == '\t')) {
			return hdr, append([]byte(nil), line...), nil
		}
		if len(hdr)+len(line) > s.st.MaxHeaderBytes {
			return nil, nil, errHeaderTooBig
		}
		hdr = append(hdr, line...)
	}
}

// isFieldLine reports "name:" with a printable, colon-free name
// (RFC 5322 §2.2).
func isFieldLine(line []byte) bool {
	for i, c := range line {
		if c == ':' {
			return i > 0
		}
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return false
}

// checkHeader runs the header checks on each unfolded field. It returns
// the fields to prepend and the refusal, if any; IGNOREd fields are
// blanked in hdr by writeHeader via s.dropped.
func (s *Session) checkHeader(hdr []byte) (prepend []string, refusal *policy.Decision, err error) {
	if !s.st.Policy.HasHeaderChecks() {
		return nil, nil, nil
	}
	s.dropped = s.dropped[:0]
	for off := 0; off < len(hdr); {
		end := fieldEnd(hdr, off)
		raw := hdr[off:end]
		if len(raw) > 2 {
			h := unfold(raw)
			out := s.run.Header(s.ctx, &s.client, &s.env, h)
			prepend = append(prepend, out.Prepend...)
			if out.DropHeader {
				s.dropped = append(s.dropped, [2]int{off, end})
			}
			if d, ok := s.record(&out, "header"); ok {
				return nil, &d, nil
			}
		}
		off = end
	}
	return prepend, nil, nil
}

// fieldEnd returns the end of the field starting at off: after the last
// CRLF of its continuation lines.
func fieldEnd(hdr []byte, off int) int {
	i := off
	for {
		nl := bytes.IndexByte(hdr[i:], '\n')
		if nl < 0 {
			return len(hdr)
		}
		i += nl + 1
		if i >= len(hdr) || (hdr[i] != ' ' && hdr[i] != '\t') {
			return i
		}
	}
}

func unfold(raw []byte) *policy.Header {
	name, value, _ := bytes.Cut(raw, []byte{':'})
	v := strings.ReplaceAll(string(value), "\r\n", "")
	v = strings.TrimRight(strings.TrimLeft(v, " \t"), " \t")
	return &policy.Header{Name: string(name), Value: v, Raw: raw}
}

func (s *Session) writeHeader(w io.Writer, hdr []byte) error {
	off := 0
	for _, d := range s.dropped {
		if _, err := w.Write(hdr[off:d[0]]); err != nil {
			return err
		}
		off = d[1]
	}
	s.dropped = s.dropped[:0]
	_, err := w.Write(hdr[off:])
	return err
}

// streamBody copies the body to the MTA line by line: each line is checked
// for bare CR/LF and by the body checks before it is written. It returns
// the message size.
func (s *Session) streamBody(br *bufio.Reader, first []byte, w io.Writer) (int64, error) {
	var size int64
	body := s.st.Policy.HasBodyChecks()
	put := func(line []byte) error {
		size += int64(len(line))
		if body && !s.discarded {
			out := s.run.BodyLine(s.ctx, &s.client, &s.env, line[:len(line)-2])
			if d, ok := s.record(&out, "body"); ok {
				if d.Result.Action == policy.Discard {
					s.discarded = true
				} else {
					return smtpError(d.Result.Reply)
				}
			}
		}
		if s.discarded {
			return nil
		}
		if _, err := w.Write(line); err != nil {
			return upstreamWriteError{err}
		}
		return nil
	}
	if first != nil {
		if err := put(first); err != nil {
			return size, err
		}
	}
	for {
		line, err := readLine(br)
		if err == io.EOF {
			return size, nil
		}
		if err != nil {
			return size, err
		}
		if err := put(line); err != nil {
			return size, err
		}
	}
}

type upstreamWriteError struct{ error }

func (e upstreamWriteError) Unwrap() error { return e.error }

func isUpstream(err error) bool {
	var u upstreamWriteError
	return errors.As(err, &u)
}

// writeTrace writes our Received: field (RFC 5321 §4.4, with the TLS
// details Postfix adds and the "with" keywords of RFC 3848).
func (s *Session) writeTrace(w io.Writer) error {
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(sanitize(s.client.Helo))
	b.WriteString(" (")
	if s.client.Hostname != "" {
		b.WriteString(sanitize(s.client.Hostname) + " ")
	}
	if s.client.Addr.Is6() {
		b.WriteString("[IPv6:" + s.client.Addr.String() + "]")
	} else {
		b.WriteString("[" + s.client.Addr.String() + "]")
	}
	b.WriteString(")\r\n")
	if st, ok := tlsState(s.conn.Conn()); ok {
		fmt.Fprintf(&b, "\t(using %s with cipher %s)\r\n", tlsVersion(st.Version), tlsCipher(st.CipherSuite))
	}
	if s.client.Login != "" {
		b.WriteString("\t(Authenticated sender: " + sanitize(s.client.Login) + ")\r\n")
	}
	fmt.Fprintf(&b, "\tby %s (smtpgate) with %s id %s.%d", s.st.Hostname, s.withProto(), s.peer.ID, s.txn)
	if len(s.env.Recipients) == 1 {
		// One recipient only: more would disclose Bcc recipients.
		b.WriteString("\r\n\tfor <" + sanitize(s.env.Recipients[0]) + ">")
	}
	b.WriteString("; " + time.Now().Format(time.RFC1123Z) + "\r\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func (s *Session) withProto() string {
	p := "SMTP"
	if s.client.ESMTP {
		p = "ESMTP"
	}
	_, isTLS := tlsState(s.conn.Conn())
	if isTLS {
		p += "S"
	}
	if s.client.Login != "" {
		p += "A"
	}
	for _, mp := range s.mailParams {
		if mp == "SMTPUTF8" {
			p = "UTF8" + p // RFC 6531 §3.7.7: UTF8SMTP, UTF8SMTPS, ...
			break
		}
	}
	return p
}

// sanitize keeps client-supplied text from breaking the header.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '(' || r == ')' {
			return '?'
		}
		return r
	}, s)
}

// deadlineReader refreshes the read deadline while a DATA body arrives:
// go-smtp sets it only before each command line (RFC 5321 §4.5.3.2.6 asks
// for a timeout per block, not per message).
type deadlineReader struct {
	r    io.Reader
	s    *Session
	last time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if t := d.s.st.DataTimeout; t > 0 {
		now := time.Now()
		if now.Sub(d.last) > time.Second {
			d.s.conn.Conn().SetReadDeadline(now.Add(t))
			d.last = now
		}
	}
	return d.r.Read(p)
}
