package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// The administration commands call signerd's KeyAdmin service. Each prints one line of key=value pairs
// (easy to cut, grep or read into shell variables), or with --json the key as `keys --json` shows it.

func keysCreateFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		name, alg                         string
		bits                              uint
		prepublish, grace, rotationPeriod time.Duration
		keepRetired, asJSON               bool
	)
	fs.StringVar(&name, "name", "", "`name` of the new key: [a-z0-9][a-z0-9-]{0,62} (required)")
	fs.StringVar(&alg, "alg", "", "the key's JOSE `algorithm`: "+algList()+" (required)")
	fs.UintVar(&bits, "bits", 0, "RSA modulus `size` (default 3072, at least 2048); RSA algorithms only")
	fs.DurationVar(&prepublish, "prepublish", 0, "how long a new version is published before it signs; at least the JWKS max-age (default: signerd's, 10m)")
	fs.DurationVar(&grace, "grace", 0, "how long a retired version still verifies; at least the longest token TTL (default: signerd's, 24h)")
	fs.DurationVar(&rotationPeriod, "rotation-period", 0, "age of the active version at which 'signerd keys rotate --due' rotates the key (default: never)")
	fs.BoolVar(&keepRetired, "keep-retired", false, "keep versions past their grace in the token instead of destroying them")
	fs.BoolVar(&asJSON, "json", false, "print the key as JSON, with its versions and settings")
	return func(cl *invocation, _ []string) error {
		if name == "" {
			return cli.Usagef("--name is required")
		}
		if alg == "" {
			return cli.Usagef("--alg is required")
		}
		a, err := jose.ParseAlgorithm(alg)
		if err != nil {
			return cli.Usagef("--alg %q: want one of %s", alg, algList())
		}
		if bits != 0 && a.KeyType() != jose.KeyRSA {
			return cli.Usagef("--bits is for RSA keys, not %s", a)
		}
		if bits > math.MaxUint32 {
			return cli.Usagef("--bits %d: too large", bits)
		}
		req := &signerv1.CreateKeyRequest{Name: name, Alg: string(a), RsaBits: uint32(bits)}
		// Only the settings given are sent: signerd fills in its defaults for the others.
		fs.Visit(func(f *flag.Flag) {
			settings := func() *signerv1.KeySettings {
				if req.Settings == nil {
					req.Settings = &signerv1.KeySettings{}
				}
				return req.Settings
			}
			switch f.Name {
			case "prepublish":
				settings().Prepublish = durationpb.New(prepublish)
			case "grace":
				settings().Grace = durationpb.New(grace)
			case "rotation-period":
				settings().RotationPeriod = durationpb.New(rotationPeriod)
			case "keep-retired":
				settings().KeepRetired = keepRetired
			}
		})
		resp, err := callAdmin(cl, func(ctx context.Context, ka signerv1.KeyAdminClient) (*signerv1.CreateKeyResponse, error) {
			return ka.CreateKey(ctx, req)
		})
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(cl.stdout, keyInfoJSON(resp.GetKey()))
		}
		k := resp.GetKey()
		v, err := version(k, 1)
		if err != nil {
			return err
		}
		return writeLine(cl.stdout, fmt.Sprintf("key=%s alg=%s %s", k.GetName(), k.GetAlg(), versionFields(v)))
	}
}

func keysRotateFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		name              string
		emergency, asJSON bool
	)
	fs.StringVar(&name, "name", "", "`name` of the key (required)")
	fs.BoolVar(&emergency, "emergency", false, "activate the new version now and revoke the active (and any pending) version at once, instead of a staged rotation")
	fs.BoolVar(&asJSON, "json", false, `print {"key": KEY, "version": NEW VERSION} as JSON`)
	return func(cl *invocation, _ []string) error {
		if err := needName(name); err != nil {
			return err
		}
		resp, err := callAdmin(cl, func(ctx context.Context, ka signerv1.KeyAdminClient) (*signerv1.RotateKeyResponse, error) {
			return ka.RotateKey(ctx, &signerv1.RotateKeyRequest{Key: name, Emergency: emergency})
		})
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(cl.stdout, struct {
				Key     keyJSON     `json:"key"`
				Version versionJSON `json:"version"`
			}{keyInfoJSON(resp.GetKey()), versionInfoJSON(resp.GetVersion())})
		}
		v := resp.GetVersion()
		return writeLine(cl.stdout, fmt.Sprintf("key=%s %s activates=%s", resp.GetKey().GetName(), versionFields(v), timeField(v.GetActivateAt().IsValid(), v.GetActivateAt().AsTime)))
	}
}

func keysRevokeFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	return versionChangeFlags(fs, "revoke", func(ctx context.Context, ka signerv1.KeyAdminClient, key string, n uint32) (*signerv1.KeyInfo, error) {
		resp, err := ka.RevokeVersion(ctx, &signerv1.RevokeVersionRequest{Key: key, Version: n})
		return resp.GetKey(), err
	})
}

func keysDestroyFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	return versionChangeFlags(fs, "destroy", func(ctx context.Context, ka signerv1.KeyAdminClient, key string, n uint32) (*signerv1.KeyInfo, error) {
		resp, err := ka.DestroyVersion(ctx, &signerv1.DestroyVersionRequest{Key: key, Version: n})
		return resp.GetKey(), err
	})
}

// versionChangeFlags defines the flags of revoke and destroy, which change one version of a key.
func versionChangeFlags(fs *flag.FlagSet, verb string, change func(ctx context.Context, ka signerv1.KeyAdminClient, key string, n uint32) (*signerv1.KeyInfo, error)) func(*invocation, []string) error {
	var (
		name   string
		n      uint
		asJSON bool
	)
	fs.StringVar(&name, "name", "", "`name` of the key (required)")
	fs.UintVar(&n, "version", 0, "`number` of the version to "+verb+" (required; see 'keys list --all')")
	fs.BoolVar(&asJSON, "json", false, "print the key as JSON, with its versions and settings")
	return func(cl *invocation, _ []string) error {
		if err := needName(name); err != nil {
			return err
		}
		if n == 0 {
			return cli.Usagef("--version is required (1 or more)")
		}
		if n > math.MaxUint32 {
			return cli.Usagef("--version %d: too large", n)
		}
		k, err := callAdmin(cl, func(ctx context.Context, ka signerv1.KeyAdminClient) (*signerv1.KeyInfo, error) {
			return change(ctx, ka, name, uint32(n))
		})
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(cl.stdout, keyInfoJSON(k))
		}
		v, err := version(k, uint32(n))
		if err != nil {
			return err
		}
		return writeLine(cl.stdout, fmt.Sprintf("key=%s %s", k.GetName(), versionFields(v)))
	}
}

// listAllKeys prints every key with every version, from KeyAdmin.ListKeys.
func (cl *invocation) listAllKeys(asJSON bool) error {
	resp, err := callAdmin(cl, func(ctx context.Context, ka signerv1.KeyAdminClient) (*signerv1.ListKeysResponse, error) {
		return ka.ListKeys(ctx, &signerv1.ListKeysRequest{})
	})
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(cl.stdout, keysJSON(resp.GetKeys()))
	}
	tw := tabwriter.NewWriter(cl.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tALG\tVERSION\tSTATE\tKID\tCREATED\tACTIVATES\tEXPIRES")
	for _, k := range resp.GetKeys() {
		for _, v := range k.GetVersions() {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", k.GetName(), k.GetAlg(), v.GetVersion(), stateName(v.GetState()), v.GetKid(),
				timeField(v.GetCreatedAt().IsValid(), v.GetCreatedAt().AsTime),
				timeField(v.GetActivateAt().IsValid(), v.GetActivateAt().AsTime),
				timeField(v.GetExpiresAt().IsValid(), v.GetExpiresAt().AsTime))
		}
	}
	return tw.Flush()
}

// versionFields describes a version as "version=N kid=KID state=STATE".
func versionFields(v *signerv1.VersionInfo) string {
	return fmt.Sprintf("version=%d kid=%s state=%s", v.GetVersion(), v.GetKid(), stateName(v.GetState()))
}

// timeField formats a protobuf timestamp in UTC as RFC 3339, or "-" when it is unset.
func timeField(set bool, asTime func() time.Time) string {
	if t := timeOf(set, asTime); t != nil {
		return t.Format(time.RFC3339)
	}
	return "-"
}

// version returns version n of the key signerd returned.
func version(k *signerv1.KeyInfo, n uint32) (*signerv1.VersionInfo, error) {
	for _, v := range k.GetVersions() {
		if v.GetVersion() == n {
			return v, nil
		}
	}
	return nil, fmt.Errorf("signerd returned key %q without version %d", k.GetName(), n)
}

// needName checks the --name flag of an administration command.
func needName(name string) error {
	if name == "" {
		return cli.Usagef("--name is required")
	}
	return nil
}

// algList names the algorithms a key may have, for usage text.
func algList() string {
	names := make([]string, 0, len(jose.Algorithms()))
	for _, a := range jose.Algorithms() {
		names = append(names, string(a))
	}
	return strings.Join(names, " ")
}

// callAdmin makes one KeyAdmin call with the administrator's certificate, within the command's deadline.
// An error from signerd comes back as "Code: message".
func callAdmin[R any](cl *invocation, call func(context.Context, signerv1.KeyAdminClient) (R, error)) (R, error) {
	var zero R
	certFile, keyFile, fallback, err := cl.adminCredentials()
	if err != nil {
		return zero, err
	}
	cfg, err := adminTLS(cl.addr, cl.caCert, certFile, keyFile, fallback)
	if err != nil {
		return zero, err
	}
	conn, err := grpc.NewClient(cl.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return zero, fmt.Errorf("dial %s: %w", cl.addr, err)
	}
	defer conn.Close()
	ctx, cancel := cl.context()
	defer cancel()
	resp, err := call(ctx, signerv1.NewKeyAdminClient(conn))
	if err != nil {
		if fallback && status.Code(err) == codes.PermissionDenied {
			return zero, fmt.Errorf("%w (with the client certificate: set %s and %s, or give --admin-cert and --admin-key)", rpcErr(err), envAdminCert, envAdminKey)
		}
		return zero, rpcErr(err)
	}
	return resp, nil
}

// adminCredentials returns the certificate and key files to call KeyAdmin with: the administrator's,
// or the client's (fallback) when neither administrator file is set. It checks the connection settings.
func (cl *invocation) adminCredentials() (certFile, keyFile string, fallback bool, err error) {
	switch {
	case cl.adminCert != "" && cl.adminKey != "":
		certFile, keyFile = cl.adminCert, cl.adminKey
	case cl.adminCert != "":
		return "", "", false, cli.Usagef("an administrator certificate but no key: set %s or give --admin-key before the command", envAdminKey)
	case cl.adminKey != "":
		return "", "", false, cli.Usagef("an administrator key but no certificate: set %s or give --admin-cert before the command", envAdminCert)
	case cl.cert == "" && cl.key == "":
		return "", "", false, cli.Usagef("no admin-cert: set %s and %s, or give --admin-cert and --admin-key before the command", envAdminCert, envAdminKey)
	default:
		certFile, keyFile, fallback = cl.cert, cl.key, true
	}
	if err := cl.checkConnection(fallback); err != nil {
		return "", "", false, err
	}
	return certFile, keyFile, fallback, nil
}

// adminTLS is the client TLS configuration for KeyAdmin: the same as the client package builds for the
// Signer service (TLS 1.3, signerd's name taken from addr), with the administrator's certificate, or the
// client's when fallback is set. The client package exposes only the Signer stub, so signerctl dials
// KeyAdmin itself.
func adminTLS(addr, caFile, certFile, keyFile string, fallback bool) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificates: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA certificate file %s holds no PEM certificate", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		what := "administrator certificate"
		if fallback {
			what = "client certificate"
		}
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	// A gRPC target may carry a scheme ("dns:///host:port"); the server name is the host after it.
	hostport := addr[strings.LastIndex(addr, "/")+1:]
	host, _, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return nil, cli.Usagef("--addr %q: want host:port", addr)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      roots,
		Certificates: []tls.Certificate{cert},
		ServerName:   host,
	}, nil
}
