package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
)

// ran is what a test command saw when it ran.
type ran struct {
	name string
	args []string
	n    int // --n
}

type runner = func(args []string) error

// testProgram returns a program of a few commands, which record in *got what they ran with; "fail"
// fails with the error of its --with flag.
func testProgram(got *ran, stdout, stderr *bytes.Buffer) *Program[runner] {
	cmd := func(name string, args Args) Command[runner] {
		return Command[runner]{
			Name: name, Summary: "do " + name, Synopsis: "[--n N]", Args: args,
			Flags: func(fs *flag.FlagSet) runner {
				n := fs.Int("n", 0, "a `number`")
				return func(args []string) error {
					*got = ran{name: name, args: args, n: *n}
					return nil
				}
			},
		}
	}
	failing := Command[runner]{
		Name: "fail", Summary: "fail", Synopsis: "--with usage|joined|reported",
		Flags: func(fs *flag.FlagSet) runner {
			with := fs.String("with", "", "the `error`")
			return func([]string) error {
				switch *with {
				case "usage":
					return Usagef("--with:\n  bad")
				case "joined":
					return errors.Join(errors.New("a: first"), errors.New("b:  second"))
				case "reported":
					return fmt.Errorf("printed already: %w", ErrReported)
				}
				return nil
			}
		},
	}
	return &Program[runner]{
		Name:     "prog",
		Usage:    "prog [global]",
		Commands: []Command[runner]{cmd("run", ArgsAnywhere), cmd("files", ArgsAfterFlags), cmd("keys", NoArgs), cmd("keys list", NoArgs), cmd("keys make", NoArgs), cmd("token init", NoArgs), failing},
		More:     func(w io.Writer) { fmt.Fprintln(w, "global flags here") },
		Call:     func(r runner, args []string) error { return r(args) },
		Stdout:   stdout,
		Stderr:   stderr,
	}
}

func TestProgramMain(t *testing.T) {
	tests := []struct {
		args   []string
		code   int
		ran    ran    // for exit 0 with a command run
		stdout string // in stdout
		stderr string // all of stderr
	}{
		{args: []string{"run", "a", "--n", "3", "b"}, ran: ran{name: "run", args: []string{"a", "b"}, n: 3}},
		{args: []string{"run", "--n=1", "--", "--n"}, ran: ran{name: "run", args: []string{"--n"}, n: 1}},
		{args: []string{"files", "--n", "5", "a", "--n", "-h"}, ran: ran{name: "files", args: []string{"a", "--n", "-h"}, n: 5}},
		{args: []string{"files", "--", "-a"}, ran: ran{name: "files", args: []string{"-a"}}},
		{args: []string{"keys", "--n", "2"}, ran: ran{name: "keys", n: 2}},
		{args: []string{"keys", "list"}, ran: ran{name: "keys list"}},
		{args: []string{"keys", "make", "--n", "4"}, ran: ran{name: "keys make", n: 4}},
		{args: []string{"token", "init"}, ran: ran{name: "token init"}},

		{args: []string{"help"}, stdout: "usage: prog [global] COMMAND [flags]\n"},
		{args: []string{"-h"}, stdout: "  keys make   do keys make\n"},
		{args: []string{"--help"}, stdout: "global flags here\n"},
		{args: []string{"token", "help"}, stdout: "usage: prog [global] COMMAND [flags]\n"},
		{args: []string{"keys", "help"}, stdout: "usage: prog [global] COMMAND [flags]\n"},
		{args: []string{"keys", "-h"}, stdout: "usage: prog [global] keys [--n N]\n\nDo keys.\n\nflags:\n  -n number\n"},
		{args: []string{"keys", "make", "-help"}, stdout: "usage: prog [global] keys make [--n N]\n"},

		{args: nil, code: ExitUsage},
		{args: []string{"nope"}, code: ExitUsage, stderr: "prog: unknown command \"nope\" (see 'prog help')\n"},
		{args: []string{"token"}, code: ExitUsage, stderr: "prog: token: want init (see 'prog help')\n"},
		{args: []string{"token", "--n", "1"}, code: ExitUsage, stderr: "prog: token: want init (see 'prog help')\n"},
		{args: []string{"keys", "drop"}, code: ExitUsage, stderr: "prog: keys: unknown command \"drop\": want list or make (see 'prog keys -h')\n"},
		{args: []string{"keys", "list", "x"}, code: ExitUsage, stderr: "prog: keys list: unexpected argument \"x\" (see 'prog keys list -h')\n"},
		{args: []string{"run", "--m"}, code: ExitUsage, stderr: "prog: run: flag provided but not defined: -m (see 'prog run -h')\n"},
		{args: []string{"fail", "--with", "usage"}, code: ExitUsage, stderr: "prog: fail: --with: bad (see 'prog fail -h')\n"},
		{args: []string{"fail", "--with", "joined"}, code: ExitFailure, stderr: "prog: fail: a: first\nprog: fail: b: second\n"},
		{args: []string{"fail", "--with", "reported"}, code: ExitFailure, stderr: ""},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var got ran
			var stdout, stderr bytes.Buffer
			code := testProgram(&got, &stdout, &stderr).Main(tc.args)
			if code != tc.code {
				t.Fatalf("Main(%q) = %d, want %d; stdout %q, stderr %q", tc.args, code, tc.code, stdout.String(), stderr.String())
			}
			switch {
			case tc.code == ExitOK && tc.stdout == "":
				if fmt.Sprint(got) != fmt.Sprint(tc.ran) || stdout.Len() != 0 || stderr.Len() != 0 {
					t.Errorf("Main(%q) ran %+v, stdout %q, stderr %q; want %+v and no output", tc.args, got, stdout.String(), stderr.String(), tc.ran)
				}
			case tc.code == ExitOK:
				if !strings.Contains(stdout.String(), tc.stdout) || stderr.Len() != 0 || got.name != "" {
					t.Errorf("Main(%q): ran %q, stdout %q, stderr %q; want only stdout with %q", tc.args, got.name, stdout.String(), stderr.String(), tc.stdout)
				}
			case tc.args == nil:
				if !strings.HasPrefix(stderr.String(), "usage: prog [global] COMMAND") || stdout.Len() != 0 {
					t.Errorf("Main() stdout %q, stderr %q; want the usage on stderr", stdout.String(), stderr.String())
				}
			default:
				if stderr.String() != tc.stderr || stdout.Len() != 0 {
					t.Errorf("Main(%q) stdout %q, stderr %q; want stderr %q", tc.args, stdout.String(), stderr.String(), tc.stderr)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	var got ran
	p := testProgram(&got, nil, nil)
	if err := p.Check(); err != nil {
		t.Fatalf("Check() = %v, want nil", err)
	}
	p.Commands[0].Summary = "JWKS and PIN: capitals that are no sentence's"
	if err := p.Check(); err != nil {
		t.Fatalf("Check() = %v, want nil", err)
	}
	p.Commands[0].Synopsis = "--n N --m M"
	p.Commands[1].Summary = "Lists files"
	p.Commands[2].Args = ArgsAnywhere // keys, a group
	p.Commands[3].Summary = "list keys."
	bad := func(name string) Command[runner] { c := p.Commands[4]; c.Name = name; return c }
	p.Commands = append(p.Commands, p.Commands[3], bad("keys help"), bad("a b c"), bad("keys  x"), bad("--x"))
	err := p.Check()
	for _, want := range []string{
		`prog run: synopsis names flags ["m" "n"], the command defines ["n"]`,
		`prog files: summary "Lists files": want lower case without a final period`,
		"prog keys: takes positional arguments and is a group",
		`prog keys list: summary "list keys.": want lower case without a final period`,
		"prog keys list: defined twice",
		`prog "keys help": want one or two words, none a flag or help`,
		`prog "a b c": want one or two words`,
		`prog "keys  x": want one or two words`,
		`prog "--x": want one or two words`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check() = %v, want it to say %q", err, want)
		}
	}
}
