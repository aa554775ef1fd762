package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smtpgate/smtpgate/upstream"
)

// identityState is the last report of how an MTA connection presents the
// client (XCLIENT, XFORWARD or nothing), for /readyz.
type identityState struct {
	want string // upstream.xclient
	id   upstream.Identity
	at   time.Time
}

// identityTracker logs and counts what upstream.Options.OnIdentity
// reports: a refused XCLIENT or XFORWARD (an error: the operator must
// authorise smtpgate at the MTA) and a connection on which the MTA will
// not see the real client (a warning). upstream reports each connection
// once, and again only when that changes, so these lines come once per
// MTA connection.
type identityTracker struct {
	s    *Server
	last atomic.Pointer[identityState]
}

func (t *identityTracker) report(want, addr string, id upstream.Identity) {
	t.last.Store(&identityState{want: want, id: id, at: time.Now()})
	log := t.s.Logger.With("check", "upstream", "upstream", addr, "xclient", want, "mode", id.Mode)
	switch {
	case id.Failed:
		t.s.met.identityDegraded(id.Refused, "failed")
		log.Error("MTA refused "+id.Refused+": every message gets 451 4.3.5 until it is authorised there or upstream.xclient is auto",
			"refused", id.Refused, "reply", id.Reply)
	case id.Refused != "":
		t.s.met.identityDegraded(id.Refused, id.Mode)
		msg := "MTA refused " + id.Refused + ": falling back to " + id.Mode
		if id.Mode == "off" {
			msg += "; the MTA will not see the real client"
		}
		log.Error(msg, "refused", id.Refused, "reply", id.Reply)
	case id.Mode == "off" && want != "off":
		t.s.met.identityDegraded("none", "off")
		log.Warn("MTA offers neither XCLIENT nor XFORWARD: it will not see the real client (set upstream.xclient: off if that is intended)")
	}
}

// detail describes the last report for /readyz; failed says that no
// message can get through.
func (t *identityTracker) detail() (string, bool) {
	st := t.last.Load()
	if st == nil {
		return "client identity: no MTA connection yet", false
	}
	id := st.id
	ago := time.Since(st.at).Round(time.Second)
	switch {
	case id.Failed:
		return fmt.Sprintf("client identity: FAILED: MTA refused %s (%s) %s ago, and upstream.xclient is %s: every message gets 451", id.Refused, id.Reply, ago, st.want), true
	case id.Refused != "":
		return fmt.Sprintf("client identity: degraded to %s: MTA refused %s (%s) %s ago", id.Mode, id.Refused, id.Reply, ago), false
	case id.Mode == "off" && st.want != "off":
		return "client identity: off: the MTA offers neither XCLIENT nor XFORWARD and does not see the real client", false
	}
	return "client identity: " + id.Mode, false
}

// recheck runs a full handshake, XCLIENT included, with a stand-in
// client, so that a refusal fixed at the MTA ends the failed state even
// while no client gets through (a balancer that trusts /readyz sends
// none).
func (s *Server) recheckIdentity(ctx context.Context) {
	s.mu.Lock()
	p := s.pool
	s.mu.Unlock()
	if p == nil {
		return
	}
	c, err := upstream.Dial(ctx, p.Addr, p.Opts, &upstream.ClientInfo{Addr: "127.0.0.1", Name: "localhost", Helo: "readyz.invalid", Proto: "ESMTP"})
	if err == nil {
		c.Quit()
	}
}

// openFileWarning says why limits.max_connections cannot be reached with
// the open-file limit, or "": each client connection takes a descriptor,
// and one more for its MTA connection.
func openFileWarning(maxConns int, nofile uint64) string {
	const reserve = 64 // listeners, logs, DNS, idle MTA connections
	need := 2*uint64(maxConns) + reserve
	if maxConns <= 0 || need <= nofile {
		return ""
	}
	return fmt.Sprintf("limits.max_connections %d needs about %d open files (client and MTA connection each), but the open-file limit is %d: past it clients get 451 4.3.0; raise LimitNOFILE/ulimit -n or lower limits.max_connections", maxConns, need, nofile)
}

// warnOpenFiles logs openFileWarning for the process's limit.
func (s *Server) warnOpenFiles(maxConns int) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if w := openFileWarning(maxConns, rl.Cur); w != "" {
		s.Logger.Warn(strings.TrimSpace(w), "check", "open_files", "max_connections", maxConns, "nofile", rl.Cur)
	}
}
