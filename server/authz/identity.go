package authz

import (
	"crypto/x509"
	"errors"
)

// ErrNoIdentity is returned when the client certificate yields no identity.
// The server maps it to Unauthenticated.
var ErrNoIdentity = errors.New("authz: no identity in client certificate")

// IdentityFromChains returns the caller's identity from
// tls.ConnectionState.VerifiedChains. It looks only at chains[0][0], the
// verified leaf: never at unverified peer certificates, and never at the
// intermediates or the root.
//
// The identity is the leaf's first URI SAN (such as the SPIFFE ID
// "spiffe://example.org/svc"), else its first DNS SAN, else its subject
// CommonName. The first kind present decides, even if its value is empty: an
// empty identity, or no verified chain at all, returns [ErrNoIdentity].
func IdentityFromChains(chains [][]*x509.Certificate) (string, error) {
	if len(chains) == 0 || len(chains[0]) == 0 || chains[0][0] == nil {
		return "", ErrNoIdentity
	}
	leaf := chains[0][0]
	var id string
	switch {
	case len(leaf.URIs) > 0:
		if u := leaf.URIs[0]; u != nil {
			id = u.String()
		}
	case len(leaf.DNSNames) > 0:
		id = leaf.DNSNames[0]
	default:
		id = leaf.Subject.CommonName
	}
	if id == "" {
		return "", ErrNoIdentity
	}
	return id, nil
}
