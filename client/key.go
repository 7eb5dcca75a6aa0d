package client

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"github.com/golang-jwt/jwt/v5"

	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// Errors returned (wrapped) by Key; test for them with [errors.Is].
var (
	// ErrSignerOpts means the options or the digest passed to Sign do not fit the key's algorithm, which
	// is fixed: a PS256 key only makes PSS signatures over SHA-256 digests, an RS256 key only PKCS #1
	// v1.5 ones, an EdDSA key only pure Ed25519 signatures of whole messages.
	ErrSignerOpts = errors.New("client: signer options do not match the key's algorithm")
	// ErrKeyRotated means signerd signed with a different version than the one whose public key the
	// Key holds: the key was rotated since [Client.Key] was called. The signature is withheld, since it
	// would not verify with Key.Public(); call Client.Key again for the new version.
	ErrKeyRotated = errors.New("client: key was rotated")
)

// Key is one version of a signerd key, used through signerd: a [crypto.Signer] whose private key never
// leaves the HSM. Its public key, algorithm and kid are fixed when [Client.Key] returns it; if the key is
// rotated, signing fails with [ErrKeyRotated] rather than return a signature that Public does not verify.
// A Key is safe for concurrent use.
type Key struct {
	c       *Client
	name    string
	alg     jose.Algorithm
	kid     string
	version uint32
	pub     crypto.PublicKey
}

var _ crypto.Signer = (*Key)(nil)

// Key fetches the public half of the active version of the key called name and returns a Key that signs
// with it. The public key is checked against the algorithm and the kid signerd reports.
func (c *Client) Key(ctx context.Context, name string) (*Key, error) {
	resp, err := c.signer.GetPublicKey(ctx, &signerv1.GetPublicKeyRequest{Key: name})
	if err != nil {
		return nil, fmt.Errorf("client: get public key %q: %w", name, err)
	}
	k, err := newKey(c, name, resp)
	if err != nil {
		return nil, fmt.Errorf("client: get public key %q: %w", name, err)
	}
	return k, nil
}

// newKey checks a GetPublicKey response and builds the Key from it.
func newKey(c *Client, name string, resp *signerv1.GetPublicKeyResponse) (*Key, error) {
	alg, err := jose.ParseAlgorithm(resp.GetAlg())
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(resp.GetPublicKeyPem()))
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New(`no "PUBLIC KEY" PEM block in the response`)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	if err := alg.CheckPublicKey(pub); err != nil {
		return nil, err
	}
	// The kid is the key's thumbprint; a mismatch means the response is not what it claims to be.
	kid, err := jose.Thumbprint(pub)
	if err != nil {
		return nil, err
	}
	if kid != resp.GetKid() {
		return nil, fmt.Errorf("public key has thumbprint %s, signerd says kid %s", kid, resp.GetKid())
	}
	return &Key{c: c, name: name, alg: alg, kid: kid, version: resp.GetVersion(), pub: pub}, nil
}

// Name returns the key's name.
func (k *Key) Name() string { return k.name }

// Alg returns the key's JOSE algorithm.
func (k *Key) Alg() jose.Algorithm { return k.alg }

// Kid returns the kid (RFC 7638 thumbprint) of the version k signs with.
func (k *Key) Kid() string { return k.kid }

// Version returns the number of the version k signs with.
func (k *Key) Version() uint32 { return k.version }

// Public returns the public key: an *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign implements [crypto.Signer] by calling [Key.SignContext] with a context that expires after the
// Client's timeout ([Options.Timeout]).
func (k *Key) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), k.c.timeout)
	defer cancel()
	return k.SignContext(ctx, rand, digest, opts)
}

// SignContext signs digest with signerd's Sign RPC and returns the signature in the form a
// [crypto.Signer] returns: ASN.1 DER for ECDSA, modulus-sized bytes for RSA, 64 bytes for Ed25519.
// rand is ignored: the signature's randomness (ECDSA nonce, PSS salt) comes from the HSM.
//
// opts must match the key's algorithm, or the error wraps [ErrSignerOpts]: opts.HashFunc() must be the
// algorithm's hash and digest a digest of that size; PS* keys need an *rsa.PSSOptions whose salt is as
// long as the hash ([rsa.PSSSaltLengthEqualsHash] or the hash size) and RS* and ES* keys refuse one.
// For EdDSA keys, as for [ed25519.PrivateKey], opts.HashFunc() must be 0 and digest is the whole
// message (at most 64 KiB); Ed25519ph and Ed25519ctx are not supported.
func (k *Key) SignContext(ctx context.Context, _ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if err := k.checkOpts(digest, opts); err != nil {
		return nil, fmt.Errorf("client: sign with key %q: %w", k.name, err)
	}
	req := &signerv1.SignRequest{Key: k.name, Format: signerv1.SignatureFormat_SIGNATURE_FORMAT_DER}
	if k.alg == jose.EdDSA {
		req.Input = &signerv1.SignRequest_Message{Message: digest}
	} else {
		req.Input = &signerv1.SignRequest_Digest{Digest: digest}
	}
	resp, err := k.c.signer.Sign(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("client: sign with key %q: %w", k.name, err)
	}
	if resp.GetKid() != k.kid {
		return nil, fmt.Errorf("client: sign with key %q: %w: signed by kid %s, this Key is kid %s", k.name, ErrKeyRotated, resp.GetKid(), k.kid)
	}
	if resp.GetAlg() != string(k.alg) {
		return nil, fmt.Errorf("client: sign with key %q: signerd signed with %q, the key is %s", k.name, resp.GetAlg(), k.alg)
	}
	sig := resp.GetSignature()
	if pub, ok := k.pub.(*rsa.PublicKey); ok {
		// Some tokens drop leading zero bytes of an RSA signature; crypto.Signer promises the full
		// modulus size (RFC 8017 I2OSP), which is what crypto/tls and crypto/x509 verify against.
		size := pub.Size()
		if len(sig) == 0 || len(sig) > size {
			return nil, fmt.Errorf("client: sign with key %q: %d-byte signature for a %d-byte modulus: %w", k.name, len(sig), size, jose.ErrMalformedSignature)
		}
		if len(sig) < size {
			padded := make([]byte, size)
			copy(padded[size-len(sig):], sig)
			sig = padded
		}
	}
	return sig, nil
}

// checkOpts checks that digest and opts fit k's algorithm (see SignContext).
func (k *Key) checkOpts(digest []byte, opts crypto.SignerOpts) error {
	if opts == nil {
		return fmt.Errorf("%w: nil options", ErrSignerOpts)
	}
	h := opts.HashFunc()
	if k.alg == jose.EdDSA {
		if h != 0 {
			return fmt.Errorf("%w: EdDSA signs whole messages, got hash %v (Ed25519ph is not supported)", ErrSignerOpts, h)
		}
		if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
			return fmt.Errorf("%w: Ed25519ctx is not supported", ErrSignerOpts)
		}
		return nil
	}
	if want := k.alg.Hash(); h != want {
		return fmt.Errorf("%w: %s signs %v digests, got %v", ErrSignerOpts, k.alg, want, h)
	}
	if len(digest) != h.Size() {
		return fmt.Errorf("%w: digest is %d bytes, %v digests are %d", ErrSignerOpts, len(digest), h, h.Size())
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	switch {
	case k.alg.IsPSS() && !isPSS:
		return fmt.Errorf("%w: %s makes RSASSA-PSS signatures, which need *rsa.PSSOptions", ErrSignerOpts, k.alg)
	case k.alg.IsPSS() && pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != h.Size():
		return fmt.Errorf("%w: %s uses a %d-byte salt, got salt length %d", ErrSignerOpts, k.alg, h.Size(), pss.SaltLength)
	case !k.alg.IsPSS() && isPSS:
		return fmt.Errorf("%w: %s does not make RSASSA-PSS signatures", ErrSignerOpts, k.alg)
	}
	return nil
}

// SigningMethod returns the golang-jwt signing method of the key's algorithm, which signs with any
// crypto.Signer, k included:
//
//	token := jwt.NewWithClaims(k.SigningMethod(), claims)
//	token.Header["kid"] = k.Kid()
//	signed, err := token.SignedString(k)
//
// It is never registered with jwt.RegisterSigningMethod, so jwt.Parse keeps verifying with golang-jwt's
// stock methods. [Key.NewToken] does the first two lines.
func (k *Key) SigningMethod() jwt.SigningMethod {
	return jose.NewSigningMethod(k.alg)
}

// NewToken returns an unsigned token with claims, k's signing method and k's kid in the header; sign it
// with token.SignedString(k). Verifiers that pick keys from a JWKS, such as [JWKSKeyfunc], need the kid.
//
// Prefer the SignJWT RPC when the service does not need to build the token itself: signerd then stamps
// the time claims and applies the access policy's JWT rules, which signing through Key bypasses.
func (k *Key) NewToken(claims jwt.Claims) *jwt.Token {
	t := jwt.NewWithClaims(k.SigningMethod(), claims)
	t.Header["kid"] = k.kid
	return t
}
