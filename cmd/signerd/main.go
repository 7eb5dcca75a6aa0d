// Command signerd is the signing daemon and its local administration tool.
//
//	signerd serve --config FILE           run the daemon
//	signerd unseal --socket PATH          give a daemon started sealed its token PIN
//	signerd dev [--dir DIR]               run a complete local instance on SoftHSM2
//	signerd keys create|list|public ...   manage keys directly in the token
//	signerd token init|list ...           initialise and list tokens
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
	"syscall"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/config"
)

const usage = `usage:
  signerd serve --config FILE
  signerd unseal (--socket PATH | --config FILE) [--timeout D]    (the PIN from the terminal or stdin)
  signerd dev [--dir DIR] [--addr HOST:PORT]
  signerd keys create --config FILE --name NAME --alg ALG [--bits N] [--prepublish D] [--grace D] [--rotation-period D] [--keep-retired]
  signerd keys list --config FILE
  signerd keys public --config FILE --name NAME
  signerd keys rotate --config FILE (--name NAME [--emergency] | --due)
  signerd keys revoke|destroy --config FILE --name NAME --version N
  signerd token list [--module PATH]
  signerd token init --label LABEL (--so-pin-file F | --so-pin-env VAR) (--pin-file F | --pin-env VAR) [--module PATH]
  signerd audit verify FILE...
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, errUsage):
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "signerd: %v\n", err)
		os.Exit(1)
	}
}

// run dispatches a subcommand. It is main without the process exits, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "serve":
		return cmdServe(ctx, args[1:], stderr)
	case "dev":
		return cmdDev(ctx, args[1:], stdout, stderr)
	case "unseal":
		return cmdUnseal(ctx, args[1:], os.Stdin, stdout, stderr)
	case "keys":
		return cmdKeys(ctx, args[1:], stdout)
	case "token":
		return cmdToken(args[1:], stdout)
	case "audit":
		return cmdAudit(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %s: %v", errUsage, fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(0))
	}
	return nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// cmdAudit checks audit trails: every line's hash and its link to the line before.
func cmdAudit(args []string, stdout io.Writer) error {
	if len(args) < 2 || args[0] != "verify" {
		return fmt.Errorf("%w: audit verify needs one or more files", errUsage)
	}
	var errs []error
	for _, name := range args[1:] {
		f, err := os.Open(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := audit.Verify(f)
		_ = f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w (after %d good events)", name, err, n))
			continue
		}
		fmt.Fprintf(stdout, "%s: %d events, chain intact\n", name, n)
	}
	return errors.Join(errs...)
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("serve")
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return fmt.Errorf("%w: serve: --config is required", errUsage)
	}
	hup, stopHup := reloadSignal()
	defer stopHup()
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
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

// errUsage marks a command-line mistake: main prints usage and exits 2.
var errUsage = errors.New("usage")
