package jose

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

// rfc7638Key is the RSA key of RFC 7638 §3.1 and its thumbprint (§3.1, end).
var rfc7638Key = JWK{
	Kty: "RSA",
	N:   "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
	E:   "AQAB",
	Alg: "RS256",
	Kid: "2011-04-29",
}

const rfc7638Thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

func TestThumbprintRFC7638(t *testing.T) {
	pub, err := rfc7638Key.PublicKey()
	if err != nil {
		t.Fatalf("JWK.PublicKey() for the RFC 7638 key = %v", err)
	}
	got, err := Thumbprint(pub)
	if err != nil || got != rfc7638Thumbprint {
		t.Errorf("Thumbprint(RFC 7638 key) = %q, %v, want %q, nil", got, err, rfc7638Thumbprint)
	}
	k, err := NewJWK(pub, RS256)
	if err != nil {
		t.Fatalf("NewJWK(RFC 7638 key, RS256) = %v", err)
	}
	if k.Kid != rfc7638Thumbprint || k.N != rfc7638Key.N || k.E != rfc7638Key.E {
		t.Errorf("NewJWK(RFC 7638 key, RS256) = %+v, want kid %q and the RFC's n and e", k, rfc7638Thumbprint)
	}
}

// thumbprintOracle computes an RFC 7638 thumbprint independently of
// Thumbprint: encoding/json writes map keys sorted and without whitespace.
func thumbprintOracle(t *testing.T, k JWK) string {
	t.Helper()
	m := map[string]string{"kty": k.Kty}
	switch k.Kty {
	case "RSA":
		m["n"], m["e"] = k.N, k.E
	case "EC":
		m["crv"], m["x"], m["y"] = k.Crv, k.X, k.Y
	case "OKP":
		m["crv"], m["x"] = k.Crv, k.X
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return b64.EncodeToString(sum[:])
}

func TestJWKRoundTrip(t *testing.T) {
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			pub := testSigner(t, a).Public()
			k, err := NewJWK(pub, a)
			if err != nil {
				t.Fatalf("NewJWK(%T, %q) = %v", pub, a, err)
			}
			if k.Kty != a.KeyType().String() || k.Use != "sig" || k.Alg != string(a) {
				t.Errorf("NewJWK(%T, %q) = %+v, want kty %q, use sig, alg %q", pub, a, k, a.KeyType(), a)
			}
			tp, err := Thumbprint(pub)
			if err != nil || k.Kid != tp {
				t.Errorf("NewJWK(%T, %q).Kid = %q, want Thumbprint = %q (%v)", pub, a, k.Kid, tp, err)
			}
			if want := thumbprintOracle(t, k); tp != want {
				t.Errorf("Thumbprint(%T) = %q, want %q", pub, tp, want)
			}

			b, err := json.Marshal(JWKS{Keys: []JWK{k}})
			if err != nil {
				t.Fatal(err)
			}
			var set JWKS
			if err := json.Unmarshal(b, &set); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", b, err)
			}
			if len(set.Keys) != 1 || set.Keys[0] != k {
				t.Fatalf("JSON round trip of %+v = %+v", k, set.Keys)
			}
			got, err := set.Keys[0].PublicKey()
			if err != nil {
				t.Fatalf("JWK.PublicKey() of %s = %v", b, err)
			}
			if eq, ok := got.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
				t.Errorf("JWK.PublicKey() of %s = %v, want %v", b, got, pub)
			}
			if err := a.CheckPublicKey(got); err != nil {
				t.Errorf("%q.CheckPublicKey(parsed JWK) = %v", a, err)
			}
		})
	}
}

func TestJWKJSON(t *testing.T) {
	set := JWKS{Keys: []JWK{
		{Kty: "EC", Use: "sig", Alg: "ES256", Kid: "k1", Crv: "P-256", X: "xx", Y: "yy"},
		{Kty: "RSA", N: "nn", E: "AQAB"},
	}}
	want := `{"keys":[{"kty":"EC","use":"sig","alg":"ES256","kid":"k1","crv":"P-256","x":"xx","y":"yy"},{"kty":"RSA","n":"nn","e":"AQAB"}]}`
	got, err := json.Marshal(set)
	if err != nil || string(got) != want {
		t.Errorf("json.Marshal(%+v) = %s, %v, want %s", set, got, err, want)
	}
}

// TestJWKEncoding checks the RFC 7518 §6 encodings where they bite: EC
// coordinates keep their leading zeros, RSA values lose theirs.
func TestJWKEncoding(t *testing.T) {
	t.Run("EC x with leading zero", func(t *testing.T) {
		// About 1 key in 256 has x < 2^248; a dropped leading zero makes a JWK
		// that strict parsers (including ours) reject.
		var pub *ecdsa.PublicKey
		for i := 0; i < 100000 && pub == nil; i++ {
			k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := k.PublicKey.Bytes(); b[1] == 0 {
				pub = &k.PublicKey
			}
		}
		if pub == nil {
			t.Fatal("no P-256 key with a leading zero in x after 100000 tries")
		}
		k, err := NewJWK(pub, ES256)
		if err != nil {
			t.Fatal(err)
		}
		x, err := b64.DecodeString(k.X)
		if err != nil || len(x) != 32 || x[0] != 0 {
			t.Errorf("NewJWK(x with leading zero).X = %q (%x, %v), want 32 bytes starting with 0", k.X, x, err)
		}
		if back, err := k.PublicKey(); err != nil || !pub.Equal(back) {
			t.Errorf("JWK.PublicKey() = %v, %v, want the original key", back, err)
		}
	})
	t.Run("RSA e", func(t *testing.T) {
		k, err := NewJWK(testSigner(t, RS256).Public(), RS256)
		if err != nil || k.E != "AQAB" {
			t.Errorf("NewJWK(rsa e=65537).E = %q, %v, want %q", k.E, err, "AQAB")
		}
		n, err := b64.DecodeString(k.N)
		if err != nil || len(n) != 256 || n[0] == 0 {
			t.Errorf("NewJWK(rsa 2048).N decodes to %d bytes starting %x, %v, want 256 without leading zero", len(n), n[:1], err)
		}
	})
	t.Run("OKP x", func(t *testing.T) {
		pub := testSigner(t, EdDSA).Public().(ed25519.PublicKey)
		k, err := NewJWK(pub, EdDSA)
		if err != nil || k.Kty != "OKP" || k.Crv != "Ed25519" || k.X != b64.EncodeToString(pub) || k.Y != "" {
			t.Errorf("NewJWK(ed25519) = %+v, %v, want kty OKP, crv Ed25519, x = the raw key", k, err)
		}
	})
}

func TestNewJWKRejects(t *testing.T) {
	odd1024 := new(big.Int).Lsh(big.NewInt(1), 1023)
	odd1024.SetBit(odd1024, 0, 1)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  crypto.PublicKey
		alg  Algorithm
	}{
		{"rsa1024", &rsa.PublicKey{N: odd1024, E: 65537}, RS256},
		{"wrong curve", testSigner(t, ES384).Public(), ES256},
		{"p224", &p224.PublicKey, ES256},
		{"private key", testSigner(t, EdDSA), EdDSA},
		{"unsupported alg", testSigner(t, ES256).Public(), "HS256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if k, err := NewJWK(tt.pub, tt.alg); err == nil {
				t.Errorf("NewJWK(%T, %q) = %+v, nil, want an error", tt.pub, tt.alg, k)
			}
		})
	}
}

func TestThumbprintRejects(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		pub  crypto.PublicKey
	}{
		{"nil", nil},
		{"private key", testSigner(t, ES256)},
		{"p224", &p224.PublicKey},
		{"ec no point", &ecdsa.PublicKey{Curve: elliptic.P256()}},
		{"nil ecdsa", (*ecdsa.PublicKey)(nil)},
		{"rsa no modulus", &rsa.PublicKey{E: 65537}},
		{"nil rsa", (*rsa.PublicKey)(nil)},
		{"rsa zero e", &rsa.PublicKey{N: big.NewInt(35)}},
		{"ed25519 short", ed25519.PublicKey(make([]byte, 31))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := Thumbprint(tt.pub); err == nil {
				t.Errorf("Thumbprint(%T) = %q, nil, want an error", tt.pub, got)
			}
		})
	}
}

func TestJWKPublicKeyRejects(t *testing.T) {
	rsaJWK, err := NewJWK(testSigner(t, RS256).Public(), RS256)
	if err != nil {
		t.Fatal(err)
	}
	ecJWK, err := NewJWK(testSigner(t, ES256).Public(), ES256)
	if err != nil {
		t.Fatal(err)
	}
	okpJWK, err := NewJWK(testSigner(t, EdDSA).Public(), EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(b ...byte) string { return b64.EncodeToString(b) }
	pad := func(n int, tail ...byte) string { return enc(append(make([]byte, n-len(tail)), tail...)...) }

	tests := []struct {
		name string
		base JWK
		edit func(*JWK)
	}{
		{"no kty", rsaJWK, func(k *JWK) { k.Kty = "" }},
		{"lower-case kty", rsaJWK, func(k *JWK) { k.Kty = "rsa" }},
		{"oct kty", rsaJWK, func(k *JWK) { k.Kty = "oct" }},

		{"RSA missing n", rsaJWK, func(k *JWK) { k.N = "" }},
		{"RSA missing e", rsaJWK, func(k *JWK) { k.E = "" }},
		{"RSA n leading zero", rsaJWK, func(k *JWK) { k.N = "AA" + k.N[2:] }},
		{"RSA n padded", rsaJWK, func(k *JWK) { k.N += "=" }},
		{"RSA n with newline", rsaJWK, func(k *JWK) { k.N = k.N[:10] + "\n" + k.N[10:] }},
		{"RSA n standard base64", rsaJWK, func(k *JWK) { k.N = strings.NewReplacer("-", "+", "_", "/").Replace(rfc7638Key.N) }},
		{"RSA n even", rsaJWK, func(k *JWK) { k.N = enc(0x80, 0, 0, 2) }},
		{"RSA n too big", rsaJWK, func(k *JWK) {
			n := make([]byte, maxRSABits/8+1)
			n[0], n[len(n)-1] = 1, 1
			k.N = enc(n...)
		}},
		{"RSA e leading zero", rsaJWK, func(k *JWK) { k.E = enc(0, 1, 0, 1) }},
		{"RSA e=1", rsaJWK, func(k *JWK) { k.E = enc(1) }},
		{"RSA e even", rsaJWK, func(k *JWK) { k.E = enc(1, 0, 0) }},
		{"RSA e 2^31+1", rsaJWK, func(k *JWK) { k.E = enc(0x80, 0, 0, 1) }},
		{"RSA e 5 bytes", rsaJWK, func(k *JWK) { k.E = enc(1, 0, 0, 0, 1) }},
		{"RSA e nonzero trailing bits", rsaJWK, func(k *JWK) { k.E = "Ah" }},
		{"RSA with crv", rsaJWK, func(k *JWK) { k.Crv = "P-256" }},
		{"RSA with x", rsaJWK, func(k *JWK) { k.X = ecJWK.X }},

		{"EC missing crv", ecJWK, func(k *JWK) { k.Crv = "" }},
		{"EC P-224", ecJWK, func(k *JWK) { k.Crv = "P-224" }},
		{"EC secp256k1", ecJWK, func(k *JWK) { k.Crv = "secp256k1" }},
		{"EC crv for another size", ecJWK, func(k *JWK) { k.Crv = "P-384" }},
		{"EC missing x", ecJWK, func(k *JWK) { k.X = "" }},
		{"EC missing y", ecJWK, func(k *JWK) { k.Y = "" }},
		{"EC x without leading zeros", ecJWK, func(k *JWK) { k.X, k.Y = enc(1), enc(2) }},
		{"EC x 33 bytes", ecJWK, func(k *JWK) { k.X = pad(33, 1) }},
		{"EC point off curve", ecJWK, func(k *JWK) { k.X, k.Y = pad(32, 1), pad(32, 2) }},
		{"EC point at infinity", ecJWK, func(k *JWK) { k.X, k.Y = pad(32), pad(32) }},
		{"EC with n", ecJWK, func(k *JWK) { k.N = rsaJWK.N }},
		{"EC with e", ecJWK, func(k *JWK) { k.E = "AQAB" }},

		{"OKP X25519", okpJWK, func(k *JWK) { k.Crv = "X25519" }},
		{"OKP Ed448", okpJWK, func(k *JWK) { k.Crv = "Ed448" }},
		{"OKP missing crv", okpJWK, func(k *JWK) { k.Crv = "" }},
		{"OKP missing x", okpJWK, func(k *JWK) { k.X = "" }},
		{"OKP x 31 bytes", okpJWK, func(k *JWK) { k.X = pad(31, 1) }},
		{"OKP x 33 bytes", okpJWK, func(k *JWK) { k.X = pad(33, 1) }},
		{"OKP with y", okpJWK, func(k *JWK) { k.Y = k.X }},
		{"OKP with n", okpJWK, func(k *JWK) { k.N = rsaJWK.N }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tt.base
			if _, err := k.PublicKey(); err != nil {
				t.Fatalf("JWK.PublicKey() of the unedited %s key = %v", k.Kty, err)
			}
			tt.edit(&k)
			if got, err := k.PublicKey(); err == nil {
				t.Errorf("JWK%+v.PublicKey() = %v, nil, want an error", k, got)
			}
		})
	}
}

// TestJWKPublicKeyIgnoresMetadata documents that PublicKey parses key
// material only: use, alg and kid are the caller's to check.
func TestJWKPublicKeyIgnoresMetadata(t *testing.T) {
	k, err := NewJWK(testSigner(t, ES256).Public(), ES256)
	if err != nil {
		t.Fatal(err)
	}
	k.Use, k.Alg, k.Kid = "enc", "RS256", "not-the-thumbprint"
	if _, err := k.PublicKey(); err != nil {
		t.Errorf("JWK%+v.PublicKey() = %v, want nil", k, err)
	}
}

// FuzzJWKPublicKey checks that parsing a JSON JWK never panics and that any
// key it accepts is canonical: encoding the parsed key gives back exactly the
// key members that were parsed.
func FuzzJWKPublicKey(f *testing.F) {
	for _, a := range []Algorithm{RS256, ES256, ES384, ES512, EdDSA} {
		k, err := NewJWK(testSigner(f, a).Public(), a)
		if err != nil {
			f.Fatal(err)
		}
		b, err := json.Marshal(k)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"kty":"RSA","n":"AQAB","e":"AQAB"}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}`))
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":""}`))
	f.Add([]byte(`{"kty":"oct","k":"AAAA"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var k JWK
		if err := json.Unmarshal(data, &k); err != nil {
			return
		}
		pub, err := k.PublicKey()
		if err != nil {
			return
		}
		members, err := keyMembers(pub)
		if err != nil {
			t.Fatalf("keyMembers(JWK%+v.PublicKey()) = %v", k, err)
		}
		want := JWK{Kty: k.Kty, Crv: k.Crv, X: k.X, Y: k.Y, N: k.N, E: k.E}
		if members != want {
			t.Errorf("keyMembers(JWK%+v.PublicKey()) = %+v, want %+v", k, members, want)
		}
		if _, err := Thumbprint(pub); err != nil {
			t.Errorf("Thumbprint(JWK%+v.PublicKey()) = %v", k, err)
		}
	})
}

func TestJWKPublicKeyErrorMentionsKid(t *testing.T) {
	k := JWK{Kty: "EC", Kid: "key-7"}
	_, err := k.PublicKey()
	if err == nil || !strings.Contains(err.Error(), `"key-7"`) {
		t.Errorf("JWK%+v.PublicKey() = %v, want an error naming kid %q", k, err, k.Kid)
	}
}
