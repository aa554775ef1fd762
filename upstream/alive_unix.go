//go:build linux || darwin || freebsd || netbsd || openbsd

package upstream

import (
	"errors"
	"net"
	"syscall"
)

// peekIdle reports whether nothing is waiting on nc and it is still open:
// a non-blocking MSG_PEEK sees a close (0 bytes) or unread bytes (a 421)
// at once, and EAGAIN means quiet and alive.
func peekIdle(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var rerr error
	var b [1]byte
	if err := rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	// Without an error, 0 bytes is a close and more is a reply nobody
	// asked for: neither connection can be reused.
	return errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK)
}
