// Command signerctl calls signerd's gRPC API over mutual TLS, for scripts and people: it signs and
// verifies digests, messages and JWTs, prints public keys and the keys the caller may use, fetches the
// published JWK Set, and, for administrators, creates, rotates, revokes and destroys keys.
//
// Usage:
//
//	signerctl [connection flags] COMMAND [flags]
//
// The connection comes from the environment variables SIGNERD_ADDR, SIGNERD_CACERT, SIGNERD_CERT and
// SIGNERD_KEY (what `signerd dev` writes into DIR/env), each overridden by a connection flag --addr,
// --cacert, --cert or --key given before the command. The jwks command reads SIGNERD_JWKS_URL (or --url)
// and trusts SIGNERD_CACERT when it is set.
//
// The administration commands (keys list --all, keys create, keys rotate, keys revoke, keys destroy) call
// signerd's KeyAdmin service with an administrator's certificate: SIGNERD_ADMIN_CERT and
// SIGNERD_ADMIN_KEY, or --admin-cert and --admin-key before the command. When neither is set they use
// the client certificate, so a caller whose own certificate is an administrator's needs nothing more.
//
// Results go to standard output alone, so that commands compose:
//
//	signerctl jwt sign --key api --claims '{"sub":"alice"}' | signerctl jwt verify
//
// bench measures throughput and latency against a running signerd, each concurrency level for a
// bounded time (and, with --requests, a bounded count).
//
// signerctl exits 0 on success, 1 when the operation fails or a signature does not verify, and 2 for a
// usage error. Failures print one line, "signerctl: COMMAND: ...", with the gRPC status code and
// message when the server refused.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/client"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed, or the signature or token is invalid
	exitUsage   = 2
)

// Environment variables that configure the connection.
const (
	envAddr    = "SIGNERD_ADDR"
	envCACert  = "SIGNERD_CACERT"
	envCert    = "SIGNERD_CERT"
	envKey     = "SIGNERD_KEY"
	envJWKSURL = "SIGNERD_JWKS_URL"

	envAdminCert = "SIGNERD_ADMIN_CERT"
	envAdminKey  = "SIGNERD_ADMIN_KEY"
)

// maxInput bounds what signerctl reads from a file or standard input: signerd signs messages of at most
// 64 KiB, and tokens and claims are far smaller.
const maxInput = 64 << 10

// command is one signerctl command.
type command struct {
	name     string // as typed: "sign", "jwt sign"
	summary  string
	synopsis string // the arguments after the name
	// flags defines the command's flags on fs and returns a function that runs the command.
	flags func(fs *flag.FlagSet) func(cl *cli, args []string) error
}

// commands returns every command, in the order usage lists them.
func commands() []command {
	return []command{
		{name: "sign", summary: "sign a digest or a message", synopsis: "--key NAME [--digest HEX | --message-file FILE | < MESSAGE] [--format der|jose] [--json]", flags: signFlags},
		{name: "verify", summary: "verify a signature", synopsis: "--key NAME --signature BASE64 [--kid KID] [--digest HEX | --message-file FILE | < MESSAGE] [--format der|jose] [--json]", flags: verifyFlags},
		{name: "jwt sign", summary: "have signerd issue a JWT", synopsis: "--key NAME [--claims JSON | --claims-file FILE | < CLAIMS] [--ttl DURATION] [--json]", flags: jwtSignFlags},
		{name: "jwt verify", summary: "verify a JWT and print its claims", synopsis: "[--audience AUD] [--json] [TOKEN | < TOKEN]", flags: jwtVerifyFlags},
		{name: "pubkey", summary: "print a key's public key", synopsis: "--key NAME [--kid KID] [--jwk]", flags: pubkeyFlags},
		{name: "keys", summary: "list the keys you may use", synopsis: "[--all] [--json]", flags: keysFlags},
		{name: "keys list", summary: "list the keys you may use; with --all, every key and version (admin)", synopsis: "[--all] [--json]", flags: keysFlags},
		{name: "keys create", summary: "create a key, whose version 1 signs at once (admin)", synopsis: "--name NAME --alg ALG [--bits N] [--prepublish D] [--grace D] [--rotation-period D] [--keep-retired] [--json]", flags: keysCreateFlags},
		{name: "keys rotate", summary: "add a new version to a key (admin)", synopsis: "--name NAME [--emergency] [--json]", flags: keysRotateFlags},
		{name: "keys revoke", summary: "withdraw a version of a key at once (admin)", synopsis: "--name NAME --version N [--json]", flags: keysRevokeFlags},
		{name: "keys destroy", summary: "delete a retired or revoked version from the token (admin)", synopsis: "--name NAME --version N [--json]", flags: keysDestroyFlags},
		{name: "jwks", summary: "fetch and print the published JWK Set", synopsis: "[--url URL]", flags: jwksFlags},
		{name: "bench", summary: "measure a key's throughput and latency through signerd", synopsis: "--key NAME [--op sign|sign-stream|jwt-sign|jwt-verify] [--concurrency 1,8,32] [--duration D] [--requests N] [--json]", flags: benchFlags},
	}
}

// cli is one invocation: its streams and connection settings.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	addr, caCert, cert, key string
	// adminCert and adminKey are the administrator's certificate for KeyAdmin; the client
	// certificate is used when both are empty.
	adminCert, adminKey string
	timeout             time.Duration
}

// usageError is a mistake in the command line; signerctl exits 2 for it.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errInvalid reports a signature or token that does not verify; the command has printed why.
var errInvalid = errors.New("invalid")

// run runs signerctl with args (without the program name) and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cl := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("signerctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.StringVar(&cl.addr, "addr", os.Getenv(envAddr), "signerd `host:port`; $"+envAddr+" by default")
	global.StringVar(&cl.caCert, "cacert", os.Getenv(envCACert), "PEM `file` of the CA certificates that issue signerd's certificate; $"+envCACert+" by default")
	global.StringVar(&cl.cert, "cert", os.Getenv(envCert), "PEM client certificate `file`; $"+envCert+" by default")
	global.StringVar(&cl.key, "key", os.Getenv(envKey), "PEM client private key `file`; $"+envKey+" by default")
	global.StringVar(&cl.adminCert, "admin-cert", os.Getenv(envAdminCert), "PEM administrator certificate `file` for the keys administration commands; $"+envAdminCert+" by default, else the client certificate")
	global.StringVar(&cl.adminKey, "admin-key", os.Getenv(envAdminKey), "PEM administrator private key `file`; $"+envAdminKey+" by default, else the client key")
	global.DurationVar(&cl.timeout, "timeout", 30*time.Second, "deadline of the whole command (for bench: of each request)")
	err := global.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		cl.usage(stdout, global)
		return exitOK
	case err != nil:
		return cl.fail("", usagef("%v", err))
	}
	args = global.Args()
	if len(args) == 0 {
		cl.usage(stderr, global)
		return exitUsage
	}
	if args[0] == "help" {
		cl.usage(stdout, global)
		return exitOK
	}
	name := args[0]
	rest := args[1:]
	switch {
	case name == "jwt":
		if len(rest) == 0 || (rest[0] != "sign" && rest[0] != "verify") {
			if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "--help" || rest[0] == "help") {
				cl.usage(stdout, global)
				return exitOK
			}
			return cl.fail("jwt", usagef("want 'jwt sign' or 'jwt verify'"))
		}
		name, rest = "jwt "+rest[0], rest[1:]
	case name == "keys" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-"):
		// Bare "keys" (with flags only) keeps its meaning: the keys the caller may use.
		switch rest[0] {
		case "list", "create", "rotate", "revoke", "destroy":
			name, rest = "keys "+rest[0], rest[1:]
		case "help":
			cl.usage(stdout, global)
			return exitOK
		default:
			return cl.fail("keys", usagef("unknown keys command %q: want list, create, rotate, revoke or destroy", rest[0]))
		}
	}
	for _, c := range commands() {
		if c.name == name {
			return cl.runCommand(c, rest)
		}
	}
	return cl.fail("", usagef("unknown command %q (run 'signerctl -h' for the list)", name))
}

// runCommand parses the command's flags, runs it and turns its error into an exit code.
func (cl *cli) runCommand(c command, args []string) int {
	fs := flag.NewFlagSet("signerctl "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := c.flags(fs)
	positional, err := parseInterleaved(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(cl.stdout, "Usage: signerctl [connection flags] %s %s\n\n%s.\n\nFlags:\n", c.name, c.synopsis, upperFirst(c.summary))
		fs.SetOutput(cl.stdout)
		fs.PrintDefaults()
		return exitOK
	case err != nil:
		return cl.fail(c.name, usagef("%v", err))
	}
	if err := runFn(cl, positional); err != nil {
		return cl.fail(c.name, err)
	}
	return exitOK
}

// parseInterleaved parses flags that may come before, between or after positional arguments, and
// returns the positional ones. Everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// fs.Parse stops at the first positional argument, or just after a "--", which it consumes.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), nil
		}
		if len(rest) == 0 {
			return positional, nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// fail prints err as one line and returns its exit code.
func (cl *cli) fail(cmd string, err error) int {
	if errors.Is(err, errInvalid) {
		return exitFailure
	}
	prefix := "signerctl: "
	if cmd != "" {
		prefix += cmd + ": "
	}
	msg := strings.Join(strings.Fields(err.Error()), " ") // one line, whatever the server said
	var ue *usageError
	if errors.As(err, &ue) {
		hint := "signerctl -h"
		if cmd != "" {
			hint = "signerctl " + cmd + " -h"
		}
		fmt.Fprintf(cl.stderr, "%s%s (see '%s')\n", prefix, msg, hint)
		return exitUsage
	}
	fmt.Fprintf(cl.stderr, "%s%s\n", prefix, msg)
	return exitFailure
}

// usage prints the top-level usage to w.
func (cl *cli) usage(w io.Writer, global *flag.FlagSet) {
	fmt.Fprint(w, `Usage: signerctl [connection flags] COMMAND [flags]

signerctl calls signerd's gRPC API over mutual TLS.

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Connection flags, given before the command (each defaults to an environment variable;
'signerd dev' writes them into DIR/env). The keys administration commands use the
administrator's certificate, or the client certificate when none is set:
`)
	global.SetOutput(w)
	global.PrintDefaults()
	global.SetOutput(io.Discard)
	fmt.Fprint(w, `
Exit status: 0 on success, 1 on failure or an invalid signature or token, 2 for a usage error.
Run 'signerctl COMMAND -h' for a command's flags.
`)
}

// dial connects to signerd with the connection settings.
func (cl *cli) dial() (*client.Client, error) {
	if err := cl.checkConnection(true); err != nil {
		return nil, err
	}
	c, err := client.Dial(cl.addr, client.Options{CACertFile: cl.caCert, CertFile: cl.cert, KeyFile: cl.key, Timeout: cl.timeout})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// checkConnection reports the first connection setting that is missing; the client certificate and key
// only when withClientCert is set.
func (cl *cli) checkConnection(withClientCert bool) error {
	settings := []struct{ value, env, flag string }{
		{cl.addr, envAddr, "--addr"},
		{cl.caCert, envCACert, "--cacert"},
	}
	if withClientCert {
		settings = append(settings, []struct{ value, env, flag string }{
			{cl.cert, envCert, "--cert"},
			{cl.key, envKey, "--key"},
		}...)
	}
	for _, setting := range settings {
		if setting.value == "" {
			return usagef("no %s: set %s or give %s before the command", setting.flag[2:], setting.env, setting.flag)
		}
	}
	return nil
}

// context returns the deadline of the command.
func (cl *cli) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cl.timeout)
}

// rpcError is an error status from signerd, printed as "Code: message".
type rpcError struct {
	st  *status.Status
	err error
}

func (e *rpcError) Error() string { return fmt.Sprintf("%s: %s", e.st.Code(), e.st.Message()) }

func (e *rpcError) Unwrap() error { return e.err }

// rpcErr makes a gRPC error print its status code and message.
func rpcErr(err error) error {
	if st, ok := status.FromError(err); ok && err != nil {
		return &rpcError{st: st, err: err}
	}
	return err
}

// upperFirst capitalizes the first letter of an ASCII string.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
