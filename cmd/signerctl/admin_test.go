package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signerd/signerd/client/clienttest"
	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
)

// Identities of the certificates an admin test server issues.
const (
	adminIdentity  = clienttest.AdminIdentity // listed in the policy's admins
	clientIdentity = clienttest.Identity      // granted every operation on every key, but no administrator
)

// adminServer is a signerd serving both Signer and KeyAdmin in the test process, built like
// clienttest.NewServer (which registers Signer only and has no administrators).
type adminServer struct {
	addr string
	ring *keyring.Ring
	// caFile, certFile and keyFile are the CA certificate and the client's (clientIdentity) certificate
	// and key; adminCertFile and adminKeyFile the administrator's (adminIdentity).
	caFile, certFile, keyFile   string
	adminCertFile, adminKeyFile string
}

// setupAdmin starts a server with software keys (clienttest) and points the SIGNERD_* environment at
// it: the client certificate in SIGNERD_CERT and SIGNERD_KEY, the administrator's in SIGNERD_ADMIN_CERT
// and SIGNERD_ADMIN_KEY.
func setupAdmin(t *testing.T) *adminServer {
	t.Helper()
	srv := clienttest.NewServer(t, clienttest.DefaultPolicy())
	s := &adminServer{addr: srv.Addr, ring: srv.Ring, caFile: srv.CACertFile, certFile: srv.CertFile, keyFile: srv.KeyFile}
	s.adminCertFile, s.adminKeyFile = srv.IssueClient(t, adminIdentity)
	t.Setenv(envAddr, s.addr)
	t.Setenv(envCACert, s.caFile)
	t.Setenv(envCert, s.certFile)
	t.Setenv(envKey, s.keyFile)
	t.Setenv(envAdminCert, s.adminCertFile)
	t.Setenv(envAdminKey, s.adminKeyFile)
	t.Setenv(envJWKSURL, "")
	return s
}

// createKey creates key name in the server's ring directly, with the default settings.
func (s *adminServer) createKey(t *testing.T, name string, alg jose.Algorithm) {
	t.Helper()
	if _, err := s.ring.Create(name, alg, jose.MinRSABits, keyring.DefaultSettings()); err != nil {
		t.Fatalf("Ring.Create(%q, %s) = %v", name, alg, err)
	}
}

// listAll returns what `signerctl keys list --all --json` prints, by key name.
func listAll(t *testing.T) map[string]keyJSON {
	t.Helper()
	out := mustRun(t, "", "keys", "list", "--all", "--json")
	var keys []keyJSON
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("signerctl keys list --all --json = %q, not JSON: %v", out, err)
	}
	byName := make(map[string]keyJSON, len(keys))
	for _, k := range keys {
		byName[k.Name] = k
	}
	return byName
}

// states returns the states of k's versions, in version order.
func states(k keyJSON) []string {
	var out []string
	for _, v := range k.Versions {
		out = append(out, v.State)
	}
	return out
}

const (
	kidPattern = `[A-Za-z0-9_-]{43}`
	rfc3339    = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`
)

func TestKeysAdmin(t *testing.T) {
	setupAdmin(t)
	// Each step runs on the state the steps before it left; states are the key's version states after it,
	// as keys list --all reports them.
	steps := []struct {
		name   string
		args   []string
		stdout string // regular expression for the whole output
		key    string
		states []string
	}{
		{"create", []string{"keys", "create", "--name", "api", "--alg", "ES256"},
			`key=api alg=ES256 version=1 kid=` + kidPattern + ` state=active\n`, "api", []string{"active"}},
		{"rotate staged", []string{"keys", "rotate", "--name", "api"},
			`key=api version=2 kid=` + kidPattern + ` state=pending activates=` + rfc3339 + `\n`, "api", []string{"active", "pending"}},
		{"rotate emergency", []string{"keys", "rotate", "--name", "api", "--emergency"},
			`key=api version=3 kid=` + kidPattern + ` state=active activates=` + rfc3339 + `\n`, "api", []string{"revoked", "revoked", "active"}},
		{"revoke active", []string{"keys", "revoke", "--name", "api", "--version", "3"},
			`key=api version=3 kid=` + kidPattern + ` state=revoked\n`, "api", []string{"revoked", "revoked", "revoked"}},
		{"destroy revoked", []string{"keys", "destroy", "--name", "api", "--version", "1"},
			`key=api version=1 kid=` + kidPattern + ` state=destroyed\n`, "api", []string{"destroyed", "revoked", "revoked"}},
		{"create EdDSA", []string{"keys", "create", "--name", "web", "--alg", "EdDSA"},
			`key=web alg=EdDSA version=1 kid=` + kidPattern + ` state=active\n`, "web", []string{"active"}},
		{"rotate emergency revokes the active version", []string{"keys", "rotate", "--name", "web", "--emergency"},
			`key=web version=2 kid=` + kidPattern + ` state=active activates=` + rfc3339 + `\n`, "web", []string{"revoked", "active"}},
		{"list", []string{"keys", "list", "--all"},
			`KEY +ALG +VERSION +STATE +KID +CREATED +ACTIVATES +EXPIRES\n` +
				`(api +ES256 +[123] +(destroyed|revoked) +` + kidPattern + ` +` + rfc3339 + ` +` + rfc3339 + ` +-\n){3}` +
				`web +EdDSA +1 +revoked +` + kidPattern + ` +` + rfc3339 + ` +` + rfc3339 + ` +-\n` +
				`web +EdDSA +2 +active +` + kidPattern + ` +` + rfc3339 + ` +` + rfc3339 + ` +-\n`,
			"web", []string{"revoked", "active"}},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			out := mustRun(t, "", step.args...)
			if !regexp.MustCompile(`\A` + step.stdout + `\z`).MatchString(out) {
				t.Errorf("signerctl %q = %q, want it to match %q", step.args, out, step.stdout)
			}
			k, ok := listAll(t)[step.key]
			if !ok {
				t.Fatalf("signerctl keys list --all: no key %q", step.key)
			}
			if got := states(k); !slices.Equal(got, step.states) {
				t.Errorf("signerctl %q: key %q version states = %q, want %q", step.args, step.key, got, step.states)
			}
			// The kid printed is the version's.
			if m := regexp.MustCompile(`version=(\d+) kid=(\S+)`).FindStringSubmatch(out); m != nil {
				n, _ := strconv.Atoi(m[1])
				if n < 1 || n > len(k.Versions) || k.Versions[n-1].Kid != m[2] {
					t.Errorf("signerctl %q = version %s kid %q, want the kid keys list --all shows for it (%+v)", step.args, m[1], m[2], k.Versions)
				}
			}
		})
	}
}

func TestKeysAdminJSON(t *testing.T) {
	s := setupAdmin(t)
	s.createKey(t, "api", jose.ES256)
	before := time.Now()

	out := mustRun(t, "", "keys", "create", "--name", "rsa", "--alg", "PS256", "--bits", "2048",
		"--prepublish", "15m", "--grace", "48h", "--rotation-period", "720h", "--keep-retired", "--json")
	var created keyJSON
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("signerctl keys create --json = %q, not JSON: %v", out, err)
	}
	wantSettings := settingsJSON{Prepublish: "15m0s", Grace: "48h0m0s", RotationPeriod: "720h0m0s", KeepRetired: true}
	if created.Name != "rsa" || created.Alg != "PS256" || created.Settings == nil || *created.Settings != wantSettings ||
		len(created.Versions) != 1 || created.Versions[0].State != "active" || created.ActiveKid != created.Versions[0].Kid {
		t.Errorf("signerctl keys create --json = %+v (settings %+v), want key rsa PS256 with one active version and settings %+v", created, created.Settings, wantSettings)
	}
	if k, ok := s.ring.Snapshot().Key("rsa"); !ok || k.Active == nil || k.Active.Kid != created.ActiveKid {
		t.Errorf("ring key rsa = %v, %v, want active kid %q", k, ok, created.ActiveKid)
	}

	out = mustRun(t, "", "keys", "rotate", "--name", "api", "--json")
	var rotated struct {
		Key     keyJSON     `json:"key"`
		Version versionJSON `json:"version"`
	}
	if err := json.Unmarshal([]byte(out), &rotated); err != nil {
		t.Fatalf("signerctl keys rotate --json = %q, not JSON: %v", out, err)
	}
	v := rotated.Version
	if v.Version != 2 || v.State != "pending" || v.ActivateAt == nil || len(rotated.Key.Versions) != 2 || rotated.Key.Versions[1].Kid != v.Kid {
		t.Fatalf("signerctl keys rotate --json = %+v, want pending version 2 of a key with two versions", rotated)
	}
	// A staged rotation activates the new version after the default prepublish period.
	if earliest := before.Add(keyring.DefaultPrepublish); v.ActivateAt.Before(earliest.Truncate(time.Second)) {
		t.Errorf("signerctl keys rotate --json activate_at = %v, want at least %v", v.ActivateAt, earliest)
	}

	keys := listAll(t)
	if got := states(keys["api"]); !slices.Equal(got, []string{"active", "pending"}) {
		t.Errorf("keys list --all --json: api states = %q, want [active pending]", got)
	}
	defaults := settingsJSON{Prepublish: "10m0s", Grace: "24h0m0s", RotationPeriod: "0s"}
	if st := keys["api"].Settings; st == nil || *st != defaults {
		t.Errorf("keys list --all --json: api settings = %+v, want %+v", st, defaults)
	}

	out = mustRun(t, "", "keys", "revoke", "--name", "api", "--version", "2", "--json")
	var revoked keyJSON
	if err := json.Unmarshal([]byte(out), &revoked); err != nil {
		t.Fatalf("signerctl keys revoke --json = %q, not JSON: %v", out, err)
	}
	if len(revoked.Versions) != 2 || revoked.Versions[1].State != "revoked" || revoked.Versions[1].RevokedAt == nil {
		t.Errorf("signerctl keys revoke --json = %+v, want version 2 revoked with revoked_at", revoked)
	}
	out = mustRun(t, "", "keys", "destroy", "--name", "api", "--version", "2", "--json")
	var destroyed keyJSON
	if err := json.Unmarshal([]byte(out), &destroyed); err != nil {
		t.Fatalf("signerctl keys destroy --json = %q, not JSON: %v", out, err)
	}
	if len(destroyed.Versions) != 2 || destroyed.Versions[1].State != "destroyed" || destroyed.Versions[1].DestroyedAt == nil {
		t.Errorf("signerctl keys destroy --json = %+v, want version 2 destroyed with destroyed_at", destroyed)
	}
}

// TestKeysUnchanged checks that bare `keys` and `keys list` still list, through the Signer service, the
// keys the caller may use, without an administrator's certificate.
func TestKeysUnchanged(t *testing.T) {
	s := setupAdmin(t)
	s.createKey(t, "api", jose.ES256)
	t.Setenv(envAdminCert, "")
	t.Setenv(envAdminKey, "")
	want := "KEY ALG ACTIVE KID api ES256 "
	k, _ := s.ring.Snapshot().Key("api")
	want += k.Active.Kid
	for _, args := range [][]string{{"keys"}, {"keys", "list"}} {
		if got := strings.Join(strings.Fields(mustRun(t, "", args...)), " "); got != want {
			t.Errorf("signerctl %q = %q, want %q", args, got, want)
		}
	}
}

func TestKeysAdminErrors(t *testing.T) {
	s := setupAdmin(t)
	s.createKey(t, "api", jose.ES256)
	s.createKey(t, "staged", jose.ES256)
	if _, _, err := s.ring.Rotate("staged", false); err != nil {
		t.Fatalf("Ring.Rotate(staged) = %v", err)
	}
	noAdmin := map[string]string{envAdminCert: "", envAdminKey: ""}
	clientAsAdmin := []string{"--admin-cert", s.certFile, "--admin-key", s.keyFile}
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string // prefix of the one-line error
	}{
		{"client certificate: list", noAdmin, []string{"keys", "list", "--all"}, cli.ExitFailure, `signerctl: keys list: PermissionDenied: identity "svc" is not an administrator (with the client certificate: set SIGNERD_ADMIN_CERT`},
		{"client certificate: create", noAdmin, []string{"keys", "create", "--name", "new", "--alg", "ES256"}, cli.ExitFailure, "signerctl: keys create: PermissionDenied: "},
		{"client certificate: rotate", noAdmin, []string{"keys", "rotate", "--name", "api"}, cli.ExitFailure, "signerctl: keys rotate: PermissionDenied: "},
		{"client certificate: revoke", noAdmin, []string{"keys", "revoke", "--name", "api", "--version", "1"}, cli.ExitFailure, "signerctl: keys revoke: PermissionDenied: "},
		{"client certificate: destroy", noAdmin, []string{"keys", "destroy", "--name", "staged", "--version", "1"}, cli.ExitFailure, "signerctl: keys destroy: PermissionDenied: "},
		{"non-admin --admin-cert", nil, append(clientAsAdmin, "keys", "rotate", "--name", "api", "--emergency"), cli.ExitFailure, `signerctl: keys rotate: PermissionDenied: identity "svc" is not an administrator` + "\n"},
		{"admin cert without key", map[string]string{envAdminKey: ""}, []string{"keys", "list", "--all"}, cli.ExitUsage, "signerctl: keys list: an administrator certificate but no key: set SIGNERD_ADMIN_KEY"},
		{"admin key without cert", nil, []string{"--admin-cert", "", "keys", "list", "--all"}, cli.ExitUsage, "signerctl: keys list: an administrator key but no certificate"},
		{"no certificate at all", map[string]string{envAdminCert: "", envAdminKey: "", envCert: "", envKey: ""}, []string{"keys", "rotate", "--name", "api"}, cli.ExitUsage, "signerctl: keys rotate: no admin-cert: set SIGNERD_ADMIN_CERT and SIGNERD_ADMIN_KEY"},
		{"no address", map[string]string{envAddr: ""}, []string{"keys", "list", "--all"}, cli.ExitUsage, "signerctl: keys list: no addr: set SIGNERD_ADDR"},
		{"missing admin key file", nil, []string{"--admin-key", filepath.Join(t.TempDir(), "none.pem"), "keys", "list", "--all"}, cli.ExitFailure, "signerctl: keys list: load administrator certificate: "},
		{"create without name", nil, []string{"keys", "create", "--alg", "ES256"}, cli.ExitUsage, "signerctl: keys create: --name is required"},
		{"create without alg", nil, []string{"keys", "create", "--name", "new"}, cli.ExitUsage, "signerctl: keys create: --alg is required"},
		{"create unknown alg", nil, []string{"keys", "create", "--name", "new", "--alg", "HS256"}, cli.ExitUsage, `signerctl: keys create: --alg "HS256": want one of RS256`},
		{"create bits for EC", nil, []string{"keys", "create", "--name", "new", "--alg", "ES256", "--bits", "2048"}, cli.ExitUsage, "signerctl: keys create: --bits is for RSA keys, not ES256"},
		{"create bad name", nil, []string{"keys", "create", "--name", "Bad_Name", "--alg", "ES256"}, cli.ExitFailure, "signerctl: keys create: InvalidArgument: "},
		{"create existing", nil, []string{"keys", "create", "--name", "api", "--alg", "ES256"}, cli.ExitFailure, "signerctl: keys create: AlreadyExists: "},
		{"create negative grace", nil, []string{"keys", "create", "--name", "new", "--alg", "ES256", "--grace", "-1h"}, cli.ExitFailure, "signerctl: keys create: InvalidArgument: settings: grace: negative"},
		{"rotate without name", nil, []string{"keys", "rotate"}, cli.ExitUsage, "signerctl: keys rotate: --name is required"},
		{"rotate missing key", nil, []string{"keys", "rotate", "--name", "missing"}, cli.ExitFailure, "signerctl: keys rotate: NotFound: "},
		{"rotate while pending", nil, []string{"keys", "rotate", "--name", "staged"}, cli.ExitFailure, "signerctl: keys rotate: FailedPrecondition: "},
		{"revoke without version", nil, []string{"keys", "revoke", "--name", "api"}, cli.ExitUsage, "signerctl: keys revoke: --version is required"},
		{"revoke missing version", nil, []string{"keys", "revoke", "--name", "api", "--version", "9"}, cli.ExitFailure, "signerctl: keys revoke: NotFound: "},
		{"destroy active", nil, []string{"keys", "destroy", "--name", "api", "--version", "1"}, cli.ExitFailure, "signerctl: keys destroy: FailedPrecondition: "},
		{"destroy pending", nil, []string{"keys", "destroy", "--name", "staged", "--version", "2"}, cli.ExitFailure, "signerctl: keys destroy: FailedPrecondition: "},
		{"destroy argument", nil, []string{"keys", "destroy", "--name", "api", "--version", "1", "extra"}, cli.ExitUsage, `signerctl: keys destroy: unexpected argument "extra"`},
		{"unknown keys command", nil, []string{"keys", "frobnicate"}, cli.ExitUsage, `signerctl: keys: unknown command "frobnicate": want list, create, rotate, revoke or destroy`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			r := signerctl(t, "", tt.args...)
			if r.code != tt.code {
				t.Errorf("signerctl %q = exit %d, stderr %q, want exit %d", tt.args, r.code, r.stderr, tt.code)
			}
			if !strings.HasPrefix(r.stderr, tt.stderr) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("signerctl %q stderr = %q, want one line starting %q", tt.args, r.stderr, tt.stderr)
			}
			if r.stdout != "" {
				t.Errorf("signerctl %q stdout = %q, want nothing", tt.args, r.stdout)
			}
		})
	}
	// Nothing the refused calls asked for happened.
	snap := s.ring.Snapshot()
	if names := snap.Names(); !slices.Equal(names, []string{"api", "staged"}) {
		t.Errorf("ring keys = %q, want [api staged]", names)
	}
	for name, want := range map[string]int{"api": 1, "staged": 2} {
		if k, _ := snap.Key(name); len(k.Versions) != want || k.Active == nil || k.Active.Number != 1 {
			t.Errorf("ring key %q has %d versions, active %v, want %d versions, version 1 active", name, len(k.Versions), k.Active, want)
		}
	}
}
