package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"math/big"

	"github.com/golang-jwt/jwt/v5"
)

// SigningMethod is a [jwt.SigningMethod] for one algorithm whose Sign takes
// any [crypto.Signer] (an HSM key, a remote key or a software key) and whose
// Verify takes the matching public key: *rsa.PublicKey, *ecdsa.PublicKey or
// ed25519.PublicKey, or a crypto.Signer, whose Public key is then used.
//
// golang-jwt's own RS*, PS* and ES* methods only sign with *rsa.PrivateKey and
// *ecdsa.PrivateKey, which an HSM key never is. SigningMethod is deliberately
// never registered with [jwt.RegisterSigningMethod]: that would replace the
// stock methods process-wide, for every parser. jwt.Parse keeps verifying with
// the stock methods, which accept what this method signs.
type SigningMethod struct {
	alg Algorithm
}

var _ jwt.SigningMethod = (*SigningMethod)(nil)

// NewSigningMethod returns the signing method for alg. For an unsupported
// alg, Sign and Verify return errors wrapping [ErrUnsupportedAlgorithm]; use
// [ParseAlgorithm] to validate names first.
func NewSigningMethod(alg Algorithm) *SigningMethod {
	return &SigningMethod{alg: alg}
}

// Alg returns the JWS "alg" header value, such as "ES256".
func (m *SigningMethod) Alg() string {
	return string(m.alg)
}

// Algorithm returns the algorithm m signs with.
func (m *SigningMethod) Algorithm() Algorithm {
	return m.alg
}

// Sign signs signingString with key, which must be a [crypto.Signer] whose
// public key suits the algorithm (see [Algorithm.CheckPublicKey]), and returns
// the JWS signature bytes.
//
// It hashes signingString with the algorithm's hash (EdDSA signs the whole
// string) and calls key.Sign(rand.Reader, digest, alg.SignerOpts()). Following
// the crypto.Signer convention, an ECDSA signer must return ASN.1 DER, which
// Sign converts to the fixed-width r||s of RFC 7518 §3.4. The output is
// parsed as DER even when it is exactly as long as r||s, so a signer that
// returns raw r||s fails rather than being guessed at. ECDSA signatures are given
// in low-S form (s at most n/2, see [lowS]). An RSA signature shorter than the modulus,
// which some tokens return when its leading bytes are zero, is left-padded
// to the modulus size (RFC 8017 I2OSP) so that verifiers accept it.
//
// A key of the wrong type gives an error wrapping [jwt.ErrInvalidKeyType]; a
// key of the right type that fails CheckPublicKey, one wrapping
// [jwt.ErrInvalidKey].
func (m *SigningMethod) Sign(signingString string, key any) ([]byte, error) {
	a := m.alg
	if !a.valid() {
		return nil, fmt.Errorf("jose: sign %q: %w", a, ErrUnsupportedAlgorithm)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("jose: sign %s: %w: got %T, want a crypto.Signer", a, jwt.ErrInvalidKeyType, key)
	}
	pub := signer.Public()
	if err := m.checkKey(pub); err != nil {
		return nil, fmt.Errorf("jose: sign %s: %w", a, err)
	}
	sig, err := signer.Sign(rand.Reader, a.Digest([]byte(signingString)), a.SignerOpts())
	if err != nil {
		return nil, fmt.Errorf("jose: sign %s: %w", a, err)
	}
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		size := CurveSize(pub.Curve)
		raw, err := DERToRaw(sig, size)
		if err != nil {
			return nil, fmt.Errorf("jose: sign %s: signer did not return a DER ECDSA signature: %w", a, err)
		}
		lowS(raw[size:], pub.Curve.Params().N)
		return raw, nil
	case *rsa.PublicKey:
		k := pub.Size()
		if len(sig) > k || len(sig) == 0 {
			return nil, fmt.Errorf("jose: sign %s: signer returned %d bytes for a %d-byte modulus: %w", a, len(sig), k, ErrMalformedSignature)
		}
		if len(sig) < k {
			padded := make([]byte, k)
			copy(padded[k-len(sig):], sig)
			sig = padded
		}
	case ed25519.PublicKey:
		if len(sig) != ed25519.SignatureSize {
			return nil, fmt.Errorf("jose: sign %s: signer returned %d bytes, want %d: %w", a, len(sig), ed25519.SignatureSize, ErrMalformedSignature)
		}
	}
	return sig, nil
}

// Verify checks that sig, the decoded JWS signature, is a signature of
// signingString by key. For ES* sig must be exactly twice [CurveSize] bytes
// (RFC 7518 §3.4 r||s).
//
// It returns nil for a valid signature, an error wrapping
// [jwt.ErrSignatureInvalid] (and the jose error that says why) for an invalid
// one, [jwt.ErrInvalidKeyType] for a key of the wrong type and
// [jwt.ErrInvalidKey] for a key of the right type that fails
// [Algorithm.CheckPublicKey].
func (m *SigningMethod) Verify(signingString string, sig []byte, key any) error {
	a := m.alg
	if !a.valid() {
		return fmt.Errorf("jose: verify %q: %w", a, ErrUnsupportedAlgorithm)
	}
	pub := key
	if s, ok := key.(crypto.Signer); ok {
		pub = s.Public()
	}
	if err := m.checkKey(pub); err != nil {
		return fmt.Errorf("jose: verify %s: %w", a, err)
	}
	if c := a.Curve(); c != nil {
		der, err := RawToDER(sig, CurveSize(c))
		if err != nil {
			return fmt.Errorf("jose: verify %s: %w: %w", a, jwt.ErrSignatureInvalid, err)
		}
		sig = der
	}
	if err := a.Verify(pub, a.Digest([]byte(signingString)), sig); err != nil {
		return fmt.Errorf("%w: %w", jwt.ErrSignatureInvalid, err)
	}
	return nil
}

// lowS replaces the fixed-width s of an ECDSA signature by n-s when s is above
// n/2. (r, s) and (r, n-s) are both valid signatures of the same digest, and
// anyone can make one from the other, so every token has an ECDSA twin that
// verifies; signing in one of the two forms makes every token signerd issues
// canonical, for verifiers that insist on low S. Verify accepts both, as RFC
// 7518 does.
func lowS(s []byte, n *big.Int) {
	v := new(big.Int).SetBytes(s)
	if v.Cmp(new(big.Int).Rsh(n, 1)) > 0 {
		v.Sub(n, v).FillBytes(s)
	}
}

// checkKey maps key problems to golang-jwt's sentinels: the wrong type of key
// to jwt.ErrInvalidKeyType, any other CheckPublicKey failure to
// jwt.ErrInvalidKey.
func (m *SigningMethod) checkKey(pub crypto.PublicKey) error {
	if kt, ok := keyTypeOf(pub); !ok || kt != m.alg.KeyType() {
		return fmt.Errorf("%w: %s needs a %s key, got %T", jwt.ErrInvalidKeyType, m.alg, m.alg.KeyType(), pub)
	}
	if err := m.alg.CheckPublicKey(pub); err != nil {
		return fmt.Errorf("%w: %w", jwt.ErrInvalidKey, err)
	}
	return nil
}
