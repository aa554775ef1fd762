//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package upstream

import (
	"errors"
	"net"
	"time"
)

// peekIdle reports whether nothing is waiting on nc and it is still open,
// with a read that waits a millisecond.
func peekIdle(nc net.Conn) bool {
	nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := nc.Read(b[:])
	nc.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
