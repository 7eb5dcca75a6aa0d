package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/internal/cli"
)

// runArgs runs signerd with args, stdin at end of file, and returns its exit code and output.
func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { null.Close() })
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &streams{stdin: null, stdout: &out, stderr: &errOut})
	return code, out.String(), errOut.String()
}

// checkUsageError checks that a run ended as a usage error should: exit 2, nothing on stdout, and one
// line on stderr, "signerd: ..." with want in it and a pointer to the help.
func checkUsageError(t *testing.T, args []string, code int, stdout, stderr, want string) {
	t.Helper()
	if code != cli.ExitUsage {
		t.Errorf("signerd %q: exit %d, want %d\nstderr: %s", args, code, cli.ExitUsage, stderr)
	}
	if stdout != "" {
		t.Errorf("signerd %q: stdout %q, want nothing", args, stdout)
	}
	if !strings.HasPrefix(stderr, "signerd: ") || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("signerd %q: stderr %q, want one line starting \"signerd: \"", args, stderr)
	}
	if !strings.Contains(stderr, want) || !strings.Contains(stderr, "(see 'signerd ") {
		t.Errorf("signerd %q: stderr %q, want it to contain %q and where to see the usage", args, stderr, want)
	}
}

// Every usage error is reported with its own message, on one line, and exits 2. Where a command would
// open something, --config or --module names a file that does not exist: reaching it would exit 1.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "missing.yaml")
	module := filepath.Join(dir, "missing.so")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `signerd: unknown command "bogus" (see 'signerd help')`},
		{[]string{"keys"}, "signerd: keys: want create, list, public, rotate, revoke or destroy"},
		{[]string{"keys", "bogus", "--config", cfg}, `signerd: keys: unknown command "bogus"`},
		{[]string{"token"}, "signerd: token: want list or init"},
		{[]string{"token", "bogus", "--module", module}, `signerd: token: unknown command "bogus"`},
		{[]string{"audit"}, "signerd: audit: want verify"},
		{[]string{"audit", "verify"}, "signerd: audit verify: give one or more files (see 'signerd audit verify -h')"},
		{[]string{"audit", "verify", "--bogus", "a.log"}, "flag provided but not defined: -bogus"},
		{[]string{"serve"}, "signerd: serve: --config is required (see 'signerd serve -h')"},
		{[]string{"serve", "--config", cfg, "extra"}, `signerd: serve: unexpected argument "extra"`},
		{[]string{"serve", "--bogus"}, "signerd: serve: flag provided but not defined: -bogus"},
		{[]string{"unseal"}, "signerd: unseal: give --socket or --config"},
		{[]string{"unseal", "--socket", filepath.Join(dir, "s"), "--config", cfg}, "give --socket or --config, not both"},
		{[]string{"dev", "--dir", filepath.Join(dir, "dev"), "--addr", "0.0.0.0:7443"}, `signerd: dev: --addr: signerd dev listens on loopback only, got "0.0.0.0"`},
		{[]string{"dev", "--dir", filepath.Join(dir, "dev"), "--http-addr", "192.0.2.1:7444"}, `signerd: dev: --http-addr: signerd dev listens on loopback only, got "192.0.2.1"`},
		{[]string{"dev", "--dir", filepath.Join(dir, "dev"), "--addr", "localhost"}, "signerd: dev: --addr: address localhost: missing port in address"},
		{[]string{"keys", "create", "--config", cfg, "--alg", "ES256"}, "signerd: keys create: --name is required"},
		{[]string{"keys", "create", "--config", cfg, "--name", "Bad_Name", "--alg", "ES256"}, `--name "Bad_Name": want [a-z0-9][a-z0-9-]{0,62}`},
		{[]string{"keys", "create", "--config", cfg, "--name", "k"}, "signerd: keys create: --alg is required"},
		{[]string{"keys", "create", "--config", cfg, "--name", "k", "--alg", "ES257"}, `signerd: keys create: --alg "ES257": want one of RS256`},
		{[]string{"keys", "create", "--config", cfg, "--name", "k", "--alg", "ES256", "--bits", "4096"}, "signerd: keys create: --bits is for RSA keys, not ES256"},
		{[]string{"keys", "create", "--config", cfg, "--name", "k", "--alg", "EdDSA", "--bits", "2048"}, "--bits is for RSA keys, not EdDSA"},
		{[]string{"keys", "create", "--name", "k", "--alg", "ES256"}, "signerd: keys create: --config is required"},
		{[]string{"keys", "list"}, "signerd: keys list: --config is required"},
		{[]string{"keys", "public", "--config", cfg}, "signerd: keys public: --name is required"},
		{[]string{"keys", "rotate", "--config", cfg}, "signerd: keys rotate: give --name or --due"},
		{[]string{"keys", "rotate", "--config", cfg, "--emergency"}, "signerd: keys rotate: give --name or --due"},
		{[]string{"keys", "rotate", "--config", cfg, "--due", "--name", "k"}, "--due rotates every due key; it takes no --name or --emergency"},
		{[]string{"keys", "revoke", "--config", cfg, "--name", "k"}, "signerd: keys revoke: --version is required (1 or more)"},
		{[]string{"keys", "destroy", "--config", cfg, "--name", "k", "--version", "0"}, "signerd: keys destroy: --version is required (1 or more)"},
		{[]string{"keys", "destroy", "--config", cfg, "--version", "1"}, "signerd: keys destroy: --name is required"},
		{[]string{"token", "init", "--module", module}, "signerd: token init: --label is required"},
		{[]string{"token", "init", "--module", module, "--label", "t", "--pin-env", "PIN"}, "signerd: token init: give --so-pin-file or --so-pin-env"},
		{[]string{"token", "init", "--module", module, "--label", "t", "--so-pin-env", "SO", "--so-pin-file", "/so"}, "give --so-pin-file or --so-pin-env, not both"},
		{[]string{"token", "init", "--module", module, "--label", "t", "--so-pin-env", "SO"}, "signerd: token init: give --pin-file or --pin-env"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tc.args...)
			checkUsageError(t, tc.args, code, stdout, stderr, tc.want)
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "dev")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("signerd dev refused for its address made its directory: %v", err)
	}
}

// Each keys and token subcommand has its own flags: one of a sibling's is refused as undefined, before
// anything is opened (the config file and module do not exist: reading them would exit 1).
func TestForeignFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "missing.yaml")
	module := filepath.Join(dir, "missing.so")
	byGroup := map[string][]command{}
	for _, c := range commands() {
		if group, _, ok := strings.Cut(c.Name, " "); ok {
			byGroup[group] = append(byGroup[group], c)
		}
	}
	for _, group := range []string{"keys", "token"} {
		all := map[string]bool{}
		for _, c := range byGroup[group] {
			for _, f := range cli.FlagNames(c) {
				all[f] = true
			}
		}
		for _, c := range byGroup[group] {
			own := cli.FlagNames(c)
			var base []string
			if slices.Contains(own, "config") {
				base = append(base, "--config", cfg)
			}
			if slices.Contains(own, "module") {
				base = append(base, "--module", module)
			}
			for f := range all {
				if slices.Contains(own, f) {
					continue
				}
				args := append(append(strings.Fields(c.Name), base...), "--"+f+"=1")
				t.Run(strings.Join(args, " "), func(t *testing.T) {
					code, stdout, stderr := runArgs(t, args...)
					checkUsageError(t, args, code, stdout, stderr, "signerd: "+c.Name+": flag provided but not defined: -"+f)
				})
			}
		}
	}
}

// The command table is sound: each usage line names exactly the flags its command defines.
func TestCommands(t *testing.T) {
	if err := program(context.Background(), &streams{}).Check(); err != nil {
		t.Error(err)
	}
}

// The package documentation names every command.
func TestDocNamesEveryCommand(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, _, _ := strings.Cut(string(src), "\npackage main")
	for _, c := range commands() {
		group, sub, ok := strings.Cut(c.Name, " ")
		if ok && !regexp.MustCompile(`signerd `+group+` [a-z|]*\b`+sub+`\b`).MatchString(doc) ||
			!ok && !strings.Contains(doc, "signerd "+c.Name+" ") {
			t.Errorf("package doc does not list signerd %s", c.Name)
		}
	}
}

// help and -h print to stdout and exit 0: the whole usage, or one command's with its flags.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"keys", "help"}, {"token", "-h"}} {
		code, stdout, stderr := runArgs(t, args...)
		if code != cli.ExitOK || stderr != "" || !strings.Contains(stdout, "keys rotate   add a new version to a key") {
			t.Errorf("signerd %q = exit %d, stdout %q, stderr %q; want exit 0 and the usage", args, code, stdout, stderr)
		}
	}
	for _, c := range commands() {
		args := append(strings.Fields(c.Name), "-h")
		code, stdout, stderr := runArgs(t, args...)
		if want := fmt.Sprintf("usage: signerd %s %s\n", c.Name, c.Synopsis); code != cli.ExitOK || stderr != "" || !strings.HasPrefix(stdout, want) {
			t.Errorf("signerd %q = exit %d, stdout %q, stderr %q; want exit 0 and %q", args, code, stdout, stderr, want)
		}
	}
	code, stdout, stderr := runArgs(t)
	if code != cli.ExitUsage || stdout != "" || !strings.HasPrefix(stderr, "usage: signerd COMMAND [flags]\n") {
		t.Errorf("signerd = exit %d, stdout %q, stderr %q; want exit 2 and the usage on stderr", code, stdout, stderr)
	}
}

// writeTrail writes an audit trail of n events to a new file and returns its path.
func writeTrail(t *testing.T, name string, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.Record(audit.Event{Op: fmt.Sprintf("op%d", i)})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// audit verify reports each file on its own line as it is checked, the good on stdout and the bad on
// stderr, each bad one prefixed, and then one line counting the failures; it exits 1.
func TestAuditVerifyFiles(t *testing.T) {
	good := writeTrail(t, "good.log", 3)
	altered := writeTrail(t, "altered.log", 3)
	b, err := os.ReadFile(altered)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(altered, bytes.Replace(b, []byte(`"op1"`), []byte(`"op9"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.log")

	code, stdout, stderr := runArgs(t, "audit", "verify", good, altered, missing)
	if code != cli.ExitFailure {
		t.Errorf("audit verify: exit %d, want %d", code, cli.ExitFailure)
	}
	if want := good + ": 3 events, chain intact\n"; stdout != want {
		t.Errorf("audit verify: stdout %q, want %q", stdout, want)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	want := []string{
		"signerd: audit verify: " + altered + ": audit: line 2: hash mismatch: line was altered (after 1 good events)",
		"signerd: audit verify: " + missing + ": no such file or directory",
		"signerd: audit verify: 2 of 3 files failed verification",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("audit verify: stderr lines\n%q\nwant\n%q", lines, want)
	}

	// What follows the first file is a file, even if it looks like a flag: never help and exit 0.
	if code, stdout, stderr := runArgs(t, "audit", "verify", good, "-h"); code != cli.ExitFailure || !strings.Contains(stdout, good+": 3 events") || !strings.Contains(stderr, "signerd: audit verify: -h: no such file") {
		t.Errorf("audit verify GOOD -h = exit %d, stdout %q, stderr %q; want exit 1 with -h read as a missing file", code, stdout, stderr)
	}
	if code, stdout, stderr := runArgs(t, "audit", "verify", good, good); code != cli.ExitOK || stderr != "" || strings.Count(stdout, "chain intact\n") != 2 {
		t.Errorf("audit verify of good trails = exit %d, stdout %q, stderr %q; want exit 0 and a line for each", code, stdout, stderr)
	}
}
