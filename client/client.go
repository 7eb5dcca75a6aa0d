// Package client is the Go client of signerd. It connects to signerd over mutual TLS 1.3 and gives a
// service what it needs to sign without ever holding a private key:
//
//   - [Client.Key] returns a [Key], a [crypto.Signer] whose private half stays in signerd's HSM. It works
//     wherever the standard library takes a crypto.Signer: x509.CreateCertificate, tls.Certificate,
//     and golang-jwt through [Key.SigningMethod].
//   - [JWKSKeyfunc.Keyfunc] is a jwt.Keyfunc that finds the keys of tokens in signerd's published
//     JWKS, for services that only verify.
//   - [Client.Signer] is the raw gRPC stub, for everything else (Verify, ListKeys, SignJWT, VerifyJWT).
package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// DefaultTimeout bounds each call that [Key.Sign] makes when [Options.Timeout] is zero. Sign has no
// context parameter (it implements [crypto.Signer]), so without a bound a lost connection could block it
// forever; [Key.SignContext] takes its deadline from its context instead.
const DefaultTimeout = 30 * time.Second

// Options says how to authenticate to signerd. Either TLSConfig is set, or all three files are.
type Options struct {
	// CACertFile is a PEM file of the CA certificates that may issue signerd's server certificate.
	CACertFile string
	// CertFile and KeyFile are the PEM client certificate (with any intermediates) and its private key;
	// signerd identifies the caller by this certificate.
	CertFile, KeyFile string
	// TLSConfig, when set, is used instead of the three files. It is cloned; its MinVersion is raised to
	// TLS 1.3 if lower, and its ServerName is filled in from the dial address if empty.
	TLSConfig *tls.Config
	// Timeout bounds each RPC made by Key.Sign; DefaultTimeout when zero.
	Timeout time.Duration
}

// Client is a connection to signerd. It is safe for concurrent use; one Client per process is enough.
type Client struct {
	conn    *grpc.ClientConn
	signer  signerv1.SignerClient
	timeout time.Duration
}

// Dial returns a Client for the signerd at addr ("host:port", or a gRPC target such as
// "dns:///host:port"), authenticating with opts. The server's certificate is checked against the host
// of addr (an IP address or a DNS name) unless opts.TLSConfig names another.
//
// Like [grpc.NewClient], which it calls with dialOpts appended to its own, Dial does not connect: a
// server that is down or a certificate it refuses shows as an error from the first call.
func Dial(addr string, opts Options, dialOpts ...grpc.DialOption) (*Client, error) {
	cfg, err := tlsConfig(addr, opts)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	all := append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, dialOpts...)
	conn, err := grpc.NewClient(addr, all...)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Client{conn: conn, signer: signerv1.NewSignerClient(conn), timeout: timeout}, nil
}

// Close closes the connection. Keys from the Client stop working.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("client: close: %w", err)
	}
	return nil
}

// Signer returns the raw gRPC stub of the signer.v1.Signer service on c's connection.
func (c *Client) Signer() signerv1.SignerClient {
	return c.signer
}

// tlsConfig builds the client TLS configuration from opts.
func tlsConfig(addr string, opts Options) (*tls.Config, error) {
	var cfg *tls.Config
	if opts.TLSConfig != nil {
		cfg = opts.TLSConfig.Clone()
	} else {
		var err error
		if cfg, err = filesConfig(opts); err != nil {
			return nil, err
		}
	}
	// signerd speaks only TLS 1.3; refusing anything older here also keeps a misconfigured client from
	// offering it to an impostor.
	if cfg.MinVersion < tls.VersionTLS13 {
		cfg.MinVersion = tls.VersionTLS13
	}
	if cfg.ServerName == "" {
		host, err := hostOf(addr)
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	return cfg, nil
}

// filesConfig loads the CA bundle and client key pair named in opts, reporting every missing name at once.
func filesConfig(opts Options) (*tls.Config, error) {
	var missing []error
	if opts.CACertFile == "" {
		missing = append(missing, errors.New("no CA certificate file"))
	}
	if opts.CertFile == "" {
		missing = append(missing, errors.New("no client certificate file"))
	}
	if opts.KeyFile == "" {
		missing = append(missing, errors.New("no client key file"))
	}
	if err := errors.Join(missing...); err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(opts.CACertFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificates: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA certificate file %s holds no PEM certificate", opts.CACertFile)
	}
	cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load client certificate: %w", err)
	}
	return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}, nil
}

// hostOf returns the host part of a gRPC target: "host:port", or "scheme:///host:port" as used with
// the dns resolver.
func hostOf(addr string) (string, error) {
	hostport := addr
	if i := strings.LastIndex(addr, "/"); i >= 0 {
		hostport = addr[i+1:]
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("server name from address: %w (set TLSConfig.ServerName)", err)
	}
	if host == "" {
		return "", fmt.Errorf("server name from address %q: no host (set TLSConfig.ServerName)", addr)
	}
	return host, nil
}
