// Package jose is signerd's knowledge of JOSE: the RFC 7518 signature
// algorithms, the conversion between the signature encodings a
// [crypto.Signer] produces and the ones JWS expects, RFC 7517 public JSON Web
// Keys with RFC 7638 thumbprints, and golang-jwt signing methods backed by any
// [crypto.Signer] (an HSM key in production, a software key in tests).
//
// The package is a leaf: it imports only the standard library and
// github.com/golang-jwt/jwt/v5, and it holds no global state.
package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
)

// Algorithm is a JOSE (RFC 7518) signature algorithm name.
type Algorithm string

// The asymmetric JWS signature algorithms signerd supports (RFC 7518 §3.1 and
// RFC 8037 §3.1). HMAC algorithms and "none" are deliberately absent: an HSM
// signing daemon has no business with either.
const (
	RS256 Algorithm = "RS256" // RSASSA-PKCS1-v1_5 using SHA-256
	RS384 Algorithm = "RS384" // RSASSA-PKCS1-v1_5 using SHA-384
	RS512 Algorithm = "RS512" // RSASSA-PKCS1-v1_5 using SHA-512
	PS256 Algorithm = "PS256" // RSASSA-PSS using SHA-256 and MGF1 with SHA-256
	PS384 Algorithm = "PS384" // RSASSA-PSS using SHA-384 and MGF1 with SHA-384
	PS512 Algorithm = "PS512" // RSASSA-PSS using SHA-512 and MGF1 with SHA-512
	ES256 Algorithm = "ES256" // ECDSA using P-256 and SHA-256
	ES384 Algorithm = "ES384" // ECDSA using P-384 and SHA-384
	ES512 Algorithm = "ES512" // ECDSA using P-521 and SHA-512
	EdDSA Algorithm = "EdDSA" // Ed25519 (RFC 8037); no pre-hash
)

// ErrUnsupportedAlgorithm is returned (wrapped) for an algorithm name that is
// not one of [Algorithms], including "none" and the HMAC algorithms.
var ErrUnsupportedAlgorithm = errors.New("jose: unsupported algorithm")

// MinRSABits is the smallest RSA modulus, in bits, that [Algorithm.CheckPublicKey]
// accepts (RFC 7518 §3.3 and §3.5 require 2048 bits or more).
const MinRSABits = 2048

// Algorithms returns every supported algorithm: RS256, RS384, RS512, PS256,
// PS384, PS512, ES256, ES384, ES512, EdDSA, in that order. The caller owns the
// returned slice.
func Algorithms() []Algorithm {
	return []Algorithm{RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA}
}

// ParseAlgorithm returns the Algorithm named s. The match is exact and
// case-sensitive, as RFC 7515 §4.1.1 requires; any other name, including
// "none" and "HS256", gives an error wrapping [ErrUnsupportedAlgorithm].
func ParseAlgorithm(s string) (Algorithm, error) {
	if a := Algorithm(s); a.valid() {
		return a, nil
	}
	return "", fmt.Errorf("jose: parse algorithm %q: %w", s, ErrUnsupportedAlgorithm)
}

// valid reports whether a is one of Algorithms.
func (a Algorithm) valid() bool {
	return a.KeyType() != 0
}

// KeyType is the kind of key an algorithm needs. The zero value is not a key
// type; it is what [Algorithm.KeyType] returns for an unsupported algorithm.
type KeyType int

// The key types, named after their RFC 7518 §6.1 "kty" values except that
// Ed25519 keys have kty "OKP" (RFC 8037 §2).
const (
	KeyRSA     KeyType = iota + 1 // *rsa.PublicKey, kty "RSA"
	KeyEC                         // *ecdsa.PublicKey, kty "EC"
	KeyEd25519                    // ed25519.PublicKey, kty "OKP"
)

// String returns the JWK "kty" value of k: "RSA", "EC" or "OKP".
func (k KeyType) String() string {
	switch k {
	case KeyRSA:
		return "RSA"
	case KeyEC:
		return "EC"
	case KeyEd25519:
		return "OKP"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// keyTypeOf returns the key type of pub, or false for a type no algorithm uses.
func keyTypeOf(pub crypto.PublicKey) (KeyType, bool) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return KeyRSA, true
	case *ecdsa.PublicKey:
		return KeyEC, true
	case ed25519.PublicKey:
		return KeyEd25519, true
	}
	return 0, false
}

// KeyType returns the kind of key a needs, or 0 if a is not supported.
func (a Algorithm) KeyType() KeyType {
	switch a {
	case RS256, RS384, RS512, PS256, PS384, PS512:
		return KeyRSA
	case ES256, ES384, ES512:
		return KeyEC
	case EdDSA:
		return KeyEd25519
	}
	return 0
}

// Hash returns the hash a applies to the signing input: SHA-256, SHA-384 or
// SHA-512. It returns 0 for EdDSA, which signs the whole message, and for an
// unsupported algorithm.
func (a Algorithm) Hash() crypto.Hash {
	switch a {
	case RS256, PS256, ES256:
		return crypto.SHA256
	case RS384, PS384, ES384:
		return crypto.SHA384
	case RS512, PS512, ES512:
		return crypto.SHA512
	}
	return 0
}

// Curve returns the curve of an ECDSA algorithm (P-256 for ES256, P-384 for
// ES384, P-521 for ES512) and nil for every other algorithm.
func (a Algorithm) Curve() elliptic.Curve {
	switch a {
	case ES256:
		return elliptic.P256()
	case ES384:
		return elliptic.P384()
	case ES512:
		return elliptic.P521()
	}
	return nil
}

// IsPSS reports whether a is one of the RSASSA-PSS algorithms PS256, PS384 and
// PS512.
func (a Algorithm) IsPSS() bool {
	return a == PS256 || a == PS384 || a == PS512
}

// SignerOpts returns the options to pass to [crypto.Signer.Sign] together with
// the output of [Algorithm.Digest]: an *rsa.PSSOptions with the salt as long as
// the hash for PS* (RFC 7518 §3.5), the hash itself for RS* and ES*, and
// crypto.Hash(0) for EdDSA (pure Ed25519). It returns nil for an unsupported
// algorithm, so that a caller that skipped validation fails loudly rather than
// producing a raw, unhashed signature.
func (a Algorithm) SignerOpts() crypto.SignerOpts {
	switch {
	case a.IsPSS():
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: a.Hash()}
	case a == EdDSA:
		return crypto.Hash(0)
	case a.valid():
		return a.Hash()
	}
	return nil
}

// Digest returns what a [crypto.Signer] signs for message msg under a: the
// hash of msg for RS*, PS* and ES*, and msg itself, unchanged and not copied,
// for EdDSA, which signs whole messages. It returns nil for an unsupported
// algorithm.
func (a Algorithm) Digest(msg []byte) []byte {
	if a == EdDSA {
		return msg
	}
	h := a.Hash()
	if h == 0 {
		return nil
	}
	hh := h.New()
	hh.Write(msg)
	return hh.Sum(nil)
}

// CheckPublicKey reports whether pub is usable with a. pub must be an
// *rsa.PublicKey with a modulus of at least [MinRSABits] bits for RS* and
// PS*, an *ecdsa.PublicKey on the algorithm's curve for ES*, and a 32-byte
// ed25519.PublicKey for EdDSA. RSA keys must also pass the sanity checks
// crypto/rsa applies when verifying (odd modulus, odd exponent between 3 and
// 2³¹-1), and ECDSA points must be on the curve, so that a key passing this
// check never makes verification fail for reasons other than the signature.
func (a Algorithm) CheckPublicKey(pub crypto.PublicKey) error {
	if !a.valid() {
		return fmt.Errorf("jose: check %q key: %w", a, ErrUnsupportedAlgorithm)
	}
	if kt, ok := keyTypeOf(pub); !ok || kt != a.KeyType() {
		return fmt.Errorf("jose: %s needs a %s key, got %T", a, a.KeyType(), pub)
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if pub == nil || pub.N == nil {
			return fmt.Errorf("jose: %s: RSA key has no modulus", a)
		}
		if n := pub.N.BitLen(); n < MinRSABits {
			return fmt.Errorf("jose: %s: RSA modulus is %d bits, want at least %d", a, n, MinRSABits)
		}
		if pub.N.Bit(0) == 0 {
			return fmt.Errorf("jose: %s: RSA modulus is even", a)
		}
		if pub.E < 3 || pub.E > 1<<31-1 || pub.E&1 == 0 {
			return fmt.Errorf("jose: %s: RSA public exponent %d is not an odd number between 3 and 2^31-1", a, pub.E)
		}
	case *ecdsa.PublicKey:
		if pub == nil || pub.Curve == nil {
			return fmt.Errorf("jose: %s: ECDSA key has no curve", a)
		}
		if pub.Curve != a.Curve() {
			return fmt.Errorf("jose: %s needs a key on %s, got %s", a, curveName(a.Curve()), curveName(pub.Curve))
		}
		if _, err := ecPointBytes(pub); err != nil {
			return fmt.Errorf("jose: %s: invalid ECDSA public key: %w", a, err)
		}
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("jose: %s: Ed25519 public key is %d bytes, want %d", a, len(pub), ed25519.PublicKeySize)
		}
	}
	return nil
}

// curveName returns the name of c for error messages, without trusting a
// foreign Curve implementation to have Params.
func curveName(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return fmt.Sprintf("curve %T", c)
	}
	return c.Params().Name
}

// ecPointBytes returns the SEC 1 uncompressed encoding of pub's point, failing
// for a point that is not on the curve and for a curve other than the NIST
// ones. It exists because [ecdsa.PublicKey.Bytes] panics, rather than fail,
// when the coordinates are nil, as they are in a zero PublicKey.
func ecPointBytes(pub *ecdsa.PublicKey) ([]byte, error) {
	//lint:ignore SA1019 reading X and Y only to reject nil before Bytes dereferences them.
	if pub.X == nil || pub.Y == nil {
		return nil, errors.New("ECDSA public key has no point")
	}
	return pub.Bytes()
}
