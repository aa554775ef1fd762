// Package upstream is the client side towards the real MTA: dial, EHLO,
// XCLIENT/XFORWARD, MAIL/RCPT/DATA/RSET/QUIT, with the MTA's replies
// returned as values (reply.Reply) so that the session can hand them to
// the client unchanged. A Tx is one mail transaction on a Conn (Rcpt,
// Data, Commit, Abort), driven by the session in step with the client;
// a Pool keeps connections between client sessions. A failure to talk to
// the MTA is an *Error of one kind (ErrUnavailable, ErrTimeout, ErrLost,
// ErrProtocol, ErrIdentityRefused), told apart with errors.Is.
//
// upstream knows nothing of policy. It pipelines where the MTA offers
// PIPELINING (RFC 2920) and never buffers a message: DATA is written
// through a dot-stuffing writer as it arrives.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smtpgate/smtpgate/reply"
)

// ErrProtocol is wrapped by an *Error when the MTA answered out of turn or
// with a reply that does not fit the command (RFC 5321 §4.2, §4.3.2): the
// replies can no longer be matched to the commands, so the connection is
// dropped.
var ErrProtocol = errors.New("MTA broke the SMTP protocol")

// ErrIdentityRefused is wrapped by an *Error when the MTA refused XCLIENT
// or XFORWARD and Options.XClient asks for that one explicitly.
var ErrIdentityRefused = errors.New("MTA refused to learn the client's identity")

// The kinds of failure an *Error is (errors.Is), for the reply the client
// gets: the MTA could not be reached (ErrUnavailable), did not answer in
// time once connected (ErrTimeout), or the connection failed later
// (ErrLost); ErrProtocol and ErrIdentityRefused above; we ran out of file
// descriptors (ErrLocalResources). ErrOutcomeUnknown marks a failure at
// the final dot: the MTA got the whole message and may have queued it.
var (
	ErrUnavailable    = errors.New("MTA not reachable")
	ErrTimeout        = errors.New("MTA did not answer in time")
	ErrLost           = errors.New("MTA connection lost")
	ErrLocalResources = errors.New("out of file descriptors")
	ErrOutcomeUnknown = errors.New("MTA may have the message")
)

// Error is a failure to talk to the MTA at all (refused, timed out, the
// connection dropped): the caller answers the client with a 4xx.
type Error struct {
	Op  string // dial, greeting, ehlo, xclient, mail, rcpt, data, dot, rset
	Err error
}

func (e *Error) Error() string { return "upstream " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the MTA did not answer in time.
func (e *Error) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout() || errors.Is(e.Err, context.DeadlineExceeded)
}

// Is tells which kind of failure e is (see ErrUnavailable). Exactly one
// of ErrUnavailable, ErrTimeout, ErrLost, ErrProtocol and
// ErrIdentityRefused holds for every *Error.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrUnavailable:
		return e.unreachable() && !errors.Is(e.Err, ErrProtocol)
	case ErrTimeout:
		return !e.unreachable() && e.Timeout()
	case ErrLost:
		return !e.unreachable() && !e.Timeout() && !errors.Is(e.Err, ErrProtocol) && !errors.Is(e.Err, ErrIdentityRefused)
	case ErrLocalResources:
		return errors.Is(e.Err, syscall.EMFILE) || errors.Is(e.Err, syscall.ENFILE)
	case ErrOutcomeUnknown:
		return e.Op == "dot"
	}
	return false
}

// unreachable reports a failure before the MTA greeted us.
func (e *Error) unreachable() bool { return e.Op == "dial" || e.Op == "greeting" }

// ClientInfo is what XCLIENT/XFORWARD tell the MTA about the real client.
type ClientInfo struct {
	Addr  string // IP address, without brackets
	Port  int
	Name  string // reverse DNS name; "" is sent as [UNAVAILABLE]
	Helo  string
	Proto string // SMTP or ESMTP
	Login string
}

// Options configure a Conn.
type Options struct {
	// Helo is our name in EHLO when the client's HELO is unknown.
	Helo string
	// Timeout bounds each command's reply (RFC 5321 §4.5.3.2).
	Timeout time.Duration
	// DataTimeout bounds the reply to the final dot (RFC 5321
	// §4.5.3.2.6: 10 minutes), apart from Timeout: giving up there while
	// the MTA is still working makes a duplicate when the client retries.
	DataTimeout time.Duration
	// ConnectTimeout bounds the dial and the greeting.
	ConnectTimeout time.Duration
	// XClient is auto, xclient, xforward or off.
	XClient string
	// Observe, when set, is told each reply's wait (from the last write
	// to the MTA) and error, by operation (greeting, ehlo, mail, rcpt,
	// dot, ...): the proxy's latency histogram.
	Observe func(op string, wait time.Duration, err error)
	// OnIdentity, when set, is told how each connection presents the
	// client: once after the handshake, and again when that changes (the
	// MTA refused XCLIENT on reuse, or XFORWARD before a MAIL).
	OnIdentity func(Identity)
}

// Identity is how a connection presents the client to the MTA.
type Identity struct {
	// Mode is what the MTA is told: xclient, xforward or off (nothing:
	// the MTA takes smtpgate for the client).
	Mode string
	// Refused is the command the MTA refused (XCLIENT or XFORWARD) and
	// Reply its answer; "" when nothing was refused.
	Refused, Reply string
	// Failed: the connection was given up, as Options.XClient names the
	// refused command explicitly (no fallback).
	Failed bool
}

// Conn is one connection to the MTA. It is not safe for concurrent use.
// Its command methods (Begin, Rcpt, Data, End, Abort, Reset) are the wire
// level; a Tx (NewTx) drives them as one transaction and knows its state.
type Conn struct {
	nc   net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	opts Options

	ext map[string]string // EHLO keywords, upper case, with their parameters

	// pendingRset is set when a transaction was abandoned: RSET is sent
	// pipelined with the next MAIL instead of costing a round trip now.
	pendingRset bool
	// xforwardLine is sent before every MAIL (XFORWARD mode).
	xforwardLine string
	// txn is set from MAIL until the MTA's reply to the final dot: a
	// connection given back to a Pool in between owes an RSET.
	txn    bool
	broken bool
	dw     dotWriter
	sent   time.Time // last write to the MTA, for Options.Observe

	// mode is how the client is presented (xclient, xforward or off),
	// client the client presented; pool is where Quit returns c to.
	mode   string
	client *ClientInfo
	pool   *Pool
	// ended counts the transactions that got a reply to their final dot
	// on this connection.
	ended int
	// presented is set once XCLIENT succeeded: the MTA holds that
	// client's identity until the next XCLIENT.
	presented bool
	// born is when c was dialled and messages the MAIL commands sent on
	// it, for Pool.MaxAge and Pool.MaxMessages.
	born     time.Time
	messages int
}

// stampWriter notes when bytes last went to the MTA.
type stampWriter struct {
	w    io.Writer
	sent *time.Time
}

func (s stampWriter) Write(p []byte) (int, error) {
	*s.sent = time.Now()
	return s.w.Write(p)
}

// Dial connects to addr, reads the greeting and sends EHLO; then, as
// opts.XClient says, XCLIENT (and EHLO again, as the MTA answers XCLIENT
// with a new greeting) or XFORWARD.
func Dial(ctx context.Context, addr string, opts Options, client *ClientInfo) (*Conn, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.DataTimeout == 0 {
		opts.DataTimeout = 10 * time.Minute
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: opts.ConnectTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &Error{Op: "dial", Err: err}
	}
	c := &Conn{nc: nc, r: bufio.NewReaderSize(nc, 4096), opts: opts, sent: time.Now()}
	c.w = bufio.NewWriterSize(stampWriter{nc, &c.sent}, 32*1024)
	c.dw.w = c.w
	if err := c.handshake(ctx, client); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) handshake(ctx context.Context, client *ClientInfo) error {
	c.deadline(ctx, c.opts.ConnectTimeout)
	rep, err := c.readReply("greeting")
	if err != nil {
		return err
	}
	if rep.Code != 220 {
		return &Error{Op: "greeting", Err: fmt.Errorf("MTA greeted with %s", rep)}
	}
	if err := c.ehlo(ctx, c.opts.Helo); err != nil {
		return err
	}
	c.client = client
	c.mode = "off"
	if client == nil {
		return nil
	}
	mode := c.opts.XClient
	if mode == "auto" {
		switch {
		case c.ext["XCLIENT"] != "" || c.has("XCLIENT"):
			mode = "xclient"
		case c.has("XFORWARD"):
			mode = "xforward"
		default:
			mode = "off"
		}
	}
	c.mode = mode
	switch mode {
	case "xclient":
		return c.xclient(ctx, client)
	case "xforward":
		c.xforward(client)
		if c.xforwardLine == "" {
			c.mode = "off"
		}
	}
	c.reportIdentity("", nil)
	return nil
}

// reportIdentity tells Options.OnIdentity how the client is presented
// now; refused is the command the MTA refused, with its reply.
func (c *Conn) reportIdentity(refused string, rep *reply.Reply) {
	if c.opts.OnIdentity == nil {
		return
	}
	id := Identity{Mode: c.mode, Refused: refused}
	if rep != nil {
		id.Reply = rep.String()
	}
	c.opts.OnIdentity(id)
}

// identityRefused handles the MTA's refusal of XCLIENT or XFORWARD: in
// auto mode the connection falls back (XFORWARD if the MTA offers it and
// XCLIENT was refused, else nothing) and goes on; a mode that names the
// command gives the connection up, loudly.
func (c *Conn) identityRefused(verb string, rep *reply.Reply) error {
	if c.opts.XClient != "auto" {
		c.broken = true
		if c.opts.OnIdentity != nil {
			c.opts.OnIdentity(Identity{Mode: c.mode, Refused: verb, Reply: rep.String(), Failed: true})
		}
		return &Error{Op: strings.ToLower(verb), Err: fmt.Errorf("%w: %s answered %s", ErrIdentityRefused, verb, rep)}
	}
	if verb == "XCLIENT" && c.presented {
		// On reuse: the MTA still takes us for the previous client, whose
		// rights (a trusted network, a login) the next one must not get.
		c.broken = true
		return &Error{Op: "xclient", Err: fmt.Errorf("MTA refused XCLIENT on reuse: %s", rep)}
	}
	c.mode, c.xforwardLine = "off", ""
	if verb == "XCLIENT" && c.has("XFORWARD") && c.client != nil {
		c.xforward(c.client)
		if c.xforwardLine != "" {
			c.mode = "xforward"
		}
	}
	c.reportIdentity(verb, rep)
	return nil
}

func (c *Conn) has(kw string) bool {
	_, ok := c.ext[kw]
	return ok
}

// Extension reports whether the MTA announced the EHLO keyword, and its
// parameters.
func (c *Conn) Extension(kw string) (string, bool) {
	v, ok := c.ext[strings.ToUpper(kw)]
	return v, ok
}

func (c *Conn) ehlo(ctx context.Context, name string) error {
	if err := c.cmd(ctx, "ehlo", "EHLO "+name); err != nil {
		return err
	}
	rep, err := c.readReply("ehlo")
	if err != nil {
		return err
	}
	if rep.Code != 250 {
		return &Error{Op: "ehlo", Err: fmt.Errorf("MTA refused EHLO: %s", rep)}
	}
	c.ext = map[string]string{}
	for _, l := range rep.Lines()[1:] {
		kw, params, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(kw)] = params
	}
	return nil
}

// attrLine builds "VERB NAME=value ..." with the attributes of ci that
// the MTA announced after VERB in its EHLO reply, xtext-encoded; "" when
// there are none. XCLIENT also takes LOGIN.
func (c *Conn) attrLine(verb string, ci *ClientInfo) string {
	announced := map[string]bool{}
	for _, a := range strings.Fields(strings.ToUpper(c.ext[verb])) {
		announced[a] = true
	}
	attrs := []struct{ k, v string }{
		{"NAME", orUnavailable(ci.Name)},
		{"ADDR", addrAttr(ci.Addr)},
		{"PORT", portAttr(ci.Port)},
		{"PROTO", orUnavailable(ci.Proto)},
		{"HELO", orUnavailable(ci.Helo)},
	}
	if verb == "XCLIENT" {
		attrs = append(attrs, struct{ k, v string }{"LOGIN", ci.Login})
	}
	line := verb
	for _, a := range attrs {
		if announced[a.k] && a.v != "" {
			line += " " + a.k + "=" + XText(a.v)
		}
	}
	if line == verb {
		return ""
	}
	return line
}

// xclient sends the attributes the MTA announced (Postfix XCLIENT_README).
func (c *Conn) xclient(ctx context.Context, ci *ClientInfo) error {
	line := c.attrLine("XCLIENT", ci)
	if line == "" {
		// Nothing the MTA would take: it will not see the client.
		c.mode = "off"
		c.reportIdentity("", nil)
		return nil
	}
	if err := c.cmd(ctx, "xclient", line); err != nil {
		return err
	}
	rep, err := c.readReply("xclient")
	if err != nil {
		return err
	}
	if rep.Closing() {
		return &Error{Op: "xclient", Err: fmt.Errorf("MTA closed the connection: %s", rep)}
	}
	if rep.Code/100 != 2 {
		return c.identityRefused("XCLIENT", rep)
	}
	// Postfix answers with a new greeting (220), others (smtp-sink)
	// with 250: any 2xx is success, and either way EHLO comes again.
	c.presented = true
	c.reportIdentity("", nil)
	// The MTA now talks to "the client": greet it with the client's HELO
	// name, as nginx's mail proxy does, so its logs and checks match.
	name := ci.Helo
	if name == "" || !strings.Contains(" "+strings.ToUpper(c.ext["XCLIENT"])+" ", " HELO ") {
		name = c.opts.Helo
	}
	return c.ehlo(ctx, name)
}

// xforward prepares the XFORWARD line (Postfix XFORWARD_README). Postfix
// applies the attributes to one transaction only, so Begin sends the line
// before every MAIL.
func (c *Conn) xforward(ci *ClientInfo) {
	c.xforwardLine = c.attrLine("XFORWARD", ci)
}

func orUnavailable(s string) string {
	if s == "" {
		return "[UNAVAILABLE]"
	}
	return s
}

func addrAttr(a string) string {
	if strings.Contains(a, ":") {
		return "IPV6:" + a
	}
	return a
}

func portAttr(p int) string {
	if p == 0 {
		return ""
	}
	return strconv.Itoa(p)
}

// XText encodes s as xtext (RFC 3461 §4), as XCLIENT, XFORWARD and the DSN
// parameters ENVID and ORCPT require.
func XText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < '!' || ch > '~' || ch == '+' || ch == '=' {
			fmt.Fprintf(&b, "+%02X", ch)
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}

// deadline sets the connection deadline to the earlier of now+d and ctx's.
func (c *Conn) deadline(ctx context.Context, d time.Duration) {
	t := time.Now().Add(d)
	if dl, ok := ctx.Deadline(); ok && dl.Before(t) {
		t = dl
	}
	c.nc.SetDeadline(t)
}

// cmd writes one command line and flushes.
func (c *Conn) cmd(ctx context.Context, op, line string) error {
	if err := c.quiet(op); err != nil {
		return err
	}
	c.deadline(ctx, c.opts.Timeout)
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		c.broken = true
		return &Error{Op: op, Err: err}
	}
	return nil
}

// quiet checks, before a new command, that the MTA has not said more
// than it was asked: a surplus reply would be read as the answer to the
// next command (a stale 250 taken for the reply to DATA loses the
// message), so the connection is given up instead.
func (c *Conn) quiet(op string) error {
	if n := c.r.Buffered(); n > 0 {
		c.broken = true
		b, _ := c.r.Peek(min(n, 64))
		return &Error{Op: op, Err: fmt.Errorf("%w: unexpected reply %q before %s", ErrProtocol, sanitizeReply(b), strings.ToUpper(op))}
	}
	return nil
}

// readReply reads a (multi-line) reply. A 421 leaves the connection
// broken: the MTA is closing it (RFC 5321 §3.8). Only DATA may be
// answered with 3xx (§4.3.2); a 3xx to anything else is a protocol error.
func (c *Conn) readReply(op string) (*reply.Reply, error) {
	rep, err := c.readReplyLines(op)
	if err == nil {
		switch {
		case rep.Closing():
			c.broken = true
		case rep.Code/100 == 3 && op != "data":
			c.broken = true
			err = &Error{Op: op, Err: fmt.Errorf("%w: %s answered with %s", ErrProtocol, strings.ToUpper(op), rep)}
			rep = nil
		}
	}
	if c.opts.Observe != nil {
		c.opts.Observe(op, time.Since(c.sent), err)
	}
	return rep, err
}

// Limits on what is kept of a reply: RFC 5321 §4.5.3.1.5 allows 512
// octets a line. Longer lines and further lines are read and dropped, so
// that an MTA's verbose 250 to the final dot is still a 250.
const (
	maxReplyLineText = 512
	maxReplyLines    = 64
)

// readLine reads one reply line without its line end; the text past
// maxReplyLineText is read and dropped.
func (c *Conn) readLine() ([]byte, error) {
	line, err := c.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		line = append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			_, err = c.r.ReadSlice('\n')
		}
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func (c *Conn) readReplyLines(op string) (*reply.Reply, error) {
	rep := &reply.Reply{}
	var lines []string
	for {
		line, err := c.readLine()
		if err != nil {
			c.broken = true
			return nil, &Error{Op: op, Err: err}
		}
		if len(line) < 3 {
			c.broken = true
			return nil, &Error{Op: op, Err: fmt.Errorf("malformed reply %q", line)}
		}
		code, err := strconv.Atoi(string(line[:3]))
		if err != nil || code < 200 || code > 599 || (rep.Code != 0 && code != rep.Code) || (len(line) > 3 && line[3] != ' ' && line[3] != '-') {
			c.broken = true
			return nil, &Error{Op: op, Err: fmt.Errorf("malformed reply %q", sanitizeReply(line[:min(len(line), 64)]))}
		}
		rep.Code = code
		last := len(line) == 3 || line[3] == ' '
		text := ""
		if len(line) > 4 {
			text = sanitizeReply(line[4:min(len(line), 4+maxReplyLineText)])
		}
		if e, rest, ok := reply.SplitEnhanced(text, code); ok {
			// The enhanced code of the last line is the reply's.
			if last {
				rep.Enhanced = e
			}
			text = rest
		}
		if len(lines) < maxReplyLines || last {
			lines = append(lines, text)
		}
		if last {
			rep.Text = strings.Join(lines, "\n")
			return rep, nil
		}
	}
}

// sanitizeReply makes reply text printable ASCII (RFC 5321 §4.2: text
// is 7-bit printable): a NUL, an escape sequence or a bare CR from the MTA
// must not reach the client, where a CR could forge a reply of its own.
func sanitizeReply(b []byte) string {
	out := make([]byte, len(b))
	for i, ch := range b {
		switch {
		case ch == '\t':
			ch = ' '
		case ch < ' ' || ch > '~':
			ch = '?'
		}
		out[i] = ch
	}
	return string(out)
}

// Broken reports whether the connection can no longer be used.
func (c *Conn) Broken() bool { return c.broken }

// Reused reports whether a transaction already ended on this connection:
// a temporary refusal of MAIL there may be the MTA's limit per connection
// (Exim, OpenSMTPD), which a fresh connection does not have.
func (c *Conn) Reused() bool { return c.ended > 0 }

// preamble are the commands owed before the next MAIL: an RSET for an
// abandoned transaction, and XFORWARD, whose attributes Postfix forgets at
// the end of every transaction (XFORWARD_README).
func (c *Conn) preamble() []string {
	var cmds []string
	if c.pendingRset {
		cmds = append(cmds, "RSET")
		c.pendingRset = false
	}
	if c.xforwardLine != "" {
		cmds = append(cmds, c.xforwardLine)
	}
	return cmds
}

// expect250 reads the reply to a preamble command; anything but 250 makes
// the connection unusable, except a refused XFORWARD in auto mode, which
// falls back to presenting nothing (identityRefused).
func (c *Conn) expect250(cmd string) error {
	verb := strings.Fields(cmd)[0]
	op := strings.ToLower(verb)
	rep, err := c.readReply(op)
	if err != nil {
		return err
	}
	if rep.Code == 250 {
		return nil
	}
	if verb == "XFORWARD" && !rep.Closing() {
		return c.identityRefused(verb, rep)
	}
	c.broken = true
	return &Error{Op: op, Err: fmt.Errorf("MTA refused %s: %s", verb, rep)}
}

// Mail starts a transaction. params are the ESMTP parameters to pass on
// (SIZE=, BODY=, SMTPUTF8), already formatted.
func (c *Conn) Mail(ctx context.Context, from string, params []string) (*reply.Reply, error) {
	rep, _, err := c.Begin(ctx, from, params, "", nil)
	return rep, err
}

// Rcpt adds a recipient.
func (c *Conn) Rcpt(ctx context.Context, to string, params []string) (*reply.Reply, error) {
	line := "RCPT TO:<" + to + ">"
	for _, p := range params {
		line += " " + p
	}
	if err := c.cmd(ctx, "rcpt", line); err != nil {
		return nil, err
	}
	return c.readReply("rcpt")
}

// Begin sends the owed preamble, MAIL and the first RCPT (none when to is
// ""). Where the MTA offers PIPELINING (RFC 2920 §3.1) they go in one
// write, so a transaction costs one round trip before DATA; otherwise one
// command at a time, as RFC 5321 requires. rcptRep is nil when MAIL was
// refused.
func (c *Conn) Begin(ctx context.Context, from string, mailParams []string, to string, rcptParams []string) (mailRep, rcptRep *reply.Reply, err error) {
	if err := c.quiet("mail"); err != nil {
		return nil, nil, err
	}
	pre := c.preamble()
	c.deadline(ctx, c.opts.Timeout)
	if !c.has("PIPELINING") {
		for _, cmd := range pre {
			if err := c.cmd(ctx, "mail", cmd); err != nil {
				return nil, nil, err
			}
			if err := c.expect250(cmd); err != nil {
				return nil, nil, err
			}
		}
		writeCmd(c.w, "MAIL FROM:<", from, mailParams)
		c.txn = true
		c.messages++
		if err := c.flush("mail"); err != nil {
			return nil, nil, err
		}
		if mailRep, err = c.readReply("mail"); err != nil || mailRep.Code/100 != 2 || to == "" {
			return mailRep, nil, err
		}
		rcptRep, err = c.Rcpt(ctx, to, rcptParams)
		return mailRep, rcptRep, err
	}
	for _, cmd := range pre {
		c.w.WriteString(cmd)
		c.w.WriteString("\r\n")
	}
	writeCmd(c.w, "MAIL FROM:<", from, mailParams)
	c.txn = true
	c.messages++
	if to != "" {
		writeCmd(c.w, "RCPT TO:<", to, rcptParams)
	}
	if err := c.flush("mail"); err != nil {
		return nil, nil, err
	}
	for _, cmd := range pre {
		if err := c.expect250(cmd); err != nil {
			return nil, nil, err
		}
	}
	if mailRep, err = c.readReply("mail"); err != nil || to == "" || mailRep.Closing() {
		// After a 421 the MTA answers nothing more.
		return mailRep, nil, err
	}
	if rcptRep, err = c.readReply("rcpt"); err != nil {
		return nil, nil, err
	}
	if mailRep.Code/100 != 2 {
		// RCPT without a sender is refused (503); don't report that.
		return mailRep, nil, nil
	}
	return mailRep, rcptRep, nil
}

func (c *Conn) flush(op string) error {
	if err := c.w.Flush(); err != nil {
		c.broken = true
		return &Error{Op: op, Err: err}
	}
	return nil
}

func writeCmd(w *bufio.Writer, verb, addr string, params []string) {
	w.WriteString(verb)
	w.WriteString(addr)
	w.WriteByte('>')
	for _, p := range params {
		w.WriteByte(' ')
		w.WriteString(p)
	}
	w.WriteString("\r\n")
}

// Data sends DATA. On a 354 it returns a writer that dot-stuffs what it is
// given, which must be CRLF-terminated lines; finish with End or Abort.
func (c *Conn) Data(ctx context.Context) (*reply.Reply, io.Writer, error) {
	if err := c.cmd(ctx, "data", "DATA"); err != nil {
		return nil, nil, err
	}
	rep, err := c.readReply("data")
	if err != nil {
		return nil, nil, err
	}
	switch {
	case rep.Code >= 400:
		// MAIL and RCPT still stand at the MTA.
		c.pendingRset = true
		return rep, nil, nil
	case rep.Code != 354:
		// RFC 5321 §4.3.2: 354 is the only positive reply to DATA. A
		// 250 here is a surplus reply or an MTA that took nothing:
		// passing it on would lose the message.
		c.broken = true
		return nil, nil, &Error{Op: "data", Err: fmt.Errorf("%w: DATA answered with %s, not 354", ErrProtocol, rep)}
	}
	c.dw.bol = true
	c.dw.err = nil
	c.dw.ctx = ctx
	c.dw.c = c
	c.dw.last = time.Now() // cmd set the deadline
	return rep, &c.dw, nil
}

// End sends the final dot and returns the MTA's verdict on the message.
func (c *Conn) End(ctx context.Context) (*reply.Reply, error) {
	if c.dw.err != nil {
		return nil, c.dw.err
	}
	if c.r.Buffered() > 0 {
		// The MTA spoke during DATA: its replies no longer match our
		// commands. Drop the connection without the dot, so that it
		// queues nothing (see Abort).
		err := c.quiet("data")
		c.Abort()
		return nil, err
	}
	c.deadline(ctx, c.opts.DataTimeout)
	if !c.dw.bol {
		// The session only gives whole lines; be safe anyway.
		c.w.WriteString("\r\n")
	}
	c.w.WriteString(".\r\n")
	if err := c.w.Flush(); err != nil {
		c.broken = true
		return nil, &Error{Op: "dot", Err: err}
	}
	rep, err := c.readReply("dot")
	if err != nil {
		return nil, err
	}
	c.txn = false
	c.ended++
	if c.r.Buffered() > 0 {
		// Two replies to one dot: the first may be a stale one, and the
		// MTA's verdict the second. A duplicate beats a loss: 4xx.
		c.broken = true
		return nil, &Error{Op: "dot", Err: fmt.Errorf("%w: more than one reply to the final dot, the first %s", ErrProtocol, rep)}
	}
	return rep, nil
}

// Abort abandons a DATA in progress. There is no way to take back a DATA
// in SMTP short of dropping the connection before the final dot: the MTA
// then discards what it got (RFC 5321 §4.1.1.4 makes delivery depend on
// the end-of-data indication). The Conn is unusable afterwards.
func (c *Conn) Abort() {
	c.broken = true
	// Linger 0: a reset, not a FIN that a slow MTA could mistake for more.
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.nc.Close()
}

// Reset abandons the current transaction. RSET is sent lazily, pipelined
// with the next MAIL (RFC 2920 lets RSET stand anywhere in a group).
func (c *Conn) Reset() {
	c.pendingRset = true
}

// Quit ends the use of c: a connection from a Pool that can serve
// another client goes back to it, any other says goodbye politely and
// closes.
func (c *Conn) Quit() {
	if c.txn {
		// The session ended inside a transaction (the client left
		// after RCPT): the next user must not inherit it.
		c.pendingRset = true
	}
	if c.reusable() {
		c.pool.put(c)
		return
	}
	c.quit()
}

func (c *Conn) quit() {
	if !c.broken {
		c.nc.SetDeadline(time.Now().Add(2 * time.Second))
		c.w.WriteString("QUIT\r\n")
		if c.w.Flush() == nil {
			c.readReply("quit")
		}
	}
	c.nc.Close()
}

// Close closes the connection without QUIT.
func (c *Conn) Close() error {
	c.broken = true
	return c.nc.Close()
}

// dotWriter dot-stuffs (RFC 5321 §4.5.2) CRLF lines on their way to the
// MTA, without copying them.
type dotWriter struct {
	w   *bufio.Writer
	c   *Conn
	ctx context.Context
	bol bool // at the beginning of a line
	err error
	// last is when the deadline was last moved: moving it for every line
	// cost 7% of smtpgate's CPU.
	last time.Time
}

func (d *dotWriter) Write(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if now := time.Now(); now.Sub(d.last) > time.Second {
		d.c.deadline(d.ctx, d.c.opts.Timeout)
		d.last = now
	}
	n := 0
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			d.w.WriteByte('.')
		}
		i := bytes.IndexByte(p, '\n')
		var chunk []byte
		if i < 0 {
			chunk = p
			d.bol = false
		} else {
			chunk = p[:i+1]
			d.bol = true
		}
		if _, err := d.w.Write(chunk); err != nil {
			d.c.broken = true
			d.err = &Error{Op: "data", Err: err}
			return n, d.err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Probe asks the MTA whether it would accept rcpt: MAIL FROM:<> (so that
// nothing could ever bounce), RCPT, then RSET and QUIT. The MTA's RCPT
// reply is returned.
func Probe(ctx context.Context, addr string, opts Options, rcpt string) (*reply.Reply, error) {
	c, err := Dial(ctx, addr, opts, nil)
	if err != nil {
		return nil, err
	}
	defer c.Quit()
	mailRep, rcptRep, err := c.Begin(ctx, "", nil, rcpt, nil)
	if err != nil {
		return nil, err
	}
	if mailRep.Code/100 != 2 {
		return nil, &Error{Op: "mail", Err: fmt.Errorf("MTA refused the null sender: %s", mailRep)}
	}
	if err := c.cmd(ctx, "rset", "RSET"); err != nil {
		return nil, err
	}
	if err := c.expect250("RSET"); err != nil {
		return nil, err
	}
	return rcptRep, nil
}
