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
	failures := 0
	for round, end := 0, time.Now().Add(5*time.Second); round < 400 && failures == 0 && time.Now().Before(end); round++ {
		if err := tk.Reconnect(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := tk.Find(spec, id); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			failures++
			t.Errorf("round %d: Find = %v (ErrKeyCheck: %v)", round, err, errors.Is(err, ErrKeyCheck))
		}
	}
}

// TestSignersOfOneKeyAfterReconnect: two signers of one key (two loads of it) both sign after a
// Reconnect; neither may fail because the other is making the new session copy.
func TestSignersOfOneKeyAfterReconnect(t *testing.T) {
	tk := newTestToken(t, "copy-race-sign")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	id, s1 := generate(t, tk, spec, "k")
	signers := []crypto.Signer{s1}
	for range 3 {
		s, err := tk.Find(spec, id)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	d := sha256.Sum256([]byte("m"))
	failures := 0
	for round, end := 0, time.Now().Add(5*time.Second); round < 400 && failures == 0 && time.Now().Before(end); round++ {
		if err := tk.Reconnect(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(signers))
		for _, s := range signers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			failures++
			t.Errorf("round %d: Sign after Reconnect = %v (ErrKeyCheck: %v)", round, err, errors.Is(err, ErrKeyCheck))
		}
	}
}
