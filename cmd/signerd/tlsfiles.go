package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/signerd/signerd/config"
)

// tlsFiles is the certificate material read from the files the config names; a reload replaces it as
// a whole or not at all.
type tlsFiles struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool
	httpCert  *tls.Certificate // nil without the HTTPS listener
}

// loadTLS reads the server certificate, the client CA bundle and, with the HTTPS listener, its
// certificate.
func loadTLS(cfg *config.Config) (*tlsFiles, error) {
	var f tlsFiles
	var err error
	if f.cert, err = loadKeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile, "tls"); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(cfg.TLS.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("tls.client_ca_file: %w", err)
	}
	if f.clientCAs, err = caPool(pem); err != nil {
		return nil, fmt.Errorf("tls.client_ca_file: %s: %w", cfg.TLS.ClientCAFile, err)
	}
	if cfg.HTTP.Listen != "" {
		if f.httpCert, err = loadKeyPair(cfg.HTTP.CertFile, cfg.HTTP.KeyFile, "http"); err != nil {
			return nil, err
		}
	}
	return &f, nil
}

// caPool reads every certificate of a PEM bundle. Unlike x509.CertPool.AppendCertsFromPEM, which is
// content with one, it refuses a bundle with anything else in it (a block cut short by a half-written
// file, another kind of block), which would otherwise drop CAs, and their clients, in silence.
func caPool(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("block %d is %q, not a CERTIFICATE", n+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	switch {
	case len(bytes.TrimSpace(data)) > 0:
		return nil, fmt.Errorf("not PEM after certificate %d (a file cut short?)", n)
	case n == 0:
		return nil, errors.New("no certificate")
	}
	return pool, nil
}

// certSkew is how far ahead of this machine's clock a certificate's validity may start: an issuer's
// clock a little ahead of this one's.
const certSkew = 5 * time.Minute

// loadKeyPair reads a certificate and its key; section names the config section in errors. A
// certificate outside its validity period is refused, so that a renewal that drops in a stale or
// future-dated one fails the start or the reload (which keeps the certificate in use) instead of
// every client's handshake.
func loadKeyPair(certFile, keyFile, section string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%[1]s.cert_file/%[1]s.key_file: %[2]w", section, err)
	}
	leaf := cert.Leaf // parsed by LoadX509KeyPair (unless GODEBUG x509keypairleaf=0)
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s.cert_file: %w", section, err)
		}
	}
	switch now := time.Now(); {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("%s.cert_file: %s expired at %s", section, certFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Add(certSkew).Before(leaf.NotBefore):
		return nil, fmt.Errorf("%s.cert_file: %s is not valid before %s", section, certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// useTLS makes f the material the listeners hand out from the next handshake on.
func (d *daemon) useTLS(f *tlsFiles) {
	d.cert.Store(f.cert)
	d.clientCAs.Store(f.clientCAs)
	if f.httpCert != nil {
		d.httpCert.Store(f.httpCert)
	}
}
