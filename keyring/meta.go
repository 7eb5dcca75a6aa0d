package keyring

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/signerd/signerd/jose"
)

// metaFormat is the version of the JSON written in the token. A daemon refuses records of a newer format
// rather than misread them.
const metaFormat = 1

// nameRE is the rule for key names.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ErrBadName means a key name breaks the naming rule.
var ErrBadName = errors.New("keyring: key name must match [a-z0-9][a-z0-9-]{0,62}")

// ValidName reports whether name is a valid key name.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Meta is one key's record in the token: everything about the key except the key material, which the
// token holds under each version's CKA_ID. It is stored as JSON in a CKO_DATA object named after the key.
type Meta struct {
	Format int            `json:"format"`
	Name   string         `json:"name"`
	Alg    jose.Algorithm `json:"alg"`
	// Bits is the RSA modulus size; zero for other algorithms.
	Bits int `json:"bits,omitempty"`
	// Revision grows by one with every write, so that readers can tell the newer of two records.
	Revision uint64 `json:"revision"`
	// Settings are the key's rotation settings.
	Settings

	// Versions are in creation order; version numbers start at 1.
	Versions []Version `json:"versions"`
}

// Settings are a key's rotation settings.
type Settings struct {
	// Prepublish is how long a new version is published before it signs.
	Prepublish Duration `json:"prepublish"`
	// Grace is how long a retired version still verifies and stays published.
	Grace Duration `json:"grace"`
	// RotationPeriod is the active version's age at which RotateDue rotates the key; zero means never.
	RotationPeriod Duration `json:"rotation_period,omitempty"`
	// KeepRetired keeps versions past their grace in the token instead of destroying them.
	KeepRetired bool `json:"keep_retired,omitempty"`
}

// Default settings.
const (
	DefaultPrepublish = 10 * time.Minute
	DefaultGrace      = 24 * time.Hour
)

// DefaultSettings returns the settings of a key created without any.
func DefaultSettings() Settings {
	return Settings{Prepublish: Duration(DefaultPrepublish), Grace: Duration(DefaultGrace)}
}

// Validate checks s on its own; the daemon checks it against its configuration too (prepublish at
// least the JWKS max-age, grace at least the longest token TTL).
func (s Settings) Validate() error {
	var errs []error
	if s.Prepublish < 0 {
		errs = append(errs, errors.New("prepublish: negative"))
	}
	if s.Grace < 0 {
		errs = append(errs, errors.New("grace: negative"))
	}
	if s.RotationPeriod < 0 {
		errs = append(errs, errors.New("rotation_period: negative"))
	}
	if s.RotationPeriod > 0 && s.RotationPeriod.D() <= s.Prepublish.D() {
		errs = append(errs, errors.New("rotation_period: must be longer than prepublish"))
	}
	return errors.Join(errs...)
}

// Version is one key pair generated in the token. Its state is not stored: it follows from the timestamps
// and the clock (see Meta.StateAt), so transitions happen on time without anyone writing to the token.
type Version struct {
	Number int `json:"n"`
	// ID is the CKA_ID of the key pair in the token.
	ID HexBytes `json:"id"`
	// Kid is the RFC 7638 thumbprint of the public key.
	Kid     string    `json:"kid"`
	Created time.Time `json:"created"`
	// ActivateAt is when the version starts signing. Until then it is pending (published, not signing).
	ActivateAt time.Time `json:"activate_at"`
	// RevokedAt is set when the version was revoked: it neither signs nor verifies, and is unpublished.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// DestroyedAt is set once the key pair has been deleted from the token.
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// State is a version's lifecycle state.
type State string

// Version states (DESIGN.md "Key model").
const (
	Pending   State = "pending"
	Active    State = "active"
	Retired   State = "retired"
	Expired   State = "expired" // retired and past its grace: no longer published or verifying
	Revoked   State = "revoked"
	Destroyed State = "destroyed"
)

// Publishable reports whether versions in state s are in the JWKS and verify signatures.
func (s State) Publishable() bool { return s == Pending || s == Active || s == Retired }

// Timeline is a version's derived times.
type Timeline struct {
	State State
	// RetiredAt is when the next version took over (zero while the version is pending or active).
	RetiredAt time.Time
	// ExpiresAt is RetiredAt plus the key's grace.
	ExpiresAt time.Time
}

// StateAt derives the state of version index i at time now. A version is retired by the first later
// version that has become active (even if that one was revoked or destroyed since), and expires a grace
// period later; the active version is the latest one that has activated and was never retired or
// revoked. Revoking the active version therefore leaves the key without one until it is rotated: an
// older version never comes back.
func (m *Meta) StateAt(i int, now time.Time) Timeline {
	v := m.Versions[i]
	switch {
	case v.DestroyedAt != nil:
		return Timeline{State: Destroyed}
	case v.RevokedAt != nil:
		return Timeline{State: Revoked}
	case now.Before(v.ActivateAt):
		return Timeline{State: Pending}
	}
	for j := i + 1; j < len(m.Versions); j++ {
		w := m.Versions[j]
		if now.Before(w.ActivateAt) || !w.wasActive() {
			continue
		}
		retired := w.ActivateAt
		if retired.Before(v.ActivateAt) {
			retired = v.ActivateAt
		}
		tl := Timeline{State: Retired, RetiredAt: retired, ExpiresAt: retired.Add(m.Grace.D())}
		if !now.Before(tl.ExpiresAt) {
			tl.State = Expired
		}
		return tl
	}
	return Timeline{State: Active}
}

// wasActive reports whether v ever became active: it was not revoked before its activation time. A
// version is active from the instant of ActivateAt (StateAt), so one revoked at that instant was.
func (v Version) wasActive() bool {
	return v.RevokedAt == nil || !v.RevokedAt.Before(v.ActivateAt)
}

// nextTransition returns the first instant after now at which a version of m changes state, or zero.
func (m *Meta) nextTransition(now time.Time) time.Time {
	var next time.Time
	consider := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for i, v := range m.Versions {
		if v.DestroyedAt != nil || v.RevokedAt != nil {
			continue
		}
		consider(v.ActivateAt)
		if tl := m.StateAt(i, now); tl.State == Retired {
			consider(tl.ExpiresAt)
		}
	}
	return next
}

// validate checks a record read from the token.
func (m *Meta) validate() error {
	var errs []error
	if m.Format != metaFormat {
		errs = append(errs, fmt.Errorf("format %d, this signerd reads %d", m.Format, metaFormat))
	}
	if !ValidName(m.Name) {
		errs = append(errs, ErrBadName)
	}
	if _, err := jose.ParseAlgorithm(string(m.Alg)); err != nil {
		errs = append(errs, err)
	}
	if err := m.Settings.Validate(); err != nil {
		errs = append(errs, err)
	}
	if m.Alg.KeyType() == jose.KeyRSA && m.Bits < jose.MinRSABits {
		errs = append(errs, fmt.Errorf("RSA key of %d bits, want at least %d", m.Bits, jose.MinRSABits))
	}
	seen := map[string]bool{}
	for i, v := range m.Versions {
		if v.Number != i+1 {
			errs = append(errs, fmt.Errorf("versions[%d]: number %d, want %d", i, v.Number, i+1))
		}
		if len(v.ID) == 0 || seen[string(v.ID)] {
			errs = append(errs, fmt.Errorf("versions[%d]: missing or duplicate id", i))
		}
		seen[string(v.ID)] = true
	}
	return errors.Join(errs...)
}

// decodeMeta decodes and checks the record the store holds under label, which must be its key's name.
// Its errors name the record, so that an operator can find the object in the token.
func decodeMeta(label string, b []byte) (*Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("keyring: record %q: decode: %w", label, err)
	}
	if m.Name != label {
		return nil, fmt.Errorf("keyring: record %q holds key %q", label, m.Name)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("keyring: record %q: %w", label, err)
	}
	return &m, nil
}

// HexBytes is a byte string written as hex in JSON.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (h *HexBytes) UnmarshalText(b []byte) error {
	out, err := hex.DecodeString(string(b))
	if err != nil {
		return fmt.Errorf("keyring: bad hex id: %w", err)
	}
	*h = out
	return nil
}

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// CheckAgainst checks s against the daemon's configuration: a new version must stay published for at
// least the JWKS cache lifetime before it signs (minPrepublish), so that no verifier meets a kid it has
// not fetched; and a retired version must keep verifying for at least the longest token lifetime
// (minGrace), so that no token outlives its key.
func (s Settings) CheckAgainst(minPrepublish, minGrace time.Duration) error {
	var errs []error
	if s.Prepublish.D() < minPrepublish {
		errs = append(errs, fmt.Errorf("prepublish %v is shorter than the JWKS max-age %v", s.Prepublish.D(), minPrepublish))
	}
	if s.Grace.D() < minGrace {
		errs = append(errs, fmt.Errorf("grace %v is shorter than the longest token TTL granted for the key, %v", s.Grace.D(), minGrace))
	}
	return errors.Join(errs...)
}
