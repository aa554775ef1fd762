// Package session is one SMTP conversation: the go-smtp Session, the
// envelope, the policy asked at each stage, the upstream transaction driven
// in step with the client, and one log line per decision.
//
// session knows nothing of listeners or configuration files: the proxy
// hands it a Settings value and a connection that carries its Peer.
package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/smtpgate/smtpgate/upstream"
	"github.com/smtpgate/smtpgate/verify"
)

// Settings are what sessions need; a new Settings (after a reload) applies
// to sessions that start afterwards.
type Settings struct {
	Hostname string
	Policy   *verify.Policy
	// Dial opens a connection to the MTA presenting the client.
	Dial func(ctx context.Context, ci *upstream.ClientInfo) (*upstream.Conn, error)
	// MaxHeaderBytes bounds the header block held for the header checks.
	MaxHeaderBytes int
	// DataTimeout bounds the wait for each piece of a DATA body.
	DataTimeout time.Duration
	// DelayReject reports HELO and MAIL refusals at RCPT, as Postfix's
	// smtpd_delay_reject, so that the log names the recipient and clients
	// that ignore MAIL errors still get refused.
	DelayReject bool
	// Trusted reports whether the client is in relay.networks.
	Trusted func(netip.Addr) bool
	// ClientName returns the client's forward-confirmed reverse DNS name
	// ("" if none); nil skips the lookup.
	ClientName func(ctx context.Context, ip netip.Addr) string
	// Users are our users for SMTP AUTH; nil means no AUTH.
	Users Authenticator
	// AuthLimiter throttles failed AUTH across sessions; may be nil.
	AuthLimiter AuthLimiter
	// MaxAuthFailures closes a session after that many failed AUTH
	// attempts (421 4.7.0); 0 means never.
	MaxAuthFailures int
	Logger          *slog.Logger
	// Limiter and Metrics are optional (see limits.go).
	Limiter Limiter
	Metrics Metrics
}

// Backend is the go-smtp Backend: it makes a Session per connection with
// the Settings current at that moment.
type Backend struct {
	settings atomic.Pointer[Settings]
}

// NewBackend returns a Backend using s.
func NewBackend(s *Settings) *Backend {
	b := &Backend{}
	b.settings.Store(s)
	return b
}

// Swap installs new Settings for sessions that start from now on.
func (b *Backend) Swap(s *Settings) { b.settings.Store(s) }

// Settings returns the current settings.
func (b *Backend) Settings() *Settings { return b.settings.Load() }

// NewSession is called by go-smtp at the first HELO/EHLO, and again after
// STARTTLS (RFC 3207 §4.2: all state is discarded).
func (b *Backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	st := b.settings.Load()
	s := &Session{st: st, conn: c}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.peer = peerOf(c.Conn())
	if s.peer == nil {
		// A connection that did not come through our listener (tests).
		s.peer = &Peer{ID: newID(), Start: time.Now()}
		if ap, err := netip.ParseAddrPort(c.Conn().RemoteAddr().String()); err == nil {
			s.peer.Addr = ap
		}
	}
	s.peer.setTop(c.Conn())
	s.client.Addr = s.peer.Addr.Addr().Unmap()
	s.client.Port = int(s.peer.Addr.Port())
	if st.Trusted != nil {
		s.client.Trusted = st.Trusted(s.client.Addr)
	}
	_, s.client.TLS = tlsState(c.Conn())
	s.log = st.Logger.With("session", s.peer.ID, "client", s.client.Addr.String())
	if st.ClientName != nil {
		s.client.Hostname = st.ClientName(s.ctx, s.client.Addr)
	}
	out := st.Policy.Connect(s.ctx, &s.client)
	if d, ok := s.record(&out, verify.StageConnect); ok {
		if !st.DelayReject {
			s.cancel()
			return nil, replyErr(d.Result.Reply)
		}
		s.connRefusal = &d
	}
	if err := s.helo(c.Hostname()); err != nil {
		s.cancel()
		return nil, err
	}
	return s, nil
}

// Session is one client conversation. go-smtp calls its methods from the
// connection's goroutine, except Data under BDAT (RFC 3030), which runs in
// a goroutine of its own fed through a pipe; mu keeps the two apart.
type Session struct {
	// mu is held by Data for the whole message and by Reset and Logout,
	// which go-smtp calls only after closing the BDAT pipe (so Data ends
	// first). Mail and Rcpt only try it: a command between BDAT chunks
	// must not wait for the data that the waiting goroutine would read.
	mu sync.Mutex

	st     *Settings
	conn   *smtp.Conn
	peer   *Peer
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	client verify.Client
	env    verify.Envelope

	// connRefusal, heloRefusal and mailRefusal hold refusals delayed to
	// RCPT (delay_reject).
	connRefusal *verify.Decision
	heloRefusal *verify.Decision
	mailRefusal *verify.Decision
	// mailParams are the MAIL FROM parameters to pass on.
	mailParams []string
	// upFrom is the reverse-path as the MTA gets it.
	upFrom string
	// prepend holds header fields the envelope checks added
	// (Received-SPF:), written in front of the message.
	prepend []string

	up      *upstream.Conn
	upMail  bool // MAIL was accepted upstream for this transaction
	txn     int  // transaction number within the session, for ids
	hdr     []byte
	dropped [][2]int // header fields IGNOREd by header checks
	// authFailures counts failed AUTH attempts in this session.
	authFailures int
	discarded    bool

	limitedTxn int // the transaction whose message was counted (limits.go)
}

// helo runs the HELO checks on name. A refusal is held for RCPT under
// delay_reject, else returned.
func (s *Session) helo(name string) error {
	s.client.Helo = name
	// go-smtp does not say whether it was HELO or EHLO; EHLO is what
	// every client that matters sends, and Received's "with" follows it.
	s.client.ESMTP = true
	s.heloRefusal = nil
	if s.refusedEarlier() {
		return nil
	}
	out := s.st.Policy.Helo(s.ctx, &s.client)
	if d, ok := s.record(&out, verify.StageHelo); ok {
		if !s.st.DelayReject {
			return replyErr(d.Result.Reply)
		}
		s.heloRefusal = &d
	}
	return nil
}

// record logs every decision of a stage (warn-mode "would reject" ones
// included) and returns the enforced refusal, if any. A refusal delayed to
// RCPT (delay_reject) is logged when it is reported there.
func (s *Session) record(out *verify.Outcome, stage string, attrs ...any) (verify.Decision, bool) {
	ref, refused := out.Refusal()
	for _, d := range out.Decisions {
		if refused && d.Enforced() && s.st.DelayReject && (stage == verify.StageConnect || stage == verify.StageHelo || stage == verify.StageMail) {
			continue // logged when reported at RCPT
		}
		s.logDecision(d, attrs...)
	}
	return ref, refused
}

func (s *Session) logDecision(d verify.Decision, attrs ...any) {
	msg := "reject"
	level := slog.LevelInfo
	switch {
	case d.Result.Action == verify.Pass:
		msg = "note"
	case d.Mode == verify.Warn:
		msg = "would reject"
		if d.Result.Action == verify.Discard {
			msg = "would discard"
		}
	case d.Result.Action == verify.Discard:
		msg = "discard"
	}
	s.observe(d.Stage, d.Check, d.Result.Reply.Code, d.Mode == verify.Warn)
	args := []any{"stage", d.Stage, "check", d.Check, "mode", d.Mode.String()}
	if d.Result.Action != verify.Pass {
		args = append(args, "reply", d.Result.Reply.String())
	}
	if d.Result.Evidence != "" {
		args = append(args, "evidence", d.Result.Evidence)
	}
	args = append(args, s.envAttrs()...)
	args = append(args, attrs...)
	s.log.Log(s.ctx, level, msg, args...)
}

func (s *Session) envAttrs() []any {
	a := []any{"helo", s.client.Helo}
	if s.env.From != "" || s.mailParams != nil {
		a = append(a, "from", s.env.From)
	}
	return a
}

func replyErr(r verify.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

// errInTransfer answers commands that arrive between BDAT chunks.
var errInTransfer = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Command not allowed during message transfer"}

// Reset discards the transaction (RSET, a new EHLO, or after DATA).
func (s *Session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up != nil && s.upMail {
		s.up.Reset()
	}
	s.upMail = false
	s.env = verify.Envelope{}
	s.mailParams = nil
	s.mailRefusal = nil
	s.prepend = s.prepend[:0]
	s.discarded = false
	s.peer.setBusy(false)
}

// Logout ends the session.
func (s *Session) Logout() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.up != nil {
		s.up.Quit()
		s.setUp(nil)
	}
	s.peer.setBusy(false)
	s.cancel()
	return nil
}

// Mail is MAIL FROM.
func (s *Session) Mail(from string, opts *smtp.MailOptions) error {
	if !s.mu.TryLock() {
		return errInTransfer
	}
	defer s.mu.Unlock()
	if h := s.conn.Hostname(); h != s.client.Helo {
		// A second EHLO (RFC 5321 §4.1.4) names the client anew.
		if err := s.helo(h); err != nil {
			return err
		}
	}
	if s.peer.RequireAuth && s.client.Login == "" {
		// Submission ports (RFC 6409 §4.3): no mail without a login.
		s.log.Info("reject", "stage", "mail", "check", "auth_required", "reply", "530 5.7.0 Authentication required", "from", from)
		return errAuthRequired
	}
	s.txn++
	s.peer.setBusy(true)
	s.env = verify.Envelope{From: from}
	s.upFrom = forwardForm(from)
	s.mailParams = mailParams(opts)
	if s.refusedEarlier() {
		return nil // refused at RCPT anyway: spare the DNS
	}
	out := s.st.Policy.Mail(s.ctx, &s.client, from)
	s.prepend = append(s.prepend[:0], out.Prepend...) // Received-SPF:
	if d, ok := s.record(&out, verify.StageMail); ok {
		if s.st.DelayReject {
			s.mailRefusal = &d
			return nil
		}
		return replyErr(d.Result.Reply)
	}
	return nil
}

// forwardForm returns the path as it goes to the MTA: go-smtp hands us
// quoted local parts unquoted ("john doe"@x arrives as john doe@x), so
// they are quoted again.
func forwardForm(addr string) string {
	if addr == "" {
		return ""
	}
	a, err := verify.ParseAddress(addr)
	if err != nil {
		return addr
	}
	return a.String()
}

// mailParams formats the MAIL parameters the MTA must see: SIZE so it can
// refuse early, BODY and SMTPUTF8 because they change how it must treat the
// message.
func mailParams(o *smtp.MailOptions) []string {
	p := []string{}
	if o == nil {
		return p
	}
	if o.Size > 0 {
		p = append(p, "SIZE="+strconv.FormatInt(o.Size, 10))
	}
	if o.Body != "" {
		p = append(p, "BODY="+string(o.Body))
	}
	if o.UTF8 {
		p = append(p, "SMTPUTF8")
	}
	return p
}

// Rcpt is RCPT TO: the policy first, then the MTA's own answer.
func (s *Session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !s.mu.TryLock() {
		return errInTransfer
	}
	defer s.mu.Unlock()
	for _, held := range []*verify.Decision{s.connRefusal, s.heloRefusal, s.mailRefusal} {
		if held != nil {
			s.logDecision(*held, "rcpt", to)
			return replyErr(held.Result.Reply)
		}
	}
	out := s.st.Policy.Rcpt(s.ctx, &s.client, &s.env, to)
	if d, ok := s.record(&out, verify.StageRcpt, "rcpt", to); ok {
		return replyErr(d.Result.Reply)
	}
	if err := s.rateLimit(to); err != nil {
		return err
	}
	rep, err := s.forwardRcpt(to)
	if err != nil {
		var le *LimitError
		if errors.As(err, &le) {
			return s.limitRefusal(le, to)
		}
		return s.upstreamFailure("rcpt", err, "rcpt", to)
	}
	if rep.Code/100 != 2 {
		s.log.Info("reject", "stage", "rcpt", "check", "upstream", "reply", rep.String(), "rcpt", to)
		s.observe("rcpt", "upstream", rep.Code, false)
		return fromUpstream(rep)
	}
	s.env.Recipients = append(s.env.Recipients, to)
	return nil
}

// forwardRcpt opens the upstream connection if needed and sends RCPT,
// with the transaction's MAIL in front of the first one.
func (s *Session) forwardRcpt(to string) (*upstream.Reply, error) {
	if s.up != nil && s.up.Broken() {
		s.up.Close()
		s.setUp(nil)
		s.upMail = false
	}
	if s.up == nil {
		up, err := s.st.Dial(s.ctx, s.clientInfo())
		if err != nil {
			return nil, err
		}
		s.setUp(up)
	}
	if s.upMail {
		return s.up.Rcpt(s.ctx, forwardForm(to), nil)
	}
	mailRep, rcptRep, err := s.up.Begin(s.ctx, s.upFrom, s.mailParams, forwardForm(to), nil)
	if err != nil {
		return nil, err
	}
	if mailRep.Code/100 != 2 {
		return mailRep, nil
	}
	s.upMail = true
	return rcptRep, nil
}

// setUp records the MTA connection the session holds (nil: none), and
// tells the listener through the Peer.
func (s *Session) setUp(c *upstream.Conn) {
	s.up = c
	s.peer.upstream.Store(c != nil)
}

func (s *Session) clientInfo() *upstream.ClientInfo {
	proto := "SMTP"
	if s.client.ESMTP {
		proto = "ESMTP"
	}
	return &upstream.ClientInfo{
		Addr:  s.client.Addr.String(),
		Port:  s.client.Port,
		Name:  s.client.Hostname,
		Helo:  s.client.Helo,
		Proto: proto,
		Login: s.client.Login,
	}
}

// upstreamFailure turns a failure to talk to the MTA into a 4xx: the
// client keeps the message and retries (RFC 5321 §4.2.5 and §6.1: never
// accept what we have not handed on).
func (s *Session) upstreamFailure(stage string, err error, attrs ...any) error {
	if s.up != nil {
		s.up.Close()
		s.setUp(nil)
	}
	s.upMail = false
	reply := &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Service temporarily unavailable: mail server not reachable, try again later"}
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Op != "dial" && ue.Op != "greeting" {
		reply.EnhancedCode = smtp.EnhancedCode{4, 4, 2}
		reply.Message = "Service temporarily unavailable: connection to mail server lost, try again later"
		if ue.Timeout() {
			reply.EnhancedCode = smtp.EnhancedCode{4, 4, 1}
			reply.Message = "Service temporarily unavailable: mail server did not answer in time, try again later"
		}
	}
	args := append([]any{"stage", stage, "check", "upstream", "reply", fmt.Sprintf("%d %d.%d.%d %s", reply.Code, reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2], reply.Message), "error", err.Error()}, attrs...)
	s.log.Warn("tempfail", append(args, s.envAttrs()...)...)
	s.observe(stage, "upstream", reply.Code, false)
	return reply
}

// fromUpstream passes the MTA's reply to the client as it is.
func fromUpstream(r *upstream.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text()}
}

var queuedAsRe = regexp.MustCompile(`(?i)queued as ([0-9A-Za-z]+)`)

func queueID(r *upstream.Reply) string {
	if m := queuedAsRe.FindStringSubmatch(r.Text()); m != nil {
		return m[1]
	}
	return ""
}

var idCounter atomic.Uint64

// newID returns a session id unique within this process: start time and a
// counter, base 36, short enough to grep for.
func newID() string {
	return strconv.FormatInt(time.Now().Unix()%1e7, 36) + strconv.FormatUint(idCounter.Add(1), 36)
}

// NewID returns a fresh session id (used by the listener).
func NewID() string { return newID() }

func tlsVersion(v uint16) string { return strings.Replace(tls.VersionName(v), " ", "v", 1) }

func tlsCipher(id uint16) string { return tls.CipherSuiteName(id) }
