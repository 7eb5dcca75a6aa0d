// Package keyringtest provides a keyring.Store over software keys, for tests of the keyring and of the
// server that must not need a token.
package keyringtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"sync"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
)

// MemoryStore keeps key pairs and records in memory. It is safe for concurrent use.
type MemoryStore struct {
	mu      sync.Mutex
	keys    map[string]crypto.Signer
	records map[string][]byte
	locks   map[string]*sync.Mutex
	// FailLoad, when set, is returned by Load: a fault to inject.
	FailLoad error
	// Wrap, when set, wraps every signer Generate and Load return: the seam for injecting signing faults.
	Wrap func(crypto.Signer) crypto.Signer
}

func (m *MemoryStore) wrap(s crypto.Signer) crypto.Signer {
	if m.Wrap != nil {
		return m.Wrap(s)
	}
	return s
}

// NewMemoryStore returns an empty store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{keys: map[string]crypto.Signer{}, records: map[string][]byte{}, locks: map[string]*sync.Mutex{}}
}

// Generate implements keyring.Store with software keys.
func (m *MemoryStore) Generate(alg jose.Algorithm, bits int, _ string) ([]byte, crypto.Signer, error) {
	var s crypto.Signer
	var err error
	switch alg.KeyType() {
	case jose.KeyRSA:
		s, err = rsa.GenerateKey(rand.Reader, bits)
	case jose.KeyEC:
		s, err = ecdsa.GenerateKey(alg.Curve(), rand.Reader)
	case jose.KeyEd25519:
		_, s, err = ed25519.GenerateKey(rand.Reader)
	default:
		err = fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	m.mu.Lock()
	m.keys[string(id)] = s
	m.mu.Unlock()
	return id, m.wrap(s), nil
}

// Load implements keyring.Store.
func (m *MemoryStore) Load(_ jose.Algorithm, _ int, id []byte) (crypto.Signer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.FailLoad != nil {
		return nil, m.FailLoad
	}
	s, ok := m.keys[string(id)]
	if !ok {
		return nil, fmt.Errorf("memory store: no key with that id: %w", keyring.ErrMissing)
	}
	return m.wrap(s), nil
}

// Destroy implements keyring.Store.
func (m *MemoryStore) Destroy(id []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.keys, string(id))
	return nil
}

// ReadRecords implements keyring.Store.
func (m *MemoryStore) ReadRecords(name string) ([]keyring.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]keyring.Record, 0, len(m.records))
	for n, v := range m.records {
		if name == "" || n == name {
			out = append(out, keyring.Record{Name: n, Value: v})
		}
	}
	return out, nil
}

// Lock implements keyring.Store with one mutex per name.
func (m *MemoryStore) Lock(name string) (func() error, error) {
	m.mu.Lock()
	l, ok := m.locks[name]
	if !ok {
		l = &sync.Mutex{}
		m.locks[name] = l
	}
	m.mu.Unlock()
	l.Lock()
	return func() error { l.Unlock(); return nil }, nil
}

// WriteRecord implements keyring.Store.
func (m *MemoryStore) WriteRecord(name string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[name] = append([]byte(nil), value...)
	return nil
}
