package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// EdgeLimits are the limits: keys that keep smtpgate fair under floods
// (connection counts and rates before the greeting, message and recipient
// rates, protocol hygiene). Zero values take the defaults below.
type EdgeLimits struct {
	// MaxConnections bounds open connections over all listeners.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP bounds open connections from one client
	// network (an IPv4 address, an IPv6 /64 by default).
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// ConnectionRatePerIP is a token bucket of new connections per client
	// network: "10/1m" allows bursts of 10 and 10 a minute after that.
	ConnectionRatePerIP Rate `yaml:"connection_rate_per_ip"`
	// IPv4Prefix and IPv6Prefix say how many leading bits of an address
	// name a client for the per-IP limits (32 and 64).
	IPv4Prefix int `yaml:"ipv4_prefix"`
	IPv6Prefix int `yaml:"ipv6_prefix"`
	// MaxTrackedIPs bounds the per-IP limiter state held in memory.
	MaxTrackedIPs int `yaml:"max_tracked_ips"`
	// MessagesPerIP, RecipientsPerIP and RecipientsPerSender are token
	// buckets like ConnectionRatePerIP; over them RCPT gets 450 4.7.1.
	MessagesPerIP       Rate `yaml:"messages_per_ip"`
	RecipientsPerIP     Rate `yaml:"recipients_per_ip"`
	RecipientsPerSender Rate `yaml:"recipients_per_sender"`
	// MaxErrors is the number of 4xx/5xx replies after which a session
	// gets 421 4.7.0 and is closed; MaxUnknownCommands the same for
	// unknown or malformed commands (at most 3: go-smtp's own limit).
	MaxErrors          int `yaml:"max_errors"`
	MaxUnknownCommands int `yaml:"max_unknown_commands"`
	// MaxJunkCommands is the number of NOOP, RSET, VRFY and ETRN
	// commands a session may give before it gets 421 4.7.0 and is closed
	// (Postfix's smtpd_junk_command_limit); a message accepted starts the
	// count again.
	MaxJunkCommands int `yaml:"max_junk_commands"`
	// AllowUnauthPipelining turns off the refusal of clients that send
	// commands before the reply to EHLO/HELO or DATA content before 354
	// (Postfix's smtpd_forbid_unauth_pipelining, on by default).
	AllowUnauthPipelining bool `yaml:"allow_unauth_pipelining"`
}

// Rate is "N/duration": N events, refilled evenly over duration (a token
// bucket of size N). The zero Rate is no limit; "0" or "" say so.
type Rate struct {
	N   int
	Per time.Duration
}

// ParseRate parses "10/1m", "100/1h", "0" or "".
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(s, "/")
	if !ok {
		return Rate{}, fmt.Errorf("%q: want N/duration, like 10/1m", s)
	}
	count, err := strconv.Atoi(strings.TrimSpace(n))
	if err != nil || count < 0 {
		return Rate{}, fmt.Errorf("%q: want N/duration, like 10/1m", s)
	}
	d, err := time.ParseDuration(strings.TrimSpace(per))
	if err != nil || d <= 0 {
		return Rate{}, fmt.Errorf("%q: want N/duration, like 10/1m", s)
	}
	if count == 0 {
		return Rate{}, nil
	}
	return Rate{N: count, Per: d}, nil
}

// UnmarshalYAML reads a Rate.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseRate(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*r = v
	return nil
}

// Off reports whether the rate does not limit.
func (r Rate) Off() bool { return r.N == 0 }

func (r Rate) String() string {
	if r.Off() {
		return "0"
	}
	return strconv.Itoa(r.N) + "/" + r.Per.String()
}

// EarlyTalker is postscreen's pregreet test: a 220- teaser line, a wait,
// and a client that talks before the final 220 line is refused.
type EarlyTalker struct {
	// Wait is how long to wait after the teaser; 0 turns the test off.
	Wait Duration `yaml:"wait"`
	// Mode is enforce (554 5.5.1 and close) or warn (log only).
	Mode string `yaml:"mode"`
}

// Metrics is the HTTP listener for Prometheus metrics, /healthz, /readyz
// and POST /reload.
type Metrics struct {
	// Address is host:port; empty turns the listener off.
	Address string `yaml:"address"`
}

// Edge defaults.
const (
	DefaultMaxConnections      = 1000
	DefaultMaxConnectionsPerIP = 50
	DefaultMaxTrackedIPs       = 100000
	DefaultMaxErrors           = 10
	DefaultMaxUnknownCommands  = 3
	DefaultMaxJunkCommands     = 100
)

func (c *Config) setEdgeDefaults() {
	l := &c.Limits.EdgeLimits
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.MaxConnectionsPerIP == 0 {
		l.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if l.IPv4Prefix == 0 {
		l.IPv4Prefix = 32
	}
	if l.IPv6Prefix == 0 {
		l.IPv6Prefix = 64
	}
	if l.MaxTrackedIPs == 0 {
		l.MaxTrackedIPs = DefaultMaxTrackedIPs
	}
	if l.MaxErrors == 0 {
		l.MaxErrors = DefaultMaxErrors
	}
	if l.MaxUnknownCommands == 0 {
		l.MaxUnknownCommands = DefaultMaxUnknownCommands
	}
	if l.MaxJunkCommands == 0 {
		l.MaxJunkCommands = DefaultMaxJunkCommands
	}
	if c.EarlyTalker.Mode == "" {
		c.EarlyTalker.Mode = "enforce"
	}
}

func (c *Config) validateEdge(v *validator) {
	l := c.Limits.EdgeLimits
	for _, f := range []struct {
		key string
		n   int
	}{
		{"limits.max_connections", l.MaxConnections},
		{"limits.max_connections_per_ip", l.MaxConnectionsPerIP},
		{"limits.max_tracked_ips", l.MaxTrackedIPs},
		{"limits.max_errors", l.MaxErrors},
		{"limits.max_unknown_commands", l.MaxUnknownCommands},
		{"limits.max_junk_commands", l.MaxJunkCommands},
	} {
		if f.n < 0 {
			v.errorf(f.key, "must be positive")
		}
	}
	if l.IPv4Prefix < 8 || l.IPv4Prefix > 32 {
		v.errorf("limits.ipv4_prefix", "%d: want 8 to 32", l.IPv4Prefix)
	}
	if l.IPv6Prefix < 16 || l.IPv6Prefix > 128 {
		v.errorf("limits.ipv6_prefix", "%d: want 16 to 128", l.IPv6Prefix)
	}
	if l.MaxUnknownCommands > 3 {
		// go-smtp closes the connection itself after the 4th (errThreshold).
		v.errorf("limits.max_unknown_commands", "%d: at most 3 (go-smtp closes after that itself)", l.MaxUnknownCommands)
	}
	switch c.EarlyTalker.Mode {
	case "enforce", "warn":
	default:
		v.errorf("early_talker.mode", "%q: want enforce or warn", c.EarlyTalker.Mode)
	}
	for i, ln := range c.Listen {
		key := fmt.Sprintf("listen.%d.proxy_protocol_from", i)
		if ln.ProxyProtocol && len(ln.ProxyProtocolFrom) == 0 {
			v.errorf(key, "proxy_protocol needs the load balancers' addresses or networks")
		}
		for j, n := range ln.ProxyProtocolFrom {
			if _, err := ParsePrefix(n); err != nil {
				v.errorf(fmt.Sprintf("%s.%d", key, j), "%v", err)
			}
		}
	}
	if a := c.Metrics.Address; a != "" {
		if _, err := netip.ParseAddrPort(a); err != nil {
			v.errorf("metrics.address", "%q: want IP:port (like 127.0.0.1:9325)", a)
		}
	}
}

// ProxyNetworks returns listen[i].proxy_protocol_from, parsed (validated
// by Load).
func (l Listener) ProxyNetworks() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range l.ProxyProtocolFrom {
		if p, err := ParsePrefix(n); err == nil {
			out = append(out, p)
		}
	}
	return out
}
