package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// JWK is an RFC 7517 public JSON Web Key. Binary members are base64url
// without padding, as RFC 7518 §6 requires: RSA n and e are big-endian
// without leading zero bytes, EC x and y are left-padded to the curve size
// ([CurveSize]), and the OKP (Ed25519, RFC 8037) x is the 32-byte public key.
//
// It has no private members (d, p, q, ...): signerd's private keys never
// leave the HSM, and decoding JSON into a JWK drops any such members.
type JWK struct {
	Kty string `json:"kty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Kid string `json:"kid,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// JWKS is an RFC 7517 §5 JWK Set: {"keys":[...]}.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// b64 is the base64url encoding without padding that JOSE uses throughout.
var b64 = base64.RawURLEncoding

// maxRSABits bounds the modulus PublicKey accepts, so that a hostile JWK
// cannot make every later verification with it arbitrarily slow.
const maxRSABits = 16384

// Thumbprint returns the RFC 7638 JWK thumbprint of pub: the SHA-256 hash of
// its required JWK members in lexicographic order without whitespace
// ({"e","kty","n"} for RSA, {"crv","kty","x","y"} for EC, {"crv","kty","x"}
// for OKP), base64url without padding. pub must be an *rsa.PublicKey, an
// *ecdsa.PublicKey on P-256, P-384 or P-521, or an ed25519.PublicKey.
//
// Thumbprint applies no algorithm policy (a 1024-bit RSA key has a
// thumbprint too); use [Algorithm.CheckPublicKey] for that.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	k, err := keyMembers(pub)
	if err != nil {
		return "", fmt.Errorf("jose: thumbprint: %w", err)
	}
	return k.thumbprint(), nil
}

// NewJWK returns the JWK for pub used with alg: the key members, "use":"sig",
// "alg" and a "kid" equal to the [Thumbprint] of pub. It fails if
// alg.CheckPublicKey(pub) does.
func NewJWK(pub crypto.PublicKey, alg Algorithm) (JWK, error) {
	if err := alg.CheckPublicKey(pub); err != nil {
		return JWK{}, fmt.Errorf("jose: new JWK: %w", err)
	}
	k, err := keyMembers(pub)
	if err != nil {
		return JWK{}, fmt.Errorf("jose: new JWK: %w", err)
	}
	k.Use = "sig"
	k.Alg = string(alg)
	k.Kid = k.thumbprint()
	return k, nil
}

// keyMembers returns a JWK holding only the key members (kty, crv, x, y, n,
// e) of pub.
func keyMembers(pub crypto.PublicKey) (JWK, error) {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if pub == nil || pub.N == nil || pub.N.Sign() <= 0 {
			return JWK{}, errors.New("RSA public key has no modulus")
		}
		if pub.E <= 0 {
			return JWK{}, fmt.Errorf("RSA public exponent %d is not positive", pub.E)
		}
		return JWK{
			Kty: "RSA",
			N:   b64.EncodeToString(pub.N.Bytes()),
			E:   b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		}, nil
	case *ecdsa.PublicKey:
		if pub == nil {
			return JWK{}, errors.New("nil ECDSA public key")
		}
		crv, ok := crvName(pub.Curve)
		if !ok {
			return JWK{}, fmt.Errorf("unsupported ECDSA curve %s", curveName(pub.Curve))
		}
		point, err := ecPointBytes(pub)
		if err != nil {
			return JWK{}, fmt.Errorf("invalid ECDSA public key: %w", err)
		}
		// point is 0x04 || x || y, each coordinate already CurveSize bytes.
		size := CurveSize(pub.Curve)
		return JWK{
			Kty: "EC",
			Crv: crv,
			X:   b64.EncodeToString(point[1 : 1+size]),
			Y:   b64.EncodeToString(point[1+size:]),
		}, nil
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize {
			return JWK{}, fmt.Errorf("public Ed25519 key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
		}
		return JWK{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(pub)}, nil
	}
	return JWK{}, fmt.Errorf("unsupported public key type %T", pub)
}

// thumbprint returns the RFC 7638 thumbprint of k's key members. The member
// values are base64url or fixed curve names, so they need no JSON escaping.
func (k JWK) thumbprint() string {
	var canonical string
	switch k.Kty {
	case "RSA":
		canonical = `{"e":"` + k.E + `","kty":"RSA","n":"` + k.N + `"}`
	case "EC":
		canonical = `{"crv":"` + k.Crv + `","kty":"EC","x":"` + k.X + `","y":"` + k.Y + `"}`
	case "OKP":
		canonical = `{"crv":"` + k.Crv + `","kty":"OKP","x":"` + k.X + `"}`
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(sum[:])
}

// crvName returns the JWK "crv" of an ECDSA curve.
func crvName(c elliptic.Curve) (string, bool) {
	switch c {
	case elliptic.P256():
		return "P-256", true
	case elliptic.P384():
		return "P-384", true
	case elliptic.P521():
		return "P-521", true
	}
	return "", false
}

// PublicKey parses the key material of k: an *rsa.PublicKey for kty "RSA",
// an *ecdsa.PublicKey for kty "EC" (crv P-256, P-384 or P-521) and an
// ed25519.PublicKey for kty "OKP" (crv Ed25519).
//
// The parse is strict, since JWK Sets come from elsewhere: base64url without
// padding or line breaks, no members of another key type, RSA n and e without
// leading zeros, n odd and at most 16384 bits, e odd, greater than 1 and at
// most 2³¹-1, EC coordinates exactly the curve size and the point on the
// curve, Ed25519 x exactly 32 bytes. Ed25519 points are not decoded (the
// standard library offers no way to), so a malformed one only shows as
// signatures that never verify.
//
// Use, Alg and Kid are not examined; call [Algorithm.CheckPublicKey] to
// apply an algorithm's policy, such as [MinRSABits], to the result.
func (k JWK) PublicKey() (crypto.PublicKey, error) {
	pub, err := k.publicKey()
	if err != nil {
		return nil, fmt.Errorf("jose: parse JWK %q: %w", k.Kid, err)
	}
	return pub, nil
}

func (k JWK) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		if k.Crv != "" || k.X != "" || k.Y != "" {
			return nil, errors.New(`RSA key has "crv", "x" or "y"`)
		}
		n, err := decodeUint("n", k.N)
		if err != nil {
			return nil, err
		}
		if n.BitLen() > maxRSABits {
			return nil, fmt.Errorf("RSA modulus is %d bits, more than %d", n.BitLen(), maxRSABits)
		}
		if n.Bit(0) == 0 {
			return nil, errors.New("RSA modulus is even")
		}
		e, err := decodeUint("e", k.E)
		if err != nil {
			return nil, err
		}
		if e.BitLen() > 31 || e.Int64() < 3 || e.Bit(0) == 0 {
			return nil, errors.New("RSA public exponent is not an odd number between 3 and 2^31-1")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case "EC":
		if k.N != "" || k.E != "" {
			return nil, errors.New(`EC key has "n" or "e"`)
		}
		var c elliptic.Curve
		switch k.Crv {
		case "P-256":
			c = elliptic.P256()
		case "P-384":
			c = elliptic.P384()
		case "P-521":
			c = elliptic.P521()
		default:
			return nil, fmt.Errorf("unsupported EC curve %q", k.Crv)
		}
		size := CurveSize(c)
		x, err := decodeFixed("x", k.X, size)
		if err != nil {
			return nil, err
		}
		y, err := decodeFixed("y", k.Y, size)
		if err != nil {
			return nil, err
		}
		point := make([]byte, 0, 1+2*size)
		point = append(point, 4) // SEC 1 uncompressed point
		point = append(point, x...)
		point = append(point, y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(c, point)
		if err != nil {
			return nil, fmt.Errorf("invalid %s point: %w", k.Crv, err)
		}
		return pub, nil
	case "OKP":
		if k.Y != "" || k.N != "" || k.E != "" {
			return nil, errors.New(`OKP key has "y", "n" or "e"`)
		}
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported OKP curve %q", k.Crv)
		}
		x, err := decodeFixed("x", k.X, ed25519.PublicKeySize)
		if err != nil {
			return nil, err
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, fmt.Errorf("unsupported key type %q", k.Kty)
}

// decode decodes member name strictly: present, base64url without padding,
// with zero unused bits, and without the line breaks encoding/base64 would
// otherwise skip silently.
func decode(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("missing %q", name)
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%q contains a line break", name)
	}
	b, err := b64.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not base64url without padding: %w", name, err)
	}
	return b, nil
}

// decodeUint decodes an RFC 7518 §2 Base64urlUInt member, which must be
// positive and use the minimum number of octets.
func decodeUint(name, s string) (*big.Int, error) {
	b, err := decode(name, s)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || b[0] == 0 {
		return nil, fmt.Errorf("%q has a leading zero byte", name)
	}
	return new(big.Int).SetBytes(b), nil
}

// decodeFixed decodes a member that must be exactly size bytes long.
func decodeFixed(name, s string, size int) ([]byte, error) {
	b, err := decode(name, s)
	if err != nil {
		return nil, err
	}
	if len(b) != size {
		return nil, fmt.Errorf("%q is %d bytes, want %d", name, len(b), size)
	}
	return b, nil
}
