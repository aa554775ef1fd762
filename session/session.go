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

	"github.com/smtpgate/smtpgate/address"
	"github.com/smtpgate/smtpgate/policy"
	"github.com/smtpgate/smtpgate/reply"
	"github.com/smtpgate/smtpgate/upstream"
)

// Settings are what sessions need; a new Settings (after a reload) applies
// to sessions that start afterwards.
type Settings struct {
	Hostname string
	Policy   *policy.Policy
	// Dial opens a connection to the MTA presenting the client.
	Dial func(ctx context.Context, ci *upstream.ClientInfo) (*upstream.Conn, error)
	// MaxHeaderBytes bounds the header block held for the header checks.
	MaxHeaderBytes int
	// DataTimeout bounds the wait for each piece of a DATA body.
	DataTimeout time.Duration
	// SpoolMemoryBytes and SpoolDir are for spool mode (spool.go): how
	// much of a body is held in memory (0: DefaultSpoolMemoryBytes) and
	// where the temporary file for the rest is made ("": the OS's).
	SpoolMemoryBytes int64
	SpoolDir         string
	// DelayReject reports HELO and MAIL refusals at RCPT, as Postfix's
	// smtpd_delay_reject, so that the log names the recipient and clients
	// that ignore MAIL errors still get refused.
	DelayReject bool
	// Trusted reports whether the client is in relay.networks.
	Trusted func(netip.Addr) bool
	// ClientName returns the client's forward-confirmed reverse DNS name
	// ("" if none); nil skips the lookup.
	ClientName func(ctx context.Context, ip netip.Addr) string
	// Offer, when set, reports whether the MTA offers an EHLO keyword
	// (SMTPUTF8, DSN): clients are offered only what the MTA takes.
	Offer func(keyword string) bool
	// Users are our users for SMTP AUTH; nil means no AUTH.
	Users Authenticator
	// AuthLimiter throttles failed AUTH across sessions; may be nil.
	AuthLimiter AuthLimiter
	// Postmaster is where RCPT TO:<Postmaster> without a domain goes
	// (RFC 5321 §4.1.1.3, §4.5.1).
	Postmaster string
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
	// The session's run through the policy: stateful checks start here
	// and are closed at Logout (or here, when the session is refused).
	s.run = st.Policy.Start(s.ctx, &s.client)
	out := s.run.Connect(s.ctx, &s.client)
	if d, ok := s.record(&out, policy.StageConnect); ok {
		if !st.DelayReject {
			s.end()
			return nil, smtpError(d.Result.Reply)
		}
		s.connRefusal = &d
	}
	if err := s.helo(c.Hostname()); err != nil {
		s.end()
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
	run    *policy.Run
	conn   *smtp.Conn
	peer   *Peer
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	client policy.Client
	env    policy.Envelope

	// connRefusal, heloRefusal and mailRefusal hold refusals delayed to
	// RCPT (delay_reject).
	connRefusal *policy.Decision
	heloRefusal *policy.Decision
	mailRefusal *policy.Decision
	// mailParams are the MAIL FROM parameters to pass on.
	mailParams []string
	// utf8 is set when MAIL carried SMTPUTF8 (RFC 6531).
	utf8 bool
	// upFrom is the reverse-path as the MTA gets it.
	upFrom string
	// prepend holds header fields the envelope checks added
	// (Received-SPF:), written in front of the message.
	prepend []string

	// up is the MTA connection the session holds, between transactions
	// too; tx is the transaction on it (nil before the first recipient
	// that went to the MTA).
	up      *upstream.Conn
	tx      *upstream.Tx
	txn     int // transaction number within the session, for ids
	hdr     []byte
	dropped [][2]int // header fields IGNOREd by header checks
	// authFailures counts failed AUTH attempts in this session.
	authFailures int
	discarded    bool

	limitedTxn int // the transaction whose message was counted (limits.go)
}

// helo runs the HELO checks on name. A refusal is held for RCPT under
// delay_reject, else returned; an argument that cannot be a name is
// refused at once (heloSyntax).
func (s *Session) helo(name string) error {
	if why := heloSyntax(name); why != "" {
		return s.refuseHelo(name, why)
	}
	s.client.Helo = name
	// go-smtp does not say whether it was HELO or EHLO; EHLO is what
	// every client that matters sends, and Received's "with" follows it.
	s.client.ESMTP = true
	s.heloRefusal = nil
	if s.refusedEarlier() {
		return nil
	}
	out := s.run.Helo(s.ctx, &s.client)
	if d, ok := s.record(&out, policy.StageHelo); ok {
		if !s.st.DelayReject {
			return smtpError(d.Result.Reply)
		}
		s.heloRefusal = &d
	}
	return nil
}

// Greet implements smtp.GreetSession: a later HELO/EHLO (RFC 5321
// §4.1.4) names the client anew and is checked as the first was.
func (s *Session) Greet(name string) error {
	if !s.mu.TryLock() {
		return errInTransfer
	}
	defer s.mu.Unlock()
	return s.helo(name)
}

// record logs every decision of a stage (warn-mode "would reject" ones
// included) and returns the enforced refusal, if any. A refusal delayed to
// RCPT (delay_reject) is logged when it is reported there.
func (s *Session) record(out *policy.Outcome, stage string, attrs ...any) (policy.Decision, bool) {
	ref, refused := out.Refusal()
	for _, d := range out.Decisions {
		if refused && d.Enforced() && s.st.DelayReject && (stage == policy.StageConnect || stage == policy.StageHelo || stage == policy.StageMail) {
			continue // logged when reported at RCPT
		}
		s.logDecision(d, attrs...)
	}
	return ref, refused
}

func (s *Session) logDecision(d policy.Decision, attrs ...any) {
	msg := "reject"
	level := slog.LevelInfo
	switch {
	case d.Result.Action == policy.Pass:
		msg = "note"
	case d.Mode == policy.Warn:
		msg = "would reject"
		if d.Result.Action == policy.Discard {
			msg = "would discard"
		}
	case d.Result.Action == policy.Discard:
		msg = "discard"
	}
	s.observe(d.Stage, d.Check, d.Result.Reply.Code, d.Mode == policy.Warn)
	args := []any{"stage", d.Stage, "check", d.Check, "mode", d.Mode.String()}
	if d.Result.Action != policy.Pass {
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

// smtpError is r as go-smtp writes it to the client.
func smtpError(r reply.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

// replyOf is the reply e carries, as the logs show it (reply.String).
func replyOf(e *smtp.SMTPError) reply.Reply {
	return reply.New(e.Code, [3]int(e.EnhancedCode), e.Message)
}

// errInTransfer answers commands that arrive between BDAT chunks.
var errInTransfer = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Command not allowed during message transfer"}

// errClosing answers whatever a client sent after a refusal that ends
// the session (a bare newline, unauthorised pipelining): such a session
// is dead for every later stage, whatever the client had pipelined. The
// connection is closed, so the reply is not expected to arrive.
var errClosing = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Error: session refused, closing connection"}

// Reset discards the transaction (RSET, a new EHLO, or after DATA).
func (s *Session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tx.Reset() // an RSET owed to the MTA if a MAIL stands there
	s.tx = nil
	s.env = policy.Envelope{}
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
	s.releaseUpstream()
	s.peer.setBusy(false)
	s.end()
	return nil
}

// end closes the session's policy run and cancels its context.
func (s *Session) end() {
	if err := s.run.Close(); err != nil {
		s.log.Warn("closing a check's session state", "error", err.Error())
	}
	s.cancel()
}

// replyMailOK answers an accepted MAIL (RFC 3463 X.1.0: other address
// status, sender ok); the MTA has not been asked yet.
var replyMailOK = &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 1, 0}, Message: "Ok"}

// Mail is MAIL FROM.
func (s *Session) Mail(from string, opts *smtp.MailOptions) error {
	if err := s.mail(from, opts); err != nil {
		return err
	}
	return replyMailOK
}

func (s *Session) mail(from string, opts *smtp.MailOptions) error {
	if s.peer.HangingUp() {
		return errClosing
	}
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
	if s.peer.Busy() {
		s.refuse(policy.StageMail, "nested_mail", errNestedMail, "from", from, "open_from", s.env.From)
		return errNestedMail
	}
	if s.peer.RequireAuth && s.client.Login == "" {
		// Submission ports (RFC 6409 §4.3): no mail without a login.
		s.log.Info("reject", "stage", "mail", "check", "auth_required", "reply", "530 5.7.0 Authentication required", "from", from)
		return errAuthRequired
	}
	utf8 := opts != nil && opts.UTF8
	if err := s.checkPath(policy.StageMail, from, utf8); err != nil {
		return err
	}
	if opts != nil && len(opts.EnvelopeID) > maxEnvelopeID {
		return s.refuseParam("mail", errParamTooLong("ENVID", maxEnvelopeID), "from", from)
	}
	s.txn++
	s.utf8 = utf8
	s.peer.setBusy(true)
	s.env = policy.Envelope{From: from}
	s.upFrom = forwardForm(from)
	s.mailParams = mailParams(opts)
	if s.refusedEarlier() {
		return nil // refused at RCPT anyway: spare the DNS
	}
	out := s.run.Mail(s.ctx, &s.client, &s.env, from)
	s.prepend = append(s.prepend[:0], out.Prepend...) // Received-SPF:
	if d, ok := s.record(&out, policy.StageMail); ok {
		if s.st.DelayReject {
			s.mailRefusal = &d
			return nil
		}
		// A refused MAIL opens no transaction.
		s.peer.setBusy(false)
		return smtpError(d.Result.Reply)
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
	a, err := address.Parse(addr)
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
	// DSN (RFC 3461 §4.3, §4.4): passed on unchanged, xtext-encoded
	// again after go-smtp decoded and checked them.
	if o.Return != "" {
		p = append(p, "RET="+string(o.Return))
	}
	if o.EnvelopeID != "" {
		p = append(p, "ENVID="+upstream.XText(o.EnvelopeID))
	}
	return p
}

// RFC 3461 bounds: ENVID 100 characters (§4.4), ORCPT 500 (§4.2).
const (
	maxEnvelopeID = 100
	maxOrigRcpt   = 500
)

func errParamTooLong(name string, n int) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: fmt.Sprintf("%s parameter longer than %d characters (RFC 3461)", name, n)}
}

// refuseParam logs the refusal of an ESMTP parameter and returns it.
func (s *Session) refuseParam(stage string, e *smtp.SMTPError, attrs ...any) error {
	s.refuse(stage, "esmtp_params", e, attrs...)
	return e
}

// paramExtension is the EHLO keyword the MTA must have announced for a
// parameter to be passed on.
var paramExtension = map[string]string{"SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8", "RET": "DSN", "ENVID": "DSN", "NOTIFY": "DSN", "ORCPT": "DSN"}

// rcptParams formats the RCPT parameters to pass on: DSN's NOTIFY and
// ORCPT (RFC 3461 §4.1, §4.2).
func rcptParams(o *smtp.RcptOptions) ([]string, *smtp.SMTPError) {
	if o == nil {
		return nil, nil
	}
	var p []string
	if len(o.Notify) > 0 {
		n := make([]string, len(o.Notify))
		for i, v := range o.Notify {
			n[i] = string(v)
		}
		p = append(p, "NOTIFY="+strings.Join(n, ","))
	}
	if o.OriginalRecipient != "" {
		var v string
		switch o.OriginalRecipientType {
		case smtp.DSNAddressTypeUTF8:
			v = "utf-8;" + utf8AddrXtext(o.OriginalRecipient)
		default:
			v = "rfc822;" + upstream.XText(o.OriginalRecipient)
		}
		if len(v) > maxOrigRcpt {
			return nil, errParamTooLong("ORCPT", maxOrigRcpt)
		}
		p = append(p, "ORCPT="+v)
	}
	return p, nil
}

// utf8AddrXtext encodes per RFC 6533 §3 (utf-8-addr-xtext).
func utf8AddrXtext(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < '!' || r == '+' || r == '=' || r == '\\' || r == 0x7f {
			fmt.Fprintf(&b, "\\x{%X}", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// upstreamParams are params as this MTA connection can take them: a
// parameter of an extension the MTA did not announce is dropped. Clients
// are offered only the MTA's extensions (Settings.Offer), but an MTA that
// changed since (a reload, a failover) may lack one: SMTPUTF8 is then
// safe to drop for an all-ASCII envelope (forwardRcpt refuses the rest),
// and a DSN request degrades to the MTA's default notifications.
func (s *Session) upstreamParams(params []string) []string {
	var out []string
	for _, p := range params {
		name, _, _ := strings.Cut(p, "=")
		kw := paramExtension[name]
		if _, ok := s.up.Extension(kw); kw == "" || ok {
			out = append(out, p)
		}
	}
	return out
}

var errUTF8Unavailable = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII addresses are not supported by the mail server here (no SMTPUTF8)"}

// Rcpt is RCPT TO: the policy first, then the MTA's own answer.
func (s *Session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.peer.HangingUp() {
		return errClosing
	}
	if !s.mu.TryLock() {
		return errInTransfer
	}
	defer s.mu.Unlock()
	if err := s.checkPath(policy.StageRcpt, to, s.utf8); err != nil {
		return err
	}
	to = s.postmasterPath(to)
	for _, held := range []*policy.Decision{s.connRefusal, s.heloRefusal, s.mailRefusal} {
		if held != nil {
			s.logDecision(*held, "rcpt", to)
			return smtpError(held.Result.Reply)
		}
	}
	out := s.run.Rcpt(s.ctx, &s.client, &s.env, to)
	if d, ok := s.record(&out, policy.StageRcpt, "rcpt", to); ok {
		return smtpError(d.Result.Reply)
	}
	if err := s.rateLimit(to); err != nil {
		return err
	}
	params, perr := rcptParams(opts)
	if perr != nil {
		return s.refuseParam("rcpt", perr, "rcpt", to)
	}
	rep, err := s.forwardRcpt(to, params)
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return s.refuseParam("rcpt", se, "rcpt", to)
	}
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
		return s.relay(rep)
	}
	s.env.Recipients = append(s.env.Recipients, to)
	// The MTA's own words (RFC 3463 X.1.5 where it gave no enhanced code).
	ok := fromUpstream(rep)
	if !rep.HasEnhanced() {
		ok.EnhancedCode = smtp.EnhancedCode{2, 1, 5}
	}
	return ok
}

// forwardRcpt opens the upstream connection if needed and sends RCPT,
// with the transaction's MAIL in front of the first one. Until the MTA
// accepted the first recipient nothing of the transaction stands, so a
// connection that turns out to be done (a 421, RFC 5321 §3.8; a temporary
// refusal of MAIL where the MTA limits messages per connection; a reset)
// is retired and the transaction tried once more on a fresh one
// (upstream.Tx.Retryable).
func (s *Session) forwardRcpt(to string, params []string) (reply.Reply, error) {
	if s.up != nil && s.up.Broken() {
		s.dropUpstream()
	}
	if s.up != nil && !s.tx.Open() && s.up.Spent() {
		// upstream.pool.max_messages / max_age: a long session moves to a
		// fresh MTA connection between transactions.
		s.releaseUpstream()
	}
	if !s.tx.Open() && len(s.env.Recipients) > 0 {
		// The MTA connection was lost after it accepted recipients: a new
		// transaction would carry only the recipients from here on, and
		// the message would be queued for fewer than the client was told.
		return reply.Reply{}, errTransactionLost
	}
	for attempt := 0; ; attempt++ {
		rep, retry, err := s.rcptUpstream(to, params)
		if !retry || attempt > 0 {
			return rep, err
		}
		why := "error"
		var detail string
		if err != nil {
			detail = err.Error()
		} else {
			why, detail = "reply", rep.String()
		}
		s.log.Info("upstream retry", "stage", "rcpt", "check", "upstream", why, detail, "rcpt", to)
		s.dropUpstream()
	}
}

// rcptUpstream sends RCPT in the open transaction, or begins one (MAIL
// with this first RCPT), dialling if need be. retry reports an outcome of
// the beginning that a fresh connection may not give.
func (s *Session) rcptUpstream(to string, params []string) (rep reply.Reply, retry bool, err error) {
	if s.up == nil {
		up, err := s.st.Dial(s.ctx, s.clientInfo())
		if err != nil {
			return reply.Reply{}, false, err
		}
		s.setUp(up)
	}
	if _, ok := s.up.Extension("SMTPUTF8"); !ok && (!isASCII(to) || !isASCII(s.upFrom)) {
		// RFC 6531 §3.5: the MTA could not take this envelope.
		return reply.Reply{}, false, errUTF8Unavailable
	}
	if !s.tx.Open() {
		s.tx = s.up.NewTx(s.upFrom, s.upstreamParams(s.mailParams))
	}
	rep, err = s.tx.Rcpt(s.ctx, forwardForm(to), s.upstreamParams(params))
	return rep, s.tx.Retryable(), err
}

// errTransactionLost answers a RCPT, or DATA, after the MTA connection
// that held the transaction's earlier recipients went away.
var errTransactionLost = fmt.Errorf("%w: it held this transaction's recipients", upstream.ErrLost)

// dropUpstream closes the upstream connection; the transaction there is
// gone with it.
func (s *Session) dropUpstream() {
	if s.up != nil {
		s.up.Close()
		s.setUp(nil)
	}
}

// releaseUpstream ends the session's use of its MTA connection: back to
// the pool when it can serve another client (upstream.Conn.Quit).
func (s *Session) releaseUpstream() {
	if s.up != nil {
		s.up.Quit()
		s.setUp(nil)
	}
}

// abortUpstream drops the MTA connection in the middle of DATA, without
// the final dot, so that the MTA queues nothing (upstream.Tx.Abort).
func (s *Session) abortUpstream() {
	if s.tx != nil {
		s.tx.Abort()
	}
	s.dropUpstream()
}

// setUp records the MTA connection the session holds (nil: none), and
// tells the listener through the Peer. A transaction goes with the
// connection it was on.
func (s *Session) setUp(c *upstream.Conn) {
	s.up = c
	s.tx = nil
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
	s.dropUpstream()
	r, level, note := failureReply(err)
	args := append([]any{"stage", stage, "check", "upstream", "reply", r.String(), "error", err.Error()}, attrs...)
	if note != "" {
		args = append(args, "note", note)
	}
	s.log.Log(s.ctx, level, "tempfail", append(args, s.envAttrs()...)...)
	s.observe(stage, "upstream", r.Code, false)
	return smtpError(r)
}

// failureReply is the reply, log level and note for a failure to talk to
// the MTA, saying what went wrong as far as the client may know
// (upstream's kinds of failure, upstream.ErrUnavailable).
func failureReply(err error) (reply.Reply, slog.Level, string) {
	unavailable := func(enh [3]int, what string) reply.Reply {
		return reply.New(451, enh, "Service temporarily unavailable: "+what+", try again later")
	}
	note := ""
	if errors.Is(err, upstream.ErrOutcomeUnknown) {
		// RFC 5321 §6.1 and RFC 1047: a duplicate beats a loss.
		note = "after the final dot: the MTA may have the message, and the client's retry may deliver it twice"
	}
	switch {
	case errors.Is(err, upstream.ErrLocalResources):
		// Our own shortage, not the MTA's: say so (RFC 3463 4.3.0).
		return unavailable([3]int{4, 3, 0}, "local resource shortage (out of file descriptors)"), slog.LevelError,
			"out of file descriptors: raise the open-file limit or lower limits.max_connections"
	case errors.Is(err, upstream.ErrIdentityRefused):
		return unavailable([3]int{4, 3, 5}, "mail server refuses our XCLIENT/XFORWARD (configuration error)"), slog.LevelError,
			"the MTA does not authorise smtpgate for upstream.xclient; allow it there or set upstream.xclient: auto"
	case errors.Is(err, upstream.ErrProtocol):
		return unavailable([3]int{4, 4, 2}, "mail server sent an unexpected reply"), slog.LevelWarn, note
	case errors.Is(err, upstream.ErrTimeout):
		return unavailable([3]int{4, 4, 1}, "mail server did not answer in time"), slog.LevelWarn, note
	case errors.Is(err, upstream.ErrLost):
		return unavailable([3]int{4, 4, 2}, "connection to mail server lost"), slog.LevelWarn, note
	}
	// upstream.ErrUnavailable, or a dial that failed before upstream.
	return unavailable([3]int{4, 4, 1}, "mail server not reachable"), slog.LevelWarn, ""
}

// relay passes the MTA's refusal to the client. After a 421 the MTA has
// closed the connection (RFC 5321 §3.8) and the transaction is gone:
// the client hears the 421 and is disconnected too, so that it retries
// the whole message rather than going on with a session that has no
// MTA behind it.
func (s *Session) relay(r reply.Reply) error {
	if r.Closing() {
		s.dropUpstream()
		s.peer.HangUpAfterReply()
	}
	return fromUpstream(r)
}

// fromUpstream passes the MTA's reply to the client, its enhanced code on
// every line (RFC 2034 §4); go-smtp writes it on the last line only.
func fromUpstream(r reply.Reply) *smtp.SMTPError {
	if c := r.Code / 100; !r.HasEnhanced() && (c == 2 || c == 4 || c == 5) {
		r.Enhanced = [3]int{c, 0, 0}
	}
	if lines := r.Lines(); len(lines) > 1 && r.HasEnhanced() {
		prefix := r.EnhancedString() + " "
		var b strings.Builder
		for _, l := range lines[:len(lines)-1] {
			b.WriteString(prefix + l + "\n")
		}
		b.WriteString(lines[len(lines)-1])
		r.Text = b.String()
	}
	return smtpError(r)
}

// queuedAsRe finds the queue id in the MTA's reply to the final dot:
// Postfix "Ok: queued as ID", Exim "OK id=ID", OpenSMTPD "ID Message
// accepted for delivery".
var queuedAsRe = regexp.MustCompile(`(?i)queued as ([0-9A-Za-z]+)|\bid=([0-9A-Za-z-]+)|^([0-9a-f]{8,16}) Message accepted`)

func queueID(r reply.Reply) string {
	if m := queuedAsRe.FindStringSubmatch(r.Text); m != nil {
		return m[1] + m[2] + m[3]
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
