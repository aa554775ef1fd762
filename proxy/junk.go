package proxy

import "strconv"

// junkCounter is Postfix's smtpd_junk_command_limit for the guard:
// commands that cost a reply and move nothing forward (NOOP, RSET, VRFY,
// ETRN) are answered max times in a session, and the next ends it. A
// message accepted (2xx to the final dot) starts the count again, as in
// Postfix.
//
// It counts command lines as they are read, and the replies to them, so
// that the 421 answers exactly the command over the limit however many
// commands a client pipelines (the guard's own queue of verbs is bounded
// and may lose track).
type junkCounter struct {
	max, n int
	// read and answered count command lines and the replies to them;
	// cutAt is the line whose reply is the 421 (0: none yet).
	read, answered, cutAt int64
}

var junkVerbs = map[string]bool{"NOOP": true, "RSET": true, "VRFY": true, "ETRN": true}

const junkReply = "421 4.7.0 Error: too many junk commands, closing connection"

// line is told the verb of each command line read.
func (j *junkCounter) line(verb string) {
	j.read++
	if j.max > 0 && junkVerbs[verb] {
		j.n++
		if j.n > j.max && j.cutAt == 0 {
			j.cutAt = j.read
		}
	}
}

// reply is told each reply but the greeting (dot: the reply to the final
// dot of a message); it returns the reply that ends the session instead,
// or "".
func (j *junkCounter) reply(dot bool, code int) string {
	if dot {
		if code/100 == 2 {
			j.n, j.cutAt = 0, 0
		}
		return ""
	}
	j.answered++
	if j.cutAt > 0 && j.answered >= j.cutAt {
		return junkReply
	}
	return ""
}

func (j *junkCounter) evidence() string {
	return strconv.Itoa(j.n) + " NOOP/RSET/VRFY/ETRN commands"
}
