// Package softhsmtest creates throwaway SoftHSM2 tokens for tests, and holds signerd's end-to-end tests
// (in its _test files). It has no production code.
//
// SoftHSM2 is process-global: the module reads SOFTHSM2_CONF once per C_Initialize, and a token created by
// another process is visible only after the next C_Initialize (pkcs11-notes §5.7). So a test that uses
// NewToken must not run in parallel, must create its tokens before it opens them, and must close every
// Token before the next test switches the token directory.
package softhsmtest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Module is the SoftHSM2 module installed by Debian's softhsm2 package.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// RequireEnv is the environment variable that, set to 1, turns "SoftHSM2 is missing" from a skip into a
// failure. `make test` and CI set it.
const RequireEnv = "SIGNERD_REQUIRE_SOFTHSM"

// Token is a freshly initialised SoftHSM2 token in its own directory.
type Token struct {
	// Dir holds softhsm2.conf and the tokens directory.
	Dir string
	// Conf is the SoftHSM2 configuration file; SOFTHSM2_CONF points at it for the rest of the test.
	Conf   string
	Label  string
	PIN    string
	SOPIN  string
	Module string
}

// Available reports whether SoftHSM2 (module and softhsm2-util) is installed.
func Available() bool {
	if _, err := os.Stat(Module); err != nil {
		return false
	}
	_, err := exec.LookPath("softhsm2-util")
	return err == nil
}

// Require skips the test when SoftHSM2 is missing, or fails it when RequireEnv is set.
func Require(t testing.TB) {
	t.Helper()
	if Available() {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("SoftHSM2 is required (%s=1) but %s or softhsm2-util is missing: apt-get install softhsm2", RequireEnv, Module)
	}
	t.Skipf("SoftHSM2 not installed (%s or softhsm2-util missing); set %s=1 to fail instead", Module, RequireEnv)
}

// NewToken creates a token labelled label in a new temporary SoftHSM2 directory and points SOFTHSM2_CONF
// at it for the rest of the test. The PINs are random.
func NewToken(t testing.TB, label string) *Token {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	tok := &Token{Dir: dir, Conf: filepath.Join(dir, "softhsm2.conf"), Label: label,
		PIN: randomPIN(t), SOPIN: randomPIN(t), Module: Module}
	WriteConfig(t, dir)
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	tok.AddToken(t, label, tok.PIN, tok.SOPIN)
	return tok
}

// WriteConfig writes DIR/softhsm2.conf with its token directory DIR/tokens.
func WriteConfig(t testing.TB, dir string) {
	t.Helper()
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(filepath.Join(dir, "softhsm2.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

// AddToken initialises one more token in the same directory. Call it before any module handle is open.
func (tok *Token) AddToken(t testing.TB, label, pin, soPIN string) {
	t.Helper()
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", soPIN)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+tok.Conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token %q: %v\n%s", label, err, out)
	}
}

func randomPIN(t testing.TB) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
