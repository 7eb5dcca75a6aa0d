package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signerd/signerd/hsm"
)

func validConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"cert.pem", "key.pem", "ca.pem", "pin"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return strings.ReplaceAll(`listen: 127.0.0.1:8443
tls:
  cert_file: DIR/cert.pem
  key_file: DIR/key.pem
  client_ca_file: DIR/ca.pem
hsm:
  token_label: signerd
  pin_file: DIR/pin
policy:
  grants:
    - identity: svc
      keys: [a]
      operations: [sign]
audit:
  file: DIR/audit.log
`, "DIR", dir)
}

// A trailing "---" (an empty second document) is no second configuration.
func TestParseTrailingDocumentMarker(t *testing.T) {
	for _, tail := range []string{"---\n", "---\n# end\n", "...\n---\n"} {
		if _, err := Parse([]byte(validConfig(t) + tail)); err != nil {
			t.Errorf("Parse(config + %q) = %v, want nil", tail, err)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(validConfig(t)))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if c.HSM.Module == "" || c.HSM.MaxSessions == 0 || c.HSM.PoolWaitTimeout == 0 || c.RefreshInterval == 0 || c.LogLevel != "info" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "") // as in an administrator's shell
	tests := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"unknown field", func(s string) string { return s + "extra: 1\n" }, []string{"field extra not found"}},
		{"nested unknown field", func(s string) string { return strings.Replace(s, "hsm:\n", "hsm:\n  pin: \"1234\"\n", 1) }, []string{"field pin not found"}},
		{"empty", func(string) string { return "" }, []string{"empty configuration"}},
		{"second document", func(s string) string { return s + "---\nbogus_field: 1\n" }, []string{"more than one YAML document"}},
		{"module twice", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  module: /usr/lib/a.so\n  uri: \"pkcs11:token=x?module-path=/usr/lib/b.so\"\n", 1)
		}, []string{"hsm.uri: set module-path in the uri or hsm.module"}},
		{"relative module-path", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  uri: \"pkcs11:token=x?module-path=relative.so\"\n", 1)
		}, []string{"hsm.uri: module-path \"relative.so\": want an absolute path"}},
		{"pin source twice", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  uri: \"pkcs11:token=x?pin-source=file:/run/pin\"\n", 1)
		}, []string{"hsm.uri: set pin-source in the uri or pin_file/pin_env"}},
		{"issuer with a fragment", func(s string) string {
			return s + "http:\n  listen: 127.0.0.1:8444\n  cert_file: " + configDir(s) + "/cert.pem\n  key_file: " + configDir(s) + "/key.pem\n  issuer: \"https://issuer.example/#x\"\n"
		}, []string{`http.issuer: "https://issuer.example/#x": want an https:// URL without query or fragment`}},
		{"issuer over http", func(s string) string {
			return s + "http:\n  listen: 127.0.0.1:8444\n  cert_file: " + configDir(s) + "/cert.pem\n  key_file: " + configDir(s) + "/key.pem\n  issuer: \"http://issuer.example\"\n"
		}, []string{`http.issuer: "http://issuer.example": want an https:// URL`}},
		{"http settings without a listener", func(s string) string {
			return s + "http:\n  public_url: http://plain\n  jwks_max_age: -5s\n"
		}, []string{`http.public_url: "http://plain": want an https:// URL`, "http.public_url: set, but http.listen is not",
			"http.jwks_max_age: set, but http.listen is not"}},
		{"uri problems all reported", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  module: /usr/lib/a.so\n  uri: \"pkcs11:token=x;serial=y?module-path=rel.so\"\n", 1)
		}, []string{"exactly one of token=, serial= or slot-id=", "set module-path in the uri or hsm.module", `module-path "rel.so": want an absolute path`}},
		{"several problems at once", func(s string) string {
			s = strings.Replace(s, "listen: 127.0.0.1:8443", "listen: nope", 1)
			s = strings.Replace(s, "/ca.pem", "/missing.pem", 1)
			s = strings.Replace(s, "operations: [sign]", "operations: [sing]", 1)
			return s + "log_level: loud\n"
		}, []string{"listen:", "tls.client_ca_file:", "policy.grants[0].operations[0]", "log_level:"}},
		{"no token selector", func(s string) string { return strings.Replace(s, "  token_label: signerd\n", "", 1) }, []string{"exactly one of token_label"}},
		{"two selectors", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  token_label: a\n  token_serial: b\n", 1)
		}, []string{"exactly one of token_label"}},
		{"no pin source", withoutPINFile, []string{"pin_file or pin_env (or unseal_socket, for a sealed start) is required"}},
		{"bad uri", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  uri: \"pkcs11:token=x?pin-value=1234\"\n", 1)
		}, []string{"hsm.uri", "pin-value"}},
		{"malformed uri with a PIN", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  uri: \"pkcs11token=x?pin-value=1234\"\n", 1)
		}, []string{"hsm.uri", "must start with"}},
		{"uri and token_label", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  token_label: signerd\n  uri: \"pkcs11:token=other\"\n", 1)
		}, []string{"hsm.uri: set uri or token_label"}},
		{"uri selecting no token", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  uri: \"pkcs11:?module-path=/x.so\"\n", 1)
		}, []string{"hsm.uri: must select the token"}},
		{"no audit trail", func(s string) string { return s[:strings.Index(s, "audit:")] }, []string{"audit.file: required"}},
		{"relative lock file", func(s string) string { return strings.Replace(s, "hsm:\n", "hsm:\n  lock_file: token.lock\n", 1) },
			[]string{"hsm.lock_file: \"token.lock\": want an absolute path"}},
		{"credentials directory outside systemd", func(s string) string {
			i := strings.Index(s, "  pin_file:")
			j := strings.Index(s[i:], "\n")
			return s[:i] + "  pin_file: ${CREDENTIALS_DIRECTORY}/pin\n" + s[i+j+1:]
		}, []string{"hsm.pin_file", "only systemd sets"}},
		{"rate without burst", func(s string) string { return s + "limits:\n  rate_per_second: 10\n" }, []string{"limits.burst"}},
		{"unseal socket and a PIN file", func(s string) string { return strings.Replace(s, "hsm:\n", "hsm:\n  unseal_socket: /run/u.sock\n", 1) },
			[]string{"hsm.unseal_socket: a sealed start takes the PIN from an administrator"}},
		{"relative unseal socket", func(s string) string { return withoutPINFile(s) + "  unseal_socket: u.sock\n" },
			[]string{"hsm.unseal_socket: \"u.sock\": want an absolute path"}},
		{"unseal socket path too long", func(s string) string {
			return withoutPINFile(s) + "  unseal_socket: /" + strings.Repeat("d", 110) + "\n"
		},
			[]string{"hsm.unseal_socket: /ddd", "longer than the 107 bytes a socket address holds"}},
		{"one session", func(s string) string { return strings.Replace(s, "hsm:\n", "hsm:\n  max_sessions: 1\n", 1) }, []string{"hsm.max_sessions"}},
		// A PIN written where its file or variable belongs is never quoted back.
		{"PIN as pin_file", func(s string) string { return withoutPINFile(s) + "  pin_file: 82639174\n" },
			[]string{"hsm.pin_file: want an absolute path"}},
		{"PIN as pin_env", func(s string) string { return withoutPINFile(s) + "  pin_env: 82639174\n" },
			[]string{"hsm.pin_env: not an environment variable name"}},
		{"PIN as pin-source", func(s string) string {
			return strings.Replace(withoutPINFile(s), "  token_label: signerd\n", "", 1) + "  uri: \"pkcs11:token=signerd?pin-source=918273645\"\n"
		}, []string{"hsm.uri: pin-source: want an absolute path"}},
		{"relative pin-source", func(s string) string {
			return strings.Replace(withoutPINFile(s), "  token_label: signerd\n", "", 1) + "  uri: \"pkcs11:token=signerd?pin-source=file:pin.txt\"\n"
		}, []string{"hsm.uri: pin-source: want an absolute path"}},
		{"missing pin-source", func(s string) string {
			return strings.Replace(withoutPINFile(s), "  token_label: signerd\n", "", 1) +
				"  uri: \"pkcs11:token=signerd?pin-source=file:" + configDir(s) + "/missing\"\n"
		}, []string{"hsm.uri: pin-source: stat " + "/", "/missing: no such file or directory"}},
		{"pin-source not a regular file", func(s string) string {
			return strings.Replace(withoutPINFile(s), "  token_label: signerd\n", "", 1) +
				"  uri: \"pkcs11:token=signerd?pin-source=file:" + configDir(s) + "\"\n"
		}, []string{"hsm.uri: pin-source: /", "is not a regular file"}},
		{"pin-source outside systemd", func(s string) string {
			return strings.Replace(withoutPINFile(s), "  token_label: signerd\n", "", 1) +
				"  uri: \"pkcs11:token=signerd?pin-source=file:${CREDENTIALS_DIRECTORY}/pin\"\n"
		}, []string{"hsm.uri: pin-source: uses ${CREDENTIALS_DIRECTORY}, which only systemd sets"}},
		{"missing pin_file", func(s string) string { return strings.Replace(s, "/pin\n", "/missing\n", 1) },
			[]string{"hsm.pin_file: stat /", "/missing: no such file or directory"}},
		{"token label too long", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  token_label: "+strings.Repeat("t", 33)+"\n", 1)
		}, []string{"hsm.token_label: 33 bytes, longer than a token label (32 bytes)"}},
		{"uri token too long", func(s string) string {
			return strings.Replace(s, "  token_label: signerd\n", "  uri: \"pkcs11:token="+strings.Repeat("t", 33)+"\"\n", 1)
		}, []string{"hsm.uri: token=: 33 bytes, longer than a token label (32 bytes)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.edit(validConfig(t))))
			if err == nil {
				t.Fatalf("Parse(%s) = nil error, want one mentioning %q", tc.name, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%s) = %q, want it to mention %q", tc.name, err, w)
				}
			}
			for _, pin := range []string{"1234", "82639174", "918273645", "pin.txt"} {
				if strings.Contains(err.Error(), pin) && tc.name != "nested unknown field" {
					t.Errorf("Parse(%s) error repeats a PIN: %q", tc.name, err)
				}
			}
		})
	}
}

// configDir returns the directory validConfig wrote its files in.
func configDir(s string) string {
	_, rest, _ := strings.Cut(s, "pin_file: ")
	line, _, _ := strings.Cut(rest, "\n")
	return filepath.Dir(line)
}

// withoutPINFile removes the pin_file line of the hsm section and moves the section to the end, so
// that a line appended to the result belongs to it.
func withoutPINFile(s string) string {
	i := strings.Index(s, "hsm:\n")
	j := strings.Index(s, "policy:\n")
	hsmSection := s[i:j]
	k := strings.Index(hsmSection, "  pin_file:")
	l := strings.Index(hsmSection[k:], "\n")
	return s[:i] + s[j:] + hsmSection[:k] + hsmSection[k+l+1:]
}

// A sealed configuration resolves to everything but the PIN, and says so. Its socket's directory need
// not exist: systemd's RuntimeDirectory is there only while the daemon runs, and `signerd keys` reads
// the config while it does not.
func TestHSMConfigSealed(t *testing.T) {
	c, err := Parse([]byte(withoutPINFile(validConfig(t)) + "  unseal_socket: /run/signerd-not-running/unseal.sock\n"))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if !c.Sealed() {
		t.Fatal("Sealed() = false")
	}
	h, err := c.HSMConfig()
	if !errors.Is(err, ErrSealed) || h.PIN != "" || h.TokenLabel != "signerd" || h.Module == "" || h.MaxSessions == 0 {
		t.Fatalf("HSMConfig = %+v, %v", h, err)
	}
}

// TestPINFileMode: a PIN file that group or others may open is refused, whether pin_file or the uri's
// pin-source names it, except in systemd's credentials directory, which systemd guards (with an ACL
// whose mask shows as group bits).
func TestPINFileMode(t *testing.T) {
	for _, tc := range []struct {
		mode       os.FileMode
		uri, creds bool
		want       string // "" for no error
	}{
		{0o600, false, false, ""},
		{0o400, false, false, ""},
		{0o400, true, false, ""},
		{0o644, false, false, "hsm.pin_file: readable by group or others (mode 0644); want 0600 or 0400"},
		{0o640, false, false, "hsm.pin_file: readable by group or others (mode 0640); want 0600 or 0400"},
		{0o604, false, false, "hsm.pin_file: readable by group or others (mode 0604); want 0600 or 0400"},
		{0o620, false, false, "hsm.pin_file: writable or executable by group or others (mode 0620); want 0600 or 0400"},
		{0o644, true, false, "hsm.uri: pin-source: readable by group or others (mode 0644); want 0600 or 0400"},
		{0o440, false, true, ""},
		{0o440, true, true, ""},
		{0o644, false, true, "hsm.pin_file: readable by group or others (mode 0644)"}, // out of it by ..
	} {
		s := validConfig(t)
		dir := configDir(s)
		pinFile := filepath.Join(dir, "pin")
		if err := os.Chmod(pinFile, tc.mode); err != nil {
			t.Fatal(err)
		}
		t.Setenv("CREDENTIALS_DIRECTORY", "")
		if tc.creds {
			t.Setenv("CREDENTIALS_DIRECTORY", dir)
			pinFile = "${CREDENTIALS_DIRECTORY}/pin"
			if tc.mode == 0o644 {
				// The same file, named from a credentials directory below it: no longer in it.
				creds := filepath.Join(dir, "creds")
				if err := os.Mkdir(creds, 0o700); err != nil {
					t.Fatal(err)
				}
				t.Setenv("CREDENTIALS_DIRECTORY", creds)
				pinFile = "${CREDENTIALS_DIRECTORY}/../pin"
			}
		}
		s = strings.Replace(withoutPINFile(s), "  token_label: signerd\n", "", 1)
		if tc.uri {
			s += "  uri: \"pkcs11:token=signerd?pin-source=file:" + pinFile + "\"\n"
		} else {
			s += "  token_label: signerd\n  pin_file: " + pinFile + "\n"
		}
		_, err := Parse([]byte(s))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("mode %04o, uri %v, credentials %v: Parse = %v, want no error", tc.mode, tc.uri, tc.creds, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("mode %04o, uri %v, credentials %v: Parse = %v, want an error with %q", tc.mode, tc.uri, tc.creds, err, tc.want)
		}
	}
}

// TestHSMConfigPINErrors: the PIN source's errors reach the caller once prefixed, and never with a PIN
// given where its source belongs, even from a Config that was not validated.
func TestHSMConfigPINErrors(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, tc := range []struct {
		hsm        HSM
		want, leak string
	}{
		{HSM{TokenLabel: "signerd", PINSource: hsm.PINSource{Env: "SIGNERD_TEST_UNSET"}},
			"hsm: no PIN: environment variable SIGNERD_TEST_UNSET is unset or empty", ""},
		{HSM{TokenLabel: "signerd", PINSource: hsm.PINSource{Env: "82639174"}}, "not an environment variable name", "82639174"},
		{HSM{TokenLabel: "signerd", PINSource: hsm.PINSource{Env: "Hunter2secret"}}, "the environment variable pin_env names is unset or empty", "Hunter2secret"},
		{HSM{TokenLabel: "signerd", PINSource: hsm.PINSource{File: "82639174"}}, "no such file or directory", "82639174"},
		{HSM{URI: "pkcs11:token=signerd?pin-source=918273645"}, "no such file or directory", "918273645"},
		{HSM{URI: "pkcs11:token=signerd?pin-source=file:918273645"}, "no such file or directory", "918273645"},
	} {
		c := Config{HSM: tc.hsm}
		_, err := c.HSMConfig()
		switch {
		case err == nil || !strings.Contains(err.Error(), tc.want):
			t.Errorf("HSMConfig(%+v) = %v, want an error with %q", tc.hsm, err, tc.want)
		case strings.Contains(err.Error(), "hsm: hsm:"):
			t.Errorf("HSMConfig(%+v) = %v: doubled prefix", tc.hsm, err)
		case tc.leak != "" && strings.Contains(err.Error(), tc.leak):
			t.Errorf("HSMConfig(%+v) = %v: repeats the PIN", tc.hsm, err)
		}
	}
}

func TestHSMConfigFromURI(t *testing.T) {
	s := validConfig(t)
	dir := filepath.Dir(strings.TrimSpace(strings.SplitN(strings.SplitN(s, "pin_file: ", 2)[1], "\n", 2)[0]))
	s = strings.Replace(s, "  token_label: signerd\n  pin_file: "+dir+"/pin\n",
		"  uri: \"pkcs11:token=signerd?module-path=/opt/lib.so&pin-source=file:"+dir+"/pin\"\n", 1)
	c, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	h, err := c.HSMConfig()
	if err != nil {
		t.Fatalf("HSMConfig = %v", err)
	}
	if h.Module != "/opt/lib.so" || h.TokenLabel != "signerd" || h.Slot != nil || h.PIN != "x" {
		t.Errorf("HSMConfig = %+v", h)
	}
}

// TestSessionCopiesSwitch: session copies are on unless the config turns them off.
func TestSessionCopiesSwitch(t *testing.T) {
	for _, tc := range []struct {
		line   string
		noCopy bool
	}{{"", false}, {"  session_copies: true\n", false}, {"  session_copies: false\n", true}} {
		c, err := Parse([]byte(strings.Replace(validConfig(t), "hsm:\n", "hsm:\n"+tc.line, 1)))
		if err != nil {
			t.Fatalf("Parse(%q) = %v", tc.line, err)
		}
		h, err := c.HSMConfig()
		if err != nil {
			t.Fatal(err)
		}
		if h.NoSessionCopies != tc.noCopy {
			t.Errorf("with %q: NoSessionCopies = %v, want %v", tc.line, h.NoSessionCopies, tc.noCopy)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("listen: 127.0.0.1:1\nhsm:\n  token_label: x\n")
	f.Add("policy:\n  grants:\n    - identity: a\n      keys: ['*']\n      operations: [sign]\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = Parse([]byte(s)) // must never panic
	})
}

// TestLeeway: jwt.leeway defaults to DefaultLeeway when unset, and an explicit 0s (no clock skew
// tolerated) stays 0, not the default.
func TestLeeway(t *testing.T) {
	for extra, want := range map[string]time.Duration{"": DefaultLeeway, "jwt:\n  leeway: 0s\n": 0, "jwt:\n  leeway: 5s\n": 5 * time.Second} {
		c, err := Parse([]byte(validConfig(t) + extra))
		if err != nil {
			t.Fatal(err)
		}
		if got := *c.JWT.Leeway; got != want {
			t.Errorf("Parse(%q): jwt.leeway %v, want %v", extra, got, want)
		}
	}
}
