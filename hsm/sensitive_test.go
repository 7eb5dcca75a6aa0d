package hsm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

// newTestToken opens a fresh SoftHSM2 token for this package's internal tests; it is closed at cleanup.
func newTestToken(t *testing.T, label string) *Token {
	t.Helper()
	tok := softhsmtest.NewToken(t, label)
	tk, err := Open(Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, MaxSessions: 4, PoolWaitTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tk.Close() })
	return tk
}

// TestPrivateValueUnreadable asks the token, below crypto11 and signerd's own checks, for the secret
// attributes of each kind of private key signerd generates, the token object and its session copy: every
// read fails with CKR_ATTRIBUTE_SENSITIVE.
func TestPrivateValueUnreadable(t *testing.T) {
	tk := newTestToken(t, "sensitive")
	for _, tc := range []struct {
		spec   KeySpec
		secret uint
	}{
		{KeySpec{Type: RSA, Bits: 2048}, pkcs11.CKA_PRIVATE_EXPONENT},
		{KeySpec{Type: ECDSA, Curve: elliptic.P256()}, pkcs11.CKA_VALUE},
		{KeySpec{Type: Ed25519}, pkcs11.CKA_VALUE},
	} {
		id, _, err := tk.Generate(tc.spec, "sensitive")
		if err != nil {
			t.Fatalf("Generate(%v) = %v", tc.spec, err)
		}
		var handles []pkcs11.ObjectHandle
		var reads []error
		err = tk.pool.with("read secret", func(s pkcs11.SessionHandle) error {
			var err error
			handles, err = tk.findObjects(s, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, id)})
			for _, h := range handles {
				_, err := tk.p11.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(tc.secret, nil)})
				reads = append(reads, err)
			}
			return err
		})
		if err != nil || len(handles) != 2 {
			t.Fatalf("find private keys %x = %v, %v; want the token object and its session copy", id, handles, err)
		}
		for i, err := range reads {
			var code pkcs11.Error
			if !errors.As(err, &code) || code != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
				t.Errorf("read secret attribute of %v key object %d = %v, want CKR_ATTRIBUTE_SENSITIVE", tc.spec, i, err)
			}
		}
	}
}

// TestImportedKeyRefused: a private key written into the token from outside (C_CreateObject), even
// sensitive and unextractable now, is not loaded: signerd uses only keys generated in the token.
func TestImportedKeyRefused(t *testing.T) {
	tk := newTestToken(t, "imported")
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, err := priv.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	params, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
	id := []byte("imported-key-id")
	err = tk.with("import", func(s pkcs11.SessionHandle) error {
		// The attributes signerd generates keys with, plus the key material.
		_, err := tk.p11.CreateObject(s, append(privateTemplate(id, "imported", pkcs11.CKM_ECDSA, false),
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
			pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, d)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tk.Find(KeySpec{Type: ECDSA, Curve: elliptic.P256()}, id)
	if !errors.Is(err, ErrKeyCheck) || !strings.Contains(err.Error(), "CKA_LOCAL") {
		t.Errorf("Find(imported key) = %v, want ErrKeyCheck naming CKA_LOCAL", err)
	}
}
