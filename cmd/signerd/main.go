// Command signerd is the signing daemon and its local administration tool.
//
//	signerd serve --config FILE                             run the daemon
//	signerd unseal (--socket PATH | --config FILE)          give a daemon started sealed its token PIN
//	signerd dev [--dir DIR] [--addr A] [--http-addr A]      run a complete local instance on SoftHSM2
//	signerd keys create|list|public|rotate|revoke|destroy   manage keys directly in the token (--config FILE)
//	signerd token init|list                                 initialise and list tokens
//	signerd audit verify FILE...                            check audit trails
//
// 'signerd help' lists every command, and 'signerd COMMAND -h' describes one and its flags.
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
	"github.com/signerd/signerd/internal/cli"
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

// runFunc runs a command once its flags are parsed; args are its positional arguments.
type runFunc = func(ctx context.Context, s *streams, args []string) error

// command is one signerd command.
type command = cli.Command[runFunc]

// commands returns every command, in the order usage lists them.
func commands() []command {
	return []command{
		{Name: "serve", Summary: "run the daemon", Synopsis: "--config FILE", Flags: serveFlags},
		{Name: "unseal", Summary: "give a daemon started sealed its token PIN, from the terminal or stdin", Synopsis: "(--socket PATH | --config FILE) [--timeout D]", Flags: unsealFlags},
		{Name: "dev", Summary: "run a complete local instance on SoftHSM2, on loopback", Synopsis: "[--dir DIR] [--addr HOST:PORT] [--http-addr HOST:PORT]", Flags: devFlags},
		{Name: "keys create", Summary: "create a key in the token, whose version 1 signs at once", Synopsis: "--config FILE --name NAME --alg ALG [--bits N] [--prepublish D] [--grace D] [--rotation-period D] [--keep-retired]", Flags: keysCreateFlags},
		{Name: "keys list", Summary: "list every key and version in the token", Synopsis: "--config FILE", Flags: keysListFlags},
		{Name: "keys public", Summary: "print the public key of a key's active version (PEM)", Synopsis: "--config FILE --name NAME", Flags: keysPublicFlags},
		{Name: "keys rotate", Summary: "add a new version to a key, or to every key that is due", Synopsis: "--config FILE (--name NAME [--emergency] | --due)", Flags: keysRotateFlags},
		{Name: "keys revoke", Summary: "withdraw a version of a key at once", Synopsis: "--config FILE --name NAME --version N", Flags: keysRevokeFlags},
		{Name: "keys destroy", Summary: "delete a retired or revoked version from the token", Synopsis: "--config FILE --name NAME --version N", Flags: keysDestroyFlags},
		{Name: "token list", Summary: "list the module's slots and tokens, and the algorithms each supports", Synopsis: "[--module PATH]", Flags: tokenListFlags},
		{Name: "token init", Summary: "initialise a token in the module's first free slot", Synopsis: "--label LABEL (--so-pin-file F | --so-pin-env VAR) (--pin-file F | --pin-env VAR) [--module PATH]", Flags: tokenInitFlags},
		{Name: "audit verify", Summary: "check every line's hash and its link to the line before", Synopsis: "FILE...", Args: cli.ArgsAfterFlags, Flags: auditVerifyFlags},
	}
}

// program is signerd's command line, its commands run with ctx and s.
func program(ctx context.Context, s *streams) *cli.Program[runFunc] {
	return &cli.Program[runFunc]{
		Name:     "signerd",
		Intro:    "signerd is the signing daemon and its local administration tool.",
		Commands: commands(),
		Call:     func(run runFunc, args []string) error { return run(ctx, s, args) },
		Stdout:   s.stdout,
		Stderr:   s.stderr,
	}
}

// run runs signerd with args (without the program name) and returns the exit status. It is main
// without the process exit, for tests.
func run(ctx context.Context, args []string, s *streams) int {
	return program(ctx, s).Main(args)
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
			return cli.Usagef("give one or more files")
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
			return cli.Usagef("--config is required")
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
