package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

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
	f.clientCAs = x509.NewCertPool()
	if !f.clientCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls.client_ca_file: no certificate in %s", cfg.TLS.ClientCAFile)
	}
	if cfg.HTTP.Listen != "" {
		if f.httpCert, err = loadKeyPair(cfg.HTTP.CertFile, cfg.HTTP.KeyFile, "http"); err != nil {
			return nil, err
		}
	}
	return &f, nil
}

// loadKeyPair reads a certificate and its key; section names the config section in errors.
func loadKeyPair(certFile, keyFile, section string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%[1]s.cert_file/%[1]s.key_file: %[2]w", section, err)
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
