package authz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// newCert returns a freshly generated, self-signed certificate with the given
// subject CommonName and SANs, parsed back from DER so that the test goes
// through the real x509 parser.
func newCert(t *testing.T, cn string, dnsNames []string, uris []string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("url.Parse(%q): %v", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	return cert
}

func TestIdentityFromChains(t *testing.T) {
	all := newCert(t, "cn.example.org", []string{"dns.example.org", "dns2.example.org"},
		[]string{"spiffe://example.org/svc", "spiffe://example.org/other"})
	dnsOnly := newCert(t, "cn.example.org", []string{"dns.example.org"}, nil)
	cnOnly := newCert(t, "cn.example.org", nil, nil)
	none := newCert(t, "", nil, nil)
	ca := newCert(t, "ca.example.org", []string{"ca.example.org"}, []string{"spiffe://example.org/ca"})

	tests := []struct {
		name    string
		chains  [][]*x509.Certificate
		want    string
		wantErr error
	}{
		{name: "URI SAN first", chains: [][]*x509.Certificate{{all, ca}}, want: "spiffe://example.org/svc"},
		{name: "DNS SAN only", chains: [][]*x509.Certificate{{dnsOnly, ca}}, want: "dns.example.org"},
		{name: "CN only", chains: [][]*x509.Certificate{{cnOnly}}, want: "cn.example.org"},
		{name: "no identity", chains: [][]*x509.Certificate{{none, ca}}, wantErr: ErrNoIdentity},
		{name: "only first chain", chains: [][]*x509.Certificate{{cnOnly, ca}, {all, ca}}, want: "cn.example.org"},
		{name: "nil chains", chains: nil, wantErr: ErrNoIdentity},
		{name: "empty chains", chains: [][]*x509.Certificate{}, wantErr: ErrNoIdentity},
		{name: "empty first chain", chains: [][]*x509.Certificate{{}, {all}}, wantErr: ErrNoIdentity},
		{name: "nil leaf", chains: [][]*x509.Certificate{{nil, ca}}, wantErr: ErrNoIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IdentityFromChains(tt.chains)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("IdentityFromChains() error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("IdentityFromChains() = %q, want %q", got, tt.want)
			}
		})
	}
}
