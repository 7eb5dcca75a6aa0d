package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"testing"
)

// TestReconnect closes every session of the slot behind the token's back, as an HSM reset does (the
// login goes with the last session): signing and Ping fail as unavailable; after Reconnect the signers
// handed out before sign again, without being loaded anew by their owner.
func TestReconnect(t *testing.T) {
	tk := newTestToken(t, "reconnect")
	_, ec, err := tk.Generate(KeySpec{Type: ECDSA, Curve: elliptic.P256()}, "ec")
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := tk.Generate(KeySpec{Type: Ed25519}, "ed")
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("m"))
	sign := func() (error, error) {
		_, errEC := ec.Sign(nil, d[:], crypto.SHA256)
		_, errED := ed.Sign(nil, []byte("m"), crypto.Hash(0))
		return errEC, errED
	}
	if e1, e2 := sign(); e1 != nil || e2 != nil {
		t.Fatalf("Sign before the fault = %v, %v", e1, e2)
	}

	// The fault: every session of the slot closed from outside crypto11's and the pool's view.
	tk.mu.RLock()
	err = tk.p11.CloseAllSessions(tk.slot)
	tk.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	errEC, errED := sign()
	for _, err := range []error{errEC, errED} {
		var e interface{ Unavailable() bool }
		if !errors.As(err, &e) || !e.Unavailable() {
			t.Errorf("Sign after the sessions died = %v, want an unavailable error", err)
		}
	}
	if err := tk.Ping(); err == nil {
		t.Error("Ping after the sessions died = nil, want an error")
	}

	if err := tk.Reconnect(); err != nil {
		t.Fatalf("Reconnect = %v", err)
	}
	if err := tk.Ping(); err != nil {
		t.Errorf("Ping after Reconnect = %v", err)
	}
	sig, err := ec.Sign(nil, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(ec.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Errorf("ECDSA Sign after Reconnect = %v (verifies: %v)", err, err == nil)
	}
	sig, err = ed.Sign(nil, []byte("m"), crypto.Hash(0))
	if err != nil || !ed25519.Verify(ed.Public().(ed25519.PublicKey), []byte("m"), sig) {
		t.Errorf("Ed25519 Sign after Reconnect = %v", err)
	}
	if err := tk.Close(); err != nil {
		t.Errorf("Close after Reconnect = %v", err)
	}
	if err := tk.Reconnect(); err == nil {
		t.Error("Reconnect after Close = nil, want an error")
	}
}
