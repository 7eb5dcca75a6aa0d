package jose

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
)

// derInt returns the DER INTEGER whose content octets are content, which the
// caller writes out by hand (including any 0x00 sign byte).
func derInt(content ...byte) []byte {
	return derTLV(0x02, content)
}

// derSeq returns the DER SEQUENCE of the given encoded elements.
func derSeq(elems ...[]byte) []byte {
	return derTLV(0x30, bytes.Join(elems, nil))
}

// derTLV encodes tag, a definite minimal length and content.
func derTLV(tag byte, content []byte) []byte {
	out := []byte{tag}
	switch n := len(content); {
	case n < 0x80:
		out = append(out, byte(n))
	case n <= 0xff:
		out = append(out, 0x81, byte(n))
	default:
		out = append(out, 0x82, byte(n>>8), byte(n))
	}
	return append(out, content...)
}

// fill returns n bytes of b.
func fill(b byte, n int) []byte {
	return bytes.Repeat([]byte{b}, n)
}

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

func TestDERToRaw(t *testing.T) {
	full := fill(0x11, 32)                  // 32-byte r or s, top bit clear
	high := fill(0xa5, 32)                  // 32-byte r or s, top bit set: needs a 0x00 sign byte in DER
	short := cat([]byte{0x7f}, fill(1, 30)) // 31 bytes: r or s below 2^248, as in ~0.4% of P-256 signatures each
	shorter := fill(0x22, 29)
	tests := []struct {
		name string
		der  []byte
		size int
		want []byte
	}{
		{"full", derSeq(derInt(full...), derInt(full...)), 32, cat(full, full)},
		{"high bit", derSeq(derInt(cat([]byte{0}, high)...), derInt(cat([]byte{0}, high)...)), 32, cat(high, high)},
		{"short r", derSeq(derInt(short...), derInt(full...)), 32, cat([]byte{0}, short, full)},
		{"short s", derSeq(derInt(full...), derInt(short...)), 32, cat(full, []byte{0}, short)},
		{"short r and s", derSeq(derInt(shorter...), derInt(short...)), 32, cat(fill(0, 3), shorter, []byte{0}, short)},
		{"r=s=1", derSeq(derInt(1), derInt(1)), 32, cat(fill(0, 31), []byte{1}, fill(0, 31), []byte{1})},
		{"P-384", derSeq(derInt(fill(0x33, 48)...), derInt(fill(0x44, 47)...)), 48, cat(fill(0x33, 48), []byte{0}, fill(0x44, 47))},
		// A P-521 value is at most 521 bits, so its first byte is 0x00 or 0x01 and
		// the SEQUENCE is longer than 127 bytes: the long length form.
		{"P-521", derSeq(derInt(cat([]byte{1}, fill(0xff, 65))...), derInt(cat([]byte{1}, fill(0xee, 65))...)), 66, cat([]byte{1}, fill(0xff, 65), []byte{1}, fill(0xee, 65))},
		{"P-521 short", derSeq(derInt(fill(0x55, 64)...), derInt(cat([]byte{0}, fill(0xee, 65))...)), 66, cat(fill(0, 2), fill(0x55, 64), []byte{0}, fill(0xee, 65))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DERToRaw(tt.der, tt.size)
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("DERToRaw(%x, %d) = %x, %v, want %x, nil", tt.der, tt.size, got, err, tt.want)
			}
			back, err := RawToDER(got, tt.size)
			if err != nil || !bytes.Equal(back, tt.der) {
				t.Errorf("RawToDER(%x, %d) = %x, %v, want %x, nil", got, tt.size, back, err, tt.der)
			}
		})
	}
}

func TestDERToRawRejects(t *testing.T) {
	one := derInt(1)
	valid := derSeq(one, one)
	tests := []struct {
		name string
		der  []byte
		size int
	}{
		{"empty", nil, 32},
		{"trailing data", cat(valid, []byte{0}), 32},
		{"second signature", cat(valid, valid), 32},
		{"extra element", derSeq(one, one, one), 32},
		{"missing s", derSeq(one), 32},
		{"negative r", derSeq(derInt(0xff), one), 32},
		{"negative s", derSeq(one, derInt(0x80, 0x01)), 32},
		{"zero r", derSeq(derInt(0), one), 32},
		{"zero s", derSeq(one, derInt(0)), 32},
		{"empty integer", derSeq(derInt(), one), 32},
		{"r too wide", derSeq(derInt(fill(0x11, 33)...), one), 32},
		{"s too wide with sign byte", derSeq(one, derInt(cat([]byte{0}, fill(0x80, 33))...)), 32},
		{"P-521 value over 528 bits", derSeq(derInt(fill(0x7f, 67)...), one), 66},
		{"non-minimal integer", derSeq(derInt(0, 1), one), 32},
		{"non-minimal negative", derSeq(derInt(0xff, 0x80), one), 32},
		{"non-minimal length", []byte{0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, 32},
		{"non-minimal integer length", []byte{0x30, 0x07, 0x02, 0x81, 0x01, 0x01, 0x02, 0x01, 0x01}, 32},
		{"indefinite length", []byte{0x30, 0x80, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00, 0x00}, 32},
		{"length past end", []byte{0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}, 32},
		{"SET not SEQUENCE", derTLV(0x31, cat(one, one)), 32},
		{"OCTET STRING elements", derSeq(derTLV(0x04, []byte{1}), derTLV(0x04, []byte{1})), 32},
		{"raw r||s", cat(fill(0x11, 32), fill(0x22, 32)), 32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DERToRaw(tt.der, tt.size)
			if !errors.Is(err, ErrMalformedSignature) {
				t.Errorf("DERToRaw(%x, %d) = %x, %v, want %v", tt.der, tt.size, got, err, ErrMalformedSignature)
			}
		})
	}
	t.Run("bad size", func(t *testing.T) {
		for _, size := range []int{0, -1} {
			if got, err := DERToRaw(valid, size); err == nil {
				t.Errorf("DERToRaw(%x, %d) = %x, nil, want an error", valid, size, got)
			}
		}
	})
}

func TestRawToDERRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		size int
	}{
		{"empty", nil, 32},
		{"too short", fill(1, 63), 32},
		{"too long", fill(1, 65), 32},
		{"DER", derSeq(derInt(1), derInt(1)), 32},
		{"zero r", cat(fill(0, 32), fill(1, 32)), 32},
		{"zero s", cat(fill(1, 32), fill(0, 32)), 32},
		{"P-256 length for P-521", fill(1, 64), 66},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RawToDER(tt.raw, tt.size)
			if !errors.Is(err, ErrMalformedSignature) {
				t.Errorf("RawToDER(%x, %d) = %x, %v, want %v", tt.raw, tt.size, got, err, ErrMalformedSignature)
			}
		})
	}
	t.Run("bad size", func(t *testing.T) {
		if got, err := RawToDER(nil, 0); err == nil {
			t.Errorf("RawToDER(nil, 0) = %x, nil, want an error", got)
		}
	})
}

// FuzzDERToRaw checks that DERToRaw never panics and that whatever it accepts
// round-trips: RawToDER gives back the identical (canonical) DER, which
// encoding/asn1 parses to the same r and s.
func FuzzDERToRaw(f *testing.F) {
	for _, seed := range [][]byte{
		derSeq(derInt(1), derInt(1)),
		derSeq(derInt(fill(0x7f, 31)...), derInt(cat([]byte{0}, fill(0x80, 32))...)),
		derSeq(derInt(cat([]byte{1}, fill(0xff, 65))...), derInt(fill(0x11, 64)...)),
		derSeq(derInt(1), derInt(1), derInt(1)),
		{0x30, 0x80, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00, 0x00},
	} {
		for _, size := range []uint8{32, 48, 66} {
			f.Add(seed, size)
		}
	}
	f.Fuzz(func(t *testing.T, der []byte, sizeByte uint8) {
		size := int(sizeByte%80) + 1
		raw, err := DERToRaw(der, size)
		if err != nil {
			if !errors.Is(err, ErrMalformedSignature) {
				t.Fatalf("DERToRaw(%x, %d) error %v does not wrap %v", der, size, err, ErrMalformedSignature)
			}
			return
		}
		if len(raw) != 2*size {
			t.Fatalf("len(DERToRaw(%x, %d)) = %d, want %d", der, size, len(raw), 2*size)
		}
		back, err := RawToDER(raw, size)
		if err != nil {
			t.Fatalf("RawToDER(DERToRaw(%x, %d)) = %v, want success", der, size, err)
		}
		if !bytes.Equal(back, der) {
			t.Errorf("RawToDER(DERToRaw(%x, %d)) = %x, want the input back", der, size, back)
		}
		var in, out ecdsaSignature
		if _, err := asn1.Unmarshal(der, &in); err != nil {
			t.Fatalf("asn1.Unmarshal(%x) = %v after DERToRaw accepted it", der, err)
		}
		if _, err := asn1.Unmarshal(back, &out); err != nil {
			t.Fatalf("asn1.Unmarshal(%x) = %v for RawToDER output", back, err)
		}
		if in.R.Cmp(out.R) != 0 || in.S.Cmp(out.S) != 0 {
			t.Errorf("round trip of %x gave r=%v s=%v, want r=%v s=%v", der, out.R, out.S, in.R, in.S)
		}
		if again, err := DERToRaw(back, size); err != nil || !bytes.Equal(again, raw) {
			t.Errorf("DERToRaw(%x, %d) = %x, %v, want %x, nil", back, size, again, err, raw)
		}
	})
}

func TestCurveSize(t *testing.T) {
	tests := []struct {
		curve elliptic.Curve
		want  int
	}{
		{elliptic.P224(), 28},
		{elliptic.P256(), 32},
		{elliptic.P384(), 48},
		{elliptic.P521(), 66},
		{nil, 0},
	}
	for _, tt := range tests {
		name := "nil"
		if tt.curve != nil {
			name = tt.curve.Params().Name
		}
		t.Run(name, func(t *testing.T) {
			if got := CurveSize(tt.curve); got != tt.want {
				t.Errorf("CurveSize(%s) = %d, want %d", name, got, tt.want)
			}
		})
	}
}

// signDigest signs msg under alg with s the way Sign does, but returns the
// signer's own output (DER for ECDSA).
func signDigest(t *testing.T, alg Algorithm, s crypto.Signer, msg []byte) []byte {
	t.Helper()
	sig, err := s.Sign(rand.Reader, alg.Digest(msg), alg.SignerOpts())
	if err != nil {
		t.Fatalf("%T.Sign(%q digest) = %v", s, alg, err)
	}
	return sig
}

func TestVerify(t *testing.T) {
	type verifyCase struct {
		name  string
		pub   crypto.PublicKey
		input []byte
		sig   []byte
		want  error
	}
	msg := []byte("header.payload")
	for _, a := range Algorithms() {
		t.Run(string(a), func(t *testing.T) {
			signer := testSigner(t, a)
			pub := signer.Public()
			input := a.Digest(msg)
			sig := signDigest(t, a, signer, msg)
			if err := a.Verify(pub, input, sig); err != nil {
				t.Fatalf("%q.Verify(pub, input, sig) = %v, want nil", a, err)
			}

			flipped := bytes.Clone(sig)
			flipped[len(flipped)-1] ^= 1
			otherInput := a.Digest([]byte("header.payloaD"))
			otherSig := signDigest(t, a, otherSigner(t, a), msg)

			tests := []verifyCase{
				{"other message", pub, otherInput, sig, ErrVerification},
				{"other key's signature", pub, input, otherSig, ErrVerification},
				{"flipped bit", pub, input, flipped, ErrVerification},
				{"truncated", pub, input, sig[:len(sig)-1], ErrMalformedSignature},
				{"extended", pub, input, append(bytes.Clone(sig), 0), ErrMalformedSignature},
				{"empty", pub, input, nil, ErrMalformedSignature},
			}
			if a.Hash() != 0 {
				tests = append(tests,
					verifyCase{"message not digest", pub, msg, sig, ErrWrongDigestLength},
					verifyCase{"short digest", pub, input[:len(input)-1], sig, ErrWrongDigestLength},
				)
			}
			if a.KeyType() == KeyEC {
				size := CurveSize(a.Curve())
				raw, err := DERToRaw(sig, size)
				if err != nil {
					t.Fatalf("DERToRaw(signer output) = %v", err)
				}
				tests = append(tests, verifyCase{"raw r||s", pub, input, raw, ErrMalformedSignature})
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if err := a.Verify(tt.pub, tt.input, tt.sig); !errors.Is(err, tt.want) {
						t.Errorf("%q.Verify(%s) = %v, want %v", a, tt.name, err, tt.want)
					}
				})
			}
		})
	}
}

func TestVerifyKeyErrors(t *testing.T) {
	msg := []byte("header.payload")
	sig := signDigest(t, ES256, testSigner(t, ES256), msg)
	tests := []struct {
		name string
		alg  Algorithm
		pub  crypto.PublicKey
	}{
		{"rsa key for ES256", ES256, testSigner(t, RS256).Public()},
		{"p384 key for ES256", ES256, testSigner(t, ES384).Public()},
		{"private key", ES256, testSigner(t, ES256)},
		{"nil", ES256, nil},
		{"unsupported algorithm", "HS256", testSigner(t, ES256).Public()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.alg.Verify(tt.pub, tt.alg.Digest(msg), sig)
			if err == nil || errors.Is(err, ErrVerification) || errors.Is(err, ErrMalformedSignature) {
				t.Errorf("%q.Verify(%T) = %v, want a key error", tt.alg, tt.pub, err)
			}
		})
	}
}

// TestVerifyPSSSaltLength checks that PS* verification insists on the RFC
// 7518 §3.5 salt length (equal to the hash), not whatever the signer chose.
func TestVerifyPSSSaltLength(t *testing.T) {
	signer := testSigner(t, PS256).(*rsa.PrivateKey)
	digest := PS256.Digest([]byte("header.payload"))
	for _, salt := range []int{0, 20, 48} {
		sig, err := rsa.SignPSS(rand.Reader, signer, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatalf("rsa.SignPSS(salt %d) = %v", salt, err)
		}
		if err := PS256.Verify(&signer.PublicKey, digest, sig); !errors.Is(err, ErrVerification) {
			t.Errorf("PS256.Verify(salt length %d) = %v, want %v", salt, err, ErrVerification)
		}
	}
}

// TestVerifyHighS checks that ECDSA accepts both s and n-s, as the JOSE
// specifications do not require low-S (unlike some blockchains).
func TestVerifyHighS(t *testing.T) {
	signer := testSigner(t, ES256).(*ecdsa.PrivateKey)
	msg := []byte("header.payload")
	der := signDigest(t, ES256, signer, msg)
	var sig ecdsaSignature
	if _, err := asn1.Unmarshal(der, &sig); err != nil {
		t.Fatal(err)
	}
	sig.S.Sub(elliptic.P256().Params().N, sig.S)
	flipped, err := asn1.Marshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := ES256.Verify(&signer.PublicKey, ES256.Digest(msg), flipped); err != nil {
		t.Errorf("ES256.Verify(n-s) = %v, want nil", err)
	}
	sig.S = new(big.Int).Set(elliptic.P256().Params().N)
	atN, err := asn1.Marshal(sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := ES256.Verify(&signer.PublicKey, ES256.Digest(msg), atN); !errors.Is(err, ErrVerification) {
		t.Errorf("ES256.Verify(s=n) = %v, want %v", err, ErrVerification)
	}
}

// TestSignatureSize: the JWS signature length of each key type is that of a signature it makes.
func TestSignatureSize(t *testing.T) {
	for _, alg := range Algorithms() {
		s := testSigner(t, alg)
		sig, err := NewSigningMethod(alg).Sign("header.payload", s)
		if err != nil {
			t.Fatal(err)
		}
		if got := SignatureSize(s.Public()); got != len(sig) {
			t.Errorf("SignatureSize(%s key) = %d, want %d", alg, got, len(sig))
		}
	}
	if got := SignatureSize("not a key"); got != 0 {
		t.Errorf("SignatureSize(string) = %d, want 0", got)
	}
}
