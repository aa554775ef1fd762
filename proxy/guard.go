package proxy

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/smtpgate/smtpgate/config"
)

// guard watches one plain-text SMTP conversation as bytes (what go-smtp
// reads and the replies it writes) for protocol hygiene:
//
//   - unauthorised pipelining, like Postfix's smtpd_forbid_unauth_pipelining:
//     a command sent before the reply to EHLO, HELO, STARTTLS, AUTH or DATA
//     (RFC 2920 §3.1: these end a group), DATA content sent before 354, or
//     any pipelining in a HELO session (PIPELINING is only announced by
//     EHLO). It is seen when go-smtp already read bytes beyond the command
//     it answers, or the kernel holds unread bytes, at the moment of the
//     reply. Refused with 554 5.5.0 and closed.
//   - too many errors: limits.max_errors 4xx/5xx replies, or
//     limits.max_unknown_commands unknown or malformed commands, end the
//     session with 421 4.7.0.
//   - junk commands (junk.go): limits.max_junk_commands NOOP, RSET, VRFY
//     or ETRN, end the session with 421 4.7.0.
//
// A refusal marks the session as hanging up and closes the connection:
// whatever the client pipelined behind the refused command is not handled
// (go-smtp stops at the failed write, the session refuses MAIL, RCPT and
// DATA).
//
// Limits: the guard sees plain text only. After STARTTLS (and on implicit
// TLS listeners) it stops; go-smtp's own limit of 3 protocol errors still
// applies there. A failed STARTTLS handshake closes the connection, so
// plain text never follows a STARTTLS that the guard stopped at. BDAT
// chunks are binary: input is not parsed after a BDAT line, and the
// pipelining check stops after the reply to it (the commands pipelined
// before it are still checked); the error counts go on.
type guard struct {
	maxErrors, maxUnknown int
	forbidPipelining      bool

	off      bool // not tracking input any more (TLS, BDAT)
	pipeOff  bool // pipelining not checked any more (TLS, after a BDAT's reply)
	greeted  bool
	ehlo     bool // PIPELINING was announced (250 to EHLO)
	dataMode bool // between 354 and the final dot
	dotSeen  bool // the reply to the final dot is due
	midReply bool // inside a multi-line reply

	// The command lines read and not yet answered (their verbs), and the
	// start of the line being read.
	queue     []string
	lineStart []byte
	lineLen   int

	errors, unknown int
	evidence        string
	junk            junkCounter
}

const maxQueue = 64

func newGuard(cfg *config.Config) *guard {
	l := cfg.Limits.EdgeLimits
	return &guard{maxErrors: l.MaxErrors, maxUnknown: l.MaxUnknownCommands, forbidPipelining: !l.AllowUnauthPipelining, junk: junkCounter{max: l.MaxJunkCommands}}
}

// in notes bytes go-smtp read from the client.
func (g *guard) in(b []byte) {
	for len(b) > 0 && !g.off {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i+1]
		}
		if len(g.lineStart) < 16 {
			g.lineStart = append(g.lineStart, chunk[:min(len(chunk), 16-len(g.lineStart))]...)
		}
		g.lineLen += len(chunk)
		b = b[len(chunk):]
		if i < 0 {
			return
		}
		if g.dataMode {
			// Message lines: only the end-of-data line matters, and
			// this runs per line of DATA, so no string is made.
			if g.lineLen <= 3 && g.lineStart[0] == '.' {
				g.dataMode = false
				g.dotSeen = true
			}
		} else {
			g.line(strings.TrimRight(string(g.lineStart), "\r\n"))
		}
		g.lineStart = g.lineStart[:0]
		g.lineLen = 0
	}
}

// line is one complete command line read (outside DATA).
func (g *guard) line(start string) {
	verb, _, _ := strings.Cut(start, " ")
	verb = strings.ToUpper(verb)
	g.junk.line(verb)
	if len(g.queue) < maxQueue {
		g.queue = append(g.queue, verb)
	}
	if g.evidence == "" && len(g.queue) > 1 {
		g.evidence = "pipelined " + strings.Join(g.queue, ",")
	}
	if verb == "BDAT" {
		g.off = true // binary chunks follow; lines mean nothing any more
	}
}

// syncVerbs end a pipelined group (RFC 2920 §3.1; STARTTLS: RFC 3207 §4.2,
// the defence against command injection).
var syncVerbs = map[string]bool{"EHLO": true, "HELO": true, "DATA": true, "STARTTLS": true, "AUTH": true}

// out looks at a reply go-smtp is about to write. It returns the reply to
// send instead, and the check that chose it, when the session must end.
// waiting reports whether unread input sits in the socket.
func (g *guard) out(b []byte, waiting func() bool) (string, string) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if len(line) < 4 {
			continue
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			continue
		}
		first := !g.midReply
		g.midReply = line[3] == '-'
		if !first {
			continue
		}
		if r, check := g.reply(code, line, waiting); r != "" {
			return r, check
		}
	}
	return "", ""
}

// reply handles the first line of each reply.
func (g *guard) reply(code int, line string, waiting func() bool) (string, string) {
	if !g.greeted {
		g.greeted = true
		return "", ""
	}
	cmd := ""
	switch {
	case g.dotSeen:
		g.dotSeen, cmd = false, "."
	case len(g.queue) > 0:
		cmd, g.queue = g.queue[0], g.queue[1:]
	}
	if g.forbidPipelining && !g.pipeOff && cmd != "" && cmd != "." && cmd != "QUIT" && (syncVerbs[cmd] || !g.ehlo) {
		if len(g.queue) > 0 || g.lineLen > 0 || g.dataMode || g.dotSeen {
			if g.evidence == "" {
				g.evidence = "input after " + cmd
			}
			return "554 5.5.0 Error: SMTP protocol synchronization", "unauth_pipelining"
		}
		if waiting != nil && waiting() {
			g.evidence = "input waiting after " + cmd
			return "554 5.5.0 Error: SMTP protocol synchronization", "unauth_pipelining"
		}
	}
	if r := g.junk.reply(cmd == ".", code); r != "" {
		g.evidence = g.junk.evidence()
		return r, "max_junk_commands"
	}
	switch {
	case cmd == "EHLO" && code == 250:
		g.ehlo = true
	case cmd == "HELO" && code == 250:
		g.ehlo = false
	case cmd == "DATA" && code == 354:
		g.dataMode = true
	case cmd == "STARTTLS" && code == 220:
		g.off, g.pipeOff = true, true
	case cmd == "BDAT":
		g.pipeOff = true
	}
	if code >= 400 && code != 421 {
		g.errors++
		// go-smtp's protocol errors: unknown or empty command (500) and
		// unparsable line (501 5.5.2 Bad command).
		if code == 500 || strings.HasPrefix(line, "501 5.5.2 Bad command") {
			g.unknown++
		}
		if g.maxUnknown > 0 && g.unknown >= g.maxUnknown {
			return "421 4.7.0 Error: too many unknown commands, closing connection", "max_unknown_commands"
		}
		if g.maxErrors > 0 && g.errors >= g.maxErrors {
			return "421 4.7.0 Error: too many errors, closing connection", "max_errors"
		}
	}
	return "", ""
}
