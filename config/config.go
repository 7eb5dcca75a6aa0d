// Package config is signerd's configuration file: its YAML schema, strict decoding (an unknown field is
// an error), defaults, and Validate, which reports every problem at once with its field path. Secrets are
// referenced, never written here: the PIN comes from a file or an environment variable.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/server/authz"
	"github.com/signerd/signerd/unseal"
)

// Config is the whole configuration file.
type Config struct {
	// Listen is the gRPC (mutual TLS) address, host:port.
	Listen string `yaml:"listen"`
	TLS    TLS    `yaml:"tls"`
	HSM    HSM    `yaml:"hsm"`
	// Policy is the access policy (see package authz).
	Policy authz.Policy `yaml:"policy"`
	Limits Limits       `yaml:"limits"`
	// HTTP is the public HTTPS listener for the JWKS and probes; off when http.listen is empty.
	HTTP HTTP `yaml:"http"`
	JWT  JWT  `yaml:"jwt"`
	// RefreshInterval is how often the key view is re-read from the token.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// AutoRotate has the daemon rotate, at each refresh, every key whose rotation_period has passed,
	// as `signerd keys rotate --due` does (daemons sharing a token rotate each due key once), so that
	// no timer with the PIN is needed: the way to scheduled rotation with a sealed start.
	AutoRotate bool  `yaml:"auto_rotate"`
	Audit      Audit `yaml:"audit"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
}

// TLS holds the server's certificate and the CA bundle that client certificates must chain to.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// HSM selects the PKCS#11 module and token.
type HSM struct {
	Module string `yaml:"module"`
	// URI is an RFC 7512 PKCS#11 URI; it may replace module, token_label/serial/slot and pin_file.
	URI         string `yaml:"uri"`
	TokenLabel  string `yaml:"token_label"`
	TokenSerial string `yaml:"token_serial"`
	Slot        *uint  `yaml:"slot"`
	// PINSource (pin_file or pin_env) says where the user PIN is; exactly one of them, the uri's
	// pin-source and unseal_socket is set.
	hsm.PINSource `yaml:",inline"`
	// UnsealSocket starts the daemon sealed: it waits, before opening the token, for an administrator
	// to send the PIN to this Unix socket (`signerd unseal`), and keeps it only in memory.
	UnsealSocket    string        `yaml:"unseal_socket"`
	MaxSessions     int           `yaml:"max_sessions"`
	PoolWaitTimeout time.Duration `yaml:"pool_wait_timeout"`
	// LockFile serialises object-store work among the processes of this machine that use the token
	// (the daemon and the rotation timer's command must name the same file). When empty, a file in a
	// directory private to the user ($XDG_RUNTIME_DIR/signerd, else /tmp/signerd-UID), which other users
	// and units with PrivateTmp= do not share.
	LockFile string `yaml:"lock_file"`
	// SessionCopies (default true) lets keys sign through session copies made inside the token, which
	// SoftHSM signs with in a third less CPU; false signs with the token objects themselves.
	SessionCopies *bool `yaml:"session_copies"`
}

// HTTP configures the public HTTPS listener (server-authenticated TLS only: it serves public data).
type HTTP struct {
	Listen string `yaml:"listen"`
	// CertFile and KeyFile default to tls.cert_file and tls.key_file.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// PublicURL is the URL verifiers use to reach this listener (for jwks_uri); https:// and the
	// listening address when empty.
	PublicURL string `yaml:"public_url"`
	// Issuer is the discovery document's issuer; public_url when empty.
	Issuer string `yaml:"issuer"`
	// JWKSMaxAge is the JWKS Cache-Control max-age.
	JWKSMaxAge time.Duration `yaml:"jwks_max_age"`
}

// JWT configures token verification.
type JWT struct {
	// Leeway is the clock skew allowed on exp, nbf and iat: DefaultLeeway when unset, none when 0s.
	Leeway *time.Duration `yaml:"leeway"`
}

// Limits bound what one caller can ask of signerd.
type Limits struct {
	// RatePerSecond and Burst limit each identity; 0 disables the limit.
	RatePerSecond float64 `yaml:"rate_per_second"`
	Burst         int     `yaml:"burst"`
}

// Audit says where the audit trail goes.
type Audit struct {
	// File is appended to; "-" means standard output.
	File string `yaml:"file"`
}

// Defaults.
const (
	DefaultRefreshInterval = 30 * time.Second
	DefaultJWKSMaxAge      = 5 * time.Minute
	DefaultLeeway          = 30 * time.Second
)

// Load reads, decodes strictly, applies defaults and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a configuration strictly and validates it.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, err
	}
	// A second YAML document would otherwise go unread, unknown fields and all. An empty one (a
	// trailing "---") holds nothing to lose.
	for {
		var more yaml.Node
		err := dec.Decode(&more)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || !emptyDocument(&more) {
			return nil, errors.Join(errors.New("more than one YAML document: the configuration is one"), err)
		}
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) applyDefaults() {
	if c.HSM.Module == "" && c.HSM.URI == "" {
		c.HSM.Module = hsm.DefaultModule
	}
	if c.HSM.MaxSessions == 0 {
		c.HSM.MaxSessions = hsm.DefaultMaxSessions
	}
	if c.HSM.PoolWaitTimeout == 0 {
		c.HSM.PoolWaitTimeout = hsm.DefaultPoolWaitTimeout
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	if c.HTTP.Listen != "" {
		if c.HTTP.CertFile == "" && c.HTTP.KeyFile == "" {
			c.HTTP.CertFile, c.HTTP.KeyFile = c.TLS.CertFile, c.TLS.KeyFile
		}
		if c.HTTP.JWKSMaxAge == 0 {
			c.HTTP.JWKSMaxAge = DefaultJWKSMaxAge
		}
	}
	if c.JWT.Leeway == nil {
		leeway := DefaultLeeway
		c.JWT.Leeway = &leeway
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// Validate reports every problem with the configuration, each prefixed with its field path. It checks
// that referenced files exist, but not the policy's key names, which need the token (see authz.Compile).
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen", "%v", err)
	}
	for _, f := range []struct{ path, file string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile},
		{"tls.client_ca_file", c.TLS.ClientCAFile}} {
		path, file := f.path, f.file
		if file == "" {
			add(path, "required")
		} else if _, err := os.Stat(file); err != nil {
			add(path, "%v", err)
		}
	}
	var u hsm.URI   // the hsm.uri, parsed once for every check below
	uriBad := false // then u is empty, and what it may hold is not reported missing
	if c.HSM.URI != "" {
		var err error
		u, err = hsm.ParseURI(c.HSM.URI)
		if uriBad = err != nil; uriBad {
			add("hsm.uri", "%v", err)
		} else {
			// Independent checks: each problem is reported, not only the first.
			if c.HSM.TokenLabel != "" || c.HSM.TokenSerial != "" || c.HSM.Slot != nil {
				add("hsm.uri", "set uri or token_label/token_serial/slot, not both")
			} else if countSet(u.Token != "", u.Serial != "", u.Slot != nil) != 1 {
				add("hsm.uri", "must select the token with exactly one of token=, serial= or slot-id=")
			}
			if u.ModulePath != "" && c.HSM.Module != "" {
				add("hsm.uri", "set module-path in the uri or hsm.module, not both")
			}
			if u.ModulePath != "" && !filepath.IsAbs(u.ModulePath) {
				add("hsm.uri", "module-path %q: want an absolute path", u.ModulePath)
			}
			if u.PINSource != "" && (c.HSM.File != "" || c.HSM.Env != "") {
				add("hsm.uri", "set pin-source in the uri or pin_file/pin_env, not both")
			}
		}
		if len(u.Token) > hsm.MaxTokenLabel {
			// Not quoted: the uri's values never are (see hsm.ParseURI).
			add("hsm.uri", "token=: %d bytes, longer than a token label (%d bytes): it can never match", len(u.Token), hsm.MaxTokenLabel)
		}
	} else {
		if countSet(c.HSM.TokenLabel != "", c.HSM.TokenSerial != "", c.HSM.Slot != nil) != 1 {
			add("hsm", "exactly one of token_label, token_serial, slot (or uri) must select the token")
		}
	}
	if len(c.HSM.TokenLabel) > hsm.MaxTokenLabel {
		add("hsm.token_label", "%d bytes, longer than a token label (%d bytes): it can never match", len(c.HSM.TokenLabel), hsm.MaxTokenLabel)
	}
	if c.HSM.File != "" && c.HSM.Env != "" {
		add("hsm", "set pin_file or pin_env, not both")
	}
	if c.HSM.Env != "" && !hsm.ValidEnvName(c.HSM.Env) {
		add("hsm.pin_env", "not an environment variable name ([A-Za-z_][A-Za-z0-9_]*; not shown, in case it is the PIN)")
	}
	switch {
	case c.HSM.UnsealSocket != "":
		if c.HSM.File != "" || c.HSM.Env != "" || u.PINSource != "" {
			add("hsm.unseal_socket", "a sealed start takes the PIN from an administrator: set no pin_file, pin_env or pin-source with it")
		}
		// Its directory is checked when the daemon starts: systemd's RuntimeDirectory is there only
		// while the daemon runs, and `signerd keys` reads this config while it does not.
		if err := unseal.ValidPath(c.HSM.UnsealSocket); err != nil {
			add("hsm.unseal_socket", "%v", err)
		}
	case c.HSM.File == "" && c.HSM.Env == "" && u.PINSource == "" && !uriBad:
		add("hsm", "pin_file or pin_env (or unseal_socket, for a sealed start) is required (the PIN itself never goes in the config)")
	}
	// The PIN file in effect, pin_file or the uri's pin-source, passes the same checks. A value that is
	// not an absolute path is never quoted back: it may be the PIN, written where its file belongs.
	pin, pinField := c.HSM.pinSource(u)
	switch {
	case pin.File == "":
	case pin.NeedsCredentials():
		add(pinField, "uses ${CREDENTIALS_DIRECTORY}, which only systemd sets (LoadCredential=): "+
			"run this as a unit, e.g. systemd-run --pty -p User=signerd -p LoadCredential=pin:FILE ..., or use a config with the PIN file's path")
	case !filepath.IsAbs(pin.Path()):
		add(pinField, "want an absolute path (not shown, in case it is the PIN)")
	default:
		path := pin.Path()
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			add(pinField, "%v", err)
		case !fi.Mode().IsRegular():
			add(pinField, "%s is not a regular file", path)
		// systemd's credentials are its own: it lets the unit's user read them with an ACL, whose mask
		// then shows as the mode's group bits (0440) though no group may read them.
		case fi.Mode().Perm()&0o077 != 0 && !pin.InCredentials():
			add(pinField, "%s by group or others (mode %04o); want 0600 or 0400", groupOthers(fi.Mode()), fi.Mode().Perm())
		}
	}
	if c.HSM.LockFile != "" {
		if _, err := os.Stat(filepath.Dir(c.HSM.LockFile)); err != nil {
			add("hsm.lock_file", "%v", err)
		}
	}
	if c.HSM.MaxSessions < 2 {
		add("hsm.max_sessions", "%d, want at least 2", c.HSM.MaxSessions)
	}
	if c.HSM.PoolWaitTimeout < 0 {
		add("hsm.pool_wait_timeout", "negative")
	}
	if c.Limits.RatePerSecond < 0 {
		add("limits.rate_per_second", "negative")
	}
	if c.Limits.RatePerSecond > 0 && c.Limits.Burst < 1 {
		add("limits.burst", "must be at least 1 when rate_per_second is set")
	}
	if c.RefreshInterval < time.Second {
		add("refresh_interval", "%v, want at least 1s", c.RefreshInterval)
	}
	if c.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
			add("http.listen", "%v", err)
		}
		for _, f := range []struct{ path, file string }{{"http.cert_file", c.HTTP.CertFile}, {"http.key_file", c.HTTP.KeyFile}} {
			path, file := f.path, f.file
			if file == "" {
				add(path, "required")
			} else if _, err := os.Stat(file); err != nil {
				add(path, "%v", err)
			}
		}
	}
	if c.HTTP.PublicURL != "" {
		if u, err := url.Parse(c.HTTP.PublicURL); err != nil || u.Scheme != "https" || u.Host == "" {
			add("http.public_url", "%q: want an https:// URL", c.HTTP.PublicURL)
		}
	}
	// OpenID Connect Discovery 1.0 §3: the issuer is an https URL without query or fragment.
	if c.HTTP.Issuer != "" {
		if u, err := url.Parse(c.HTTP.Issuer); err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.ForceQuery || strings.ContainsRune(c.HTTP.Issuer, '#') {
			add("http.issuer", "%q: want an https:// URL without query or fragment", c.HTTP.Issuer)
		}
	}
	if c.HTTP.Listen != "" && c.HTTP.JWKSMaxAge < time.Second {
		add("http.jwks_max_age", "%v, want at least 1s", c.HTTP.JWKSMaxAge)
	}
	if c.HTTP.Listen == "" {
		for _, f := range []struct {
			path string
			set  bool
		}{{"http.cert_file", c.HTTP.CertFile != ""}, {"http.key_file", c.HTTP.KeyFile != ""}, {"http.public_url", c.HTTP.PublicURL != ""},
			{"http.issuer", c.HTTP.Issuer != ""}, {"http.jwks_max_age", c.HTTP.JWKSMaxAge != 0}} {
			if f.set {
				add(f.path, "set, but http.listen is not: the HTTPS listener is off and this would be unused")
			}
		}
	}
	if l := c.JWT.Leeway; l != nil && (*l < 0 || *l > 5*time.Minute) {
		add("jwt.leeway", "%v, want 0 to 5m", *l)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log_level", "%q, want debug, info, warn or error", c.LogLevel)
	}
	switch {
	case c.Audit.File == "":
		add("audit.file", "required: a file, or \"-\" for standard output (every operation is audited)")
	case c.Audit.File != "-" && !filepath.IsAbs(c.Audit.File):
		add("audit.file", "%q: want an absolute path", c.Audit.File)
	}
	// Paths must not depend on the working directory: the daemon (cwd / under systemd) and an
	// administrator's `signerd keys` must agree on them, the lock file above all.
	for _, f := range []struct{ path, file string }{{"tls.cert_file", c.TLS.CertFile}, {"tls.key_file", c.TLS.KeyFile},
		{"tls.client_ca_file", c.TLS.ClientCAFile}, {"http.cert_file", c.HTTP.CertFile}, {"http.key_file", c.HTTP.KeyFile},
		{"hsm.module", c.HSM.Module}, {"hsm.lock_file", c.HSM.LockFile}} {
		if f.file != "" && !filepath.IsAbs(f.file) {
			add(f.path, "%q: want an absolute path", f.file)
		}
	}
	// The policy's shape is checked now; its key names once the token is open.
	if _, err := authz.Compile(c.Policy, nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pinSource returns the PIN source in effect, given u, the parsed hsm.uri: pin_file or pin_env, else
// the uri's pin-source; and the field that gave its file, to prefix errors about it.
func (h *HSM) pinSource(u hsm.URI) (src hsm.PINSource, field string) {
	if h.File == "" && h.Env == "" && u.PINSource != "" {
		return hsm.PINSource{File: u.PINSource}, "hsm.uri: pin-source"
	}
	return h.PINSource, "hsm.pin_file"
}

// groupOthers says what group and others may do with a file of mode m, beyond nothing.
func groupOthers(m os.FileMode) string {
	if m&0o044 != 0 {
		return "readable"
	}
	return "writable or executable"
}

// emptyDocument reports whether n is a YAML document with nothing in it.
func emptyDocument(n *yaml.Node) bool {
	return n.Kind == yaml.DocumentNode && len(n.Content) == 1 && n.Content[0].Kind == yaml.ScalarNode &&
		n.Content[0].Tag == "!!null" && n.Content[0].Value == ""
}

// countSet counts the true values.
func countSet(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

// HSMConfig resolves the hsm section (URI, PIN source) into an hsm.Config, reading the PIN. A sealed
// configuration has no PIN to read: it returns everything else, with ErrSealed.
func (c *Config) HSMConfig() (hsm.Config, error) {
	h := c.HSM
	out := hsm.Config{Module: h.Module, TokenLabel: h.TokenLabel, TokenSerial: h.TokenSerial, Slot: h.Slot,
		MaxSessions: h.MaxSessions, PoolWaitTimeout: h.PoolWaitTimeout, LockFile: h.LockFile,
		NoSessionCopies: h.SessionCopies != nil && !*h.SessionCopies}
	var u hsm.URI
	if h.URI != "" {
		var err error
		if u, err = hsm.ParseURI(h.URI); err != nil {
			return out, fmt.Errorf("hsm.uri: %w", err)
		}
		out.TokenLabel, out.TokenSerial, out.Slot = u.Token, u.Serial, u.Slot
		if u.ModulePath != "" {
			out.Module = u.ModulePath
		}
	}
	if out.Module == "" {
		out.Module = hsm.DefaultModule
	}
	if c.Sealed() {
		return out, ErrSealed
	}
	src, _ := h.pinSource(u)
	pin, err := src.Read()
	if err != nil {
		return out, err // its errors say "hsm: ..."
	}
	out.PIN = pin
	return out, nil
}

// Sealed reports whether the PIN comes from an administrator at run time (hsm.unseal_socket).
func (c *Config) Sealed() bool { return c.HSM.UnsealSocket != "" }

// ErrSealed is HSMConfig's error for a sealed configuration: the hsm.Config it returns with it is
// complete but for the PIN, which an administrator supplies.
var ErrSealed = errors.New("hsm: the PIN comes from an administrator (hsm.unseal_socket)")
