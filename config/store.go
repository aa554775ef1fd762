package config

import (
	"net"
	"net/url"
	"strings"
	"time"
)

// Store is where the state that several nodes share lives: rate-limit
// buckets, AUTH failure counts, recipient-probe answers. Without a Redis
// address each node keeps its own in memory.
type Store struct {
	Redis Redis `yaml:"redis"`
}

// Redis is store.redis: a Redis server (7.0 or later), a Redis Cluster
// or Redis Sentinels.
type Redis struct {
	// Address is host:port; several, comma-separated, are the nodes of a
	// Redis Cluster, or the Sentinels when SentinelMaster is set. Empty
	// (and no URL): no Redis.
	Address string `yaml:"address"`
	// URL is redis://[user:password@]host:port/db (rediss:// for TLS),
	// instead of Address and the fields below.
	URL            string `yaml:"url"`
	SentinelMaster string `yaml:"sentinel_master"`
	Username       string `yaml:"username"`
	Password       string `yaml:"password"`
	DB             int    `yaml:"db"`
	// TLS connects with TLS, verifying the server's certificate.
	TLS bool `yaml:"tls"`
	// KeyPrefix is put before every key (several sites on one Redis).
	KeyPrefix string `yaml:"key_prefix"`
	// Timeout bounds every call to Redis, connecting included.
	Timeout Duration `yaml:"timeout"`
}

// Store defaults.
const (
	DefaultRedisTimeout   = 50 * time.Millisecond
	DefaultRedisKeyPrefix = "smtpgate:"
)

// Enabled says whether store.redis is configured.
func (r Redis) Enabled() bool { return r.Address != "" || r.URL != "" }

// Addresses returns Address split at commas.
func (r Redis) Addresses() []string {
	var out []string
	for _, a := range strings.Split(r.Address, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func (s *Store) setDefaults() {
	if s.Redis.Timeout == 0 {
		s.Redis.Timeout = Duration(DefaultRedisTimeout)
	}
	if s.Redis.KeyPrefix == "" {
		s.Redis.KeyPrefix = DefaultRedisKeyPrefix
	}
}

func (s *Store) validate(v *validator) {
	r := s.Redis
	if r.Address != "" && r.URL != "" {
		v.errorf("store.redis.url", "give store.redis.address or store.redis.url, not both")
	}
	for _, a := range r.Addresses() {
		if _, _, err := net.SplitHostPort(a); err != nil {
			v.errorf("store.redis.address", "%q: want host:port (several, comma-separated, for a Cluster or Sentinels)", a)
		}
	}
	if r.URL != "" {
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			v.errorf("store.redis.url", "%q: want redis://[user:password@]host:port/db or rediss://...", r.URL)
		} else if r.Username != "" || r.Password != "" || r.DB != 0 || r.TLS || r.SentinelMaster != "" {
			v.errorf("store.redis.url", "the URL gives the user, password, database and TLS: leave username, password, db, tls and sentinel_master out")
		}
	}
	if r.DB < 0 {
		v.errorf("store.redis.db", "%d: want a database number (0, 1, ...)", r.DB)
	}
	if r.DB != 0 && len(r.Addresses()) > 1 && r.SentinelMaster == "" {
		v.errorf("store.redis.db", "a Redis Cluster has database 0 only")
	}
	if d := r.Timeout.D(); d <= 0 || d > 10*time.Second {
		v.errorf("store.redis.timeout", "%v: want a positive duration of at most 10s (every Redis call waits at most this long; default 50ms)", d)
	}
}
