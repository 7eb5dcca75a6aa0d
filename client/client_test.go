package client_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/client/clienttest"
	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// keyName is the name tests give the key of algorithm alg.
func keyName(alg jose.Algorithm) string {
	return strings.ToLower(string(alg))
}

// setup starts a server with one key per algorithm in algs and returns it with a Client dialled to it
// through the certificate files.
func setup(t *testing.T, algs ...jose.Algorithm) (*clienttest.Server, *client.Client) {
	t.Helper()
	srv := clienttest.NewServer(t, clienttest.DefaultPolicy())
	for _, alg := range algs {
		srv.CreateKey(t, keyName(alg), alg)
	}
	c, err := client.Dial(srv.Addr, client.Options{CACertFile: srv.CACertFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile})
	if err != nil {
		t.Fatalf("Dial(%q) = %v", srv.Addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return srv, c
}

// key returns the Key of algorithm alg, created by setup.
func key(t *testing.T, c *client.Client, alg jose.Algorithm) *client.Key {
	t.Helper()
	k, err := c.Key(t.Context(), keyName(alg))
	if err != nil {
		t.Fatalf("Key(%q) = %v", keyName(alg), err)
	}
	return k
}

func TestKeySign(t *testing.T) {
	algs := jose.Algorithms()
	_, c := setup(t, algs...)
	msg := []byte("signed by signerd")
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := key(t, c, alg)
			if k.Alg() != alg || k.Name() != keyName(alg) || k.Version() != 1 {
				t.Errorf("Key(%q) = %s %q version %d, want %s %q version 1", keyName(alg), k.Alg(), k.Name(), k.Version(), alg, keyName(alg))
			}
			if kid, err := jose.Thumbprint(k.Public()); err != nil || kid != k.Kid() {
				t.Errorf("Thumbprint(Public()) = %q, %v, want Kid() %q", kid, err, k.Kid())
			}
			digest := alg.Digest(msg)
			sig, err := k.Sign(rand.Reader, digest, alg.SignerOpts())
			if err != nil {
				t.Fatalf("Sign(%s) = %v", alg, err)
			}
			if err := alg.Verify(k.Public(), digest, sig); err != nil {
				t.Errorf("Verify(Sign(%s)) = %v, want nil", alg, err)
			}
			// The server agrees: the signature is the crypto.Signer (DER) form it verifies by default.
			resp, err := c.Signer().Verify(t.Context(), &signerv1.VerifyRequest{
				Key: k.Name(), Input: &signerv1.VerifyRequest_Message{Message: msg}, Signature: sig,
			})
			if err != nil || !resp.GetValid() || resp.GetKid() != k.Kid() {
				t.Errorf("Verify RPC(%s) = %v, %v, want valid with kid %s", alg, resp, err, k.Kid())
			}
		})
	}
}

func TestKeySignOpts(t *testing.T) {
	_, c := setup(t, jose.ES256, jose.PS256, jose.RS256, jose.EdDSA)
	d256 := make([]byte, 32)
	d384 := make([]byte, 48)
	tests := []struct {
		name   string
		alg    jose.Algorithm
		digest []byte
		opts   crypto.SignerOpts
		ok     bool
	}{
		{"ES256 SHA-256", jose.ES256, d256, crypto.SHA256, true},
		{"ES256 nil opts", jose.ES256, d256, nil, false},
		{"ES256 SHA-384", jose.ES256, d384, crypto.SHA384, false},
		{"ES256 short digest", jose.ES256, d256[:20], crypto.SHA256, false},
		{"ES256 PSS options", jose.ES256, d256, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, false},
		{"PS256 salt equals hash", jose.PS256, d256, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, true},
		{"PS256 salt 32", jose.PS256, d256, &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}, true},
		{"PS256 salt auto", jose.PS256, d256, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256}, false},
		{"PS256 salt 20", jose.PS256, d256, &rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256}, false},
		{"PS256 PKCS1v15", jose.PS256, d256, crypto.SHA256, false},
		{"PS256 PSS SHA-384", jose.PS256, d384, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}, false},
		{"RS256 PKCS1v15", jose.RS256, d256, crypto.SHA256, true},
		{"RS256 PSS", jose.RS256, d256, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, false},
		{"EdDSA pure", jose.EdDSA, []byte("message"), crypto.Hash(0), true},
		{"EdDSA options", jose.EdDSA, []byte("message"), &ed25519.Options{}, true},
		{"EdDSA ph", jose.EdDSA, make([]byte, 64), crypto.SHA512, false},
		{"EdDSA ctx", jose.EdDSA, []byte("message"), &ed25519.Options{Context: "ctx"}, false},
	}
	keys := map[jose.Algorithm]*client.Key{}
	for _, alg := range []jose.Algorithm{jose.ES256, jose.PS256, jose.RS256, jose.EdDSA} {
		keys[alg] = key(t, c, alg)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := keys[tt.alg]
			sig, err := k.SignContext(t.Context(), nil, tt.digest, tt.opts)
			if tt.ok {
				if err != nil {
					t.Fatalf("SignContext(%s, %v) = %v, want nil", tt.alg, tt.opts, err)
				}
				if err := tt.alg.Verify(k.Public(), tt.digest, sig); err != nil {
					t.Errorf("Verify(SignContext(%s, %v)) = %v, want nil", tt.alg, tt.opts, err)
				}
				return
			}
			if !errors.Is(err, client.ErrSignerOpts) {
				t.Errorf("SignContext(%s, %v) = %v, want ErrSignerOpts", tt.alg, tt.opts, err)
			}
		})
	}
}

func TestKeyCreateCertificate(t *testing.T) {
	tests := []struct {
		alg    jose.Algorithm
		sigAlg x509.SignatureAlgorithm
	}{
		{jose.ES256, x509.ECDSAWithSHA256},
		{jose.ES384, x509.ECDSAWithSHA384},
		{jose.PS256, x509.SHA256WithRSAPSS},
		{jose.EdDSA, x509.PureEd25519},
	}
	var algs []jose.Algorithm
	for _, tt := range tests {
		algs = append(algs, tt.alg)
	}
	_, c := setup(t, algs...)
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			k := key(t, c, tt.alg)
			cert := selfSigned(t, k, tt.sigAlg, nil)
			if cert.SignatureAlgorithm != tt.sigAlg {
				t.Errorf("SignatureAlgorithm = %v, want %v", cert.SignatureAlgorithm, tt.sigAlg)
			}
			if err := cert.CheckSignatureFrom(cert); err != nil {
				t.Errorf("CheckSignatureFrom(self) = %v, want nil", err)
			}
		})
	}
}

// selfSigned makes a CA certificate for key k, signed by k, valid for ips.
func selfSigned(t *testing.T, k *client.Key, sigAlg x509.SignatureAlgorithm, ips []net.IP) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "remote " + string(k.Alg())},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		SignatureAlgorithm:    sigAlg,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatalf("CreateCertificate(%s) = %v", k.Alg(), err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate() = %v", err)
	}
	return cert
}

// TestKeyTLS uses remote keys as the private key of a TLS 1.3 server.
func TestKeyTLS(t *testing.T) {
	tests := []struct {
		alg    jose.Algorithm
		sigAlg x509.SignatureAlgorithm
		scheme tls.SignatureScheme
	}{
		{jose.ES256, x509.ECDSAWithSHA256, tls.ECDSAWithP256AndSHA256},
		{jose.PS256, x509.SHA256WithRSAPSS, tls.PSSWithSHA256},
		{jose.EdDSA, x509.PureEd25519, tls.Ed25519},
	}
	var algs []jose.Algorithm
	for _, tt := range tests {
		algs = append(algs, tt.alg)
	}
	_, c := setup(t, algs...)
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			k := key(t, c, tt.alg)
			cert := selfSigned(t, k, tt.sigAlg, []net.IP{net.IPv4(127, 0, 0, 1)})
			roots := x509.NewCertPool()
			roots.AddCert(cert)
			serverCfg := &tls.Config{
				MinVersion: tls.VersionTLS13,
				Certificates: []tls.Certificate{{
					Certificate: [][]byte{cert.Raw}, PrivateKey: k, Leaf: cert,
					// The key signs with one scheme only: its algorithm is fixed.
					SupportedSignatureAlgorithms: []tls.SignatureScheme{tt.scheme},
				}},
			}
			clientCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "127.0.0.1"}
			state := handshake(t, serverCfg, clientCfg)
			if state.Version != tls.VersionTLS13 || len(state.PeerCertificates) == 0 || !state.PeerCertificates[0].Equal(cert) {
				t.Errorf("handshake(%s) = version %x, peer certificates %d, want TLS 1.3 with the remote key's certificate", tt.alg, state.Version, len(state.PeerCertificates))
			}
		})
	}
}

// handshake runs a TLS handshake between a server and a client over a real TCP connection on 127.0.0.1
// and returns the client's view of it.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) tls.ConnectionState {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatalf("tls.Listen() = %v", err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	serverErr := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer conn.Close()
		serverErr <- conn.(*tls.Conn).HandshakeContext(t.Context())
	}()
	d := tls.Dialer{Config: clientCfg}
	conn, err := d.DialContext(t.Context(), "tcp", lis.Addr().String())
	if err != nil {
		t.Fatalf("tls.Dial() = %v", err)
	}
	defer conn.Close()
	if err := <-serverErr; err != nil {
		t.Fatalf("server handshake = %v", err)
	}
	return conn.(*tls.Conn).ConnectionState()
}

func TestKeySigningMethod(t *testing.T) {
	algs := jose.Algorithms()
	_, c := setup(t, algs...)
	for _, alg := range algs {
		t.Run(string(alg), func(t *testing.T) {
			k := key(t, c, alg)
			if got := k.SigningMethod().Alg(); got != string(alg) {
				t.Errorf("SigningMethod().Alg() = %q, want %q", got, alg)
			}
			claims := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Minute).Unix()}
			signed, err := jwt.NewWithClaims(k.SigningMethod(), claims).SignedString(k)
			if err != nil {
				t.Fatalf("SignedString(%s) = %v", alg, err)
			}
			// golang-jwt's stock verifier, with the plain public key.
			tok, err := jwt.Parse(signed, func(*jwt.Token) (any, error) { return k.Public(), nil },
				jwt.WithValidMethods([]string{string(alg)}))
			if err != nil {
				t.Fatalf("jwt.Parse(%s token) = %v", alg, err)
			}
			if sub, _ := tok.Claims.GetSubject(); sub != "alice" {
				t.Errorf("jwt.Parse(%s token) sub = %q, want %q", alg, sub, "alice")
			}
			withKid, err := k.NewToken(claims).SignedString(k)
			if err != nil {
				t.Fatalf("NewToken(%s).SignedString = %v", alg, err)
			}
			tok, err = jwt.Parse(withKid, func(*jwt.Token) (any, error) { return k.Public(), nil })
			if err != nil || tok.Header["kid"] != k.Kid() {
				t.Errorf("jwt.Parse(NewToken(%s)) = kid %v, %v, want kid %q", alg, tok.Header["kid"], err, k.Kid())
			}
		})
	}
	// The signing method is never registered: parsers everywhere keep golang-jwt's own methods.
	if m := jwt.GetSigningMethod("ES256"); m != jwt.SigningMethodES256 {
		t.Errorf("jwt.GetSigningMethod(%q) = %T, want the stock method", "ES256", m)
	}
}

func TestKeyRotated(t *testing.T) {
	srv, c := setup(t, jose.ES256)
	old := key(t, c, jose.ES256)
	srv.Rotate(t, keyName(jose.ES256))
	digest := sha256.Sum256([]byte("m"))
	if _, err := old.Sign(rand.Reader, digest[:], crypto.SHA256); !errors.Is(err, client.ErrKeyRotated) {
		t.Errorf("Sign() after rotation = %v, want ErrKeyRotated", err)
	}
	k := key(t, c, jose.ES256)
	if k.Kid() == old.Kid() || k.Version() != 2 {
		t.Errorf("Key() after rotation = kid %s version %d, want a new kid and version 2", k.Kid(), k.Version())
	}
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign() with the new version = %v", err)
	}
	if err := jose.ES256.Verify(k.Public(), digest[:], sig); err != nil {
		t.Errorf("Verify(new version) = %v, want nil", err)
	}
}

func TestKeyErrors(t *testing.T) {
	srv, c := setup(t, jose.ES256)
	otherCert, otherKey := srv.IssueClient(t, "stranger")
	stranger, err := client.Dial(srv.Addr, client.Options{CACertFile: srv.CACertFile, CertFile: otherCert, KeyFile: otherKey})
	if err != nil {
		t.Fatalf("Dial(stranger) = %v", err)
	}
	t.Cleanup(func() { _ = stranger.Close() })
	foreignCA, err := devca.New("foreign", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignRoots := srv.ClientTLS.Clone()
	foreignRoots.RootCAs = foreignCA.Pool()
	distrustful, err := client.Dial(srv.Addr, client.Options{TLSConfig: foreignRoots})
	if err != nil {
		t.Fatalf("Dial(foreign roots) = %v", err)
	}
	t.Cleanup(func() { _ = distrustful.Close() })

	tests := []struct {
		name string
		c    *client.Client
		key  string
		want codes.Code
	}{
		{"missing key", c, "missing", codes.NotFound},
		{"empty name", c, "", codes.InvalidArgument},
		{"not granted", stranger, keyName(jose.ES256), codes.PermissionDenied},
		{"server not trusted", distrustful, keyName(jose.ES256), codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.Key(t.Context(), tt.key)
			if got := status.Code(err); got != tt.want {
				t.Errorf("Key(%q) = %v, want code %v", tt.key, err, tt.want)
			}
		})
	}
}

func TestDial(t *testing.T) {
	srv := clienttest.NewServer(t, clienttest.DefaultPolicy())
	srv.CreateKey(t, "k", jose.ES256)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := client.Options{CACertFile: srv.CACertFile, CertFile: srv.CertFile, KeyFile: srv.KeyFile}
	withCA := func(name string) client.Options { o := files; o.CACertFile = name; return o }
	// A TLS configuration that allows TLS 1.2 is raised to 1.3 and gets its ServerName from the address.
	lax := srv.ClientTLS.Clone()
	lax.MinVersion = tls.VersionTLS12
	tests := []struct {
		name string
		addr string
		opts client.Options
		ok   bool
	}{
		{"files", srv.Addr, files, true},
		{"TLS config", srv.Addr, client.Options{TLSConfig: lax}, true},
		{"TLS config wins over files", srv.Addr, client.Options{TLSConfig: srv.ClientTLS, CACertFile: notPEM}, true},
		{"dns target", "dns:///" + srv.Addr, files, true},
		{"no options", srv.Addr, client.Options{}, false},
		{"no key file", srv.Addr, client.Options{CACertFile: srv.CACertFile, CertFile: srv.CertFile}, false},
		{"CA file missing", srv.Addr, withCA(filepath.Join(dir, "missing.pem")), false},
		{"CA file not PEM", srv.Addr, withCA(notPEM), false},
		{"address without port", "127.0.0.1", files, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.Dial(tt.addr, tt.opts)
			if !tt.ok {
				if err == nil {
					_ = c.Close()
					t.Fatalf("Dial(%q, %s) = nil error, want an error", tt.addr, tt.name)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial(%q, %s) = %v, want nil", tt.addr, tt.name, err)
			}
			defer c.Close()
			if _, err := c.Key(t.Context(), "k"); err != nil {
				t.Errorf("Key(%q) over %s = %v, want nil", "k", tt.name, err)
			}
		})
	}
}

func TestSignTimeout(t *testing.T) {
	srv, _ := setup(t, jose.ES256)
	c, err := client.Dial(srv.Addr, client.Options{TLSConfig: srv.ClientTLS, Timeout: time.Nanosecond})
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	defer c.Close()
	k, err := c.Key(context.Background(), keyName(jose.ES256))
	if err != nil {
		t.Fatalf("Key() = %v", err)
	}
	digest := sha256.Sum256([]byte("m"))
	if _, err := k.Sign(rand.Reader, digest[:], crypto.SHA256); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Sign() with a 1ns timeout = %v, want code DeadlineExceeded", err)
	}
}
