package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
)

// TestReconnect closes every session of the slot behind the token's back, as an HSM reset does (the
// login goes with the last session): signing and Ping fail as unavailable; after Reconnect the signers
// handed out before sign again, without being loaded anew by their owner.
func TestReconnect(t *testing.T) {
	tk := newTestToken(t, "reconnect")
	_, ec := generate(t, tk, KeySpec{Type: ECDSA, Curve: elliptic.P256()}, "ec")
	_, ed := generate(t, tk, KeySpec{Type: Ed25519}, "ed")
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
	err := tk.p11.CloseAllSessions(tk.slot)
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

// TestEd25519StaleHandleRefused: an Ed25519 signer bound under one connection never uses its object
// handle under the next, where the same number can name another key: it fails instead, and the
// validating signer finds its key again and signs with the right one.
func TestEd25519StaleHandleRefused(t *testing.T) {
	tk := newTestToken(t, "stale-ed")
	var signers []crypto.Signer
	for range 4 {
		_, s := generate(t, tk, KeySpec{Type: Ed25519}, "ed")
		signers = append(signers, s)
	}
	// The inner signers as bound now, as a Sign that raced with the reconnect would hold them.
	var inner []crypto.Signer
	for _, s := range signers {
		inner = append(inner, s.(*signer).cur.Load().inner)
	}
	if err := tk.Reconnect(); err != nil {
		t.Fatal(err)
	}
	msg := []byte("m")
	for i, in := range inner {
		if sig, err := in.Sign(nil, msg, crypto.Hash(0)); !errors.Is(err, errStaleHandle) {
			t.Errorf("stale Ed25519 signer %d: Sign = %x, %v; want errStaleHandle", i, sig, err)
		}
	}
	for i, s := range signers {
		sig, err := s.Sign(nil, msg, crypto.Hash(0))
		if err != nil || !ed25519.Verify(s.Public().(ed25519.PublicKey), msg, sig) {
			t.Errorf("signer %d after Reconnect: Sign = %v, or the signature is another key's", i, err)
		}
	}
}

// TestReconnectWaitsForChanges: Reconnect never runs between two calls of a change made under
// Exclusive; it waits for the change to end, and the change's own calls go on meanwhile.
func TestReconnectWaitsForChanges(t *testing.T) {
	tk := newTestToken(t, "reconnect-order")
	release := tk.Exclusive()
	gen := tk.gen.Load()
	done := make(chan error, 1)
	go func() { done <- tk.Reconnect() }()
	time.Sleep(200 * time.Millisecond)
	if tk.gen.Load() != gen {
		t.Fatal("Reconnect replaced the connection in the middle of a change")
	}
	// The change goes on: object-store calls and signing work while Reconnect waits.
	if err := tk.PutRecord("during", []byte("x")); err != nil {
		t.Errorf("PutRecord during a waiting Reconnect = %v", err)
	}
	if err := tk.Ping(); err != nil {
		t.Errorf("Ping during a waiting Reconnect = %v", err)
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Reconnect did not finish after the change ended")
	}
	if tk.gen.Load() == gen {
		t.Error("Reconnect finished without a new connection")
	}
}

// TestLockAcrossReconnect: a token-wide lock released after a reconnect removes its own lock object,
// found again by owner, and nothing else (handles are renumbered by the new connection).
func TestLockAcrossReconnect(t *testing.T) {
	tk := newTestToken(t, "lock-reconnect")
	unlock, err := tk.TryLock("k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Reconnect(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := tk.PutRecord(name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unlock(); err != nil {
		t.Fatalf("unlock after Reconnect = %v", err)
	}
	recs, err := tk.Records("")
	if err != nil || len(recs) != 3 {
		t.Errorf("Records after unlock = %d, %v; want the 3 records untouched", len(recs), err)
	}
	again, err := tk.TryLock("k", time.Minute)
	if err != nil {
		t.Fatalf("TryLock after unlock = %v, want the lock free", err)
	}
	_ = again()
}

// TestLockRenewed: a lock held longer than its ttl is renewed by its holder, so another contender
// still finds it held; once released, it is free.
func TestLockRenewed(t *testing.T) {
	tk := newTestToken(t, "lock-renew")
	// Renewed every 2s/3: a renewal may stall for over a second on a loaded machine before the lock lapses.
	unlock, err := tk.TryLock("k", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if _, err := tk.TryLock("k", time.Minute); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock on a lock held past its ttl = %v, want ErrLocked (renewed)", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second unlock = %v, want nil", err)
	}
	other, err := tk.TryLock("k", time.Minute)
	if err != nil {
		t.Fatalf("TryLock after release = %v", err)
	}
	_ = other()
	if _, err := tk.TryLock("short", time.Millisecond); err == nil {
		t.Error("TryLock with a 1ms ttl = nil error, want it refused")
	}
}

// TestPoolCloseTwice: closing the session pool again (a reconnect that failed half-way) returns at
// once instead of waiting for sessions that are gone.
func TestPoolCloseTwice(t *testing.T) {
	tk := newTestToken(t, "pool-close")
	p := newSessionPool(tk.p11, tk.slot, 2, time.Second)
	if err := p.with("probe", func(pkcs11.SessionHandle) error { return nil }); err != nil {
		t.Fatal(err)
	}
	p.close()
	done := make(chan struct{})
	go func() { p.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("second close of the session pool hangs")
	}
}

// TestLockLostNotRetaken: a holder whose lock object was removed as expired (its renewals stalled past
// the ttl) and taken by another does not take it back at its next renewal: the other stays the only
// holder, and the first one's release reports ErrLockLost.
func TestLockLostNotRetaken(t *testing.T) {
	tk := newTestToken(t, "lock-lost")
	unlockA, err := tk.TryLock("k", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := dataTemplate(lockApplication, "k")
	objects := func() []pkcs11.ObjectHandle {
		var hs []pkcs11.ObjectHandle
		if err := tk.with("list", func(s pkcs11.SessionHandle) error {
			var err error
			hs, err = tk.findObjects(s, tmpl)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return hs
	}
	// Another machine found A's lock expired and removed it, then took the lock.
	for _, h := range objects() {
		if err := tk.with("destroy", func(s pkcs11.SessionHandle) error { return tk.p11.DestroyObject(s, h) }); err != nil {
			t.Fatal(err)
		}
	}
	unlockB, err := tk.TryLock("k", time.Minute)
	if err != nil {
		t.Fatalf("TryLock after the holder's object was removed = %v", err)
	}
	defer func() { _ = unlockB() }()
	time.Sleep(1200 * time.Millisecond) // A's renewal (every ttl/3) has run at least twice
	if n := len(objects()); n != 1 {
		t.Errorf("%d lock objects after A's renewals, want 1 (B's)", n)
	}
	if err := unlockA(); !errors.Is(err, ErrLockLost) {
		t.Errorf("A's release = %v, want ErrLockLost", err)
	}
	if n := len(objects()); n != 1 {
		t.Errorf("%d lock objects after A's release, want 1 (B's)", n)
	}
}

// TestLockKeptThroughContenderAttempt: another process's attempt at a held lock (its object, live, there
// for a moment before it withdraws it) is no takeover: the holder keeps renewing, nobody else gets the
// lock once the attempt is gone, and the release reports nothing lost.
func TestLockKeptThroughContenderAttempt(t *testing.T) {
	tk := newTestToken(t, "lock-contender")
	unlock, err := tk.TryLock("k", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	val, _ := json.Marshal(lockValue{Owner: "contender", Expires: time.Now().Add(time.Hour).UnixNano()})
	var attempt pkcs11.ObjectHandle
	if err := tk.local.write(func() error {
		return tk.with("contender's attempt", func(s pkcs11.SessionHandle) error {
			attempt, err = tk.createData(s, dataTemplate(lockApplication, "k"), val)
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a renewal (every ttl/3) sees the attempt
	if err := tk.local.write(func() error {
		return tk.with("contender withdraws", func(s pkcs11.SessionHandle) error { return tk.p11.DestroyObject(s, attempt) })
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // past the ttl: kept only if the holder still renews
	if other, err := tk.TryLock("k", time.Minute); !errors.Is(err, ErrLocked) {
		if other != nil {
			_ = other()
		}
		t.Errorf("TryLock after a contender's attempt came and went = %v, want ErrLocked (still held, renewed)", err)
	}
	if err := unlock(); err != nil {
		t.Errorf("release after a contender's attempt = %v, want nil", err)
	}
}

// TestLockExpiredHolderGivesUp: a holder whose renewal comes after its object expired gives the lock
// up, even if its object is still there: a contender that listed the token meanwhile saw it expired and
// takes the lock by removing it. Here the two interleave on one session, as two machines would.
func TestLockExpiredHolderGivesUp(t *testing.T) {
	tk := newTestToken(t, "lock-expired-holder")
	tmpl := dataTemplate(lockApplication, "k")
	A := &tokenLock{t: tk, name: "k", owner: "aaaa", ttl: time.Minute, tmpl: tmpl}
	B := &tokenLock{t: tk, name: "k", owner: "bbbb", ttl: time.Minute, tmpl: tmpl}
	err := tk.with("interleave", func(s pkcs11.SessionHandle) error {
		// A's object, expired: its renewal ran late.
		val, _ := json.Marshal(lockValue{Owner: "aaaa", Expires: time.Now().Add(-time.Second).UnixNano()})
		if _, err := tk.createData(s, tmpl, val); err != nil {
			return err
		}
		// B: acquire, first half.
		mine, err := B.create(s)
		if err != nil {
			return err
		}
		handles, err := tk.findObjects(s, tmpl)
		if err != nil {
			return err
		}
		// A's late renewal (renewUntil's body).
		if err := A.stillMine(s); err != nil {
			t.Logf("A's renewal: %v (lost, as it should be)", err)
		} else {
			a2, err := A.create(s)
			if err != nil {
				return err
			}
			if err := A.destroyOwn(s, a2); err != nil {
				return err
			}
			t.Log("A's renewal: still mine, renewed")
		}
		// B: acquire, second half (same loop as acquire).
		now := time.Now().UnixNano()
		for _, h := range handles {
			if h == mine {
				continue
			}
			other, err := B.value(s, h)
			switch {
			case errors.Is(err, errLockGone):
				continue
			case err == nil && other.Owner != B.owner && other.Expires <= now:
				_ = tk.p11.DestroyObject(s, h)
				continue
			}
			t.Log("B: locked out")
			return nil
		}
		t.Log("B: acquired")
		// Next renewal check of each.
		ea, eb := A.stillMine(s), B.stillMine(s)
		if ea == nil && eb == nil {
			t.Errorf("both A and B hold lock k (stillMine nil for both)")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCorruptLockObjectIgnored: a lock object whose value is not a lock value (not JSON, or JSON of
// another shape: its writer died creating it) never expires, so it is taken for a dead holder's and
// removed rather than for a live one's: the lock can be had.
func TestCorruptLockObjectIgnored(t *testing.T) {
	tk := newTestToken(t, "lock-corrupt")
	for _, value := range []string{"{\"owner\":\"x\",\"exp", "", `"x"`, "[]", `{"owner":7}`} {
		err := tk.local.write(func() error {
			return tk.with("plant a lock object", func(s pkcs11.SessionHandle) error {
				_, err := tk.createData(s, dataTemplate(lockApplication, "k"), []byte(value))
				return err
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		unlock, err := tk.TryLock("k", time.Minute)
		if err != nil {
			t.Fatalf("TryLock with a lock object of value %q = %v, want the lock", value, err)
		}
		if err := unlock(); err != nil {
			t.Fatal(err)
		}
	}
}
