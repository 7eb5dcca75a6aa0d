package hsm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// signer is a key pair in the token as a crypto.Signer. It validates every request before the token
// sees it, so that a token error never stands for bad input: crypto11 signs garbage without complaint for
// an unknown hash or a digest of the wrong length with PKCS#1 v1.5, and SoftHSM answers CKR_GENERAL_ERROR
// for bad PSS input (pkcs11-notes §2.1, §2.2).
type signer struct {
	t    *Token
	spec KeySpec
	id   []byte
	pub  crypto.PublicKey
	// cur is the key as found under one connection; after a Reconnect it is found again.
	cur    atomic.Pointer[bound]
	refind sync.Mutex
}

// bound is a key found under connection generation gen.
type bound struct {
	inner crypto.Signer
	gen   uint64
}

// Public returns the public key read from the token when the key was loaded.
func (k *signer) Public() crypto.PublicKey { return k.pub }

// Sign signs digest (the whole message for Ed25519). RSA and ECDSA accept SHA-256, SHA-384 and SHA-512
// digests of exactly the hash's length; an RSA-PSS key needs *rsa.PSSOptions with the salt length equal to
// the hash length (rsa.PSSSaltLengthEqualsHash or the number), an RSA PKCS#1 v1.5 key needs anything else.
// Ed25519 signs pure Ed25519 only (opts.HashFunc() == 0, no context). rand is ignored: the token has its own.
func (k *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	opts, err := k.check(digest, opts)
	if err != nil {
		return nil, err
	}
	b, err := k.bound()
	if err != nil {
		return nil, err
	}
	for retried := false; ; retried = true {
		sig, err := b.inner.Sign(nil, digest, opts)
		if err == nil {
			return sig, nil
		}
		// A Reconnect or Close under way may be what failed the call: its outcome decides.
		_, gen, cerr := k.t.context()
		switch {
		case cerr != nil:
			return nil, cerr
		case gen != b.gen && retried:
			return nil, &Error{Op: "sign", Kind: ErrUnavailable, Err: err}
		case !retried && (gen != b.gen || hasCode(err, goneObjectCodes...)):
			// The token reconnected while this call was on its way, or the object it signed with is
			// gone (a session copy lost behind this signer's back): once more, with the key found
			// again. A key destroyed in the token is not found, and that is the error.
			if b, err = k.rebind(b); err != nil {
				return nil, classify("sign", err)
			}
			continue
		}
		return nil, classify("sign", err)
	}
}

// bound returns the key under the current connection, finding it again (with all of Find's checks) if
// the token reconnected since.
func (k *signer) bound() (*bound, error) {
	b := k.cur.Load()
	if b.gen == k.t.gen.Load() {
		return b, nil
	}
	return k.rebind(b)
}

// rebind finds the key again in place of stale, unless another call already has.
func (k *signer) rebind(stale *bound) (*bound, error) {
	k.refind.Lock()
	defer k.refind.Unlock()
	if b := k.cur.Load(); b != stale && b.gen == k.t.gen.Load() {
		return b, nil
	}
	f, err := k.t.findSigner(k.spec, k.id)
	if err != nil {
		return nil, err
	}
	if !samePublic(f.pub, k.pub) {
		return nil, &Error{Op: fmt.Sprintf("reload key %x", k.id), Kind: ErrKeyCheck, Err: errors.New("a different key now has this CKA_ID")}
	}
	b := f.cur.Load()
	k.cur.Store(b)
	return b, nil
}

func samePublic(a, b crypto.PublicKey) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}

// check validates a request and returns the options to hand to the inner signer.
func (k *signer) check(digest []byte, opts crypto.SignerOpts) (crypto.SignerOpts, error) {
	if opts == nil {
		return nil, invalidInput("sign", "no signer options")
	}
	h := opts.HashFunc()
	if k.spec.Type == Ed25519 {
		if h != 0 {
			return nil, invalidInput("sign", "Ed25519 signs messages, not %v digests", h)
		}
		if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
			return nil, invalidInput("sign", "Ed25519ctx is not supported")
		}
		return opts, nil
	}
	switch h {
	case crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return nil, invalidInput("sign", "hash %v not allowed", h)
	}
	if len(digest) != h.Size() {
		return nil, invalidInput("sign", "digest is %d bytes, %v needs %d", len(digest), h, h.Size())
	}
	if k.spec.Type != RSA {
		return opts, nil
	}
	pss, isPSS := opts.(*rsa.PSSOptions)
	switch {
	case k.spec.PSS && !isPSS:
		return nil, invalidInput("sign", "key is limited to RSA-PSS")
	case !k.spec.PSS && isPSS:
		return nil, invalidInput("sign", "key is limited to RSA PKCS#1 v1.5")
	case isPSS && pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != h.Size():
		// crypto11 rejects PSSSaltLengthAuto (the zero value) and JOSE needs salt = hash length.
		return nil, invalidInput("sign", "PSS salt length must equal the hash length")
	case isPSS && pss.SaltLength != rsa.PSSSaltLengthEqualsHash:
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}, nil
	}
	return opts, nil
}

// selfTest signs a fixed input and verifies the result with the public key in software.
func selfTest(k *signer) error {
	msg := []byte("signerd key self test")
	d := sha256.Sum256(msg)
	var opts crypto.SignerOpts = crypto.SHA256
	input := d[:]
	switch {
	case k.spec.Type == Ed25519:
		opts, input = crypto.Hash(0), msg
	case k.spec.PSS:
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	}
	// Once, through the key just found: not through Sign, whose retry would find the key again, under
	// the local lock that find already holds (a waiting writer would then deadlock both).
	sig, err := k.cur.Load().inner.Sign(nil, input, opts)
	if err != nil {
		// A token in trouble is not a key that fails its check; a key that cannot sign is.
		if err = classify("self test", err); errors.Is(err, ErrUnavailable) || errors.Is(err, ErrBusy) {
			return err
		}
		return &Error{Op: "self test", Kind: ErrKeyCheck, Err: err}
	}
	ok := false
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		if k.spec.PSS {
			ok = rsa.VerifyPSS(pub, crypto.SHA256, input, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
		} else {
			ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, input, sig) == nil
		}
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, input, sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, input, sig)
	}
	if !ok {
		return &Error{Op: "self test", Kind: ErrKeyCheck, Err: errors.New("signature does not verify with the public key")}
	}
	return nil
}

// edSigner signs with an Ed25519 private key through CKM_EDDSA on the raw session pool. SoftHSM supports
// only single-part pure Ed25519, so the whole message goes to C_Sign.
type edSigner struct {
	t    *Token
	priv pkcs11.ObjectHandle
	// gen is the connection generation priv belongs to: after a reconnect the same number may name
	// another object, even another private key.
	gen uint64
	pub ed25519.PublicKey
}

// errStaleHandle means an object handle belongs to an earlier connection; the signer finds its key again.
var errStaleHandle = errors.New("key handle from an earlier connection")

func (e *edSigner) Public() crypto.PublicKey { return e.pub }

func (e *edSigner) Sign(_ io.Reader, msg []byte, _ crypto.SignerOpts) ([]byte, error) {
	var sig []byte
	err := e.t.with("sign", func(s pkcs11.SessionHandle) error {
		// with holds mu for reading, so the generation cannot change until the signature is made.
		if e.t.gen.Load() != e.gen {
			return &Error{Op: "sign", Kind: ErrUnavailable, Err: errStaleHandle}
		}
		if err := e.t.p11.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, e.priv); err != nil {
			return err
		}
		var err error
		sig, err = e.t.p11.Sign(s, msg)
		return err
	})
	return sig, err
}
