package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	softhsmtest "github.com/signerd/signerd/softhsm-test"
)

// privateObjects returns the private key objects with CKA_ID id that this process sees: token objects
// when token is true, session objects (the copies) when false.
func privateObjects(t *testing.T, tk *Token, id []byte, token bool) []pkcs11.ObjectHandle {
	t.Helper()
	var handles []pkcs11.ObjectHandle
	err := tk.with("find", func(s pkcs11.SessionHandle) error {
		var err error
		handles, err = tk.findObjects(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, token),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return handles
}

// generate makes a key pair in tk and returns its CKA_ID and signer.
func generate(t *testing.T, tk *Token, spec KeySpec, label string) ([]byte, crypto.Signer) {
	t.Helper()
	id, s, err := tk.Generate(spec, label)
	if err != nil {
		t.Fatal(err)
	}
	return id, s
}

// signOnce signs a fixed input with s and checks the signature against s's public key.
func signOnce(s crypto.Signer) (bool, error) {
	msg := []byte("session copy")
	if pub, ok := s.Public().(ed25519.PublicKey); ok {
		sig, err := s.Sign(nil, msg, crypto.Hash(0))
		return err == nil && ed25519.Verify(pub, msg, sig), err
	}
	d := sha256.Sum256(msg)
	sig, err := s.Sign(nil, d[:], crypto.SHA256)
	return err == nil && ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig), err
}

// TestSessionCopies: a loaded key signs with one session copy of its private key, made inside the token.
// Loading the key again reuses the copy; the copy is what signs (destroyed behind the signer's back, the
// signer finds its key again and signs with a new copy); a Reconnect makes a new one; Destroy erases it
// with the token objects.
func TestSessionCopies(t *testing.T) {
	tk := newTestToken(t, "copies")
	for _, spec := range []KeySpec{{Type: ECDSA, Curve: elliptic.P256()}, {Type: Ed25519}} {
		id, s := generate(t, tk, spec, "copied")
		if n, c := len(privateObjects(t, tk, id, true)), len(privateObjects(t, tk, id, false)); n != 1 || c != 1 {
			t.Fatalf("%v: %d token objects and %d session copies after Generate, want 1 and 1", spec, n, c)
		}
		again, err := tk.Find(spec, id)
		if err != nil {
			t.Fatal(err)
		}
		if c := len(privateObjects(t, tk, id, false)); c != 1 {
			t.Errorf("%v: %d session copies after loading the key again, want it reused", spec, c)
		}
		for _, k := range []crypto.Signer{s, again} {
			if ok, err := signOnce(k); !ok {
				t.Errorf("%v: Sign = %v (or the signature does not verify)", spec, err)
			}
		}

		// The copy is the object that signs: when it is lost, the signer misses it and makes a new one.
		copies := privateObjects(t, tk, id, false)
		tk.copyMu.Lock()
		err = tk.p11.DestroyObject(tk.keeper, copies[0])
		tk.copyMu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := signOnce(s); !ok {
			t.Errorf("%v: Sign after its session copy was lost = %v, want a new copy", spec, err)
		}
		if now := privateObjects(t, tk, id, false); len(now) != 1 || now[0] == copies[0] {
			t.Errorf("%v: session copies %v after the first was lost, want one new copy", spec, now)
		}

		if err := tk.Reconnect(); err != nil {
			t.Fatal(err)
		}
		if ok, err := signOnce(s); !ok {
			t.Errorf("%v: Sign after Reconnect = %v", spec, err)
		}
		if c := len(privateObjects(t, tk, id, false)); c != 1 {
			t.Errorf("%v: %d session copies after Reconnect, want 1", spec, c)
		}

		if err := tk.Destroy(id); err != nil {
			t.Fatal(err)
		}
		if n, c := len(privateObjects(t, tk, id, true)), len(privateObjects(t, tk, id, false)); n != 0 || c != 0 {
			t.Errorf("%v: %d token objects and %d session copies after Destroy, want none", spec, n, c)
		}
		if _, err := signOnce(s); err == nil {
			t.Errorf("%v: Sign after Destroy = nil error", spec)
		}
	}
}

// TestOrphanCopiesDropped: when another process destroys a key's token objects, this process's copy of
// it goes at the next key load here (at most once a minute); the copies of live keys stay.
func TestOrphanCopiesDropped(t *testing.T) {
	tk := newTestToken(t, "orphans")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	live, liveSigner := generate(t, tk, spec, "live")
	gone, _ := generate(t, tk, spec, "gone")
	liveCopy := privateObjects(t, tk, live, false)
	// Another process sees only the token objects, and destroys them.
	for _, h := range privateObjects(t, tk, gone, true) {
		if err := tk.with("destroy", func(s pkcs11.SessionHandle) error { return tk.p11.DestroyObject(s, h) }); err != nil {
			t.Fatal(err)
		}
	}
	if c := len(privateObjects(t, tk, gone, false)); c != 1 {
		t.Fatalf("%d session copies before the next load, want 1", c)
	}
	tk.copyMu.Lock()
	tk.lastSweep = time.Time{} // a minute has passed since the last look
	tk.copyMu.Unlock()
	kept, _ := generate(t, tk, spec, "kept")
	if c := len(privateObjects(t, tk, gone, false)); c != 0 {
		t.Errorf("%d session copies of the destroyed key after the next load, want none", c)
	}
	if c := len(privateObjects(t, tk, kept, false)); c != 1 {
		t.Errorf("%d session copies of the new key, want 1", c)
	}
	if c := privateObjects(t, tk, live, false); len(c) != 1 || c[0] != liveCopy[0] {
		t.Errorf("session copies of a live key after the sweep: %v, want %v kept", c, liveCopy)
	}
	if ok, err := signOnce(liveSigner); !ok {
		t.Errorf("Sign with the live key = %v", err)
	}
}

// TestPingChecksCopySession: if the token drops the session holding the copies, Ping fails, so that the
// daemon reconnects and the copies are made again.
//
// The pooled session Ping used stays open: the keeper's failure is not the pool's.
func TestPingChecksCopySession(t *testing.T) {
	tk := newTestToken(t, "keeper")
	if err := tk.Ping(); err != nil {
		t.Fatal(err)
	}
	before := pooledSessions(tk.pool)
	tk.copyMu.Lock()
	err := tk.p11.CloseSession(tk.keeper)
	tk.copyMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Ping(); err == nil {
		t.Error("Ping with the copies' session gone = nil, want an error")
	}
	if after := pooledSessions(tk.pool); !slices.Equal(after, before) {
		t.Errorf("open pooled sessions after Ping found the keeper gone: %v, want %v", after, before)
	}
	if err := tk.Reconnect(); err != nil {
		t.Fatal(err)
	}
	if err := tk.Ping(); err != nil {
		t.Errorf("Ping after Reconnect = %v", err)
	}
}

// TestCheckCopyRefusesTokenObject: checkCopy accepts only a private, sensitive, unextractable session
// object; shown a token object, it refuses it, and cannot destroy it (the keeper session is read-only).
func TestCheckCopyRefusesTokenObject(t *testing.T) {
	tk := newTestToken(t, "check-copy")
	id, _ := generate(t, tk, KeySpec{Type: ECDSA, Curve: elliptic.P256()}, "k")
	c := privateObjects(t, tk, id, false)[0]
	tk.copyMu.Lock()
	errCopy := tk.checkCopy("check", tk.keeper, c)
	errToken := tk.checkCopy("check", tk.keeper, privateObjects(t, tk, id, true)[0])
	tk.copyMu.Unlock()
	if errCopy != nil {
		t.Errorf("checkCopy(session copy) = %v", errCopy)
	}
	if !errors.Is(errToken, ErrKeyCheck) {
		t.Errorf("checkCopy(token object) = %v, want ErrKeyCheck", errToken)
	}
	if n := len(privateObjects(t, tk, id, true)); n != 1 {
		t.Errorf("%d token objects after checkCopy refused one, want it kept", n)
	}
}

// TestSignDuringReconnect: signs racing with reconnects either succeed or fail as unavailable, never with
// an error that would pass for the key's or the caller's (the copies outlive crypto11's signs in flight).
func TestSignDuringReconnect(t *testing.T) {
	tk := newTestToken(t, "sign-reconnect")
	_, s := generate(t, tk, KeySpec{Type: ECDSA, Curve: elliptic.P256()}, "k")
	d := sha256.Sum256([]byte("m"))
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000 && !stop.Load(); i++ {
				if _, err := s.Sign(nil, d[:], crypto.SHA256); err != nil {
					var e interface{ Unavailable() bool }
					if !errors.As(err, &e) || !e.Unavailable() {
						select {
						case errs <- err:
						default:
						}
					}
				}
			}
		}()
	}
	for range 10 {
		time.Sleep(20 * time.Millisecond)
		if err := tk.Reconnect(); err != nil {
			t.Error(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Sign during Reconnect = %v, want success or an unavailable error", err)
	}
	if ok, err := signOnce(s); !ok {
		t.Errorf("Sign after the reconnects = %v", err)
	}
}

// TestNoSessionCopies: with Config.NoSessionCopies the token holds no session objects and keys sign as
// token objects.
func TestNoSessionCopies(t *testing.T) {
	tok := softhsmtest.NewToken(t, "no-copies")
	tk, err := Open(Config{Module: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, MaxSessions: 4,
		PoolWaitTimeout: time.Second, NoSessionCopies: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tk.Close() })
	for _, spec := range []KeySpec{{Type: ECDSA, Curve: elliptic.P256()}, {Type: Ed25519}} {
		id, s := generate(t, tk, spec, "plain")
		if c := len(privateObjects(t, tk, id, false)); c != 0 {
			t.Errorf("%v: %d session copies, want none", spec, c)
		}
		if ok, err := signOnce(s); !ok {
			t.Errorf("%v: Sign = %v", spec, err)
		}
	}
	if err := tk.Ping(); err != nil {
		t.Errorf("Ping = %v", err)
	}
}

// TestUncopyableKeySignsAsTokenObject: a key the token will not copy (CKA_COPYABLE false) still loads,
// and signs as the token object.
func TestUncopyableKeySignsAsTokenObject(t *testing.T) {
	tk := newTestToken(t, "uncopyable")
	id := []byte("uncopyable-key-0")
	params, _ := asn1.Marshal(asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7})
	err := tk.with("generate", func(s pkcs11.SessionHandle) error {
		_, _, err := tk.p11.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
			append(publicTemplate(id, "uncopyable"), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params)),
			append(privateTemplate(id, "uncopyable", pkcs11.CKM_ECDSA, true), pkcs11.NewAttribute(pkcs11.CKA_COPYABLE, false)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := tk.Find(KeySpec{Type: ECDSA, Curve: elliptic.P256()}, id)
	if err != nil {
		t.Fatalf("Find(uncopyable key) = %v", err)
	}
	if c := len(privateObjects(t, tk, id, false)); c != 0 {
		t.Errorf("%d session copies of a key with CKA_COPYABLE false, want none", c)
	}
	if ok, err := signOnce(s); !ok {
		t.Errorf("Sign = %v", err)
	}
}

// pooledSessions returns the sessions open in p, sorted, and puts them back first in line, so that the
// next operation uses one of them. Nothing may use p meanwhile.
func pooledSessions(p *sessionPool) []pkcs11.SessionHandle {
	var open []pkcs11.SessionHandle
	empty := 0
	for range cap(p.slots) {
		if h := <-p.slots; h != 0 {
			open = append(open, h)
		} else {
			empty++
		}
	}
	slices.Sort(open)
	for _, h := range open {
		p.slots <- h
	}
	for range empty {
		p.slots <- 0
	}
	return open
}

// failingSigner stands in for the key a signer found, failing every sign with err.
type failingSigner struct {
	pub   crypto.PublicKey
	err   error
	calls atomic.Int32
}

func (f *failingSigner) Public() crypto.PublicKey { return f.pub }

func (f *failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	f.calls.Add(1)
	return nil, f.err
}

// TestSelfTestDoesNotRebind: Find's self test signs once through the key it has just found. Through
// Sign, a lost object (here: CKR_OBJECT_HANDLE_INVALID) would make it find the key again, taking the
// local lock that Find already holds; with a writer waiting for that lock, neither could go on.
func TestSelfTestDoesNotRebind(t *testing.T) {
	tk := newTestToken(t, "selftest")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	id, s := generate(t, tk, spec, "k")
	fake := &failingSigner{pub: s.Public(), err: pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID)}
	k := &signer{t: tk, spec: spec, id: id, pub: s.Public()}
	k.cur.Store(&bound{inner: fake, gen: tk.gen.Load()})

	writer := make(chan error, 1)
	var selfTestErr error
	err := tk.local.read(func() error {
		go func() { writer <- tk.PutRecord("selftest-writer", []byte("x")) }()
		time.Sleep(100 * time.Millisecond) // the writer is now waiting for the lock
		done := make(chan error, 1)
		go func() { done <- selfTest(k) }()
		select {
		case selfTestErr = <-done:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("self test still waiting after 10s for the local lock held around it")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-writer; err != nil {
		t.Fatalf("PutRecord: %v", err)
	}
	if !errors.Is(selfTestErr, ErrUnavailable) {
		t.Errorf("self test with the object gone = %v, want ErrUnavailable (the token's trouble, not the key's)", selfTestErr)
	}
	if n := fake.calls.Load(); n != 1 {
		t.Errorf("self test signed %d times, want once", n)
	}
}

// TestLoggedOutIsNotMissing: a token that lost its login hides every private object (pkcs11-notes §11).
// Loading a key or reading the records then reports the token unavailable, not the key missing or no
// records at all, so that nothing is dropped as gone while the daemon reconnects.
func TestLoggedOutIsNotMissing(t *testing.T) {
	tk := newTestToken(t, "loggedout")
	spec := KeySpec{Type: ECDSA, Curve: elliptic.P256()}
	id, _ := generate(t, tk, spec, "k")
	if err := tk.PutRecord("r", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := tk.with("logout", func(s pkcs11.SessionHandle) error { return tk.p11.Logout(s) }); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Find(spec, id); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
		t.Errorf("Find when logged out = %v, want ErrUnavailable", err)
	}
	if recs, err := tk.Records(""); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Records when logged out = %d records, %v, want ErrUnavailable", len(recs), err)
	}
	if err := tk.Reconnect(); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Find(spec, id); err != nil {
		t.Errorf("Find after Reconnect = %v", err)
	}
	if recs, err := tk.Records(""); err != nil || len(recs) != 1 {
		t.Errorf("Records after Reconnect = %d records, %v, want 1", len(recs), err)
	}
	if _, err := tk.Find(spec, []byte("no such key")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find of an unknown ID when logged in = %v, want ErrNotFound", err)
	}
}

// TestDestroyedKeyIsMissing: a key pair destroyed in the token after its signer was made (by Destroy here;
// by another daemon, its effect seen after this one reconnects) fails to sign as missing (ErrNotFound,
// Missing), not as another token error, so that the caller learns the key pair is gone.
func TestDestroyedKeyIsMissing(t *testing.T) {
	tk := newTestToken(t, "destroyed")
	for _, spec := range []KeySpec{{Type: ECDSA, Curve: elliptic.P256()}, {Type: Ed25519}} {
		for _, reconnect := range []bool{false, true} {
			id, s := generate(t, tk, spec, "k")
			if err := tk.Destroy(id); err != nil {
				t.Fatal(err)
			}
			if reconnect {
				if err := tk.Reconnect(); err != nil {
					t.Fatal(err)
				}
			}
			var e interface{ Missing() bool }
			if _, err := signOnce(s); !errors.Is(err, ErrNotFound) || !errors.As(err, &e) || !e.Missing() {
				t.Errorf("%v (reconnected: %v): Sign after Destroy = %v, want a missing key", spec, reconnect, err)
			}
		}
	}
	_, s := generate(t, tk, KeySpec{Type: ECDSA, Curve: elliptic.P256()}, "other")
	if ok, err := signOnce(s); !ok {
		t.Errorf("Sign with another key after the destroyed ones = %v", err)
	}
}

// TestProbeMechanismFailure: a token that cannot answer C_GetMechanismInfo (a slot that is not there,
// here) makes the probe fail, rather than report every algorithm unsupported, which would make a key
// creation a caller's mistake (INVALID_ARGUMENT) when it is the token's trouble.
func TestProbeMechanismFailure(t *testing.T) {
	tk := newTestToken(t, "probe")
	mechs, err := probeMechanismInfo(tk.p11, tk.slot)
	if err != nil || !supports(mechs, KeySpec{Type: Ed25519}) || !supports(mechs, KeySpec{Type: RSA, Bits: 2048, PSS: true}) {
		t.Fatalf("probe of the test token = %d mechanisms, %v; want every signerd algorithm", len(mechs), err)
	}
	if mechs, err := probeMechanismInfo(tk.p11, tk.slot+1000); !hasCode(err, pkcs11.CKR_SLOT_ID_INVALID) {
		t.Errorf("probe of a slot that is not there = %d mechanisms, %v; want CKR_SLOT_ID_INVALID", len(mechs), err)
	}
}
