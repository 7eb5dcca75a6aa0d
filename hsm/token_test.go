package hsm

import (
	"crypto/elliptic"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

// TestDestroyOnlyKeyPair: Destroy removes the key pair with the ID and leaves another application's
// object that shares it; an ID that is not one signerd makes is refused.
func TestDestroyOnlyKeyPair(t *testing.T) {
	tk := newTestToken(t, "destroy")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	id, _, err := tk.Generate(spec, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.local.write(func() error {
		return tk.with("another application's object", func(s pkcs11.SessionHandle) error {
			_, err := tk.createData(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET), pkcs11.NewAttribute(pkcs11.CKA_ID, id)}, make([]byte, 32))
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	if err := tk.Destroy(id); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Find(spec, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find after Destroy = %v, want ErrNotFound", err)
	}
	if n, err := tk.countObjects(id); err != nil || n != 1 {
		t.Errorf("objects with the ID after Destroy = %d, %v; want 1 (the other application's)", n, err)
	}
	for _, bad := range [][]byte{nil, {1}, make([]byte, IDLen+1)} {
		if err := tk.Destroy(bad); err == nil {
			t.Errorf("Destroy(%x) = nil, want it refused", bad)
		}
	}
}

// Printing a Token, in any verb, never shows its PIN.
func TestTokenPrintsNoPIN(t *testing.T) {
	tk := newTestToken(t, "print")
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, tk); strings.Contains(out, tk.cfg.PIN) || !strings.Contains(out, "PIN: set") {
			t.Errorf("Sprintf(%q, token) = %q: shows the PIN, or not that one is set", verb, out)
		}
	}
}

// TestAllowedMechanismsChecked: a key that may be used with more than signerd's signing mechanism (here
// ECDSA and ECDSA-with-SHA1 as well) fails its load check; Generate's own keys pass it.
func TestAllowedMechanismsChecked(t *testing.T) {
	tk := newTestToken(t, "allowed-mechs")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	if _, _, err := tk.Generate(spec, "pinned"); err != nil {
		t.Fatalf("Generate = %v (its key passes the check)", err)
	}
	id := make([]byte, IDLen)
	id[0] = 1
	mechs := binary.NativeEndian.AppendUint64(binary.NativeEndian.AppendUint64(nil, pkcs11.CKM_ECDSA), pkcs11.CKM_ECDSA_SHA1)
	p256 := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	if err := tk.local.write(func() error {
		return tk.with("generate a loose key", func(s pkcs11.SessionHandle) error {
			pub := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_ID, id),
				pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true)}
			priv := append(privateTemplate(id, "loose", 0, false), pkcs11.NewAttribute(pkcs11.CKA_ALLOWED_MECHANISMS, mechs))
			_, _, err := tk.p11.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}, pub, priv)
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Find(spec, id); !errors.Is(err, ErrKeyCheck) || !strings.Contains(err.Error(), "CKA_ALLOWED_MECHANISMS allows") {
		t.Errorf("Find(key allowing ECDSA-SHA1 too) = %v, want ErrKeyCheck naming CKA_ALLOWED_MECHANISMS", err)
	}
}
