// Package config turns smtpgate's YAML configuration, and the files it
// names (recipient lists, check tables), into typed, validated values.
// Every error names the file, the line and the key.
//
// config knows nothing of SMTP or of the checks' logic: it only reads,
// defaults and validates.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration. Field names mirror the YAML keys;
// config.example.yaml documents each with its default.
type Config struct {
	Hostname    string      `yaml:"hostname"`
	Listen      []Listener  `yaml:"listen"`
	Upstream    Upstream    `yaml:"upstream"`
	Domains     []string    `yaml:"domains"`
	Postmaster  string      `yaml:"postmaster"` // RCPT TO:<Postmaster> goes here (RFC 5321 §4.5.1)
	Relay       Relay       `yaml:"relay"`
	Recipients  Recipients  `yaml:"recipients"`
	DNS         DNS         `yaml:"dns"`
	TLS         TLS         `yaml:"tls"`
	Limits      Limits      `yaml:"limits"`
	Log         Log         `yaml:"log"`
	Shutdown    Shutdown    `yaml:"shutdown"`
	DelayReject *bool       `yaml:"delay_reject"`
	Auth        Auth        `yaml:"auth"`
	Checks      Checks      `yaml:"checks"`
	EarlyTalker EarlyTalker `yaml:"early_talker"`
	Metrics     Metrics     `yaml:"metrics"`
	Store       Store       `yaml:"store"`

	// Path is the file the configuration was read from.
	Path string `yaml:"-"`
	// RelayNetworks is relay.networks, parsed.
	RelayNetworks []netip.Prefix `yaml:"-"`
}

// Listener is one listening socket.
type Listener struct {
	Address string `yaml:"address"`
	// TLS is none, starttls (offered when a certificate is configured) or
	// implicit (TLS from the first byte, port 465 style).
	TLS string `yaml:"tls"`
	// ProxyProtocol expects a PROXY protocol header (v1 or v2) from the
	// sources in ProxyProtocolFrom (see edge.go).
	ProxyProtocol     bool     `yaml:"proxy_protocol"`
	ProxyProtocolFrom []string `yaml:"proxy_protocol_from"`
	// Mode is mx (port 25: AUTH offered, not required), submission (587:
	// AUTH required before MAIL) or submissions (465: implicit TLS, AUTH
	// required).
	Mode string       `yaml:"mode"`
	Auth ListenerAuth `yaml:"auth"`
}

// ListenerAuth is listen[].auth.
type ListenerAuth struct {
	// AllowInsecure offers AUTH without TLS (for a loopback listener).
	AllowInsecure bool `yaml:"allow_insecure"`
}

// Upstream is the real MTA.
type Upstream struct {
	Address string   `yaml:"address"`
	Timeout Duration `yaml:"timeout"`
	// DataTimeout bounds the wait for the MTA's reply to the final dot
	// (RFC 5321 §4.5.3.2.6: 10 minutes), apart from Timeout.
	DataTimeout    Duration `yaml:"data_timeout"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// XClient is auto, xclient, xforward or off.
	XClient string `yaml:"xclient"`
	// Helo is the name smtpgate gives the MTA in EHLO; default hostname.
	Helo string `yaml:"helo"`
	// MaxConnections and MaxConnectionsPerIP cap the sessions that hold
	// a connection to the MTA, in total and per client network (as the
	// per-IP limits count it); over a cap RCPT gets 451 4.7.0. Keep
	// MaxConnections below the MTA's process limit (Postfix:
	// default_process_limit, 100).
	MaxConnections      int  `yaml:"max_connections"`
	MaxConnectionsPerIP int  `yaml:"max_connections_per_ip"`
	Pool                Pool `yaml:"pool"`
}

// Pool configures the reuse of MTA connections between client sessions.
// An MTA's per-connection limits (Exim smtp_accept_max_per_connection,
// OpenSMTPD smtp limit max-mails) and the configuration its process read
// at connect must never reach unrelated clients: connections are retired
// after MaxMessages messages or MaxAge.
type Pool struct {
	// Enabled: false opens a new MTA connection for every client session.
	Enabled *bool `yaml:"enabled"`
	// MaxMessages retires a connection after that many messages, below
	// every MTA's own per-connection limit.
	MaxMessages int `yaml:"max_messages"`
	// MaxAge retires a connection that old, so an MTA reload reaches
	// every session within MaxAge.
	MaxAge Duration `yaml:"max_age"`
	// MaxIdle bounds the idle connections kept.
	MaxIdle int `yaml:"max_idle"`
	// IdleTimeout closes connections idle for longer.
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// Relay says who may relay to foreign domains without authenticating.
type Relay struct {
	Networks []string `yaml:"networks"`
}

// Recipients configures recipient existence.
type Recipients struct {
	Files []string `yaml:"files"`
	// Verify is none or upstream (ask the MTA with an RCPT probe).
	Verify string `yaml:"verify"`
	// DetailDelimiter, when set (e.g. "+"), makes user+detail@domain match
	// user@domain in the lists.
	DetailDelimiter string   `yaml:"detail_delimiter"`
	PositiveTTL     Duration `yaml:"positive_ttl"`
	NegativeTTL     Duration `yaml:"negative_ttl"`
	CacheSize       int      `yaml:"cache_size"`
}

// Auth configures who our users are and which sender addresses they own.
type Auth struct {
	// SenderLoginMaps is a file in Postfix smtpd_sender_login_maps format:
	// "address login1, login2" and "@domain login" lines.
	SenderLoginMaps string `yaml:"sender_login_maps"`
	// UsersFile holds "login:hash" lines (bcrypt from `smtpgate passwd`,
	// or {ARGON2ID}). Without it, AUTH is not offered.
	UsersFile string `yaml:"users_file"`
	// MaxFailuresPerSession closes a session (421 4.7.0) after that many
	// failed AUTH attempts.
	MaxFailuresPerSession int `yaml:"max_failures_per_session"`
	// FailuresPerIP failed attempts per FailureWindow lock the client
	// address out (454 4.7.0); FailuresPerLogin lock a login out of the
	// client's network (IPv4 /24, IPv6 /64), FailuresPerLoginTotal out of
	// the networks it has not logged in from lately.
	FailuresPerIP         int      `yaml:"failures_per_ip"`
	FailuresPerLogin      int      `yaml:"failures_per_login"`
	FailuresPerLoginTotal int      `yaml:"failures_per_login_total"`
	FailureWindow         Duration `yaml:"failure_window"`
}

// DNS configures the resolver shared by all checks.
type DNS struct {
	Servers []string `yaml:"servers"`
	Timeout Duration `yaml:"timeout"`
}

// TLS is the server certificate.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Limits bound what one client may do.
type Limits struct {
	MaxMessageBytes int64    `yaml:"max_message_bytes"`
	MaxRecipients   int      `yaml:"max_recipients"`
	MaxLineLength   int      `yaml:"max_line_length"`
	MaxHeaderBytes  int      `yaml:"max_header_bytes"`
	CommandTimeout  Duration `yaml:"command_timeout"`
	DataTimeout     Duration `yaml:"data_timeout"`
	// TransactionIdleTimeout replaces CommandTimeout and DataTimeout, when
	// shorter, while the session holds a connection to the MTA (one of its
	// processes): a client quiet for longer gets 421 4.4.2.
	TransactionIdleTimeout Duration `yaml:"transaction_idle_timeout"`
	// SpoolMemoryBytes and SpoolDir are for spool mode (a check needs the
	// whole message): that much of a body is held in memory, the rest in
	// a temporary file in SpoolDir ("": the OS's temporary directory).
	SpoolMemoryBytes int64  `yaml:"spool_memory_bytes"`
	SpoolDir         string `yaml:"spool_dir"`

	EdgeLimits `yaml:",inline"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
}

// Shutdown configures the drain on SIGTERM.
type Shutdown struct {
	DrainTimeout Duration `yaml:"drain_timeout"`
}

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (like 30s or 5m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Defaults.
const (
	DefaultUpstream        = "127.0.0.1:10025"
	DefaultMaxMessageBytes = 50 << 20
	DefaultMaxRecipients   = 1000
	DefaultMaxLineLength   = 4096
	DefaultMaxHeaderBytes  = 1 << 20

	DefaultSpoolMemoryBytes = 1 << 20
	// Not above Exim's smtp_accept_queue_per_connection (10: later messages
	// are queued without immediate delivery), OpenSMTPD's max-mails (100)
	// and Exim's smtp_accept_max_per_connection (1000).
	DefaultPoolMaxMessages = 10
	DefaultPoolMaxAge      = 60 * time.Second
	// At most half of Postfix's default_process_limit (100 smtpd).
	DefaultPoolMaxIdle     = 50
	DefaultPoolIdleTimeout = 10 * time.Second
	// Postfix's default_process_limit is 100 smtpd processes: the caps
	// leave room for recipient probes, the pool's idle connections being
	// reused and local clients of the MTA.
	DefaultUpstreamMaxConnections      = 80
	DefaultUpstreamMaxConnectionsPerIP = 20
	DefaultTransactionIdleTimeout      = time.Minute
)

func (c *Config) setDefaults() {
	c.Store.setDefaults()
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if len(c.Listen) == 0 {
		c.Listen = []Listener{{Address: ":25"}}
	}
	for i := range c.Listen {
		l := &c.Listen[i]
		if l.Mode == "" {
			l.Mode = "mx"
		}
		if l.TLS == "" {
			// STARTTLS wherever a certificate makes it possible (RFC 3207;
			// opportunistic TLS is what every MX should offer).
			switch {
			case l.Mode == "submissions":
				l.TLS = "implicit"
			case c.TLS.CertFile != "":
				l.TLS = "starttls"
			default:
				l.TLS = "none"
			}
		}
	}
	a := &c.Auth
	if a.MaxFailuresPerSession == 0 {
		a.MaxFailuresPerSession = 3
	}
	if a.FailuresPerIP == 0 {
		a.FailuresPerIP = 5
	}
	if a.FailuresPerLogin == 0 {
		a.FailuresPerLogin = 5
	}
	if a.FailuresPerLoginTotal == 0 {
		a.FailuresPerLoginTotal = 50
	}
	if a.FailureWindow == 0 {
		a.FailureWindow = Duration(10 * time.Minute)
	}
	u := &c.Upstream
	if u.Address == "" {
		u.Address = DefaultUpstream
	}
	if u.Timeout == 0 {
		u.Timeout = Duration(5 * time.Minute)
	}
	if u.DataTimeout == 0 {
		u.DataTimeout = Duration(10 * time.Minute)
	}
	if u.ConnectTimeout == 0 {
		u.ConnectTimeout = Duration(10 * time.Second)
	}
	if u.XClient == "" {
		u.XClient = "auto"
	}
	if u.Helo == "" {
		u.Helo = c.Hostname
	}
	if u.Pool.Enabled == nil {
		t := true
		u.Pool.Enabled = &t
	}
	if u.Pool.MaxMessages == 0 {
		u.Pool.MaxMessages = DefaultPoolMaxMessages
	}
	if u.Pool.MaxAge == 0 {
		u.Pool.MaxAge = Duration(DefaultPoolMaxAge)
	}
	if u.Pool.MaxIdle == 0 {
		u.Pool.MaxIdle = DefaultPoolMaxIdle
	}
	if u.Pool.IdleTimeout == 0 {
		u.Pool.IdleTimeout = Duration(DefaultPoolIdleTimeout)
	}
	if u.MaxConnections == 0 {
		u.MaxConnections = DefaultUpstreamMaxConnections
	}
	if u.MaxConnectionsPerIP == 0 {
		u.MaxConnectionsPerIP = DefaultUpstreamMaxConnectionsPerIP
	}
	r := &c.Recipients
	if r.Verify == "" {
		r.Verify = "none"
	}
	if r.PositiveTTL == 0 {
		r.PositiveTTL = Duration(7 * 24 * time.Hour)
	}
	if r.NegativeTTL == 0 {
		r.NegativeTTL = Duration(3 * time.Hour)
	}
	if r.CacheSize == 0 {
		r.CacheSize = 100000
	}
	if c.DNS.Timeout == 0 {
		c.DNS.Timeout = Duration(5 * time.Second)
	}
	l := &c.Limits
	if l.MaxMessageBytes == 0 {
		l.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if l.MaxRecipients == 0 {
		l.MaxRecipients = DefaultMaxRecipients
	}
	if l.MaxLineLength == 0 {
		l.MaxLineLength = DefaultMaxLineLength
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.SpoolMemoryBytes == 0 {
		l.SpoolMemoryBytes = DefaultSpoolMemoryBytes
	}
	// RFC 5321 §4.5.3.2.7: a server SHOULD wait at least 5 minutes for the
	// next command; §4.5.3.2.6 DATA termination: 10 minutes.
	if l.CommandTimeout == 0 {
		l.CommandTimeout = Duration(5 * time.Minute)
	}
	if l.DataTimeout == 0 {
		l.DataTimeout = Duration(10 * time.Minute)
	}
	if l.TransactionIdleTimeout == 0 {
		l.TransactionIdleTimeout = Duration(DefaultTransactionIdleTimeout)
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Shutdown.DrainTimeout == 0 {
		c.Shutdown.DrainTimeout = Duration(30 * time.Second)
	}
	if c.DelayReject == nil {
		t := true
		c.DelayReject = &t
	}
	c.setEdgeDefaults()
	for i, d := range c.Domains {
		c.Domains[i] = strings.TrimSuffix(strings.ToLower(d), ".")
	}
	if c.Postmaster == "" && len(c.Domains) > 0 {
		c.Postmaster = "postmaster@" + c.Domains[0]
	}
}

// Error is one configuration error with its position.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Errors is every error found in one load.
type Errors []Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads and validates the configuration at path and every file it
// names. The error, if any, is an Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: err.Error()}}
	}
	return Parse(data, path)
}

var yamlLineRe = regexp.MustCompile(`^\s*line (\d+): (.*)$`)
var unknownFieldRe = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)

// Parse parses data as if read from path (for error messages; relative
// file names in it are taken relative to the current directory). With
// validation errors it returns them and the parsed, invalid Config; with
// a YAML error, no Config.
func Parse(data []byte, path string) (*Config, error) {
	c := &Config{Path: path}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, errEOF(err)) {
		return nil, yamlErrors(path, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	v := &validator{file: path, root: &root}
	c.setDefaults()
	c.validate(v)
	if len(v.errs) > 0 {
		// The configuration is not valid; it is returned all the same for
		// a caller that reports every error at once (smtpgate -check also
		// loads the checks' own files).
		return c, v.errs
	}
	return c, nil
}

// errEOF treats an empty document as an empty configuration.
func errEOF(err error) error {
	if err != nil && err.Error() == "EOF" {
		return err
	}
	return nil
}

func yamlErrors(path string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		line := 0
		if m := regexp.MustCompile(`line (\d+): (.*)`).FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		return Errors{{File: path, Line: line, Msg: msg}}
	}
	var errs Errors
	for _, e := range te.Errors {
		ce := Error{File: path, Msg: e}
		if m := yamlLineRe.FindStringSubmatch(e); m != nil {
			ce.Line, _ = strconv.Atoi(m[1])
			ce.Msg = m[2]
		}
		if m := unknownFieldRe.FindStringSubmatch(ce.Msg); m != nil {
			ce.Key = m[1]
			ce.Msg = "unknown key (in " + strings.ToLower(m[2]) + ")"
		}
		errs = append(errs, ce)
	}
	return errs
}

type validator struct {
	file string
	root *yaml.Node
	errs Errors
}

// errorf records an error for the key at path ("limits.max_recipients",
// "listen.0.tls"), finding its line in the document.
func (v *validator) errorf(key string, format string, args ...any) {
	v.errs = append(v.errs, Error{File: v.file, Line: v.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// fileErr records an error found in a file the configuration names.
func (v *validator) fileErr(err error) {
	var es Errors
	if errors.As(err, &es) {
		v.errs = append(v.errs, es...)
		return
	}
	var e Error
	if errors.As(err, &e) {
		v.errs = append(v.errs, e)
		return
	}
	v.errs = append(v.errs, Error{Msg: err.Error()})
}

func (v *validator) line(key string) int {
	n := v.root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	return keyLine(n, key, 0)
}

// keyLine follows a dotted key ("listen.0.tls") down from n and returns
// the line of the deepest part it finds, line when it finds none.
func keyLine(n *yaml.Node, key string, line int) int {
	for _, part := range strings.Split(key, ".") {
		if n == nil {
			return line
		}
		switch n.Kind {
		case yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part {
					line = n.Content[i].Line
					next = n.Content[i+1]
					break
				}
			}
			n = next
		case yaml.SequenceNode:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

func (c *Config) validate(v *validator) {
	if c.Hostname == "" || !strings.Contains(c.Hostname, ".") {
		v.errorf("hostname", "%q is not a fully-qualified host name", c.Hostname)
	}
	for i, l := range c.Listen {
		key := fmt.Sprintf("listen.%d", i)
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			v.errorf(key+".address", "%q: %v", l.Address, err)
		}
		switch l.Mode {
		case "mx":
		case "submission":
			if l.TLS == "none" && !l.Auth.AllowInsecure {
				v.errorf(key+".mode", "submission needs tls: starttls (or auth.allow_insecure on a loopback listener)")
			}
		case "submissions":
			if l.TLS != "implicit" {
				v.errorf(key+".tls", "mode submissions is implicit TLS (RFC 8314): tls must be implicit")
			}
		default:
			v.errorf(key+".mode", "%q: want mx, submission or submissions", l.Mode)
		}
		if l.Mode != "mx" && c.Auth.UsersFile == "" {
			v.errorf(key+".mode", "mode %s needs auth.users_file", l.Mode)
		}
		switch l.TLS {
		case "none":
		case "starttls", "implicit":
			if c.TLS.CertFile == "" {
				v.errorf(key+".tls", "tls: %s needs tls.cert_file and tls.key_file", l.TLS)
			}
		default:
			v.errorf(key+".tls", "%q: want none, starttls or implicit", l.TLS)
		}
	}
	if c.Upstream.MaxConnections < 0 {
		v.errorf("upstream.max_connections", "must be positive")
	}
	if c.Upstream.MaxConnectionsPerIP < 0 {
		v.errorf("upstream.max_connections_per_ip", "must be positive")
	}
	if _, _, err := net.SplitHostPort(c.Upstream.Address); err != nil {
		v.errorf("upstream.address", "%q: %v", c.Upstream.Address, err)
	}
	switch c.Upstream.XClient {
	case "auto", "xclient", "xforward", "off":
	default:
		v.errorf("upstream.xclient", "%q: want auto, xclient, xforward or off", c.Upstream.XClient)
	}
	if p := c.Upstream.Pool; p.MaxMessages < 0 {
		v.errorf("upstream.pool.max_messages", "%d: want a positive number", p.MaxMessages)
	} else if p.MaxIdle < 0 {
		v.errorf("upstream.pool.max_idle", "%d: want a positive number", p.MaxIdle)
	}
	for i, d := range c.Domains {
		if d == "" || strings.ContainsAny(d, " @[]") {
			v.errorf(fmt.Sprintf("domains.%d", i), "%q is not a domain name", d)
		}
	}
	if pm := c.Postmaster; pm != "" {
		if at := strings.LastIndexByte(pm, '@'); at <= 0 || at == len(pm)-1 || strings.ContainsAny(pm, " \t<>") {
			v.errorf("postmaster", "%q: want an address, local@domain", pm)
		}
	}
	for i, n := range c.Relay.Networks {
		p, err := ParsePrefix(n)
		if err != nil {
			v.errorf(fmt.Sprintf("relay.networks.%d", i), "%v", err)
			continue
		}
		c.RelayNetworks = append(c.RelayNetworks, p)
	}
	switch c.Recipients.Verify {
	case "none", "upstream":
	default:
		v.errorf("recipients.verify", "%q: want none or upstream", c.Recipients.Verify)
	}
	for i, s := range c.DNS.Servers {
		if _, err := netip.ParseAddrPort(withPort(s, "53")); err != nil {
			v.errorf(fmt.Sprintf("dns.servers.%d", i), "%q: want an IP address with optional :port", s)
		}
	}
	for _, f := range []struct{ key, path string }{
		{"auth.sender_login_maps", c.Auth.SenderLoginMaps},
		{"auth.users_file", c.Auth.UsersFile},
	} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				v.errorf(f.key, "%v", err)
			}
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		v.errorf("tls", "cert_file and key_file go together")
	}
	for _, f := range []struct{ key, path string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile}} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				v.errorf(f.key, "%v", err)
			}
		}
	}
	l := c.Limits
	if l.MaxMessageBytes < 0 {
		v.errorf("limits.max_message_bytes", "must be positive")
	}
	if l.MaxRecipients < 0 {
		v.errorf("limits.max_recipients", "must be positive")
	}
	if l.MaxRecipients > 0 && l.MaxRecipients < 100 {
		// RFC 5321 §4.5.3.1.8: at least 100 recipients MUST be accepted.
		v.errorf("limits.max_recipients", "%d is below the 100 that RFC 5321 §4.5.3.1.8 requires", l.MaxRecipients)
	}
	if l.SpoolMemoryBytes < 0 {
		v.errorf("limits.spool_memory_bytes", "must be positive")
	}
	if l.SpoolDir != "" {
		if fi, err := os.Stat(l.SpoolDir); err != nil {
			v.errorf("limits.spool_dir", "%v", err)
		} else if !fi.IsDir() {
			v.errorf("limits.spool_dir", "%s is not a directory", l.SpoolDir)
		}
	}
	if l.MaxLineLength < 1000 {
		// RFC 5321 §4.5.3.1.6: a text line may be 1000 octets.
		v.errorf("limits.max_line_length", "%d is below the 1000 that RFC 5321 §4.5.3.1.6 allows", l.MaxLineLength)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.errorf("log.format", "%q: want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.errorf("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	c.Checks.validate(c, v)
	c.validateEdge(v)
	c.Store.validate(v)
}

// ParsePrefix parses a network (10.0.0.0/8) or a single address.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not a network", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or network", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func withPort(s, port string) string {
	if _, err := netip.ParseAddrPort(s); err == nil {
		return s
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String()
	}
	return s
}

// DNSServers returns dns.servers as host:port.
func (c *Config) DNSServers() []string {
	out := make([]string, len(c.DNS.Servers))
	for i, s := range c.DNS.Servers {
		out[i] = withPort(s, "53")
	}
	return out
}
