// Command signerd is the signing daemon and its local administration tool.
//
//	signerd serve --config FILE                             run the daemon
//	signerd unseal (--socket PATH | --config FILE)          give a daemon started sealed its token PIN
//	signerd dev [--dir DIR] [--addr A] [--http-addr A]      run a complete local instance on SoftHSM2
//	signerd keys create|list|public|rotate|revoke|destroy   manage keys directly in the token (--config FILE)
//	signerd token init|list                                 initialise and list tokens
//	signerd audit verify FILE...                            check audit trails
//
// 'signerd help' lists every command with its flags, and 'signerd COMMAND -h' describes one.
//
// signerd exits 0 on success, 1 when the command fails, and 2 for a usage error. A failure prints
// "signerd: COMMAND: ..." on standard error, one line for each problem; a usage error prints one line
// that ends with where to read the command's usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/config"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &streams{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
}

// streams are a command's standard input, output and error. stdin is a file so that a PIN can be
// read from the terminal without echo.
type streams struct {
	stdin          *os.File
	stdout, stderr io.Writer
}

// command is one signerd command.
type command struct {
	name     string // as typed: "serve", "keys create"
	summary  string
	synopsis string // the arguments after the name, in the form of its flags
	// args is set for a command that takes positional arguments after its flags (audit verify).
	args bool
	// flags defines the command's flags, and only those, on fs and returns the function that runs it.
	// That function checks the flags before it opens or asks for anything.
	flags func(fs *flag.FlagSet) func(ctx context.Context, s *streams, args []string) error
}

// commands returns every command, in the order usage lists them.
func commands() []command {
	return []command{
		{name: "serve", summary: "run the daemon", synopsis: "--config FILE", flags: serveFlags},
		{name: "unseal", summary: "give a daemon started sealed its token PIN, from the terminal or stdin", synopsis: "(--socket PATH | --config FILE) [--timeout D]", flags: unsealFlags},
		{name: "dev", summary: "run a complete local instance on SoftHSM2, on loopback", synopsis: "[--dir DIR] [--addr HOST:PORT] [--http-addr HOST:PORT]", flags: devFlags},
		{name: "keys create", summary: "create a key in the token, whose version 1 signs at once", synopsis: "--config FILE --name NAME --alg ALG [--bits N] [--prepublish D] [--grace D] [--rotation-period D] [--keep-retired]", flags: keysCreateFlags},
		{name: "keys list", summary: "list every key and version in the token", synopsis: "--config FILE", flags: keysListFlags},
		{name: "keys public", summary: "print the public key of a key's active version (PEM)", synopsis: "--config FILE --name NAME", flags: keysPublicFlags},
		{name: "keys rotate", summary: "add a new version to a key, or to every key that is due", synopsis: "--config FILE (--name NAME [--emergency] | --due)", flags: keysRotateFlags},
		{name: "keys revoke", summary: "withdraw a version of a key at once", synopsis: "--config FILE --name NAME --version N", flags: keysRevokeFlags},
		{name: "keys destroy", summary: "delete a retired or revoked version from the token", synopsis: "--config FILE --name NAME --version N", flags: keysDestroyFlags},
		{name: "token list", summary: "list the module's slots and tokens, and the algorithms each supports", synopsis: "[--module PATH]", flags: tokenListFlags},
		{name: "token init", summary: "initialise a token in the module's first free slot", synopsis: "--label LABEL (--so-pin-file F | --so-pin-env VAR) (--pin-file F | --pin-env VAR) [--module PATH]", flags: tokenInitFlags},
		{name: "audit verify", summary: "check every line's hash and its link to the line before", synopsis: "FILE...", args: true, flags: auditVerifyFlags},
	}
}

// groups are the commands that take a subcommand, with the subcommands in the order usage lists them.
func groups() map[string][]string {
	g := map[string][]string{}
	for _, c := range commands() {
		if group, sub, ok := strings.Cut(c.name, " "); ok {
			g[group] = append(g[group], sub)
		}
	}
	return g
}

// usageError is a mistake in the command line; signerd exits 2 for it.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// run runs signerd with args (without the program name) and returns the exit code. It is main without
// the process exit, for tests.
func run(ctx context.Context, args []string, s *streams) int {
	if len(args) == 0 {
		usage(s.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(s.stdout)
		return exitOK
	}
	if subs, ok := groups()[name]; ok {
		switch {
		case len(rest) == 0:
			return fail(s.stderr, name, usagef("want %s", orList(subs)))
		case rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help" || rest[0] == "help":
			usage(s.stdout)
			return exitOK
		}
		// An unknown subcommand is refused here, before any flag is read or anything is opened.
		name, rest = name+" "+rest[0], rest[1:]
		if _, ok := lookup(name); !ok {
			return fail(s.stderr, args[0], usagef("unknown command %q: want %s", args[1], orList(subs)))
		}
	}
	c, ok := lookup(name)
	if !ok {
		return fail(s.stderr, "", usagef("unknown command %q", name))
	}
	return runCommand(ctx, c, rest, s)
}

// lookup returns the command called name ("serve", "keys create").
func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// runCommand parses the command's flags, runs it and turns its error into an exit code.
func runCommand(ctx context.Context, c command, args []string, s *streams) int {
	fs := flag.NewFlagSet("signerd "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := c.flags(fs)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(s.stdout, "usage: signerd %s %s\n\n%s.\n", c.name, c.synopsis, upperFirst(c.summary))
		if hasFlags(fs) {
			fmt.Fprint(s.stdout, "\nflags:\n")
			fs.SetOutput(s.stdout)
			fs.PrintDefaults()
		}
		return exitOK
	case err != nil:
		return fail(s.stderr, c.name, usagef("%v", err))
	case fs.NArg() > 0 && !c.args:
		return fail(s.stderr, c.name, usagef("unexpected argument %q", fs.Arg(0)))
	}
	if err := runFn(ctx, s, fs.Args()); err != nil {
		return fail(s.stderr, c.name, err)
	}
	return exitOK
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// fail prints err, each of its lines prefixed "signerd: COMMAND: ", and returns its exit code. A
// usage error is printed on one line, with where to find the command's flags.
func fail(stderr io.Writer, cmd string, err error) int {
	prefix := "signerd: "
	if cmd != "" {
		prefix += cmd + ": "
	}
	var ue *usageError
	if errors.As(err, &ue) {
		hint := "signerd help"
		if _, ok := lookup(cmd); ok {
			hint = "signerd " + cmd + " -h"
		}
		fmt.Fprintf(stderr, "%s%s (see '%s')\n", prefix, strings.Join(strings.Fields(err.Error()), " "), hint)
		return exitUsage
	}
	// errors.Join (a configuration's problems, all at once) gives one problem a line.
	for _, line := range strings.Split(err.Error(), "\n") {
		if line != "" {
			fmt.Fprintf(stderr, "%s%s\n", prefix, line)
		}
	}
	return exitFailure
}

// usage prints every command and its synopsis to w.
func usage(w io.Writer) {
	fmt.Fprint(w, "usage:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  signerd %s %s\n", c.name, c.synopsis)
	}
	fmt.Fprint(w, `
Exit status: 0 on success, 1 on failure, 2 for a usage error.
Run 'signerd COMMAND -h' for what a command does and its flags.
`)
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// upperFirst capitalizes the first letter of an ASCII string.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// auditVerifyFlags checks audit trails: every line's hash and its link to the line before. Each file's
// result is printed as it is known, a good one on stdout and a bad one on stderr; the error returned
// only counts the bad ones, so that every line of output names its file once.
func auditVerifyFlags(*flag.FlagSet) func(context.Context, *streams, []string) error {
	return func(_ context.Context, s *streams, files []string) error {
		if len(files) == 0 {
			return usagef("give one or more files")
		}
		failed := 0
		for _, name := range files {
			n, err := verifyFile(name)
			if err != nil {
				failed++
				fmt.Fprintf(s.stderr, "signerd: audit verify: %s: %s\n", name, strings.Join(strings.Fields(err.Error()), " "))
				continue
			}
			fmt.Fprintf(s.stdout, "%s: %d events, chain intact\n", name, n)
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d files failed verification", failed, len(files))
		}
		return nil
	}
}

// verifyFile verifies the audit trail in the file name.
func verifyFile(name string) (int, error) {
	f, err := os.Open(name)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			// The line already names the file.
			return 0, pe.Err
		}
		return 0, err
	}
	defer f.Close()
	n, err := audit.Verify(f)
	if err != nil {
		return n, fmt.Errorf("%w (after %d good events)", err, n)
	}
	return n, nil
}

func serveFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	cfgPath := configFlag(fs)
	return func(ctx context.Context, s *streams, _ []string) error {
		if *cfgPath == "" {
			return usagef("--config is required")
		}
		hup, stopHup := reloadSignal()
		defer stopHup()
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		log := newLogger(s.stderr, cfg.LogLevel)
		d, err := startDaemon(ctx, *cfgPath, cfg, log)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				log.Info("stopped while sealed")
				return nil
			}
			return err
		}
		return d.run(ctx, cfg.RefreshInterval, hup)
	}
}

// configFlag defines --config, the configuration file, on fs.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "configuration `file` (YAML)")
}
