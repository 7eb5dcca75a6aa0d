package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate valid from notBefore to notAfter and its key, and returns
// the files and the certificate's PEM.
func writeCert(t *testing.T, notBefore, notAfter time.Time) (certFile, keyFile string, certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}, NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, certPEM
}

// A certificate outside its validity period is refused at load (start and reload), with the dates.
func TestLoadKeyPairValidity(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name                string
		notBefore, notAfter time.Time
		want                string // "" for accepted
	}{
		{"valid", now.Add(-time.Hour), now.Add(time.Hour), ""},
		{"issuer's clock a minute ahead", now.Add(time.Minute), now.Add(time.Hour), ""},
		{"expired", now.Add(-48 * time.Hour), now.Add(-24 * time.Hour), "expired at"},
		{"not yet valid", now.Add(time.Hour), now.Add(48 * time.Hour), "is not valid before"},
	} {
		certFile, keyFile, _ := writeCert(t, tc.notBefore, tc.notAfter)
		_, err := loadKeyPair(certFile, keyFile, "tls")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: loadKeyPair = %v, want nil", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "tls.cert_file: ")):
			t.Errorf("%s: loadKeyPair = %v, want a tls.cert_file error with %q", tc.name, err, tc.want)
		}
	}
}

// A client CA bundle is taken whole or not at all: anything in it that is not a certificate refuses it.
func TestCAPool(t *testing.T) {
	now := time.Now()
	_, _, a := writeCert(t, now.Add(-time.Hour), now.Add(time.Hour))
	_, _, b := writeCert(t, now.Add(-time.Hour), now.Add(time.Hour))
	bundle := string(a) + string(b)
	for _, tc := range []struct {
		name, pem, want string // want "" for accepted
	}{
		{"two certificates", bundle, ""},
		{"with comments between", "# CA one\n" + string(a) + "\n# CA two\n" + string(b), ""},
		{"cut short", bundle + string(a[:len(a)/2]), "not PEM after certificate 2"},
		{"a key in it", bundle + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", `block 3 is "PRIVATE KEY"`},
		{"empty", "", "no certificate"},
		{"not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "certificate 1: "},
	} {
		_, err := caPool([]byte(tc.pem))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: caPool = %v, want nil", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: caPool = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
