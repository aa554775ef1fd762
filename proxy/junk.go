package proxy

import "strconv"

// junkCounter is Postfix's smtpd_junk_command_limit for the guard:
// commands that cost a reply and move nothing forward (NOOP, RSET, VRFY,
// ETRN) are answered max times in a session, and the next ends it. A
// message accepted (2xx to the final dot) starts the count again, as in
// Postfix.
type junkCounter struct {
	max, n int
}

var junkVerbs = map[string]bool{"NOOP": true, "RSET": true, "VRFY": true, "ETRN": true}

const junkReply = "421 4.7.0 Error: too many junk commands, closing connection"

// reply is told each command and the code of its reply; it returns the
// reply that ends the session instead, or "".
func (j *junkCounter) reply(cmd string, code int) string {
	switch {
	case cmd == "." && code/100 == 2:
		j.n = 0
	case junkVerbs[cmd] && j.max > 0:
		j.n++
		if j.n > j.max {
			return junkReply
		}
	}
	return ""
}

func (j *junkCounter) evidence() string {
	return strconv.Itoa(j.n) + " NOOP/RSET/VRFY/ETRN commands"
}
