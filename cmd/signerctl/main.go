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
// usage error. A failure prints "signerctl: COMMAND: ..." on standard error, with the gRPC status code
// and message when the server refused; a usage error's line ends with where to read the command's usage.
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
	"github.com/signerd/signerd/internal/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

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

// runFunc runs a command once its flags are parsed; args are its positional arguments.
type runFunc = func(cl *invocation, args []string) error

// command is one signerctl command.
type command = cli.Command[runFunc]

// commands returns every command, in the order usage lists them.
func commands() []command {
	return []command{
		{Name: "sign", Summary: "sign a digest or a message", Synopsis: "--key NAME [--digest HEX | --message-file FILE | < MESSAGE] [--format der|jose] [--json]", Flags: signFlags},
		{Name: "verify", Summary: "verify a signature", Synopsis: "--key NAME --signature BASE64 [--kid KID] [--digest HEX | --message-file FILE | < MESSAGE] [--format der|jose] [--json]", Flags: verifyFlags},
		{Name: "jwt sign", Summary: "have signerd issue a JWT", Synopsis: "--key NAME [--claims JSON | --claims-file FILE | < CLAIMS] [--ttl DURATION] [--json]", Flags: jwtSignFlags},
		{Name: "jwt verify", Summary: "verify a JWT and print its claims", Synopsis: "[--audience AUD] [--json] [TOKEN | < TOKEN]", Args: cli.ArgsAnywhere, Flags: jwtVerifyFlags},
		{Name: "pubkey", Summary: "print a key's public key", Synopsis: "--key NAME [--kid KID] [--jwk]", Flags: pubkeyFlags},
		{Name: "keys", Summary: "list the keys you may use", Synopsis: "[--all] [--json]", Flags: keysFlags},
		{Name: "keys list", Summary: "list the keys you may use; with --all, every key and version (admin)", Synopsis: "[--all] [--json]", Flags: keysFlags},
		{Name: "keys create", Summary: "create a key, whose version 1 signs at once (admin)", Synopsis: "--name NAME --alg ALG [--bits N] [--prepublish D] [--grace D] [--rotation-period D] [--keep-retired] [--json]", Flags: keysCreateFlags},
		{Name: "keys rotate", Summary: "add a new version to a key (admin)", Synopsis: "--name NAME [--emergency] [--json]", Flags: keysRotateFlags},
		{Name: "keys revoke", Summary: "withdraw a version of a key at once (admin)", Synopsis: "--name NAME --version N [--json]", Flags: keysRevokeFlags},
		{Name: "keys destroy", Summary: "delete a retired or revoked version from the token (admin)", Synopsis: "--name NAME --version N [--json]", Flags: keysDestroyFlags},
		{Name: "jwks", Summary: "fetch and print the published JWK Set", Synopsis: "[--url URL]", Flags: jwksFlags},
		{Name: "bench", Summary: "measure a key's throughput and latency through signerd", Synopsis: "--key NAME [--op sign|sign-stream|jwt-sign|jwt-verify] [--concurrency 1,8,32] [--duration D] [--requests N] [--json]", Flags: benchFlags},
	}
}

// invocation is one run of signerctl: its streams and connection settings.
type invocation struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	addr, caCert, cert, key string
	// adminCert and adminKey are the administrator's certificate for KeyAdmin; the client
	// certificate is used when both are empty.
	adminCert, adminKey string
	timeout             time.Duration
}

// errInvalid reports a signature or token that does not verify; the command has printed why.
var errInvalid = fmt.Errorf("invalid: %w", cli.ErrReported)

// run runs signerctl with args (without the program name) and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cl := &invocation{stdin: stdin, stdout: stdout, stderr: stderr}
	global := flag.NewFlagSet("signerctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.StringVar(&cl.addr, "addr", os.Getenv(envAddr), "signerd `host:port`; $"+envAddr+" by default")
	global.StringVar(&cl.caCert, "cacert", os.Getenv(envCACert), "PEM `file` of the CA certificates that issue signerd's certificate; $"+envCACert+" by default")
	global.StringVar(&cl.cert, "cert", os.Getenv(envCert), "PEM client certificate `file`; $"+envCert+" by default")
	global.StringVar(&cl.key, "key", os.Getenv(envKey), "PEM client private key `file`; $"+envKey+" by default")
	global.StringVar(&cl.adminCert, "admin-cert", os.Getenv(envAdminCert), "PEM administrator certificate `file` for the keys administration commands; $"+envAdminCert+" by default, else the client certificate")
	global.StringVar(&cl.adminKey, "admin-key", os.Getenv(envAdminKey), "PEM administrator private key `file`; $"+envAdminKey+" by default, else the client key")
	global.DurationVar(&cl.timeout, "timeout", 30*time.Second, "deadline of the whole command (for bench: of each request)")
	p := &cli.Program[runFunc]{
		Name:     "signerctl",
		Usage:    "signerctl [connection flags]",
		Intro:    "signerctl calls signerd's gRPC API over mutual TLS.",
		Commands: commands(),
		More: func(w io.Writer) {
			fmt.Fprint(w, `connection flags, given before the command (each defaults to an environment variable;
'signerd dev' writes them into DIR/env). The keys administration commands use the
administrator's certificate, or the client certificate when none is set:
`)
			global.SetOutput(w)
			global.PrintDefaults()
			global.SetOutput(io.Discard)
		},
		Call:   func(run runFunc, args []string) error { return run(cl, args) },
		Stdout: stdout,
		Stderr: stderr,
	}
	switch err := global.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		p.PrintUsage(stdout)
		return cli.ExitOK
	case err != nil:
		return p.Fail("", cli.Usagef("%v", err))
	}
	return p.Main(global.Args())
}

// dial connects to signerd with the connection settings.
func (cl *invocation) dial() (*client.Client, error) {
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
func (cl *invocation) checkConnection(withClientCert bool) error {
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
			return cli.Usagef("no %s: set %s or give %s before the command", setting.flag[2:], setting.env, setting.flag)
		}
	}
	return nil
}

// context returns the deadline of the command.
func (cl *invocation) context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), cl.timeout)
}

// rpcError is an error status from signerd, printed as "Code: message".
type rpcError struct {
	st  *status.Status
	err error
}

// Error is the code and the server's message on one line, whatever the message holds.
func (e *rpcError) Error() string {
	return fmt.Sprintf("%s: %s", e.st.Code(), strings.Join(strings.Fields(e.st.Message()), " "))
}

func (e *rpcError) Unwrap() error { return e.err }

// rpcErr makes a gRPC error print its status code and message.
func rpcErr(err error) error {
	if st, ok := status.FromError(err); ok && err != nil {
		return &rpcError{st: st, err: err}
	}
	return err
}
