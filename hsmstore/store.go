// Package hsmstore adapts an open hsm.Token to keyring.Store. It is the one place where JOSE algorithms
// become PKCS#11 key specs, so that neither hsm nor keyring needs to know the other.
package hsmstore

import (
	"crypto"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
)

// Store is a keyring.Store over a token.
type Store struct{ t *hsm.Token }

// New returns the Store for t.
func New(t *hsm.Token) Store { return Store{t: t} }

// Spec returns the key pair an algorithm needs; bits is the RSA modulus size.
func Spec(alg jose.Algorithm, bits int) hsm.KeySpec {
	switch alg.KeyType() {
	case jose.KeyRSA:
		return hsm.KeySpec{Type: hsm.RSA, Bits: bits, PSS: alg.IsPSS()}
	case jose.KeyEC:
		return hsm.KeySpec{Type: hsm.ECDSA, Curve: alg.Curve()}
	case jose.KeyEd25519:
		return hsm.KeySpec{Type: hsm.Ed25519}
	}
	return hsm.KeySpec{}
}

// Generate implements keyring.Store.
func (s Store) Generate(alg jose.Algorithm, bits int, label string) ([]byte, crypto.Signer, error) {
	return s.t.Generate(Spec(alg, bits), label)
}

// Load implements keyring.Store.
func (s Store) Load(alg jose.Algorithm, bits int, id []byte) (crypto.Signer, error) {
	signer, err := s.t.Find(Spec(alg, bits), id)
	if errors.Is(err, hsm.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", keyring.ErrMissing, err)
	}
	return signer, err
}

// Destroy implements keyring.Store.
func (s Store) Destroy(id []byte) error { return s.t.Destroy(id) }

// ReadRecords implements keyring.Store.
func (s Store) ReadRecords(name string) ([]keyring.Record, error) {
	recs, err := s.t.Records(name)
	if err != nil {
		return nil, err
	}
	out := make([]keyring.Record, len(recs))
	for i, r := range recs {
		out[i] = keyring.Record{Name: r.Name, Value: r.Value}
	}
	return out, nil
}

// Lock timing: a lock is held for one read-modify-write of a key record (and, for rotation, one key
// generation), so holders finish in seconds; lockTTL only bounds how long a crashed holder blocks others.
const (
	lockTTL  = 2 * time.Minute
	lockWait = 30 * time.Second
)

// Lock implements keyring.Store. It first takes the token's local lock for the whole change, so that
// no other process on this machine touches the token's objects meanwhile (and every process takes the
// two locks in the same order), then the token-wide lock of hsm.TryLock, retrying with jitter while
// another process (on this machine or another one sharing the token) holds it.
func (s Store) Lock(name string) (func() error, error) {
	release := s.t.Exclusive()
	deadline := time.Now().Add(lockWait)
	for {
		unlock, err := s.t.TryLock("key:"+name, lockTTL)
		switch {
		case err == nil:
			return func() error {
				defer release()
				return unlock()
			}, nil
		case !errors.Is(err, hsm.ErrLocked):
			release()
			return nil, err
		case time.Now().After(deadline):
			release()
			return nil, fmt.Errorf("%w: %q still locked after %v", keyring.ErrLocked, name, lockWait)
		}
		time.Sleep(time.Duration(20+rand.IntN(180)) * time.Millisecond)
	}
}

// WriteRecord implements keyring.Store.
func (s Store) WriteRecord(name string, value []byte) error { return s.t.PutRecord(name, value) }
