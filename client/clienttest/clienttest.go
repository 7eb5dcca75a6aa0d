// Package clienttest runs a real signerd Signer service in the test process, for tests of code that
// talks to signerd: the client package, signerctl, and services built on them.
//
// The server is the production server package over software keys (keyringtest.MemoryStore), serving
// gRPC with mutual TLS 1.3 on 127.0.0.1 with certificates from a throwaway CA made for each test. Nothing
// is mocked: callers dial it exactly as they would dial a deployed signerd.
package clienttest

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/keyring/keyringtest"
	"github.com/signerd/signerd/server"
	"github.com/signerd/signerd/server/authz"
)

// Identity is the identity (subject CN) of the client certificate a Server issues for its callers.
const Identity = "svc"

// AdminIdentity is the administrator of DefaultPolicy, allowed to call KeyAdmin; issue its certificate
// with IssueClient.
const AdminIdentity = "admin"

// DefaultPolicy grants [Identity] every operation on every key, with the default JWT rules, and makes
// [AdminIdentity] an administrator.
func DefaultPolicy() authz.Policy {
	return authz.Policy{Admins: []string{AdminIdentity},
		Grants: []authz.Grant{{Identity: Identity, Keys: []string{"*"}, Operations: authz.Ops()}}}
}

// Server is a running signerd: the Signer and KeyAdmin services.
type Server struct {
	// Addr is the host:port the server listens on (always on 127.0.0.1).
	Addr string
	// CA issued the server's certificate and the client certificates, and is the only CA the server
	// trusts for client certificates.
	CA *devca.CA
	// Ring holds the server's keys; create keys in it with CreateKey or Ring.Create.
	Ring *keyring.Ring
	// CACertFile, CertFile and KeyFile are PEM files (in a test temporary directory) for a client with
	// identity [Identity]: the CA certificate, the client certificate and its private key.
	CACertFile, CertFile, KeyFile string
	// ClientTLS is a TLS 1.3 client configuration with the same certificate as CertFile and KeyFile,
	// trusting only CA.
	ClientTLS *tls.Config

	// Store holds the software keys behind Ring; set Store.Wrap before creating keys to inject faults.
	Store *keyringtest.MemoryStore

	dir     string
	streams *atomic.Int64
}

// Streams returns how many streaming calls (SignStream, reflection) the server has accepted.
func (s *Server) Streams() int { return int(s.streams.Load()) }

// NewServer starts a server that authorizes callers with policy (use [DefaultPolicy] for one that allows
// everything to [Identity]). The server stops, and its audit log is closed, when the test ends. Any
// failure to start is fatal to the test.
func NewServer(tb testing.TB, policy authz.Policy) *Server {
	tb.Helper()
	ca, err := devca.New("clienttest CA", time.Hour)
	if err != nil {
		tb.Fatalf("devca.New() = %v", err)
	}
	store := keyringtest.NewMemoryStore()
	ring, err := keyring.Open(store, keyring.Options{})
	if err != nil {
		tb.Fatalf("keyring.Open() = %v", err)
	}
	authorizer, err := authz.Compile(policy, nil)
	if err != nil {
		tb.Fatalf("authz.Compile() = %v", err)
	}
	auditLog := audit.New(io.Discard)
	tb.Cleanup(func() { _ = auditLog.Close() })
	srv, err := server.New(server.Config{
		Keys:        ring,
		Manager:     ring,
		Policy:      authorizer,
		MaxInFlight: 4,
		Audit:       auditLog,
		Log:         slog.New(slog.DiscardHandler),
		Leeway:      config.DefaultLeeway,
	})
	if err != nil {
		tb.Fatalf("server.New() = %v", err)
	}
	leaf, err := ca.Issue(devca.Request{CommonName: "signerd", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		tb.Fatalf("Issue(server certificate) = %v", err)
	}
	serverTLS := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{leaf.TLS()},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
	streams := new(atomic.Int64)
	count := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		streams.Add(1)
		return handler(srv, ss)
	}
	g := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(serverTLS)),
		grpc.UnaryInterceptor(srv.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(srv.StreamInterceptor(), count),
		grpc.MaxRecvMsgSize(server.MaxRequestBytes),
	)
	srv.Register(g)
	if err := srv.RegisterAdmin(g); err != nil {
		tb.Fatalf("RegisterAdmin() = %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("net.Listen() = %v", err)
	}
	go func() { _ = g.Serve(lis) }()
	tb.Cleanup(g.Stop)

	s := &Server{Addr: lis.Addr().String(), CA: ca, Ring: ring, Store: store, dir: tb.TempDir(), streams: streams}
	s.CACertFile = filepath.Join(s.dir, "ca.pem")
	if err := os.WriteFile(s.CACertFile, ca.CertPEM(), 0o644); err != nil {
		tb.Fatalf("write CA certificate: %v", err)
	}
	s.CertFile, s.KeyFile = s.IssueClient(tb, Identity)
	cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
	if err != nil {
		tb.Fatalf("tls.LoadX509KeyPair() = %v", err)
	}
	s.ClientTLS = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}}
	return s
}

// Dial returns a client of the server with the certificate of [Identity], closed when the test ends.
func (s *Server) Dial(tb testing.TB) *client.Client {
	tb.Helper()
	c, err := client.Dial(s.Addr, client.Options{TLSConfig: s.ClientTLS})
	if err != nil {
		tb.Fatalf("client.Dial(%s) = %v", s.Addr, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// IssueClient issues a client certificate with subject CN identity and writes it and its key to files in
// the server's temporary directory, returning their paths.
func (s *Server) IssueClient(tb testing.TB, identity string) (certFile, keyFile string) {
	tb.Helper()
	leaf, err := s.CA.Issue(devca.Request{CommonName: identity, Client: true})
	if err != nil {
		tb.Fatalf("Issue(%q) = %v", identity, err)
	}
	certFile = filepath.Join(s.dir, identity+".crt")
	keyFile = filepath.Join(s.dir, identity+".key")
	if err := leaf.WriteFiles(certFile, keyFile); err != nil {
		tb.Fatalf("WriteFiles(%q) = %v", identity, err)
	}
	return certFile, keyFile
}

// CreateKey creates key name with algorithm alg. RSA keys are 2048 bits, the smallest allowed, to keep
// tests fast. The key has no prepublish period, so that Rotate activates a new version at once.
func (s *Server) CreateKey(tb testing.TB, name string, alg jose.Algorithm) {
	tb.Helper()
	settings := keyring.Settings{Grace: keyring.Duration(keyring.DefaultGrace)}
	if _, err := s.Ring.Create(name, alg, jose.MinRSABits, settings); err != nil {
		tb.Fatalf("Ring.Create(%q, %s) = %v", name, alg, err)
	}
}

// Rotate adds a new version to key name (made by CreateKey) that signs at once; the previous version
// retires and keeps verifying through its grace period.
func (s *Server) Rotate(tb testing.TB, name string) {
	tb.Helper()
	if _, _, err := s.Ring.Rotate(name, false); err != nil {
		tb.Fatalf("Ring.Rotate(%q) = %v", name, err)
	}
}
