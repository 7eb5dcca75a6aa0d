package jose

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// opaqueSigner hides the concrete type of a software key, as an HSM key
// (a crypto11 object) hides it: golang-jwt's stock methods cannot sign with it.
type opaqueSigner struct {
	s crypto.Signer
}

func (o opaqueSigner) Public() crypto.PublicKey { return o.s.Public() }

func (o opaqueSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.s.Sign(r, digest, opts)
}

// funcSigner is a crypto.Signer with a given public key and Sign function,
// standing in for a misbehaving HSM.
type funcSigner struct {
	pub  crypto.PublicKey
	sign func(digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

func (f funcSigner) Public() crypto.PublicKey { return f.pub }

func (f funcSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return f.sign(digest, opts)
}

// splitToken returns the signing input and the decoded signature of a
// compact JWS.
func splitToken(t *testing.T, tok string) (string, []byte) {
	t.Helper()
	i := strings.LastIndexByte(tok, '.')
	if i < 0 || strings.Count(tok, ".") != 2 {
		t.Fatalf("splitToken(%q): not a compact JWS", tok)
	}
	sig, err := b64.DecodeString(tok[i+1:])
	if err != nil {
		t.Fatalf("splitToken(%q): signature: %v", tok, err)
	}
	return tok[:i], sig
}

func testClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "signerd",
		"sub": "alice",
		"exp": time.Now().Add(time.Hour).Unix(),
	}
}

// parseStock parses tok with golang-jwt's own registered method for alg.
func parseStock(tok string, alg Algorithm, pub crypto.PublicKey) (*jwt.Token, error) {
	return jwt.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil }, jwt.WithValidMethods([]string{string(alg)}))
}

func TestSigningMethodInterop(t *testing.T) {
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			t.Parallel()
			key := testSigner(t, a)
			pub := key.Public()
			m := NewSigningMethod(a)

			tok, err := jwt.NewWithClaims(m, testClaims()).SignedString(opaqueSigner{key})
			if err != nil {
				t.Fatalf("SignedString(%q, opaque signer) = %v", a, err)
			}
			parsed, err := parseStock(tok, a, pub)
			if err != nil || !parsed.Valid {
				t.Fatalf("jwt.Parse(%q token) = %v, want a valid token", a, err)
			}
			if _, ours := parsed.Method.(*SigningMethod); ours {
				t.Errorf("jwt.Parse(%q token) used %T, want golang-jwt's stock method", a, parsed.Method)
			}
			if sub, _ := parsed.Claims.(jwt.MapClaims).GetSubject(); sub != "alice" {
				t.Errorf("jwt.Parse(%q token) subject = %q, want %q", a, sub, "alice")
			}

			signingString, sig := splitToken(t, tok)
			if c := a.Curve(); c != nil && len(sig) != 2*CurveSize(c) {
				t.Errorf("len(%q signature) = %d, want %d", a, len(sig), 2*CurveSize(c))
			}
			for _, k := range []any{pub, key, opaqueSigner{key}} {
				if err := m.Verify(signingString, sig, k); err != nil {
					t.Errorf("%q.Verify(token, %T) = %v, want nil", a, k, err)
				}
			}

			// The other direction: golang-jwt signs with the software key, we verify.
			stockTok, err := jwt.NewWithClaims(jwt.GetSigningMethod(string(a)), testClaims()).SignedString(key)
			if err != nil {
				t.Fatalf("stock %q SignedString = %v", a, err)
			}
			signingString, sig = splitToken(t, stockTok)
			if err := m.Verify(signingString, sig, pub); err != nil {
				t.Errorf("%q.Verify(stock token) = %v, want nil", a, err)
			}
		})
	}
}

func TestSigningMethodTamper(t *testing.T) {
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			t.Parallel()
			key := testSigner(t, a)
			pub := key.Public()
			m := NewSigningMethod(a)
			tok, err := jwt.NewWithClaims(m, testClaims()).SignedString(key)
			if err != nil {
				t.Fatalf("SignedString(%q) = %v", a, err)
			}
			signingString, sig := splitToken(t, tok)
			header := signingString[:strings.IndexByte(signingString, '.')]
			otherTok, err := jwt.NewWithClaims(m, testClaims()).SignedString(otherSigner(t, a))
			if err != nil {
				t.Fatal(err)
			}
			_, otherSig := splitToken(t, otherTok)
			flipped := bytes.Clone(sig)
			flipped[len(flipped)/3] ^= 0x10

			tests := []struct {
				name          string
				signingString string
				sig           []byte
			}{
				{"payload changed", header + "." + b64.EncodeToString([]byte(`{"sub":"mallory"}`)), sig},
				{"header changed", b64.EncodeToString([]byte(`{"alg":"`+string(a)+`","typ":"JWT","kid":"x"}`)) + signingString[len(header):], sig},
				{"bit flipped", signingString, flipped},
				{"other key", signingString, otherSig},
				{"truncated", signingString, sig[:len(sig)-1]},
				{"extended", signingString, append(bytes.Clone(sig), 0)},
				{"empty", signingString, nil},
				{"all zero", signingString, make([]byte, len(sig))},
			}
			if a.KeyType() == KeyEC {
				der, err := RawToDER(sig, CurveSize(a.Curve()))
				if err != nil {
					t.Fatal(err)
				}
				tests = append(tests, struct {
					name          string
					signingString string
					sig           []byte
				}{"DER instead of raw", signingString, der})
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if err := m.Verify(tt.signingString, tt.sig, pub); !errors.Is(err, jwt.ErrSignatureInvalid) {
						t.Errorf("%q.Verify(%s) = %v, want %v", a, tt.name, err, jwt.ErrSignatureInvalid)
					}
					forged := tt.signingString + "." + b64.EncodeToString(tt.sig)
					if _, err := parseStock(forged, a, pub); !errors.Is(err, jwt.ErrTokenSignatureInvalid) {
						t.Errorf("jwt.Parse(%s %q token) = %v, want %v", tt.name, a, err, jwt.ErrTokenSignatureInvalid)
					}
				})
			}
		})
	}
}

// TestSigningMethodES256Many signs many ES256 tokens so that some have r or
// s shorter than 32 bytes (about 1 signature in 128), which a converter that
// forgets to left-pad gets wrong.
func TestSigningMethodES256Many(t *testing.T) {
	const n = 2000
	key := opaqueSigner{testSigner(t, ES256)}
	pub := key.Public()
	m := NewSigningMethod(ES256)
	short := 0
	for i := range n {
		tok, err := jwt.NewWithClaims(m, jwt.MapClaims{"sub": "alice", "n": i}).SignedString(key)
		if err != nil {
			t.Fatalf("SignedString(ES256) #%d = %v", i, err)
		}
		signingString, sig := splitToken(t, tok)
		if len(sig) != 64 {
			t.Fatalf("len(ES256 signature #%d) = %d, want 64", i, len(sig))
		}
		if sig[0] == 0 || sig[32] == 0 {
			short++
		}
		if new(big.Int).SetBytes(sig[32:]).Cmp(halfOrder(ES256)) > 0 {
			t.Errorf("ES256 signature #%d %x: s above n/2, want low-S", i, sig)
		}
		if err := m.Verify(signingString, sig, pub); err != nil {
			t.Errorf("ES256.Verify(token #%d, sig %x) = %v, want nil", i, sig, err)
		}
		if _, err := parseStock(tok, ES256, pub); err != nil {
			t.Errorf("jwt.Parse(ES256 token #%d, sig %x) = %v, want nil", i, sig, err)
		}
	}
	t.Logf("%d of %d signatures had a short r or s", short, n)
	// P(no short value in 2000 signatures) = (127/128)^2000 ≈ 1.6e-7.
	if short == 0 {
		t.Errorf("no short r or s in %d ES256 signatures; the padding path went untested", n)
	}
}

func halfOrder(a Algorithm) *big.Int { return new(big.Int).Rsh(a.Curve().Params().N, 1) }

// TestSigningMethodLowS: every ECDSA signature Sign returns has s at most n/2, whichever of the twins
// (r, s) and (r, n-s) the signer made, and the other twin still verifies (RFC 7518 allows both).
func TestSigningMethodLowS(t *testing.T) {
	for _, alg := range []Algorithm{ES256, ES384, ES512} {
		key := testSigner(t, alg).(*ecdsa.PrivateKey)
		size := CurveSize(alg.Curve())
		n := alg.Curve().Params().N
		m := NewSigningMethod(alg)
		high := 0
		for i := range 64 {
			input := fmt.Sprintf("header.%d", i)
			// What the signer made, before Sign normalised it.
			der, err := key.Sign(rand.Reader, alg.Digest([]byte(input)), alg.SignerOpts())
			if err != nil {
				t.Fatal(err)
			}
			made, err := DERToRaw(der, size)
			if err != nil {
				t.Fatal(err)
			}
			if new(big.Int).SetBytes(made[size:]).Cmp(halfOrder(alg)) > 0 {
				high++
			}
			sig, err := m.Sign(input, key)
			if err != nil {
				t.Fatal(err)
			}
			s := new(big.Int).SetBytes(sig[size:])
			if s.Cmp(halfOrder(alg)) > 0 {
				t.Fatalf("%s: Sign(%q) s = %x, above n/2", alg, input, s)
			}
			twin := bytes.Clone(sig)
			new(big.Int).Sub(n, s).FillBytes(twin[size:])
			for _, v := range [][]byte{sig, twin} {
				if err := m.Verify(input, v, &key.PublicKey); err != nil {
					t.Errorf("%s: Verify(%q, %x) = %v, want nil", alg, input, v, err)
				}
			}
		}
		// P(none of 64 signer signatures high) = 2^-64.
		if high == 0 {
			t.Errorf("%s: no signature the signer made had a high s; the normalisation went untested", alg)
		}
	}
}

func TestSigningMethodSignerCall(t *testing.T) {
	const signingString = "eyJhbGciOiJFUzI1NiJ9.e30"
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			key := testSigner(t, a)
			called := false
			spy := funcSigner{pub: key.Public(), sign: func(digest []byte, opts crypto.SignerOpts) ([]byte, error) {
				called = true
				if want := a.Digest([]byte(signingString)); !bytes.Equal(digest, want) {
					t.Errorf("%q: signer got digest %x, want %x", a, digest, want)
				}
				if opts.HashFunc() != a.Hash() {
					t.Errorf("%q: signer got hash %v, want %v", a, opts.HashFunc(), a.Hash())
				}
				if pss, ok := opts.(*rsa.PSSOptions); ok != a.IsPSS() || (ok && pss.SaltLength != rsa.PSSSaltLengthEqualsHash) {
					t.Errorf("%q: signer got opts %#v, want PSS with salt length = hash only for PS*", a, opts)
				}
				return key.Sign(rand.Reader, digest, opts)
			}}
			if _, err := NewSigningMethod(a).Sign(signingString, spy); err != nil || !called {
				t.Errorf("%q.Sign(spy) = %v, called=%v, want nil, true", a, err, called)
			}
		})
	}
}

func TestSigningMethodSignerOutput(t *testing.T) {
	errRemoved := errors.New("token removed")
	ecKey := testSigner(t, ES256)
	tests := []struct {
		name string
		alg  Algorithm
		key  crypto.Signer
		want error
	}{
		{"signer error", ES256, funcSigner{ecKey.Public(), func([]byte, crypto.SignerOpts) ([]byte, error) {
			return nil, errRemoved
		}}, errRemoved},
		{"ECDSA raw r||s", ES256, funcSigner{ecKey.Public(), func(d []byte, o crypto.SignerOpts) ([]byte, error) {
			der, err := ecKey.Sign(rand.Reader, d, o)
			if err != nil {
				return nil, err
			}
			return DERToRaw(der, 32)
		}}, ErrMalformedSignature},
		{"ECDSA DER with trailing byte", ES256, funcSigner{ecKey.Public(), func(d []byte, o crypto.SignerOpts) ([]byte, error) {
			der, err := ecKey.Sign(rand.Reader, d, o)
			return append(der, 0), err
		}}, ErrMalformedSignature},
		{"RSA too long", RS256, funcSigner{testSigner(t, RS256).Public(), func([]byte, crypto.SignerOpts) ([]byte, error) {
			return make([]byte, 257), nil
		}}, ErrMalformedSignature},
		{"RSA empty", RS256, funcSigner{testSigner(t, RS256).Public(), func([]byte, crypto.SignerOpts) ([]byte, error) {
			return nil, nil
		}}, ErrMalformedSignature},
		{"Ed25519 short", EdDSA, funcSigner{testSigner(t, EdDSA).Public(), func([]byte, crypto.SignerOpts) ([]byte, error) {
			return make([]byte, 63), nil
		}}, ErrMalformedSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if sig, err := NewSigningMethod(tt.alg).Sign("a.b", tt.key); !errors.Is(err, tt.want) {
				t.Errorf("%q.Sign(%s) = %x, %v, want %v", tt.alg, tt.name, sig, err, tt.want)
			}
		})
	}
}

// TestSigningMethodShortRSA checks that an RSA signature a token returns
// without its leading zero bytes is padded back to the modulus size.
func TestSigningMethodShortRSA(t *testing.T) {
	key := testSigner(t, RS256)
	stripped := false
	trimming := funcSigner{key.Public(), func(d []byte, o crypto.SignerOpts) ([]byte, error) {
		sig, err := key.Sign(rand.Reader, d, o)
		if err != nil {
			return nil, err
		}
		trimmed := bytes.TrimLeft(sig, "\x00")
		stripped = len(trimmed) < len(sig)
		return trimmed, nil
	}}
	m := NewSigningMethod(RS256)
	// PKCS #1 v1.5 is deterministic, so try messages until a signature starts
	// with a zero byte (1 in 256; missing one in 5000 tries has p ≈ 3e-9).
	for i := 0; i < 5000 && !stripped; i++ {
		tok, err := jwt.NewWithClaims(m, jwt.MapClaims{"n": i}).SignedString(trimming)
		if err != nil {
			t.Fatalf("RS256.Sign(trimming signer) = %v", err)
		}
		if !stripped {
			continue
		}
		_, sig := splitToken(t, tok)
		if len(sig) != 256 || sig[0] != 0 {
			t.Errorf("RS256.Sign(trimming signer) = %d bytes starting %x, want 256 starting with 00", len(sig), sig[:1])
		}
		if _, err := parseStock(tok, RS256, key.Public()); err != nil {
			t.Errorf("jwt.Parse(padded RS256 token) = %v, want nil", err)
		}
	}
	if !stripped {
		t.Fatal("no RS256 signature with a leading zero byte in 5000 tries")
	}
}

func TestSigningMethodKeyErrors(t *testing.T) {
	odd1024 := new(big.Int).Lsh(big.NewInt(1), 1023)
	odd1024.SetBit(odd1024, 0, 1)
	neverSign := func([]byte, crypto.SignerOpts) ([]byte, error) {
		return nil, errors.New("Sign must not reach the signer for an unusable key")
	}
	rsaKey := testSigner(t, RS256)
	p256Key := testSigner(t, ES256)
	p384Key := testSigner(t, ES384)
	edKey := testSigner(t, EdDSA)

	signTests := []struct {
		name string
		alg  Algorithm
		key  any
		want error
	}{
		{"nil", ES256, nil, jwt.ErrInvalidKeyType},
		{"string", ES256, "secret", jwt.ErrInvalidKeyType},
		{"HMAC secret", RS256, []byte("secret"), jwt.ErrInvalidKeyType},
		{"public key", ES256, p256Key.Public(), jwt.ErrInvalidKeyType},
		{"rsa signer for ES256", ES256, rsaKey, jwt.ErrInvalidKeyType},
		{"ecdsa signer for EdDSA", EdDSA, p256Key, jwt.ErrInvalidKeyType},
		{"ed25519 signer for PS256", PS256, edKey, jwt.ErrInvalidKeyType},
		{"p384 signer for ES256", ES256, p384Key, jwt.ErrInvalidKey},
		{"p256 signer for ES512", ES512, p256Key, jwt.ErrInvalidKey},
		{"rsa1024 signer", RS256, funcSigner{&rsa.PublicKey{N: odd1024, E: 65537}, neverSign}, jwt.ErrInvalidKey},
		{"unsupported algorithm", "HS256", rsaKey, ErrUnsupportedAlgorithm},
		{"none", "none", rsaKey, ErrUnsupportedAlgorithm},
	}
	for _, tt := range signTests {
		t.Run("Sign/"+tt.name, func(t *testing.T) {
			if sig, err := NewSigningMethod(tt.alg).Sign("a.b", tt.key); !errors.Is(err, tt.want) {
				t.Errorf("%q.Sign(%T) = %x, %v, want %v", tt.alg, tt.key, sig, err, tt.want)
			}
		})
	}

	tok, err := jwt.NewWithClaims(NewSigningMethod(ES256), testClaims()).SignedString(p256Key)
	if err != nil {
		t.Fatal(err)
	}
	signingString, sig := splitToken(t, tok)
	verifyTests := []struct {
		name string
		alg  Algorithm
		key  any
		want error
	}{
		{"nil", ES256, nil, jwt.ErrInvalidKeyType},
		{"string", ES256, "secret", jwt.ErrInvalidKeyType},
		{"ecdsa value", ES256, *(p256Key.Public().(*ecdsa.PublicKey)), jwt.ErrInvalidKeyType},
		{"rsa public key", ES256, rsaKey.Public(), jwt.ErrInvalidKeyType},
		{"p384 public key", ES256, p384Key.Public(), jwt.ErrInvalidKey},
		{"p384 signer", ES256, p384Key, jwt.ErrInvalidKey},
		{"unsupported algorithm", "HS256", p256Key.Public(), ErrUnsupportedAlgorithm},
	}
	for _, tt := range verifyTests {
		t.Run("Verify/"+tt.name, func(t *testing.T) {
			if err := NewSigningMethod(tt.alg).Verify(signingString, sig, tt.key); !errors.Is(err, tt.want) {
				t.Errorf("%q.Verify(%T) = %v, want %v", tt.alg, tt.key, err, tt.want)
			}
		})
	}
}

// TestStockMethodsCannotSignWithHSMKeys is the reason SigningMethod exists.
func TestStockMethodsCannotSignWithHSMKeys(t *testing.T) {
	for _, a := range []Algorithm{RS256, PS256, ES256} {
		t.Run(string(a), func(t *testing.T) {
			key := opaqueSigner{testSigner(t, a)}
			if _, err := jwt.GetSigningMethod(string(a)).Sign("a.b", key); !errors.Is(err, jwt.ErrInvalidKeyType) {
				t.Errorf("stock %q.Sign(opaque signer) = %v, want %v", a, err, jwt.ErrInvalidKeyType)
			}
			if _, err := NewSigningMethod(a).Sign("a.b", key); err != nil {
				t.Errorf("%q.Sign(opaque signer) = %v, want nil", a, err)
			}
		})
	}
}

func TestSigningMethodNotRegistered(t *testing.T) {
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			m := NewSigningMethod(a)
			if m.Alg() != string(a) || m.Algorithm() != a {
				t.Errorf("NewSigningMethod(%q) has Alg() = %q, Algorithm() = %q, want %q", a, m.Alg(), m.Algorithm(), a)
			}
			stock := jwt.GetSigningMethod(string(a))
			if _, ours := stock.(*SigningMethod); ours || stock == nil {
				t.Errorf("jwt.GetSigningMethod(%q) = %T, want golang-jwt's stock method", a, stock)
			}
		})
	}
}

// ExampleSigningMethod signs a JWT with a crypto.Signer, which in signerd is a
// PKCS#11 key, and publishes the matching JWK.
func ExampleSigningMethod() {
	key, err := ecdsa.GenerateKey(ES256.Curve(), rand.Reader) // stands in for an HSM key
	if err != nil {
		panic(err)
	}
	jwk, err := NewJWK(key.Public(), ES256)
	if err != nil {
		panic(err)
	}
	tok := jwt.NewWithClaims(NewSigningMethod(ES256), jwt.MapClaims{"sub": "alice"})
	tok.Header["kid"] = jwk.Kid
	signed, err := tok.SignedString(key)
	if err != nil {
		panic(err)
	}
	parsed, err := jwt.Parse(signed, func(*jwt.Token) (any, error) { return jwk.PublicKey() },
		jwt.WithValidMethods([]string{jwk.Alg}))
	fmt.Println(parsed.Valid, err)
	// Output: true <nil>
}
