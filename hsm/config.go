package hsm

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultModule is where Debian's softhsm2 package installs the SoftHSM2 PKCS#11 module. It is a symlink;
// use the same string everywhere in one process, because crypto11 counts module references by path.
const DefaultModule = "/usr/lib/softhsm/libsofthsm2.so"

// Defaults for the session pool. MaxSessions is always set: crypto11's pool otherwise grows to 1023
// sessions even with one goroutine (pkcs11-notes §1.3).
const (
	DefaultMaxSessions     = 16
	DefaultPoolWaitTimeout = 5 * time.Second
)

// MaxTokenLabel is the size of CK_TOKEN_INFO's label field, in bytes: a longer label can never match
// a token.
const MaxTokenLabel = 32

// Config says which module and token to open and how to log in. Exactly one of TokenLabel,
// TokenSerial and Slot selects the token (a PKCS#11 URI is parsed into these by ParseURI).
type Config struct {
	// Module is the path of the PKCS#11 shared library.
	Module string
	// TokenLabel selects the token by label (at most MaxTokenLabel bytes).
	TokenLabel string
	// TokenSerial selects the token by serial number.
	TokenSerial string
	// Slot selects the token by slot ID.
	Slot *uint
	// PIN is the user PIN. It is never logged and never appears in an error.
	PIN string
	// MaxSessions bounds the sessions signerd keeps open on the token, for crypto11's pool and for the
	// pool used for Ed25519 and metadata, each, plus one session that holds the session copies of keys.
	// At least 2.
	MaxSessions int
	// PoolWaitTimeout bounds how long an operation waits for a free session.
	PoolWaitTimeout time.Duration
	// LockFile is the file that serialises object-store work among local processes using the token
	// (see localLock); when empty, one per module and token in a directory private to this user (see
	// lockDir), which only this user's processes share.
	LockFile string
	// NoSessionCopies makes signers use the token objects themselves instead of session copies of them
	// (see Token.Find), for tokens where session objects are scarce or unwanted.
	NoSessionCopies bool
	// Exclusive, when set, is the local lock this process already holds; the Token then takes no local
	// lock of its own.
	Exclusive *ExclusiveLock
}

// String describes c for logs and errors with the PIN left out, so that printing a Config (with %v,
// %+v or %s) never shows it.
func (c Config) String() string {
	pin := "none"
	if c.PIN != "" {
		pin = "set"
	}
	return fmt.Sprintf("hsm.Config{Module: %q, token %s, PIN: %s, MaxSessions: %d, PoolWaitTimeout: %v, LockFile: %q, NoSessionCopies: %v}",
		c.Module, selector(c), pin, c.MaxSessions, c.PoolWaitTimeout, c.LockFile, c.NoSessionCopies)
}

// GoString is String, for %#v.
func (c Config) GoString() string { return c.String() }

// validate checks the parts of c that the PKCS#11 library would otherwise report badly or not at all.
func (c *Config) validate() error {
	var errs []error
	if c.Module == "" {
		errs = append(errs, errors.New("module: empty"))
	}
	n := 0
	if c.TokenLabel != "" {
		n++
		if len(c.TokenLabel) > MaxTokenLabel {
			errs = append(errs, fmt.Errorf("token label %q: longer than %d bytes, can never match", c.TokenLabel, MaxTokenLabel))
		}
	}
	if c.TokenSerial != "" {
		n++
	}
	if c.Slot != nil {
		n++
	}
	if n != 1 {
		errs = append(errs, fmt.Errorf("exactly one of token label, token serial and slot must select the token, got %d", n))
	}
	if c.PIN == "" {
		errs = append(errs, errors.New("pin: empty"))
	}
	if c.MaxSessions < 2 {
		errs = append(errs, fmt.Errorf("max sessions: %d, want at least 2", c.MaxSessions))
	}
	if c.PoolWaitTimeout <= 0 {
		errs = append(errs, fmt.Errorf("pool wait timeout: %v, want > 0", c.PoolWaitTimeout))
	}
	return errors.Join(errs...)
}

// PINSource says where a PIN comes from. The PIN itself is never written in a config file.
type PINSource struct {
	// File is a file holding the PIN. "${CREDENTIALS_DIRECTORY}" in it is replaced by that environment
	// variable, where systemd's LoadCredential= puts credentials, so that one config serves every unit.
	// Surrounding whitespace is trimmed.
	File string `yaml:"pin_file"`
	// Env names an environment variable holding the PIN ([A-Za-z_][A-Za-z0-9_]*, see ValidEnvName).
	Env string `yaml:"pin_env"`
}

// ValidEnvName reports whether name is a portable environment variable name, [A-Za-z_][A-Za-z0-9_]*.
// A name that is not one is never quoted back in an error: it may be a PIN written in the wrong place.
func ValidEnvName(name string) bool {
	if name == "" {
		return false
	}
	for i, r := range name {
		switch {
		case r == '_', 'A' <= r && r <= 'Z', 'a' <= r && r <= 'z':
		case '0' <= r && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// conventionalEnvName reports whether name has the usual form of an environment variable's, upper case
// ([A-Z_][A-Z0-9_]*), which a PIN written in its place is unlikely to have.
func conventionalEnvName(name string) bool {
	return ValidEnvName(name) && strings.ToUpper(name) == name
}

// credentialsVar is the variable systemd sets for units with LoadCredential=.
const credentialsVar = "${CREDENTIALS_DIRECTORY}"

// Path returns File with ${CREDENTIALS_DIRECTORY} expanded.
func (s PINSource) Path() string {
	return strings.ReplaceAll(s.File, credentialsVar, os.Getenv("CREDENTIALS_DIRECTORY"))
}

// NeedsCredentials reports whether File refers to ${CREDENTIALS_DIRECTORY} while that variable is
// unset: the process is not a systemd unit with LoadCredential= (an administrator's shell, say).
func (s PINSource) NeedsCredentials() bool {
	return strings.Contains(s.File, credentialsVar) && os.Getenv("CREDENTIALS_DIRECTORY") == ""
}

// InCredentials reports whether File lies in systemd's credentials directory (${CREDENTIALS_DIRECTORY},
// set): a directory the service manager made for the unit alone, whose files it makes readable by the
// unit's user with an ACL (their mode then shows the ACL mask in its group bits, 0440).
func (s PINSource) InCredentials() bool {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if s.File == "" || dir == "" {
		return false
	}
	// Lexically, after expansion: ${CREDENTIALS_DIRECTORY}/../elsewhere is not in it.
	rel, err := filepath.Rel(dir, s.Path())
	return err == nil && filepath.IsLocal(rel)
}

// ErrNoPIN is returned when a PINSource names no source or its source is empty.
var ErrNoPIN = errors.New("hsm: no PIN")

// ErrWrongPIN is in the error of an Open whose login the token refused for the PIN (incorrect, of a
// length or with characters the token never accepts); a locked PIN is another error.
var ErrWrongPIN = errors.New("wrong PIN")

// Read returns the PIN. Its errors name the source, never the PIN; but not a File whose path is relative
// nor an Env that is not a variable name (see ValidEnvName): neither passed a config's checks, and either
// may be the PIN itself, written where its source belongs.
func (s PINSource) Read() (string, error) {
	switch {
	case s.File != "" && s.Env != "":
		return "", errors.New("hsm: PIN source: set pin_file or pin_env, not both")
	case s.File != "":
		path := s.Path()
		named := filepath.IsAbs(path)
		b, err := os.ReadFile(path)
		if err != nil {
			var pe *fs.PathError
			switch {
			case named:
				return "", fmt.Errorf("hsm: read PIN file: %w", err)
			case errors.As(err, &pe):
				// The os error holds the path: only its cause is kept.
				return "", fmt.Errorf("hsm: read PIN file (relative path, not shown): %s: %w", pe.Op, pe.Err)
			}
			return "", errors.New("hsm: read PIN file (relative path, not shown): failed")
		}
		pin := strings.TrimSpace(string(b))
		switch {
		case pin == "" && named:
			return "", fmt.Errorf("%w: file %s is empty", ErrNoPIN, path)
		case pin == "":
			return "", fmt.Errorf("%w: PIN file (relative path, not shown) is empty", ErrNoPIN)
		}
		return pin, nil
	case s.Env != "":
		if !ValidEnvName(s.Env) {
			return "", errors.New("hsm: PIN source: not an environment variable name ([A-Za-z_][A-Za-z0-9_]*; not shown, in case it is the PIN)")
		}
		pin := strings.TrimSpace(os.Getenv(s.Env))
		switch {
		case pin == "" && conventionalEnvName(s.Env):
			return "", fmt.Errorf("%w: environment variable %s is unset or empty", ErrNoPIN, s.Env)
		case pin == "":
			// Hunter2secret is a valid name too: only the usual upper-case names are quoted back.
			return "", fmt.Errorf("%w: the environment variable pin_env names is unset or empty (its name not being upper case, it is not shown, in case it is the PIN)", ErrNoPIN)
		}
		return pin, nil
	}
	return "", fmt.Errorf("%w: set pin_file or pin_env", ErrNoPIN)
}

// URI is the part of an RFC 7512 PKCS#11 URI that selects a module, a token and a PIN source.
type URI struct {
	// Token, Serial and Slot are the "token", "serial" and "slot-id" attributes.
	Token  string
	Serial string
	Slot   *uint
	// ModulePath is the "module-path" query attribute.
	ModulePath string
	// PINSource is the "pin-source" query attribute: a file path or file: URI.
	PINSource string
}

// ParseURI parses a PKCS#11 URI such as
// "pkcs11:token=signerd;slot-id=3?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin".
// Attributes that do not select a token (object, id, type, manufacturer, model) are refused, since a URI
// here names a token, and so is "pin-value": the PIN never sits in configuration.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		// The URI is not quoted back: a mistyped one may hold a PIN.
		return u, errors.New("hsm: PKCS#11 URI: must start with \"pkcs11:\"")
	}
	path, query, _ := strings.Cut(rest, "?")
	// Values are never quoted back either: a mistyped attribute may be a PIN.
	seen := map[string]bool{}
	attribute := func(attr string) (name, val string, err error) {
		name, raw, ok := strings.Cut(attr, "=")
		switch {
		case !ok || raw == "":
			return "", "", errors.New("hsm: PKCS#11 URI: an attribute has no value (want name=value)")
		case seen[name]:
			return "", "", fmt.Errorf("hsm: PKCS#11 URI: attribute %s given twice", name)
		}
		seen[name] = true
		if val, err = url.PathUnescape(raw); err != nil {
			return "", "", fmt.Errorf("hsm: PKCS#11 URI: attribute %s: bad percent-encoding", name)
		}
		return name, val, nil
	}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			name, val, err := attribute(attr)
			if err != nil {
				return u, err
			}
			switch name {
			case "token":
				u.Token = val
			case "serial":
				u.Serial = val
			case "slot-id":
				n, err := strconv.ParseUint(val, 10, 0)
				if err != nil {
					return u, errors.New("hsm: PKCS#11 URI: slot-id: not a number")
				}
				slot := uint(n)
				u.Slot = &slot
			default:
				return u, fmt.Errorf("hsm: PKCS#11 URI: unsupported path attribute %q", name)
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			name, val, err := attribute(attr)
			if err != nil {
				return u, err
			}
			switch name {
			case "module-path":
				u.ModulePath = val
			case "pin-source":
				u.PINSource = strings.TrimPrefix(val, "file:")
			case "pin-value":
				return u, errors.New("hsm: PKCS#11 URI: pin-value is refused; use pin-source or pin_file/pin_env")
			default:
				return u, fmt.Errorf("hsm: PKCS#11 URI: unsupported query attribute %q", name)
			}
		}
	}
	return u, nil
}
