package verify

import (
	"bufio"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Users is auth.users_file: the logins of our own users and their
// password hashes, one "login:hash" per line. Hashes are bcrypt
// ($2a$/$2b$/$2y$, what `smtpgate passwd` prints) or {ARGON2ID} followed by
// a PHC string ($argon2id$v=19$m=65536,t=3,p=2$salt$hash, as Dovecot's
// doveadm pw -s ARGON2ID writes it).
type Users struct {
	hashes map[string]passwordHash
	// dummy is compared against for unknown logins, so that a wrong login
	// costs the same time as a wrong password (no user enumeration by
	// timing).
	dummy passwordHash
}

type passwordHash interface {
	verify(password []byte) bool
}

// ParseUsers reads a users file; errors name the file and line.
func ParseUsers(r io.Reader, name string) (*Users, error) {
	u := &Users{hashes: map[string]passwordHash{}}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		login, hash, ok := strings.Cut(line, ":")
		login = strings.TrimSpace(login)
		if !ok || login == "" || strings.ContainsAny(login, " \t") {
			return nil, fmt.Errorf("%s:%d: want login:hash", name, n)
		}
		if _, dup := u.hashes[login]; dup {
			return nil, fmt.Errorf("%s:%d: login %q listed twice", name, n, login)
		}
		h, err := parseHash(strings.TrimSpace(hash))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %v", name, n, login, err)
		}
		u.hashes[login] = h
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %v", name, n, err)
	}
	// The dummy costs what the dearest real hash costs.
	cost := bcrypt.MinCost
	for _, h := range u.hashes {
		if b, ok := h.(bcryptHash); ok {
			if c, _ := bcrypt.Cost(b); c > cost {
				cost = c
			}
		}
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("smtpgate timing equaliser"), cost)
	u.dummy = bcryptHash(dummy)
	return u, nil
}

// Len is the number of logins.
func (u *Users) Len() int { return len(u.hashes) }

// Authenticate reports whether password is login's.
func (u *Users) Authenticate(login, password string) bool {
	h, ok := u.hashes[login]
	if !ok {
		u.dummy.verify([]byte(password))
		return false
	}
	return h.verify([]byte(password))
}

func parseHash(s string) (passwordHash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		if _, err := bcrypt.Cost([]byte(s)); err != nil {
			return nil, fmt.Errorf("bad bcrypt hash: %v", err)
		}
		return bcryptHash(s), nil
	case strings.HasPrefix(strings.ToUpper(s), "{ARGON2ID}"):
		return parseArgon2id(s[len("{ARGON2ID}"):])
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	}
	return nil, fmt.Errorf("unsupported hash (want bcrypt, as `smtpgate passwd` prints, or {ARGON2ID})")
}

type bcryptHash []byte

func (h bcryptHash) verify(p []byte) bool { return bcrypt.CompareHashAndPassword(h, p) == nil }

type argon2idHash struct {
	mem        uint32
	time       uint32
	threads    uint8
	salt, hash []byte
}

// parseArgon2id parses $argon2id$v=19$m=65536,t=3,p=2$salt$hash.
func parseArgon2id(s string) (passwordHash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != "v=19" {
		return nil, fmt.Errorf("bad argon2id hash: want $argon2id$v=19$m=..,t=..,p=..$salt$hash")
	}
	h := argon2idHash{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("bad argon2id parameter %q", kv)
		}
		switch k {
		case "m":
			h.mem = uint32(n)
		case "t":
			h.time = uint32(n)
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("bad argon2id parameter %q", kv)
			}
			h.threads = uint8(n)
		}
	}
	var err error
	if h.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil {
		return nil, fmt.Errorf("bad argon2id salt")
	}
	if h.hash, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(h.hash) == 0 {
		return nil, fmt.Errorf("bad argon2id hash")
	}
	if h.mem == 0 || h.time == 0 || h.threads == 0 || h.mem > 4<<20 {
		return nil, fmt.Errorf("bad argon2id parameters")
	}
	return h, nil
}

func (h argon2idHash) verify(p []byte) bool {
	got := argon2.IDKey(p, h.salt, h.time, h.mem, h.threads, uint32(len(h.hash)))
	return subtle.ConstantTimeCompare(got, h.hash) == 1
}

// HashPassword returns the bcrypt hash `smtpgate passwd` prints.
func HashPassword(password string, cost int) (string, error) {
	if password == "" {
		return "", fmt.Errorf("empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	return string(h), err
}
