// Package users is the password database of smtpgate's SMTP AUTH: the
// users file ("login:hash" lines, bcrypt from `smtpgate passwd` or
// {ARGON2ID}) and the constant-time check of a password against it. It is
// a leaf library.
package users

import (
	"bufio"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"os"
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
	logins []string // in file order
	// dummy is compared against for unknown logins, so that a wrong login
	// costs the same time as a wrong password (no user enumeration by
	// timing): a hash of the same scheme and parameters as the real ones.
	dummy    passwordHash
	warnings []string
}

type passwordHash interface {
	verify(password []byte) bool
	// profile names the scheme and every parameter that sets the cost of
	// verify: two hashes with one profile take the same time.
	profile() string
	// likeThis returns a hash of a random password with the same profile.
	likeThis() (passwordHash, error)
}

// Parse reads a users file; errors name the file and line.
func Parse(r io.Reader, name string) (*Users, error) {
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
		u.logins = append(u.logins, login)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %v", name, n, err)
	}
	if err := u.makeDummy(name); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return u, nil
}

// makeDummy makes the hash unknown logins are compared against: the
// profile most logins have (the first such in the file on a tie), so that
// an unknown login takes the time a real one takes. A file that mixes
// profiles gets a warning: its minority logins can be told from unknown
// ones by timing.
func (u *Users) makeDummy(name string) error {
	count := map[string]int{}
	var order []passwordHash // one hash per profile, in file order
	for _, login := range u.logins {
		h := u.hashes[login]
		p := h.profile()
		if count[p] == 0 {
			order = append(order, h)
		}
		count[p]++
	}
	if len(order) == 0 {
		// No users: every login is unknown and there is nothing to match.
		h, err := bcrypt.GenerateFromPassword(randomPassword(), bcrypt.MinCost)
		u.dummy = bcryptHash(h)
		return err
	}
	model := order[0]
	for _, h := range order[1:] {
		if count[h.profile()] > count[model.profile()] {
			model = h
		}
	}
	if len(order) > 1 {
		kinds := make([]string, len(order))
		for i, h := range order {
			kinds[i] = fmt.Sprintf("%d with %s", count[h.profile()], h.profile())
		}
		u.warnings = append(u.warnings, fmt.Sprintf("%s mixes %d kinds of hash (%s): unknown logins are compared against %s, so logins with another scheme or cost can be told apart by their timing; rehash them alike",
			name, len(order), strings.Join(kinds, ", "), model.profile()))
	}
	d, err := model.likeThis()
	u.dummy = d
	return err
}

// Warnings returns what is wrong with the file without being an error,
// for the log at load.
func (u *Users) Warnings() []string { return u.warnings }

func randomPassword() []byte {
	b := make([]byte, 24)
	rand.Read(b)
	return b
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

func (h bcryptHash) profile() string {
	c, _ := bcrypt.Cost(h)
	return fmt.Sprintf("bcrypt cost %d", c)
}

func (h bcryptHash) likeThis() (passwordHash, error) {
	c, err := bcrypt.Cost(h)
	if err != nil {
		return nil, err
	}
	d, err := bcrypt.GenerateFromPassword(randomPassword(), c)
	return bcryptHash(d), err
}

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

func (h argon2idHash) profile() string {
	return fmt.Sprintf("argon2id m=%d,t=%d,p=%d salt=%d key=%d", h.mem, h.time, h.threads, len(h.salt), len(h.hash))
}

func (h argon2idHash) likeThis() (passwordHash, error) {
	d := h
	d.salt = make([]byte, len(h.salt))
	rand.Read(d.salt)
	d.hash = argon2.IDKey(randomPassword(), d.salt, h.time, h.mem, h.threads, uint32(len(h.hash)))
	return d, nil
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

// Load reads the users file at path.
func Load(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, path)
}
