package main

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/client/clienttest"
	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/jose"
)

// keyName is the name tests give the key of algorithm alg.
func keyName(alg jose.Algorithm) string {
	return strings.ToLower(string(alg))
}

// setup starts a server with one key per algorithm in algs and points the SIGNERD_* environment at it.
func setup(t *testing.T, algs ...jose.Algorithm) *clienttest.Server {
	t.Helper()
	srv := clienttest.NewServer(t, clienttest.DefaultPolicy())
	for _, alg := range algs {
		srv.CreateKey(t, keyName(alg), alg)
	}
	t.Setenv(envAddr, srv.Addr)
	t.Setenv(envCACert, srv.CACertFile)
	t.Setenv(envCert, srv.CertFile)
	t.Setenv(envKey, srv.KeyFile)
	t.Setenv(envJWKSURL, "")
	return srv
}

// result is what one signerctl run did.
type result struct {
	stdout, stderr string
	code           int
}

// signerctl runs signerctl with args and stdin.
func signerctl(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(stdin), &stdout, &stderr)
	return result{stdout.String(), stderr.String(), code}
}

// mustRun runs signerctl and fails the test unless it exits 0.
func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := signerctl(t, stdin, args...)
	if r.code != cli.ExitOK {
		t.Fatalf("signerctl %q = exit %d, stderr %q, want exit 0", args, r.code, r.stderr)
	}
	return r.stdout
}

// publicKey returns the public key of key name, as signerctl pubkey prints it.
func publicKey(t *testing.T, name string) any {
	t.Helper()
	out := mustRun(t, "", "pubkey", "--key", name)
	block, _ := pem.Decode([]byte(out))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("signerctl pubkey --key %s = %q, want a PUBLIC KEY PEM block", name, out)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatalf("ParsePKIXPublicKey(pubkey output) = %v", err)
	}
	return pub
}

func TestSignVerify(t *testing.T) {
	algs := []jose.Algorithm{jose.ES256, jose.ES512, jose.PS256, jose.RS384, jose.EdDSA}
	setup(t, algs...)
	msg := "sign me\n"
	msgFile := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(msgFile, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, alg := range algs {
		pub := publicKey(t, keyName(alg))
		digest := hex.EncodeToString(alg.Digest([]byte(msg)))
		inputs := []struct {
			name  string
			args  []string
			stdin string
		}{
			{"stdin", nil, msg},
			{"message file", []string{"--message-file", msgFile}, ""},
			{"digest", []string{"--digest", digest}, ""},
		}
		for _, in := range inputs {
			if alg == jose.EdDSA && in.name == "digest" {
				continue // EdDSA signs whole messages
			}
			for _, format := range []string{"der", "jose"} {
				t.Run(string(alg)+"/"+in.name+"/"+format, func(t *testing.T) {
					args := append([]string{"sign", "--key", keyName(alg), "--format", format}, in.args...)
					out := mustRun(t, in.stdin, args...)
					if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
						t.Errorf("signerctl %q = %q, want one line", args, out)
					}
					sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
					if err != nil {
						t.Fatalf("signerctl %q = %q, not standard base64: %v", args, out, err)
					}
					der := sig
					if format == "jose" && alg.KeyType() == jose.KeyEC {
						if der, err = jose.RawToDER(sig, jose.CurveSize(alg.Curve())); err != nil {
							t.Fatalf("RawToDER(jose signature) = %v", err)
						}
					}
					if err := alg.Verify(pub, alg.Digest([]byte(msg)), der); err != nil {
						t.Errorf("Verify(signerctl %q) = %v, want nil", args, err)
					}

					verify := append([]string{"verify", "--key", keyName(alg), "--format", format, "--signature", strings.TrimSpace(out)}, in.args...)
					r := signerctl(t, in.stdin, verify...)
					kid, _ := jose.Thumbprint(pub)
					if r.code != cli.ExitOK || r.stdout != "valid kid="+kid+"\n" {
						t.Errorf("signerctl %q = exit %d, stdout %q, stderr %q, want exit 0, %q", verify, r.code, r.stdout, r.stderr, "valid kid="+kid+"\n")
					}
					if in.name == "digest" {
						return
					}
					r = signerctl(t, "another message", append(verify[:len(verify):len(verify)], "--message-file", os.DevNull)...)
					if r.code != cli.ExitFailure || r.stderr != "invalid signature\n" || r.stdout != "" {
						t.Errorf("signerctl verify (other message) = exit %d, stdout %q, stderr %q, want exit 1, %q", r.code, r.stdout, r.stderr, "invalid signature\n")
					}
				})
			}
		}
	}
}

func TestSignJSON(t *testing.T) {
	setup(t, jose.ES256)
	out := mustRun(t, "hello", "sign", "--key", "es256", "--json")
	var got struct {
		Signature string `json:"signature"`
		Kid       string `json:"kid"`
		Alg       string `json:"alg"`
		Version   uint32 `json:"version"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("signerctl sign --json = %q, not JSON: %v", out, err)
	}
	pub := publicKey(t, "es256")
	kid, _ := jose.Thumbprint(pub)
	if got.Kid != kid || got.Alg != "ES256" || got.Version != 1 {
		t.Errorf("signerctl sign --json = kid %q alg %q version %d, want %q ES256 1", got.Kid, got.Alg, got.Version, kid)
	}
	sig, err := base64.StdEncoding.DecodeString(got.Signature)
	if err != nil {
		t.Fatalf("signature %q: %v", got.Signature, err)
	}
	if err := jose.ES256.Verify(pub, jose.ES256.Digest([]byte("hello")), sig); err != nil {
		t.Errorf("Verify(signerctl sign --json) = %v, want nil", err)
	}
	// The signature may be given in any base64 alphabet.
	urlSig := base64.RawURLEncoding.EncodeToString(sig)
	if r := signerctl(t, "hello", "verify", "--key", "es256", "--signature", urlSig, "--kid", kid); r.code != cli.ExitOK {
		t.Errorf("signerctl verify (base64url signature) = exit %d, stderr %q, want exit 0", r.code, r.stderr)
	}
	// verify --json: an object on stdout either way; the exit status still tells valid from invalid.
	want := fmt.Sprintf("{\n  \"valid\": true,\n  \"kid\": %q\n}\n", kid)
	if r := signerctl(t, "hello", "verify", "--key", "es256", "--signature", got.Signature, "--json"); r.code != cli.ExitOK || r.stdout != want {
		t.Errorf("signerctl verify --json = exit %d, stdout %q, stderr %q, want exit 0, %q", r.code, r.stdout, r.stderr, want)
	}
	want = "{\n  \"valid\": false\n}\n"
	if r := signerctl(t, "other", "verify", "--key", "es256", "--signature", got.Signature, "--json"); r.code != cli.ExitFailure || r.stdout != want {
		t.Errorf("signerctl verify --json (other message) = exit %d, stdout %q, stderr %q, want exit 1, %q", r.code, r.stdout, r.stderr, want)
	}
}

func TestJWTRoundTrip(t *testing.T) {
	setup(t, jose.ES256)
	kid, _ := jose.Thumbprint(publicKey(t, "es256"))

	// signerctl jwt sign --key es256 --claims '{"sub":"x"}' | signerctl jwt verify
	token := mustRun(t, "", "jwt", "sign", "--key", "es256", "--claims", `{"sub":"x"}`, "--ttl", "90s")
	if strings.Count(token, "\n") != 1 || strings.Count(token, ".") != 2 {
		t.Fatalf("signerctl jwt sign = %q, want one compact JWS line", token)
	}
	out := mustRun(t, token, "jwt", "verify")
	var claims map[string]any
	if err := json.Unmarshal([]byte(out), &claims); err != nil {
		t.Fatalf("signerctl jwt verify = %q, not JSON: %v", out, err)
	}
	if claims["sub"] != "x" {
		t.Errorf("signerctl jwt verify claims sub = %v, want %q", claims["sub"], "x")
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if exp-iat != 90 {
		t.Errorf("signerctl jwt verify claims exp-iat = %v, want 90 (--ttl 90s)", exp-iat)
	}

	// The token as an argument, and claims from standard input, with JSON output.
	if got := mustRun(t, "", "jwt", "verify", strings.TrimSpace(token)); got != out {
		t.Errorf("signerctl jwt verify TOKEN = %q, want %q", got, out)
	}
	var verified struct {
		Claims map[string]any `json:"claims"`
		Kid    string         `json:"kid"`
		Key    string         `json:"key"`
	}
	if js := mustRun(t, token, "jwt", "verify", "--json"); json.Unmarshal([]byte(js), &verified) != nil ||
		verified.Claims["sub"] != "x" || verified.Kid != kid || verified.Key != "es256" {
		t.Errorf("signerctl jwt verify --json = %q, want claims with sub x, kid %q, key es256", js, kid)
	}
	js := mustRun(t, `{"sub":"y"}`, "jwt", "sign", "--key", "es256", "--json")
	var signed struct {
		Token     string `json:"token"`
		Kid       string `json:"kid"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal([]byte(js), &signed); err != nil {
		t.Fatalf("signerctl jwt sign --json = %q, not JSON: %v", js, err)
	}
	if signed.Kid != kid || signed.Token == "" {
		t.Errorf("signerctl jwt sign --json = kid %q, token %q, want kid %q and a token", signed.Kid, signed.Token, kid)
	}
	if _, err := time.Parse(time.RFC3339, signed.ExpiresAt); err != nil {
		t.Errorf("signerctl jwt sign --json expires_at = %q, want RFC 3339: %v", signed.ExpiresAt, err)
	}

	// A token whose signature was tampered with is refused with the server's reason.
	parts := strings.Split(strings.TrimSpace(token), ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("token signature %q: %v", parts[2], err)
	}
	sig[0] ^= 1
	parts[2] = base64.RawURLEncoding.EncodeToString(sig)
	r := signerctl(t, strings.Join(parts, "."), "jwt", "verify")
	if r.code != cli.ExitFailure || r.stdout != "" || !strings.HasPrefix(r.stderr, "signerctl: jwt verify: Unauthenticated: ") {
		t.Errorf("signerctl jwt verify (tampered) = exit %d, stdout %q, stderr %q, want exit 1 and an Unauthenticated error", r.code, r.stdout, r.stderr)
	}
}

func TestPubkey(t *testing.T) {
	srv := setup(t, jose.ES384)
	k, _ := srv.Ring.Snapshot().Key("es384")
	pub := publicKey(t, "es384")
	if !k.Active.Public.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
		t.Errorf("signerctl pubkey = %v, want the active version's public key", pub)
	}
	out := mustRun(t, "", "pubkey", "--key", "es384", "--jwk", "--kid", k.Active.Kid)
	var jwk jose.JWK
	if err := json.Unmarshal([]byte(out), &jwk); err != nil {
		t.Fatalf("signerctl pubkey --jwk = %q, not JSON: %v", out, err)
	}
	if jwk != k.Active.JWK {
		t.Errorf("signerctl pubkey --jwk = %+v, want %+v", jwk, k.Active.JWK)
	}
}

func TestKeys(t *testing.T) {
	srv := setup(t, jose.ES256, jose.EdDSA)
	snap := srv.Ring.Snapshot()
	out := mustRun(t, "", "keys")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || strings.Fields(lines[0])[0] != "KEY" {
		t.Fatalf("signerctl keys = %q, want a header and two keys", out)
	}
	for i, name := range []string{"eddsa", "es256"} {
		k, _ := snap.Key(name)
		want := []string{name, string(k.Alg), k.Active.Kid}
		if got := strings.Fields(lines[i+1]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("signerctl keys line %d = %q, want %q", i+1, got, want)
		}
	}
	out = mustRun(t, "", "keys", "--json")
	var keys []keyJSON
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("signerctl keys --json = %q, not JSON: %v", out, err)
	}
	if len(keys) != 2 || keys[1].Name != "es256" || len(keys[1].Versions) != 1 || keys[1].Versions[0].State != "active" {
		t.Errorf("signerctl keys --json = %+v, want eddsa and es256, each with one active version", keys)
	}
}

func TestJWKS(t *testing.T) {
	srv := setup(t, jose.ES256, jose.PS256)
	var set jose.JWKS
	for _, v := range srv.Ring.Snapshot().Publishable() {
		set.Keys = append(set.Keys, v.JWK)
	}
	leaf, err := srv.CA.Issue(devca.Request{CommonName: "jwks", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	t.Setenv(envJWKSURL, hs.URL+"/.well-known/jwks.json")

	out := mustRun(t, "", "jwks")
	var got jose.JWKS
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("signerctl jwks = %q, not JSON: %v", out, err)
	}
	if len(got.Keys) != 2 || got.Keys[0] != set.Keys[0] || got.Keys[1] != set.Keys[1] {
		t.Errorf("signerctl jwks = %+v, want %+v", got, set)
	}
	if !strings.Contains(out, "\n  \"keys\": [") {
		t.Errorf("signerctl jwks = %q, want it pretty-printed", out)
	}

	foreign, err := devca.New("foreign", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignFile := filepath.Join(t.TempDir(), "foreign.pem")
	if err := os.WriteFile(foreignFile, foreign.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"flag URL", []string{"jwks", "--url", hs.URL}, cli.ExitOK},
		{"http URL", []string{"jwks", "--url", strings.Replace(hs.URL, "https:", "http:", 1)}, cli.ExitUsage},
		{"untrusted server", []string{"--cacert", foreignFile, "jwks"}, cli.ExitFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := signerctl(t, "", tt.args...); r.code != tt.code {
				t.Errorf("signerctl %q = exit %d, stderr %q, want exit %d", tt.args, r.code, r.stderr, tt.code)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	srv := setup(t, jose.ES256, jose.EdDSA)
	strangerCert, strangerKey := srv.IssueClient(t, "stranger")
	foreign, err := devca.New("foreign", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignFile := filepath.Join(t.TempDir(), "foreign.pem")
	if err := os.WriteFile(foreignFile, foreign.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	digest := strings.Repeat("ab", 32)
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		stdin  string
		code   int
		stderr string // prefix of the one-line error
	}{
		{"missing key", nil, []string{"sign", "--key", "missing", "--digest", digest}, "", cli.ExitFailure, `signerctl: sign: NotFound: key "missing" does not exist`},
		{"identity not granted", nil, []string{"--cert", strangerCert, "--key", strangerKey, "sign", "--key", "es256", "--digest", digest}, "", cli.ExitFailure, "signerctl: sign: PermissionDenied: "},
		{"server not trusted", nil, []string{"--cacert", foreignFile, "keys"}, "", cli.ExitFailure, "signerctl: keys: Unavailable: "},
		{"short digest", nil, []string{"sign", "--key", "es256", "--digest", "abcd"}, "", cli.ExitFailure, "signerctl: sign: InvalidArgument: "},
		{"digest for EdDSA", nil, []string{"sign", "--key", "eddsa", "--digest", digest}, "", cli.ExitFailure, "signerctl: sign: InvalidArgument: "},
		{"malformed signature", nil, []string{"verify", "--key", "es256", "--signature", "AAAA", "--digest", digest}, "", cli.ExitFailure, "signerctl: verify: InvalidArgument: "},
		{"unknown kid", nil, []string{"pubkey", "--key", "es256", "--kid", "nope"}, "", cli.ExitFailure, "signerctl: pubkey: NotFound: "},
		{"message too large", nil, []string{"sign", "--key", "es256"}, strings.Repeat("x", maxInput+1), cli.ExitFailure, "signerctl: sign: read standard input: more than 64 KiB"},
		{"claims not an object", nil, []string{"jwt", "sign", "--key", "es256", "--claims", "[1]"}, "", cli.ExitFailure, "signerctl: jwt sign: claims: not a JSON object"},
		{"digest not hex", nil, []string{"sign", "--key", "es256", "--digest", "zz"}, "", cli.ExitUsage, "signerctl: sign: --digest: not hex"},
		{"digest and file", nil, []string{"sign", "--key", "es256", "--digest", digest, "--message-file", os.DevNull}, "", cli.ExitUsage, "signerctl: sign: give --digest or --message-file"},
		{"no key name", nil, []string{"sign", "--digest", digest}, "", cli.ExitUsage, "signerctl: sign: --key is required"},
		{"no signature", nil, []string{"verify", "--key", "es256", "--digest", digest}, "", cli.ExitUsage, "signerctl: verify: --signature is required"},
		{"bad format", nil, []string{"sign", "--key", "es256", "--format", "pem"}, "", cli.ExitUsage, `signerctl: sign: --format "pem"`},
		{"fractional ttl", nil, []string{"jwt", "sign", "--key", "es256", "--claims", "{}", "--ttl", "1.5s"}, "", cli.ExitUsage, "signerctl: jwt sign: --ttl 1.5s"},
		{"unknown flag", nil, []string{"keys", "--nope"}, "", cli.ExitUsage, "signerctl: keys: flag provided but not defined: -nope"},
		{"unknown command", nil, []string{"frobnicate"}, "", cli.ExitUsage, `signerctl: unknown command "frobnicate"`},
		{"jwt without subcommand", nil, []string{"jwt"}, "", cli.ExitUsage, "signerctl: jwt: want sign or verify"},
		{"no token", nil, []string{"jwt", "verify"}, " \n", cli.ExitUsage, "signerctl: jwt verify: no token"},
		{"no address", map[string]string{envAddr: ""}, []string{"keys"}, "", cli.ExitUsage, "signerctl: keys: no addr: set SIGNERD_ADDR or give --addr"},
		{"flag overrides environment", map[string]string{envAddr: "127.0.0.1:1"}, []string{"--addr", srv.Addr, "keys"}, "", cli.ExitOK, ""},
		{"server down", map[string]string{envAddr: "127.0.0.1:1"}, []string{"--timeout", "5s", "keys"}, "", cli.ExitFailure, "signerctl: keys: Unavailable: "},
		{"no JWKS URL", nil, []string{"jwks"}, "", cli.ExitUsage, "signerctl: jwks: no JWKS URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			r := signerctl(t, tt.stdin, tt.args...)
			if r.code != tt.code {
				t.Errorf("signerctl %q = exit %d, stderr %q, want exit %d", tt.args, r.code, r.stderr, tt.code)
			}
			if tt.code == cli.ExitOK {
				return
			}
			if !strings.HasPrefix(r.stderr, tt.stderr) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("signerctl %q stderr = %q, want one line starting %q", tt.args, r.stderr, tt.stderr)
			}
			if r.stdout != "" {
				t.Errorf("signerctl %q stdout = %q, want nothing", tt.args, r.stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string // in stdout for exit 0, stderr otherwise
	}{
		{[]string{"-h"}, cli.ExitOK, "usage: signerctl [connection flags] COMMAND [flags]"},
		{[]string{"--help"}, cli.ExitOK, "jwt verify"},
		{[]string{"help"}, cli.ExitOK, "SIGNERD_CACERT"},
		{[]string{"sign", "-h"}, cli.ExitOK, "usage: signerctl [connection flags] sign --key NAME"},
		{[]string{"jwt", "sign", "--help"}, cli.ExitOK, "-claims-file"},
		{[]string{"jwt", "verify", "-h"}, cli.ExitOK, "-audience"},
		{[]string{"-h"}, cli.ExitOK, "keys destroy"},
		{[]string{"-h"}, cli.ExitOK, "SIGNERD_ADMIN_CERT"},
		{[]string{"keys", "help"}, cli.ExitOK, "keys rotate"},
		{[]string{"keys", "-h"}, cli.ExitOK, "usage: signerctl [connection flags] keys [--all] [--json]"},
		{[]string{"keys", "list", "-h"}, cli.ExitOK, "-all"},
		{[]string{"keys", "create", "-h"}, cli.ExitOK, "-rotation-period"},
		{[]string{"keys", "rotate", "--help"}, cli.ExitOK, "-emergency"},
		{[]string{"keys", "destroy", "-h"}, cli.ExitOK, "usage: signerctl [connection flags] keys destroy --name NAME --version N"},
		{nil, cli.ExitUsage, "usage: signerctl"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := signerctl(t, "", tt.args...)
			out := r.stdout
			if tt.code != cli.ExitOK {
				out = r.stderr
			}
			if r.code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("signerctl %q = exit %d, stdout %q, stderr %q, want exit %d and %q", tt.args, r.code, r.stdout, r.stderr, tt.code, tt.want)
			}
		})
	}
}

// The command table is sound: each usage line names exactly the flags its command defines.
func TestCommands(t *testing.T) {
	p := cli.Program[runFunc]{Name: "signerctl", Commands: commands()}
	if err := p.Check(); err != nil {
		t.Error(err)
	}
}

// A server's message is printed on the failure's one line, whatever it holds.
func TestRPCErrorOneLine(t *testing.T) {
	err := rpcErr(status.Error(codes.Internal, "first\nsecond\t third"))
	if got, want := err.Error(), "Internal: first second third"; got != want {
		t.Errorf("rpcErr(...).Error() = %q, want %q", got, want)
	}
}
