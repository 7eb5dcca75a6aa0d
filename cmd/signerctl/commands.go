package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// inputFlags are the flags that choose what sign and verify work on: a digest, a message file, or a
// message on standard input.
type inputFlags struct {
	digest, messageFile, format string
}

func (in *inputFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&in.digest, "digest", "", "`hex` digest, as long as the key's hash (not for EdDSA keys)")
	fs.StringVar(&in.messageFile, "message-file", "", "`file` holding the message (at most 64 KiB), which signerd hashes; standard input when neither --digest nor --message-file is given")
	fs.StringVar(&in.format, "format", "der", "ECDSA signature `encoding`: der (ASN.1) or jose (r||s)")
}

// read returns the digest or the message, and whether it is a digest.
func (in *inputFlags) read(cl *invocation) (data []byte, isDigest bool, err error) {
	switch {
	case in.digest != "" && in.messageFile != "":
		return nil, false, cli.Usagef("give --digest or --message-file, not both")
	case in.digest != "":
		d, err := hex.DecodeString(strings.TrimSpace(in.digest))
		if err != nil {
			return nil, false, cli.Usagef("--digest: not hex: %v", err)
		}
		return d, true, nil
	case in.messageFile != "":
		msg, err := readFile(in.messageFile)
		return msg, false, err
	}
	msg, err := readLimited(cl.stdin, "standard input")
	return msg, false, err
}

// signatureFormat returns the format the --format flag names.
func (in *inputFlags) signatureFormat() (signerv1.SignatureFormat, error) {
	switch strings.ToLower(in.format) {
	case "der":
		return signerv1.SignatureFormat_SIGNATURE_FORMAT_DER, nil
	case "jose", "raw":
		return signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE, nil
	}
	return 0, cli.Usagef("--format %q: want der or jose", in.format)
}

func signFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		key    string
		in     inputFlags
		asJSON bool
	)
	fs.StringVar(&key, "key", "", "`name` of the signerd key (required)")
	in.define(fs)
	fs.BoolVar(&asJSON, "json", false, "print a JSON object with signature, kid, alg and version instead of the bare signature")
	return func(cl *invocation, _ []string) error {
		if err := needKey(key); err != nil {
			return err
		}
		format, err := in.signatureFormat()
		if err != nil {
			return err
		}
		data, isDigest, err := in.read(cl)
		if err != nil {
			return err
		}
		req := &signerv1.SignRequest{Key: key, Format: format}
		if isDigest {
			req.Input = &signerv1.SignRequest_Digest{Digest: data}
		} else {
			req.Input = &signerv1.SignRequest_Message{Message: data}
		}
		resp, err := call(cl, func(ctx context.Context, s signerv1.SignerClient) (*signerv1.SignResponse, error) {
			return s.Sign(ctx, req)
		})
		if err != nil {
			return err
		}
		sig := base64.StdEncoding.EncodeToString(resp.GetSignature())
		if asJSON {
			return writeJSON(cl.stdout, struct {
				Signature string `json:"signature"`
				Kid       string `json:"kid"`
				Alg       string `json:"alg"`
				Version   uint32 `json:"version"`
			}{sig, resp.GetKid(), resp.GetAlg(), resp.GetVersion()})
		}
		return writeLine(cl.stdout, sig)
	}
}

// call dials signerd, runs one RPC on the Signer service within the command's deadline, and closes the
// connection; an error status comes back as an *rpcError.
func call[T any](cl *invocation, rpc func(context.Context, signerv1.SignerClient) (T, error)) (T, error) {
	var zero T
	c, err := cl.dial()
	if err != nil {
		return zero, err
	}
	defer c.Close()
	ctx, cancel := cl.context()
	defer cancel()
	resp, err := rpc(ctx, c.Signer())
	if err != nil {
		return zero, rpcErr(err)
	}
	return resp, nil
}

func verifyFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		key, signature, kid string
		in                  inputFlags
		asJSON              bool
	)
	fs.StringVar(&key, "key", "", "`name` of the signerd key (required)")
	fs.StringVar(&signature, "signature", "", "the signature in `base64` (standard or URL alphabet, padded or not; required)")
	fs.StringVar(&kid, "kid", "", "verify with this `kid` only, instead of every published version")
	fs.BoolVar(&asJSON, "json", false, `print {"valid": true, "kid": KID} or {"valid": false} instead of a line (exit status as without it)`)
	in.define(fs)
	return func(cl *invocation, _ []string) error {
		if err := needKey(key); err != nil {
			return err
		}
		if signature == "" {
			return cli.Usagef("--signature is required")
		}
		sig, err := decodeBase64(signature)
		if err != nil {
			return cli.Usagef("--signature: %v", err)
		}
		format, err := in.signatureFormat()
		if err != nil {
			return err
		}
		data, isDigest, err := in.read(cl)
		if err != nil {
			return err
		}
		req := &signerv1.VerifyRequest{Key: key, Signature: sig, Kid: kid, Format: format}
		if isDigest {
			req.Input = &signerv1.VerifyRequest_Digest{Digest: data}
		} else {
			req.Input = &signerv1.VerifyRequest_Message{Message: data}
		}
		resp, err := call(cl, func(ctx context.Context, s signerv1.SignerClient) (*signerv1.VerifyResponse, error) {
			return s.Verify(ctx, req)
		})
		if err != nil {
			return err
		}
		if asJSON {
			out := struct {
				Valid bool   `json:"valid"`
				Kid   string `json:"kid,omitempty"`
			}{resp.GetValid(), resp.GetKid()}
			if err := writeJSON(cl.stdout, out); err != nil {
				return err
			}
		}
		if !resp.GetValid() {
			fmt.Fprintln(cl.stderr, "invalid signature")
			return errInvalid
		}
		if asJSON {
			return nil
		}
		return writeLine(cl.stdout, "valid kid="+resp.GetKid())
	}
}

func jwtSignFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		key, claims, claimsFile string
		ttl                     time.Duration
		asJSON                  bool
	)
	fs.StringVar(&key, "key", "", "`name` of the signerd key (required)")
	fs.StringVar(&claims, "claims", "", "the claims, a JSON `object`; standard input when neither --claims nor --claims-file is given")
	fs.StringVar(&claimsFile, "claims-file", "", "`file` holding the claims")
	fs.DurationVar(&ttl, "ttl", 0, "lifetime of the token, in whole seconds (default: the grant's default)")
	fs.BoolVar(&asJSON, "json", false, "print a JSON object with token, kid and expires_at instead of the bare token")
	return func(cl *invocation, _ []string) error {
		if err := needKey(key); err != nil {
			return err
		}
		if ttl < 0 || ttl%time.Second != 0 {
			return cli.Usagef("--ttl %v: want a positive whole number of seconds", ttl)
		}
		var raw []byte
		var err error
		switch {
		case claims != "" && claimsFile != "":
			return cli.Usagef("give --claims or --claims-file, not both")
		case claims != "":
			raw = []byte(claims)
		case claimsFile != "":
			raw, err = readFile(claimsFile)
		default:
			raw, err = readLimited(cl.stdin, "standard input")
		}
		if err != nil {
			return err
		}
		// Checked here for a clearer message than the server's, before any connection is made.
		var object map[string]json.RawMessage
		if err := json.Unmarshal(raw, &object); err != nil || object == nil {
			return fmt.Errorf("claims: not a JSON object")
		}
		resp, err := call(cl, func(ctx context.Context, s signerv1.SignerClient) (*signerv1.SignJWTResponse, error) {
			return s.SignJWT(ctx, &signerv1.SignJWTRequest{
				Key: key, ClaimsJson: string(bytes.TrimSpace(raw)), TtlSeconds: int64(ttl / time.Second),
			})
		})
		if err != nil {
			return err
		}
		if asJSON {
			out := struct {
				Token     string `json:"token"`
				Kid       string `json:"kid"`
				ExpiresAt string `json:"expires_at,omitempty"`
			}{Token: resp.GetToken(), Kid: resp.GetKid()}
			if resp.GetExpiresAt() != nil {
				out.ExpiresAt = resp.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
			}
			return writeJSON(cl.stdout, out)
		}
		return writeLine(cl.stdout, resp.GetToken())
	}
}

func jwtVerifyFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		audience string
		asJSON   bool
	)
	fs.StringVar(&audience, "audience", "", "require this `aud` value in the token")
	fs.BoolVar(&asJSON, "json", false, "print a JSON object with claims, kid and key instead of the claims alone")
	return func(cl *invocation, args []string) error {
		var token string
		switch len(args) {
		case 0:
			raw, err := readLimited(cl.stdin, "standard input")
			if err != nil {
				return err
			}
			token = string(raw)
		case 1:
			token = args[0]
		default:
			return cli.Usagef("want at most one token, got %d arguments", len(args))
		}
		token = strings.TrimSpace(token)
		if token == "" {
			return cli.Usagef("no token: give it as an argument or on standard input")
		}
		resp, err := call(cl, func(ctx context.Context, s signerv1.SignerClient) (*signerv1.VerifyJWTResponse, error) {
			return s.VerifyJWT(ctx, &signerv1.VerifyJWTRequest{Token: token, Audience: audience})
		})
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(cl.stdout, struct {
				Claims json.RawMessage `json:"claims"`
				Kid    string          `json:"kid"`
				Key    string          `json:"key"`
			}{json.RawMessage(resp.GetClaimsJson()), resp.GetKid(), resp.GetKey()})
		}
		return writeLine(cl.stdout, resp.GetClaimsJson())
	}
}

func pubkeyFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		key, kid string
		asJWK    bool
	)
	fs.StringVar(&key, "key", "", "`name` of the signerd key (required)")
	fs.StringVar(&kid, "kid", "", "the published version with this `kid` (default: the active version)")
	fs.BoolVar(&asJWK, "jwk", false, "print the JSON Web Key instead of PEM")
	return func(cl *invocation, _ []string) error {
		if err := needKey(key); err != nil {
			return err
		}
		resp, err := call(cl, func(ctx context.Context, s signerv1.SignerClient) (*signerv1.GetPublicKeyResponse, error) {
			return s.GetPublicKey(ctx, &signerv1.GetPublicKeyRequest{Key: key, Kid: kid})
		})
		if err != nil {
			return err
		}
		if asJWK {
			return writeIndented(cl.stdout, []byte(resp.GetJwkJson()))
		}
		_, err = io.WriteString(cl.stdout, resp.GetPublicKeyPem())
		return err
	}
}

func keysFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var asJSON, all bool
	fs.BoolVar(&asJSON, "json", false, "print JSON, with every published version, instead of a table")
	fs.BoolVar(&all, "all", false, "list every key with every version, its state and timestamps, with the administrator's certificate")
	return func(cl *invocation, _ []string) error {
		if all {
			return cl.listAllKeys(asJSON)
		}
		resp, err := call(cl, func(ctx context.Context, s signerv1.SignerClient) (*signerv1.ListKeysResponse, error) {
			return s.ListKeys(ctx, &signerv1.ListKeysRequest{})
		})
		if err != nil {
			return err
		}
		if asJSON {
			return writeJSON(cl.stdout, keysJSON(resp.GetKeys()))
		}
		tw := tabwriter.NewWriter(cl.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tALG\tACTIVE KID")
		for _, k := range resp.GetKeys() {
			active := k.GetActiveKid()
			if active == "" {
				active = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.GetName(), k.GetAlg(), active)
		}
		return tw.Flush()
	}
}

// keyJSON, versionJSON and settingsJSON are the stable JSON form of a KeyInfo that `keys --json` and
// the administration commands print. Settings, revoked_at and destroyed_at come from KeyAdmin only.
type keyJSON struct {
	Name      string        `json:"name"`
	Alg       string        `json:"alg"`
	ActiveKid string        `json:"active_kid,omitempty"`
	Versions  []versionJSON `json:"versions"`
	Settings  *settingsJSON `json:"settings,omitempty"`
}

type versionJSON struct {
	Version     uint32     `json:"version"`
	Kid         string     `json:"kid"`
	State       string     `json:"state"`
	CreatedAt   *time.Time `json:"created_at,omitempty"`
	ActivateAt  *time.Time `json:"activate_at,omitempty"`
	RetiredAt   *time.Time `json:"retired_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// settingsJSON holds durations in Go's notation ("10m0s"), the notation the flags take.
type settingsJSON struct {
	Prepublish     string `json:"prepublish"`
	Grace          string `json:"grace"`
	RotationPeriod string `json:"rotation_period"`
	KeepRetired    bool   `json:"keep_retired"`
}

func keysJSON(keys []*signerv1.KeyInfo) []keyJSON {
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyInfoJSON(k))
	}
	return out
}

func keyInfoJSON(k *signerv1.KeyInfo) keyJSON {
	kj := keyJSON{Name: k.GetName(), Alg: k.GetAlg(), ActiveKid: k.GetActiveKid(), Versions: []versionJSON{}}
	for _, v := range k.GetVersions() {
		kj.Versions = append(kj.Versions, versionInfoJSON(v))
	}
	if st := k.GetSettings(); st != nil {
		kj.Settings = &settingsJSON{
			Prepublish:     st.GetPrepublish().AsDuration().String(),
			Grace:          st.GetGrace().AsDuration().String(),
			RotationPeriod: st.GetRotationPeriod().AsDuration().String(),
			KeepRetired:    st.GetKeepRetired(),
		}
	}
	return kj
}

func versionInfoJSON(v *signerv1.VersionInfo) versionJSON {
	return versionJSON{
		Version:     v.GetVersion(),
		Kid:         v.GetKid(),
		State:       stateName(v.GetState()),
		CreatedAt:   timeOf(v.GetCreatedAt().IsValid(), v.GetCreatedAt().AsTime),
		ActivateAt:  timeOf(v.GetActivateAt().IsValid(), v.GetActivateAt().AsTime),
		RetiredAt:   timeOf(v.GetRetiredAt().IsValid(), v.GetRetiredAt().AsTime),
		ExpiresAt:   timeOf(v.GetExpiresAt().IsValid(), v.GetExpiresAt().AsTime),
		RevokedAt:   timeOf(v.GetRevokedAt().IsValid(), v.GetRevokedAt().AsTime),
		DestroyedAt: timeOf(v.GetDestroyedAt().IsValid(), v.GetDestroyedAt().AsTime),
	}
}

// stateName is a version state as signerctl prints it: "pending", "active", "retired", "revoked",
// "destroyed".
func stateName(s signerv1.VersionState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "VERSION_STATE_"))
}

// timeOf returns the time of a protobuf timestamp in UTC, or nil when it is unset.
func timeOf(set bool, asTime func() time.Time) *time.Time {
	if !set {
		return nil
	}
	t := asTime().UTC()
	return &t
}

func jwksFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var jwksURL string
	fs.StringVar(&jwksURL, "url", os.Getenv(envJWKSURL), "https `URL` of the JWK Set; $"+envJWKSURL+" by default")
	return func(cl *invocation, _ []string) error {
		if jwksURL == "" {
			return cli.Usagef("no JWKS URL: set %s or --url", envJWKSURL)
		}
		u, err := url.Parse(jwksURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return cli.Usagef("--url %q: want an https URL", jwksURL)
		}
		body, err := cl.fetchJWKS(u)
		if err != nil {
			return err
		}
		var set jose.JWKS
		if err := json.Unmarshal(body, &set); err != nil {
			return fmt.Errorf("%s: not a JWK Set: %w", u.Redacted(), err)
		}
		return writeIndented(cl.stdout, body)
	}
}

// fetchJWKS gets the JWK Set at u over HTTPS, trusting the --cacert file when one is set and the system
// roots otherwise. A JWKS is public: no client certificate is sent.
func (cl *invocation) fetchJWKS(u *url.URL) ([]byte, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cl.caCert != "" {
		pemBytes, err := os.ReadFile(cl.caCert)
		if err != nil {
			return nil, fmt.Errorf("read CA certificates: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("CA certificate file %s holds no PEM certificate", cl.caCert)
		}
	}
	hc := &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirected to %s, which is not https", req.URL.Redacted())
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
	ctx, cancel := cl.context()
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP status %s", u.Redacted(), resp.Status)
	}
	const maxJWKS = 1 << 20
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.Redacted(), err)
	}
	if len(body) > maxJWKS {
		return nil, fmt.Errorf("%s: larger than %d bytes", u.Redacted(), maxJWKS)
	}
	return body, nil
}

// needKey checks the --key flag.
func needKey(key string) error {
	if key == "" {
		return cli.Usagef("--key is required")
	}
	return nil
}

// readFile reads a file of at most maxInput bytes.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f, name)
}

// readLimited reads r to the end, refusing more than maxInput bytes.
func readLimited(r io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if len(b) > maxInput {
		return nil, fmt.Errorf("read %s: more than %d KiB (sign a --digest instead)", what, maxInput>>10)
	}
	return b, nil
}

// decodeBase64 accepts the standard and URL alphabets, with or without padding.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	var firstErr error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, fmt.Errorf("not base64: %w", firstErr)
}

func writeLine(w io.Writer, s string) error {
	_, err := fmt.Fprintln(w, s)
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeIndented pretty-prints the JSON document raw, keeping its members and their order.
func writeIndented(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := buf.WriteTo(w)
	return err
}
