package jose

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"math/big"
	"slices"
	"sync"
	"testing"
)

// Test keys are generated once per test binary: RSA generation is slow,
// especially under the race detector, and every test only reads them.
var (
	rsaTestKey      = sync.OnceValues(func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	rsaOtherTestKey = sync.OnceValues(func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	p256TestKey     = sync.OnceValues(func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) })
	p384TestKey     = sync.OnceValues(func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) })
	p521TestKey     = sync.OnceValues(func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) })
	ed25519TestKey  = sync.OnceValues(func() (crypto.Signer, error) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	})
)

// testSigner returns the shared software key for alg.
func testSigner(t testing.TB, alg Algorithm) crypto.Signer {
	t.Helper()
	var gen func() (crypto.Signer, error)
	switch alg {
	case RS256, RS384, RS512, PS256, PS384, PS512:
		gen = rsaTestKey
	case ES256:
		gen = p256TestKey
	case ES384:
		gen = p384TestKey
	case ES512:
		gen = p521TestKey
	case EdDSA:
		gen = ed25519TestKey
	default:
		t.Fatalf("testSigner(%q): no key for this algorithm", alg)
	}
	s, err := gen()
	if err != nil {
		t.Fatalf("testSigner(%q): generate key: %v", alg, err)
	}
	return s
}

// otherSigner returns a second key for alg, different from testSigner's.
func otherSigner(t testing.TB, alg Algorithm) crypto.Signer {
	t.Helper()
	switch alg.KeyType() {
	case KeyRSA:
		s, err := rsaOtherTestKey()
		if err != nil {
			t.Fatalf("otherSigner(%q): %v", alg, err)
		}
		return s
	case KeyEC:
		s, err := ecdsa.GenerateKey(alg.Curve(), rand.Reader)
		if err != nil {
			t.Fatalf("otherSigner(%q): %v", alg, err)
		}
		return s
	}
	_, s, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("otherSigner(%q): %v", alg, err)
	}
	return s
}

func TestParseAlgorithm(t *testing.T) {
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			got, err := ParseAlgorithm(string(a))
			if err != nil || got != a {
				t.Errorf("ParseAlgorithm(%q) = %q, %v, want %q, nil", a, got, err, a)
			}
		})
	}
	for _, s := range []string{"", "none", "None", "HS256", "HS512", "rs256", "Es256", "eddsa", "ED25519", "Ed25519", "ES256K", " RS256", "RS256 ", "RS256\x00", "PS1024"} {
		t.Run("reject/"+s, func(t *testing.T) {
			got, err := ParseAlgorithm(s)
			if !errors.Is(err, ErrUnsupportedAlgorithm) || got != "" {
				t.Errorf("ParseAlgorithm(%q) = %q, %v, want \"\", %v", s, got, err, ErrUnsupportedAlgorithm)
			}
		})
	}
}

func FuzzParseAlgorithm(f *testing.F) {
	for _, s := range []string{"RS256", "EdDSA", "none", "HS256", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAlgorithm(s)
		if err != nil {
			if !errors.Is(err, ErrUnsupportedAlgorithm) {
				t.Errorf("ParseAlgorithm(%q) error %v does not wrap %v", s, err, ErrUnsupportedAlgorithm)
			}
			return
		}
		if string(a) != s || !slices.Contains(Algorithms(), a) {
			t.Errorf("ParseAlgorithm(%q) = %q, want a member of Algorithms() equal to the input", s, a)
		}
	})
}

func TestAlgorithms(t *testing.T) {
	want := []Algorithm{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
	got := Algorithms()
	if !slices.Equal(got, want) {
		t.Fatalf("Algorithms() = %q, want %q", got, want)
	}
	got[0] = "none"
	if again := Algorithms(); again[0] != RS256 {
		t.Errorf("Algorithms()[0] = %q after the caller modified an earlier result, want %q", again[0], RS256)
	}
}

func TestAlgorithmProperties(t *testing.T) {
	tests := []struct {
		alg   Algorithm
		kt    KeyType
		hash  crypto.Hash
		curve elliptic.Curve
		pss   bool
	}{
		{RS256, KeyRSA, crypto.SHA256, nil, false},
		{RS384, KeyRSA, crypto.SHA384, nil, false},
		{RS512, KeyRSA, crypto.SHA512, nil, false},
		{PS256, KeyRSA, crypto.SHA256, nil, true},
		{PS384, KeyRSA, crypto.SHA384, nil, true},
		{PS512, KeyRSA, crypto.SHA512, nil, true},
		{ES256, KeyEC, crypto.SHA256, elliptic.P256(), false},
		{ES384, KeyEC, crypto.SHA384, elliptic.P384(), false},
		{ES512, KeyEC, crypto.SHA512, elliptic.P521(), false},
		{EdDSA, KeyEd25519, 0, nil, false},
		{"HS256", 0, 0, nil, false},
		{"none", 0, 0, nil, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			if got := tt.alg.KeyType(); got != tt.kt {
				t.Errorf("%q.KeyType() = %v, want %v", tt.alg, got, tt.kt)
			}
			if got := tt.alg.Hash(); got != tt.hash {
				t.Errorf("%q.Hash() = %v, want %v", tt.alg, got, tt.hash)
			}
			if got := tt.alg.Curve(); got != tt.curve {
				t.Errorf("%q.Curve() = %v, want %v", tt.alg, got, tt.curve)
			}
			if got := tt.alg.IsPSS(); got != tt.pss {
				t.Errorf("%q.IsPSS() = %v, want %v", tt.alg, got, tt.pss)
			}
		})
	}
}

func TestKeyTypeString(t *testing.T) {
	tests := []struct {
		kt   KeyType
		want string
	}{
		{KeyRSA, "RSA"},
		{KeyEC, "EC"},
		{KeyEd25519, "OKP"},
		{0, "KeyType(0)"},
		{42, "KeyType(42)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.kt.String(); got != tt.want {
				t.Errorf("KeyType(%d).String() = %q, want %q", int(tt.kt), got, tt.want)
			}
		})
	}
}

func TestSignerOpts(t *testing.T) {
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			opts := a.SignerOpts()
			if opts == nil {
				t.Fatalf("%q.SignerOpts() = nil, want options", a)
			}
			if got := opts.HashFunc(); got != a.Hash() {
				t.Errorf("%q.SignerOpts().HashFunc() = %v, want %v", a, got, a.Hash())
			}
			pss, isPSS := opts.(*rsa.PSSOptions)
			if isPSS != a.IsPSS() {
				t.Fatalf("%q.SignerOpts() = %T, want *rsa.PSSOptions only for PS*", a, opts)
			}
			if isPSS && pss.SaltLength != rsa.PSSSaltLengthEqualsHash {
				t.Errorf("%q.SignerOpts().SaltLength = %d, want %d (PSSSaltLengthEqualsHash)", a, pss.SaltLength, rsa.PSSSaltLengthEqualsHash)
			}
		})
	}
	t.Run("unsupported", func(t *testing.T) {
		if got := Algorithm("HS256").SignerOpts(); got != nil {
			t.Errorf("%q.SignerOpts() = %v, want nil", "HS256", got)
		}
	})
}

func TestDigest(t *testing.T) {
	msg := []byte("eyJhbGciOiJFUzI1NiJ9.e30")
	sum256 := sha256.Sum256(msg)
	tests := []struct {
		alg  Algorithm
		want []byte
	}{
		{ES256, sum256[:]},
		{RS256, sum256[:]},
		{PS256, sum256[:]},
		{EdDSA, msg},
		{"HS256", nil},
	}
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			if got := tt.alg.Digest(msg); !bytes.Equal(got, tt.want) {
				t.Errorf("%q.Digest(%q) = %x, want %x", tt.alg, msg, got, tt.want)
			}
		})
	}
	for _, a := range Algorithms() {
		if h := a.Hash(); h != 0 {
			if got := len(a.Digest(msg)); got != h.Size() {
				t.Errorf("len(%q.Digest(%q)) = %d, want %d", a, msg, got, h.Size())
			}
		}
	}
}

func TestCheckPublicKey(t *testing.T) {
	rsaPub := testSigner(t, RS256).Public().(*rsa.PublicKey)
	p256Pub := testSigner(t, ES256).Public()
	p384Pub := testSigner(t, ES384).Public()
	p521Pub := testSigner(t, ES512).Public()
	edPub := testSigner(t, EdDSA).Public().(ed25519.PublicKey)

	odd1024 := new(big.Int).Lsh(big.NewInt(1), 1023)
	odd1024.SetBit(odd1024, 0, 1)
	even2048 := new(big.Int).Lsh(big.NewInt(1), 2047)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	offCurve := &ecdsa.PublicKey{Curve: elliptic.P256()}
	//lint:ignore SA1019 building an invalid key needs the raw coordinates.
	offCurve.X, offCurve.Y = big.NewInt(1), big.NewInt(2)

	tests := []struct {
		name string
		alg  Algorithm
		pub  crypto.PublicKey
		ok   bool
	}{
		{"RS256/rsa2048", RS256, rsaPub, true},
		{"PS512/rsa2048", PS512, rsaPub, true},
		{"ES256/p256", ES256, p256Pub, true},
		{"ES384/p384", ES384, p384Pub, true},
		{"ES512/p521", ES512, p521Pub, true},
		{"EdDSA/ed25519", EdDSA, edPub, true},

		{"RS256/rsa1024", RS256, &rsa.PublicKey{N: odd1024, E: 65537}, false},
		{"RS256/even modulus", RS256, &rsa.PublicKey{N: even2048, E: 65537}, false},
		{"RS256/e=1", RS256, &rsa.PublicKey{N: rsaPub.N, E: 1}, false},
		{"RS256/even e", RS256, &rsa.PublicKey{N: rsaPub.N, E: 65536}, false},
		{"RS256/no modulus", RS256, &rsa.PublicKey{E: 65537}, false},
		{"RS256/nil rsa", RS256, (*rsa.PublicKey)(nil), false},
		{"RS256/rsa value", RS256, *rsaPub, false},
		{"RS256/private key", RS256, testSigner(t, RS256), false},
		{"RS256/ec", RS256, p256Pub, false},
		{"ES256/p384", ES256, p384Pub, false},
		{"ES384/p256", ES384, p256Pub, false},
		{"ES512/p384", ES512, p384Pub, false},
		{"ES256/p224", ES256, &p224.PublicKey, false},
		{"ES256/off curve", ES256, offCurve, false},
		{"ES256/no point", ES256, &ecdsa.PublicKey{Curve: elliptic.P256()}, false},
		{"ES256/no curve", ES256, &ecdsa.PublicKey{}, false},
		{"ES256/nil ecdsa", ES256, (*ecdsa.PublicKey)(nil), false},
		{"ES256/rsa", ES256, rsaPub, false},
		{"ES256/ed25519", ES256, edPub, false},
		{"EdDSA/short", EdDSA, edPub[:31], false},
		{"EdDSA/private key", EdDSA, testSigner(t, EdDSA), false},
		{"EdDSA/pointer", EdDSA, &edPub, false},
		{"EdDSA/p256", EdDSA, p256Pub, false},
		{"EdDSA/nil", EdDSA, nil, false},
		{"HS256/rsa", "HS256", rsaPub, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.alg.CheckPublicKey(tt.pub)
			if (err == nil) != tt.ok {
				t.Errorf("%q.CheckPublicKey(%T) = %v, want ok=%v", tt.alg, tt.pub, err, tt.ok)
			}
		})
	}
	t.Run("unsupported wraps sentinel", func(t *testing.T) {
		if err := Algorithm("none").CheckPublicKey(rsaPub); !errors.Is(err, ErrUnsupportedAlgorithm) {
			t.Errorf("%q.CheckPublicKey(rsa) = %v, want %v", "none", err, ErrUnsupportedAlgorithm)
		}
	})
}
