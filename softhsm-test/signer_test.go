package softhsmtest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

func publicKey(t *testing.T, c signerv1.SignerClient, key string) (*signerv1.GetPublicKeyResponse, crypto.PublicKey) {
	t.Helper()
	resp, err := c.GetPublicKey(ctxT(t), &signerv1.GetPublicKeyRequest{Key: key})
	if err != nil {
		t.Fatalf("GetPublicKey(%q) = %v", key, err)
	}
	block, _ := pem.Decode([]byte(resp.GetPublicKeyPem()))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("GetPublicKey(%q) PEM = %q, want a PUBLIC KEY block", key, resp.GetPublicKeyPem())
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return resp, pub
}

// TestSignEveryAlgorithm signs a message and a digest with every key over mTLS and checks the signatures
// with Go's own verifiers, independently of signerd's code, and with the Verify RPC.
func TestSignEveryAlgorithm(t *testing.T) {
	in := startInstance(t, instanceOptions{})
	c := in.dial(t, in.svc)
	msg := []byte("the quick brown fox")
	for name, algName := range keyAlgs {
		t.Run(name, func(t *testing.T) {
			alg := jose.Algorithm(algName)
			pk, pub := publicKey(t, c, name)
			if pk.GetAlg() != algName {
				t.Errorf("GetPublicKey(%q).Alg = %q, want %q", name, pk.GetAlg(), algName)
			}
			if kid, _ := jose.Thumbprint(pub); kid != pk.GetKid() {
				t.Errorf("kid = %q, want RFC 7638 thumbprint %q", pk.GetKid(), kid)
			}
			reqs := []*signerv1.SignRequest{{Key: name, Input: &signerv1.SignRequest_Message{Message: msg}}}
			if alg != jose.EdDSA {
				reqs = append(reqs, &signerv1.SignRequest{Key: name, Input: &signerv1.SignRequest_Digest{Digest: alg.Digest(msg)}})
			}
			for _, req := range reqs {
				resp, err := c.Sign(ctxT(t), req)
				if err != nil {
					t.Fatalf("Sign(%q) = %v", name, err)
				}
				if resp.GetKid() != pk.GetKid() || resp.GetAlg() != algName || resp.GetVersion() != 1 {
					t.Errorf("Sign(%q) = kid %q alg %q version %d, want %q %q 1", name, resp.GetKid(), resp.GetAlg(), resp.GetVersion(), pk.GetKid(), algName)
				}
				if !stdlibVerify(pub, alg, msg, resp.GetSignature()) {
					t.Fatalf("Sign(%q) signature does not verify with the standard library", name)
				}
				v, err := c.Verify(ctxT(t), &signerv1.VerifyRequest{Key: name, Input: &signerv1.VerifyRequest_Message{Message: msg}, Signature: resp.GetSignature()})
				if err != nil || !v.GetValid() || v.GetKid() != pk.GetKid() {
					t.Errorf("Verify(%q) = %v, %v; want valid with kid %q", name, v, err, pk.GetKid())
				}
			}
			// A signature over another message is well-formed but invalid.
			resp, _ := c.Sign(ctxT(t), &signerv1.SignRequest{Key: name, Input: &signerv1.SignRequest_Message{Message: []byte("other")}})
			v, err := c.Verify(ctxT(t), &signerv1.VerifyRequest{Key: name, Input: &signerv1.VerifyRequest_Message{Message: msg}, Signature: resp.GetSignature()})
			if err != nil || v.GetValid() {
				t.Errorf("Verify(%q, wrong message) = %v, %v; want valid=false", name, v, err)
			}
			if alg.KeyType() == jose.KeyEC {
				j, err := c.Sign(ctxT(t), &signerv1.SignRequest{Key: name, Input: &signerv1.SignRequest_Message{Message: msg}, Format: signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE})
				if err != nil {
					t.Fatal(err)
				}
				if want := 2 * jose.CurveSize(alg.Curve()); len(j.GetSignature()) != want {
					t.Errorf("Sign(%q, JOSE) is %d bytes, want %d", name, len(j.GetSignature()), want)
				}
				v, err := c.Verify(ctxT(t), &signerv1.VerifyRequest{Key: name, Input: &signerv1.VerifyRequest_Message{Message: msg},
					Signature: j.GetSignature(), Format: signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE})
				if err != nil || !v.GetValid() {
					t.Errorf("Verify(%q, JOSE) = %v, %v; want valid", name, v, err)
				}
			}
		})
	}
}

func stdlibVerify(pub crypto.PublicKey, alg jose.Algorithm, msg, sig []byte) bool {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if alg.IsPSS() {
			return rsa.VerifyPSS(k, alg.Hash(), alg.Digest(msg), sig, &rsa.PSSOptions{SaltLength: alg.Hash().Size()}) == nil
		}
		return rsa.VerifyPKCS1v15(k, alg.Hash(), alg.Digest(msg), sig) == nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, alg.Digest(msg), sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	}
	return false
}

// TestMutualTLS checks who gets in: no client certificate and a certificate from another CA fail the
// handshake; an identity without a grant gets PermissionDenied, identical for existing and missing keys.
func TestMutualTLS(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "ed": "EdDSA"}})
	req := func(key string) *signerv1.SignRequest {
		return &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	}
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	// The server aborts the handshake; the client sees "certificate required" or, if it was already
	// writing, a broken pipe: either way the connection never carries a call.
	if _, err := in.dial(t, nil).Sign(short(), req("es256")); status.Code(err) != codes.Unavailable {
		t.Errorf("Sign without client certificate = %v, want a failed handshake (Unavailable)", err)
	}
	otherCA, _ := devca.New("other CA", time.Hour)
	stranger := issue(t, otherCA, devca.Request{CommonName: "spiffe-less", URIs: []string{"spiffe://test/svc"}, Client: true})
	if _, err := in.dial(t, stranger).Sign(short(), req("es256")); status.Code(err) != codes.Unavailable {
		t.Errorf("Sign with another CA's certificate = %v, want a failed handshake (Unavailable)", err)
	}

	limited := in.dial(t, in.limited)
	if _, err := limited.Sign(short(), req("es256")); err != nil {
		t.Fatalf("limited Sign(es256) = %v, want success", err)
	}
	denied := map[string]error{}
	for _, key := range []string{"ed", "does-not-exist"} {
		_, err := limited.Sign(short(), req(key))
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("limited Sign(%q) = %v, want PermissionDenied", key, err)
		}
		denied[key] = err
	}
	// The refusal must not tell an existing key from a missing one beyond echoing the name asked for.
	a := strings.ReplaceAll(status.Convert(denied["ed"]).Message(), `"ed"`, "KEY")
	b := strings.ReplaceAll(status.Convert(denied["does-not-exist"]).Message(), `"does-not-exist"`, "KEY")
	if a != b {
		t.Errorf("PermissionDenied messages differ for existing and missing keys: %q vs %q", a, b)
	}
	if _, err := limited.Verify(short(), &signerv1.VerifyRequest{Key: "es256", Input: &signerv1.VerifyRequest_Message{Message: []byte("m")}, Signature: []byte{1}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("limited Verify(es256) = %v, want PermissionDenied (grant is sign only)", err)
	}
	keys, err := limited.ListKeys(short(), &signerv1.ListKeysRequest{})
	if err != nil || len(keys.GetKeys()) != 1 || keys.GetKeys()[0].GetName() != "es256" {
		t.Errorf("limited ListKeys = %v, %v; want only es256", keys, err)
	}
}

// TestBadInput sends every kind of bad request and checks its exact status, then that the daemon still
// signs and reports healthy.
func TestBadInput(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256", "ed": "EdDSA"}})
	c := in.dial(t, in.svc)
	d32 := sha256.Sum256([]byte("m"))
	msg := func(key string, m []byte) *signerv1.SignRequest {
		return &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Message{Message: m}}
	}
	dig := func(key string, d []byte) *signerv1.SignRequest {
		return &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Digest{Digest: d}}
	}
	good, err := c.Sign(ctxT(t), msg("es256", []byte("m")))
	if err != nil {
		t.Fatal(err)
	}
	ver := func(key string, sig []byte, format signerv1.SignatureFormat) *signerv1.VerifyRequest {
		return &signerv1.VerifyRequest{Key: key, Input: &signerv1.VerifyRequest_Message{Message: []byte("m")}, Signature: sig, Format: format}
	}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"sign empty key", func() error { _, err := c.Sign(ctxT(t), msg("", []byte("m"))); return err }, codes.InvalidArgument},
		{"sign unknown key", func() error { _, err := c.Sign(ctxT(t), msg("nope", []byte("m"))); return err }, codes.NotFound},
		{"sign bad key name", func() error { _, err := c.Sign(ctxT(t), msg("Bad_Name", []byte("m"))); return err }, codes.PermissionDenied},
		{"sign short digest", func() error { _, err := c.Sign(ctxT(t), dig("es256", d32[:20])); return err }, codes.InvalidArgument},
		{"sign long digest", func() error { _, err := c.Sign(ctxT(t), dig("rs256", append(d32[:], 0))); return err }, codes.InvalidArgument},
		{"sign neither digest nor message", func() error { _, err := c.Sign(ctxT(t), &signerv1.SignRequest{Key: "es256"}); return err }, codes.InvalidArgument},
		{"sign empty message is fine", func() error { _, err := c.Sign(ctxT(t), msg("es256", nil)); return err }, codes.OK},
		{"sign message over cap", func() error { _, err := c.Sign(ctxT(t), msg("es256", make([]byte, 64<<10+1))); return err }, codes.InvalidArgument},
		{"sign message at cap", func() error { _, err := c.Sign(ctxT(t), msg("ed", make([]byte, 64<<10))); return err }, codes.OK},
		{"sign digest for EdDSA", func() error { _, err := c.Sign(ctxT(t), dig("ed", d32[:])); return err }, codes.InvalidArgument},
		{"sign unknown format", func() error {
			r := msg("es256", []byte("m"))
			r.Format = 9
			_, err := c.Sign(ctxT(t), r)
			return err
		}, codes.InvalidArgument},
		{"sign oversize request", func() error { _, err := c.Sign(ctxT(t), msg("es256", make([]byte, 1<<20))); return err }, codes.ResourceExhausted},
		{"verify malformed DER", func() error { _, err := c.Verify(ctxT(t), ver("es256", []byte{0x30, 0x01}, 0)); return err }, codes.InvalidArgument},
		{"verify empty signature", func() error { _, err := c.Verify(ctxT(t), ver("es256", nil, 0)); return err }, codes.InvalidArgument},
		{"verify wrong-length JOSE", func() error {
			_, err := c.Verify(ctxT(t), ver("es256", make([]byte, 63), signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE))
			return err
		}, codes.InvalidArgument},
		{"verify wrong-length RSA", func() error { _, err := c.Verify(ctxT(t), ver("rs256", make([]byte, 100), 0)); return err }, codes.InvalidArgument},
		{"verify wrong-length Ed25519", func() error { _, err := c.Verify(ctxT(t), ver("ed", make([]byte, 63), 0)); return err }, codes.InvalidArgument},
		{"verify unknown kid", func() error {
			r := ver("es256", good.GetSignature(), 0)
			r.Kid = "no-such-kid"
			_, err := c.Verify(ctxT(t), r)
			return err
		}, codes.NotFound},
		{"verify digest of wrong length", func() error {
			_, err := c.Verify(ctxT(t), &signerv1.VerifyRequest{Key: "es256", Input: &signerv1.VerifyRequest_Digest{Digest: d32[:5]}, Signature: good.GetSignature()})
			return err
		}, codes.InvalidArgument},
		{"public key of unknown key", func() error {
			_, err := c.GetPublicKey(ctxT(t), &signerv1.GetPublicKeyRequest{Key: "nope"})
			return err
		}, codes.NotFound},
		{"public key of unknown kid", func() error {
			_, err := c.GetPublicKey(ctxT(t), &signerv1.GetPublicKeyRequest{Key: "es256", Kid: "x"})
			return err
		}, codes.NotFound},
		{"public key with empty name", func() error { _, err := c.GetPublicKey(ctxT(t), &signerv1.GetPublicKeyRequest{}); return err }, codes.InvalidArgument},
		{"sign with expired deadline", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
			defer cancel()
			time.Sleep(time.Millisecond)
			_, err := c.Sign(ctx, msg("es256", []byte("m")))
			return err
		}, codes.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Errorf("%s: code %v, want %v", tc.name, got, tc.want)
			}
		})
	}
	// The caller is told what is wrong in words of the API, not of Go's encoding/asn1.
	_, err = c.Verify(ctxT(t), ver("es256", []byte{0x30, 0x01}, 0))
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "not a DER SEQUENCE of two INTEGERs") || strings.Contains(msg, "asn1") {
		t.Errorf("Verify(malformed DER) message = %q, want it to say the signature is not a DER SEQUENCE of two INTEGERs, without asn1's words", msg)
	}
	// After all of that the daemon still signs, verifies and reports SERVING.
	resp, err := c.Sign(ctxT(t), msg("rs256", []byte("still alive")))
	if err != nil {
		t.Fatalf("Sign after bad input = %v", err)
	}
	_, pub := publicKey(t, c, "rs256")
	if !stdlibVerify(pub, jose.RS256, []byte("still alive"), resp.GetSignature()) {
		t.Error("signature after bad input does not verify")
	}
	h, err := healthpb.NewHealthClient(in.conn(t, in.svc)).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: "signer.v1.Signer"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health after bad input = %v, %v; want SERVING", h, err)
	}
}

// TestConcurrentSignsShareSessions runs ten times more concurrent requests than the daemon has sessions
// (max_sessions 3): all succeed, waiting their turn in the daemon. (A request whose deadline passes while
// it waits is server's TestDeadlineWhileWaitingForSlot.)
func TestConcurrentSignsShareSessions(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"}, maxSessions: 3})
	c := in.dial(t, in.svc)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := c.Sign(ctxT(t), &signerv1.SignRequest{Key: "es256", Input: &signerv1.SignRequest_Message{Message: []byte("x")}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Sign = %v", err)
	}
}

// TestMisconfiguration starts signerd with broken configurations: each fails at start with a message
// naming the field or part at fault, and never printing the PIN.
func TestMisconfiguration(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"}})
	good, err := os.ReadFile(in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	wrongPIN := filepath.Join(in.dir, "wrong-pin")
	if err := os.WriteFile(wrongPIN, []byte("0000000000000000"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(string) string
		want string
	}{
		{"unknown field", func(s string) string { return s + "listne: x\n" }, "field listne not found"},
		{"missing CA file", func(s string) string { return strings.Replace(s, "/ca.pem", "/missing-ca.pem", 1) }, "tls.client_ca_file"},
		{"wrong PIN", func(s string) string { return strings.Replace(s, in.dir+"/pin", wrongPIN, 1) }, "wrong PIN"},
		{"unknown token", func(s string) string { return strings.Replace(s, "token_label: e2e", "token_label: nosuch", 1) }, `label "nosuch"`},
		{"grant for missing key", func(s string) string {
			return strings.Replace(s, "keys: [es256]\n      operations: [sign]\n", "keys: [ghost]\n      operations: [sign]\n", 1)
		}, `policy.grants[1].keys[0]`},
		{"raw signing with a key under jwt rules", func(s string) string {
			return strings.Replace(s, "      operations: [sign]\n", "      operations: [sign]\n    - identity: issuer.test\n      keys: [es256]\n      operations: [sign_jwt]\n      jwt:\n        max_ttl: 5m\n", 1)
		}, `policy.grants[2]: key "es256" may sign raw data`},
		{"pin in config", func(s string) string { return strings.Replace(s, "  pin_file:", "  pin: \"1234\"\n  pin_file:", 1) }, "field pin not found"},
		{"no pin source", func(s string) string { return strings.Replace(s, "  pin_file: "+in.dir+"/pin\n", "", 1) }, "pin_file or pin_env (or unseal_socket, for a sealed start) is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "bad.yaml")
			writeConfig(t, cfg, tc.edit(string(good)))
			out, err := signerd(t, nil, "serve", "--config", cfg)
			if err == nil {
				t.Fatalf("signerd serve (%s) succeeded, want failure", tc.name)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("signerd serve (%s) output %q, want it to contain %q", tc.name, out, tc.want)
			}
			if strings.Contains(out, in.tok.PIN) || strings.Contains(out, "0000000000000000") {
				t.Errorf("signerd serve (%s) printed a PIN: %q", tc.name, out)
			}
		})
	}
}

// TestKeysInTokenAreSensitive asks OpenSC's pkcs11-tool, independently of signerd, about every private
// key: sensitive, never extractable, limited to one mechanism, no decrypt/unwrap/derive. (pkcs11-tool
// refuses --read-object for private keys outright; hsm's TestPrivateValueUnreadable shows the token itself
// refusing CKA_VALUE and the private exponent with CKR_ATTRIBUTE_SENSITIVE.)
func TestKeysInTokenAreSensitive(t *testing.T) {
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		if os.Getenv(softhsmtest.RequireEnv) == "1" {
			t.Fatal("pkcs11-tool (opensc) is required: apt-get install opensc")
		}
		t.Skip("pkcs11-tool (opensc) not installed")
	}
	in := startInstance(t, instanceOptions{})
	p11 := func(args ...string) (string, error) {
		base := []string{"--module", in.tok.Module, "--token-label", in.tok.Label, "--login", "--pin", in.tok.PIN}
		cmd := exec.Command("pkcs11-tool", append(base, args...)...)
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+in.tok.Conf)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := p11("--list-objects", "--type", "privkey")
	if err != nil {
		t.Fatalf("pkcs11-tool --list-objects: %v\n%s", err, out)
	}
	objects := strings.Split(out, "Private Key Object")[1:]
	if len(objects) != len(keyAlgs) {
		t.Fatalf("pkcs11-tool lists %d private keys, want %d:\n%s", len(objects), len(keyAlgs), out)
	}
	for _, o := range objects {
		for _, want := range []string{"sensitive", "always sensitive", "never extractable", "Allowed mechanisms:"} {
			if !strings.Contains(o, want) {
				t.Errorf("private key object lacks %q:\n%s", want, o)
			}
		}
		if strings.Contains(o, "decrypt") || strings.Contains(o, "unwrap") || strings.Contains(o, "derive") {
			t.Errorf("private key object may decrypt/unwrap/derive:\n%s", o)
		}
	}
}

// TestDevCommand runs `signerd dev` as a newcomer would and uses only the files DIR/env names to sign
// with every dev key; a second start reuses the token and keys.
func TestDevCommand(t *testing.T) {
	softhsmtest.Require(t)
	dir := filepath.Join(t.TempDir(), "dev dir $HOME 'quoted'") // DIR/env must quote it for the shell
	var kids map[string]string
	for round := range 2 {
		cmd := exec.Command(signerdBin, "dev", "--dir", dir, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		cmd.Stderr = &stdout
		_ = os.Remove(filepath.Join(dir, "env"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		t.Cleanup(func() { // a failed round must not leave signerd dev running
			select {
			case <-exited:
			default:
				_ = cmd.Process.Kill()
			}
		})
		env := waitEnv(t, filepath.Join(dir, "env"), round, cmd, &stdout)
		got := map[string]string{}
		c := dialEnv(t, env)
		for _, key := range []string{"dev-es256", "dev-rs256", "dev-ps256", "dev-eddsa"} {
			resp, err := c.Sign(ctxT(t), &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Message{Message: []byte("hi")}})
			if err != nil {
				t.Fatalf("round %d: Sign(%q) via DIR/env = %v", round, key, err)
			}
			got[key] = resp.GetKid()
		}
		if round == 0 {
			// A second `signerd dev` on the same directory is refused, and leaves the first one's
			// certificates alone.
			out, err := exec.Command(signerdBin, "dev", "--dir", dir, "--addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "another signerd dev is running") {
				t.Errorf("second signerd dev on the same directory = %v\n%s", err, out)
			}
			if _, err := c.Sign(ctxT(t), &signerv1.SignRequest{Key: "dev-es256", Input: &signerv1.SignRequest_Message{Message: []byte("hi")}}); err != nil {
				t.Errorf("Sign after a second signerd dev was refused = %v", err)
			}
			// The shell pipe a newcomer would type, with nothing but DIR/env.
			pipe := exec.Command("sh", "-c", `. "$1/env" && "$2" jwt sign --key dev-es256 --claims '{"sub":"newcomer"}' | "$2" jwt verify`,
				"sh", dir, signerctlBin)
			out, err = pipe.CombinedOutput()
			if err != nil || !strings.Contains(string(out), `"sub":"newcomer"`) {
				t.Errorf("signerctl jwt sign | signerctl jwt verify = %v\n%s", err, out)
			}
			jwks := exec.Command("sh", "-c", `. "$1/env" && "$2" jwks`, "sh", dir, signerctlBin)
			if out, err := jwks.CombinedOutput(); err != nil || strings.Count(string(out), `"kid"`) != 4 {
				t.Errorf("signerctl jwks via SIGNERD_JWKS_URL = %v\n%s", err, out)
			}
		}
		_ = cmd.Process.Signal(os.Interrupt)
		err := cmd.Wait()
		close(exited)
		if err != nil {
			t.Errorf("signerd dev exit after interrupt = %v\n%s", err, stdout.String())
		}
		if round == 1 && len(kids) == 4 {
			for k, v := range kids {
				if got[k] != v {
					t.Errorf("second start: %s kid %s, want the reused %s", k, got[k], v)
				}
			}
		}
		kids = got
		if info, err := os.Stat(filepath.Join(dir, "pin")); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("DIR/pin = %v, %v; want mode 0600", info, err)
		}
		// The audit trail is one chain across restarts.
		if out, err := signerd(t, nil, "audit", "verify", filepath.Join(dir, "audit.log")); err != nil {
			t.Errorf("round %d: signerd audit verify DIR/audit.log = %v\n%s", round, err, out)
		}
	}
}
