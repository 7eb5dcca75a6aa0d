package jose

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// Sentinel errors of signature handling, always returned wrapped; test for
// them with [errors.Is].
var (
	// ErrMalformedSignature means the bytes cannot be a signature for the
	// key at all: bad DER for ECDSA, or the wrong length for RSA or Ed25519.
	ErrMalformedSignature = errors.New("jose: malformed signature")
	// ErrWrongDigestLength means the input to an RSA or ECDSA operation is
	// not a digest of the algorithm's hash.
	ErrWrongDigestLength = errors.New("jose: wrong digest length")
	// ErrVerification means a well-formed signature does not verify.
	ErrVerification = errors.New("jose: signature verification failed")
)

// ecdsaSignature is the ASN.1 Ecdsa-Sig-Value of RFC 3279 §2.2.3, the form
// crypto.Signer implementations (crypto/ecdsa, crypto11) return.
type ecdsaSignature struct {
	R, S *big.Int
}

// DERToRaw converts an ASN.1 DER ECDSA signature SEQUENCE { r, s } to the
// fixed-width r||s form of RFC 7518 §3.4, each half left-padded with zeros to
// size bytes (see [CurveSize]).
//
// Padding is not an edge case: r or s is shorter than the curve size in about
// 1 of 128 P-256 signatures, and a converter that forgets to pad produces JWTs
// that fail verification that often.
//
// The parse is strict: der must be exactly one canonical DER SEQUENCE of two
// INTEGERs, with no trailing data and no extra elements, and r and s must be
// positive and at most size bytes wide. Anything else gives an error wrapping
// [ErrMalformedSignature].
func DERToRaw(der []byte, size int) ([]byte, error) {
	if size <= 0 {
		// Not ErrMalformedSignature: the caller's size is wrong, not the data.
		return nil, fmt.Errorf("jose: DER to raw: invalid size %d", size)
	}
	var sig ecdsaSignature
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil {
		// Not encoding/asn1's words: they name Go types ("tags don't match (16 vs {class:0 ...})
		// ecdsaSignature @2"), and they reach callers in gRPC statuses.
		return nil, fmt.Errorf("%w: not a DER SEQUENCE of two INTEGERs", ErrMalformedSignature)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes of trailing data after DER", ErrMalformedSignature, len(rest))
	}
	for _, v := range []struct {
		name string
		n    *big.Int
	}{{"r", sig.R}, {"s", sig.S}} {
		if v.n.Sign() <= 0 {
			return nil, fmt.Errorf("%w: %s is not positive", ErrMalformedSignature, v.name)
		}
		if v.n.BitLen() > 8*size {
			return nil, fmt.Errorf("%w: %s is %d bits, wider than %d bytes", ErrMalformedSignature, v.name, v.n.BitLen(), size)
		}
	}
	// encoding/asn1 accepts extra elements at the end of a SEQUENCE (X.509
	// extensibility) and is not a strict DER checker in every corner. The
	// re-encoding is canonical, so comparing it with the input rejects every
	// non-DER or non-minimal form at once.
	if canonical, err := asn1.Marshal(sig); err != nil || !bytes.Equal(canonical, der) {
		return nil, fmt.Errorf("%w: not a canonical DER SEQUENCE of two INTEGERs", ErrMalformedSignature)
	}
	raw := make([]byte, 2*size)
	sig.R.FillBytes(raw[:size])
	sig.S.FillBytes(raw[size:])
	return raw, nil
}

// RawToDER converts an RFC 7518 §3.4 r||s ECDSA signature to ASN.1 DER, the
// inverse of [DERToRaw]. len(raw) must be exactly 2*size and neither r nor s
// may be zero; otherwise the error wraps [ErrMalformedSignature].
func RawToDER(raw []byte, size int) ([]byte, error) {
	if size <= 0 {
		// Not ErrMalformedSignature: the caller's size is wrong, not the data.
		return nil, fmt.Errorf("jose: raw to DER: invalid size %d", size)
	}
	if len(raw) != 2*size {
		return nil, fmt.Errorf("%w: raw ECDSA signature is %d bytes, want %d", ErrMalformedSignature, len(raw), 2*size)
	}
	sig := ecdsaSignature{
		R: new(big.Int).SetBytes(raw[:size]),
		S: new(big.Int).SetBytes(raw[size:]),
	}
	if sig.R.Sign() == 0 || sig.S.Sign() == 0 {
		return nil, fmt.Errorf("%w: r or s is zero", ErrMalformedSignature)
	}
	der, err := asn1.Marshal(sig)
	if err != nil {
		return nil, fmt.Errorf("jose: raw to DER: %w", err)
	}
	return der, nil
}

// CurveSize returns the byte length of r and s, and of each coordinate, for
// curve c: 32 for P-256, 48 for P-384 and 66 (not 65) for P-521. It returns 0
// for a nil curve.
func CurveSize(c elliptic.Curve) int {
	if c == nil || c.Params() == nil {
		return 0
	}
	return (c.Params().BitSize + 7) / 8
}

// SignatureSize returns the length of a JWS signature by the private key of
// pub: the modulus size for RSA, twice [CurveSize] for ECDSA (raw r||s), 64
// for Ed25519, and 0 for any other key.
func SignatureSize(pub crypto.PublicKey) int {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return p.Size()
	case *ecdsa.PublicKey:
		return 2 * CurveSize(p.Curve)
	case ed25519.PublicKey:
		return ed25519.SignatureSize
	}
	return 0
}

// Verify checks that sig is a signature by pub of input under a, where input
// is what [Algorithm.Digest] returns: a digest of a.Hash() for RSA and ECDSA,
// the whole message for EdDSA. sig is in the form a [crypto.Signer] returns:
// PKCS #1 v1.5 or PSS (salt as long as the hash) bytes as long as the modulus
// for RSA, ASN.1 DER for ECDSA, and 64 bytes for Ed25519.
//
// It returns nil for a valid signature, the [Algorithm.CheckPublicKey] error
// for an unusable key, an error wrapping [ErrWrongDigestLength] when input is
// not a digest of the right size, one wrapping [ErrMalformedSignature] when
// sig cannot be a signature for this key, and one wrapping [ErrVerification]
// when it is well-formed but does not verify.
func (a Algorithm) Verify(pub crypto.PublicKey, input, sig []byte) error {
	if err := a.CheckPublicKey(pub); err != nil {
		return err
	}
	if h := a.Hash(); h != 0 && len(input) != h.Size() {
		return fmt.Errorf("jose: verify %s: input is %d bytes, want a %d-byte digest: %w", a, len(input), h.Size(), ErrWrongDigestLength)
	}
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if len(sig) != pub.Size() {
			return fmt.Errorf("jose: verify %s: %w: signature is %d bytes, want the modulus size %d", a, ErrMalformedSignature, len(sig), pub.Size())
		}
		var err error
		if a.IsPSS() {
			err = rsa.VerifyPSS(pub, a.Hash(), input, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(pub, a.Hash(), input, sig)
		}
		if err != nil {
			return fmt.Errorf("jose: verify %s: %w: %w", a, ErrVerification, err)
		}
	case *ecdsa.PublicKey:
		if _, err := DERToRaw(sig, CurveSize(pub.Curve)); err != nil {
			return fmt.Errorf("jose: verify %s: %w", a, err)
		}
		if !ecdsa.VerifyASN1(pub, input, sig) {
			return fmt.Errorf("jose: verify %s: %w", a, ErrVerification)
		}
	case ed25519.PublicKey:
		if len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("jose: verify %s: %w: signature is %d bytes, want %d", a, ErrMalformedSignature, len(sig), ed25519.SignatureSize)
		}
		if !ed25519.Verify(pub, input, sig) {
			return fmt.Errorf("jose: verify %s: %w", a, ErrVerification)
		}
	}
	return nil
}
