package hsm

import (
	"crypto"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestConcurrentFindAfterReconnectNoKeyCheck: after a Reconnect (every session copy gone), two loads of
// the same key at once must both succeed. One makes the session copy (C_CopyObject, under copyMu) while
// the other lists the token objects with the key's CKA_ID (checkPrivateObject):
// SoftHSM shows the copy under construction with the source's CKA_TOKEN=true, so the listing finds "2
// private keys" and a healthy key fails its check.
func TestConcurrentFindAfterReconnectNoKeyCheck(t *testing.T) {
	tk := newTestToken(t, "copy-race")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	id, _ := generate(t, tk, spec, "k")
	find := func() error { _, err := tk.Find(spec, id); return err }
	afterReconnects(t, tk, "Find", []func() error{find, find, find, find})
}

// TestSignersOfOneKeyAfterReconnect: several signers of one key (loads of it) all sign after a
// Reconnect; none may fail because another is making the new session copy.
func TestSignersOfOneKeyAfterReconnect(t *testing.T) {
	tk := newTestToken(t, "copy-race-sign")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	id, s1 := generate(t, tk, spec, "k")
	d := sha256.Sum256([]byte("m"))
	var ops []func() error
	for i := range 4 {
		s := s1
		if i > 0 {
			var err error
			if s, err = tk.Find(spec, id); err != nil {
				t.Fatal(err)
			}
		}
		ops = append(ops, func() error { _, err := s.Sign(nil, d[:], crypto.SHA256); return err })
	}
	afterReconnects(t, tk, "Sign", ops)
}

// afterReconnects reconnects tk and runs ops at once, round after round (at most 400, or 5 s), until
// one fails; each failure is an error of the test. The race it looks for shows within tens of rounds.
func afterReconnects(t *testing.T, tk *Token, what string, ops []func() error) {
	t.Helper()
	for round, end := 0, time.Now().Add(5*time.Second); round < 400 && time.Now().Before(end); round++ {
		if err := tk.Reconnect(); err != nil {
			t.Fatal(err)
		}
		errs := make([]error, len(ops))
		var wg sync.WaitGroup
		for i, op := range ops {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = op()
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: %s after Reconnect = %v (ErrKeyCheck: %v)", round, what, err, errors.Is(err, ErrKeyCheck))
		}
	}
}
