// Command signerd is the signing daemon and its local administration tool.
//
//	signerd serve --config FILE           run the daemon
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

	"github.com/signerd/signerd/config"
)

const usage = `usage:
  signerd serve --config FILE
  signerd dev [--dir DIR] [--addr HOST:PORT]
  signerd keys create --config FILE --name NAME --alg ALG [--bits N]
  signerd keys list --config FILE
  signerd keys public --config FILE --name NAME
  signerd token list [--module PATH]
  signerd token init --label LABEL (--so-pin-file F | --so-pin-env VAR) (--pin-file F | --pin-env VAR) [--module PATH]
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
	case "keys":
		return cmdKeys(args[1:], stdout)
	case "token":
		return cmdToken(args[1:], stdout)
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

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("serve")
	cfgPath := fs.String("config", "", "configuration file (YAML)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return fmt.Errorf("%w: serve: --config is required", errUsage)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	d, err := startDaemon(*cfgPath, cfg, log)
	if err != nil {
		return err
	}
	return d.run(ctx, cfg.RefreshInterval)
}
