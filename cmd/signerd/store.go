package main

import (
	"crypto"

	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/jose"
)

// tokenStore adapts *hsm.Token to keyring.Store: it is where JOSE algorithms become PKCS#11 key specs,
// so that neither package needs to know the other.
type tokenStore struct{ t *hsm.Token }

// specFor returns the key pair an algorithm needs.
func specFor(alg jose.Algorithm, bits int) hsm.KeySpec {
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

func (s tokenStore) Generate(alg jose.Algorithm, bits int, label string) ([]byte, crypto.Signer, error) {
	return s.t.Generate(specFor(alg, bits), label)
}

func (s tokenStore) Load(alg jose.Algorithm, bits int, id []byte) (crypto.Signer, error) {
	return s.t.Find(specFor(alg, bits), id)
}

func (s tokenStore) Destroy(id []byte) error { return s.t.Destroy(id) }

func (s tokenStore) ReadRecords() ([][]byte, error) {
	recs, err := s.t.Records()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = r.Value
	}
	return out, nil
}

func (s tokenStore) WriteRecord(name string, value []byte) error { return s.t.PutRecord(name, value) }
