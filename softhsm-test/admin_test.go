package softhsmtest_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

// signerdStreams runs the signerd binary, with nothing on stdin, and returns its exit code and its
// standard output and error apart.
func signerdStreams(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(signerdBin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("signerd %q: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// usageRefusal is a command line signerd refuses as a usage error, with the message it must print.
type usageRefusal struct {
	args []string
	want string
}

// checkRefusals runs each command line and checks that it exits 2 with its message on one line of
// stderr, prefixed "signerd: ", and nothing on stdout.
func checkRefusals(t *testing.T, tests []usageRefusal) {
	t.Helper()
	for _, tc := range tests {
		code, stdout, stderr := signerdStreams(t, tc.args...)
		if code != 2 || stdout != "" || !strings.HasPrefix(stderr, "signerd: ") || strings.Count(stderr, "\n") != 1 ||
			!strings.Contains(stderr, tc.want) {
			t.Errorf("signerd %q = exit %d, stdout %q, stderr %q; want exit 2 and one line on stderr with %q",
				tc.args, code, stdout, stderr, tc.want)
		}
	}
}

// The keys commands refuse another command's flags, missing required flags, --bits for a key that is not
// RSA, and an unknown command, each with its own message and exit 2, and change nothing in the token.
// These are refused before the token is opened: with a sealed configuration and nothing on stdin, an
// attempt to read the PIN would fail with exit 1.
func TestKeysCommandRefusals(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256"}})
	in.stop()
	before, err := signerd(t, nil, "keys", "list", "--config", in.cfgPath)
	if err != nil {
		t.Fatalf("signerd keys list = %v\n%s", err, before)
	}
	good, err := os.ReadFile(in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	pinLine := "  pin_file: " + in.dir + "/pin\n"
	if !strings.Contains(string(good), pinLine) {
		t.Fatalf("config has no %q", pinLine)
	}
	sealed := filepath.Join(in.dir, "sealed.yaml")
	writeConfig(t, sealed, strings.Replace(string(good), pinLine, "  unseal_socket: "+filepath.Join(t.TempDir(), "s")+"\n", 1))

	cfg := in.cfgPath
	checkRefusals(t, []usageRefusal{
		{args: []string{"keys", "rotate", "--config", cfg, "--name", "es256", "--prepublish", "1s"}, want: "signerd: keys rotate: flag provided but not defined: -prepublish"},
		{args: []string{"keys", "rotate", "--config", cfg, "--name", "es256", "--version", "1"}, want: "flag provided but not defined: -version"},
		{args: []string{"keys", "rotate", "--config", cfg}, want: "signerd: keys rotate: give --name or --due"},
		{args: []string{"keys", "list", "--config", cfg, "--name", "bogus", "--alg", "XX9"}, want: "signerd: keys list: flag provided but not defined: -name"},
		{args: []string{"keys", "public", "--config", cfg, "--name", "es256", "--emergency"}, want: "signerd: keys public: flag provided but not defined: -emergency"},
		{args: []string{"keys", "revoke", "--config", cfg, "--name", "es256"}, want: "signerd: keys revoke: --version is required"},
		{args: []string{"keys", "destroy", "--config", cfg, "--name", "es256"}, want: "signerd: keys destroy: --version is required"},
		{args: []string{"keys", "destroy", "--config", cfg, "--name", "es256", "--version", "1", "--due"}, want: "flag provided but not defined: -due"},
		{args: []string{"keys", "create", "--config", cfg, "--name", "new", "--alg", "ES257"}, want: `signerd: keys create: --alg "ES257": want one of`},
		{args: []string{"keys", "create", "--config", cfg, "--name", "new", "--alg", "ES256", "--bits", "4096"}, want: "signerd: keys create: --bits is for RSA keys, not ES256"},
		{args: []string{"keys", "create", "--config", cfg, "--name", "new", "--alg", "ES256", "--due"}, want: "flag provided but not defined: -due"},
		{args: []string{"keys", "bogus", "--config", sealed}, want: `signerd: keys: unknown command "bogus"`},
		{args: []string{"keys", "rotate", "--config", sealed}, want: "give --name or --due"},
	})

	after, err := signerd(t, nil, "keys", "list", "--config", in.cfgPath)
	if err != nil || after != before {
		t.Errorf("signerd keys list after the refusals = %v\n%s\nwant as before:\n%s", err, after, before)
	}
}

// token list takes only --module; token init names its own flags when a PIN source is missing. Both
// exit 2 for these. A token init with its flags initialises a token that token list shows.
func TestTokenCommandRefusals(t *testing.T) {
	tok := softhsmtest.NewToken(t, "e2e")
	checkRefusals(t, []usageRefusal{
		{args: []string{"token", "list", "--module", tok.Module, "--label", "foo", "--pin-env", "X"}, want: "signerd: token list: flag provided but not defined: -label"},
		{args: []string{"token", "list", "--module", tok.Module, "--so-pin-file", "/so"}, want: "flag provided but not defined: -so-pin-file"},
		{args: []string{"token", "init", "--module", tok.Module, "--label", "second", "--pin-env", "USER_PIN"}, want: "signerd: token init: give --so-pin-file or --so-pin-env"},
		{args: []string{"token", "init", "--module", tok.Module, "--label", "second", "--so-pin-env", "SO_PIN"}, want: "signerd: token init: give --pin-file or --pin-env"},
		{args: []string{"token", "bogus"}, want: `signerd: token: unknown command "bogus"`},
	})
	out, err := signerd(t, []string{"SO_PIN=" + tok.SOPIN, "USER_PIN=" + tok.PIN}, "token", "init", "--module", tok.Module,
		"--label", "second", "--so-pin-env", "SO_PIN", "--pin-env", "USER_PIN")
	if err != nil || !strings.Contains(out, `initialised token "second"`) {
		t.Fatalf("signerd token init = %v\n%s", err, out)
	}
	out, err = signerd(t, nil, "token", "list", "--module", tok.Module)
	if err != nil || !strings.Contains(out, "second") || !strings.Contains(out, "e2e") {
		t.Errorf("signerd token list = %v\n%s; want tokens e2e and second", err, out)
	}
}

// signerd dev refuses an address that is not loopback with its reason and exit 2, before it makes its
// directory.
func TestDevRefusesNonLoopback(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	checkRefusals(t, []usageRefusal{
		{args: []string{"dev", "--dir", dir, "--addr", "0.0.0.0:7443"}, want: `signerd: dev: --addr: signerd dev listens on loopback only, got "0.0.0.0"`},
		{args: []string{"dev", "--dir", dir, "--http-addr", "192.0.2.1:7444"}, want: `signerd: dev: --http-addr: signerd dev listens on loopback only, got "192.0.2.1"`},
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("signerd dev refused made its directory: %v", err)
	}
}
