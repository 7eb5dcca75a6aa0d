package hsm

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/miekg/pkcs11"
)

// lockApplication is the CKA_APPLICATION of lock objects, apart from signerd's records.
const lockApplication = "signerd-lock"

// ErrLocked means another process holds the lock.
var ErrLocked = errors.New("hsm: locked by another process")

type lockValue struct {
	Owner   string `json:"owner"`
	Expires int64  `json:"expires"` // Unix nanoseconds
}

// TryLock takes the token-wide lock called name, for processes on any machine that share the token,
// or returns ErrLocked. PKCS#11 has no compare-and-swap, so the lock is a protocol over object creation:
// create your own lock object, then list every lock object of that name; if any other live one exists,
// destroy yours and report ErrLocked. Two contenders can both lose (and retry), never both win: whoever
// lists second sees the other's object, since each creates before it lists. A lock whose holder died is
// ignored (and removed) once its ttl has passed. The returned function releases the lock.
func (t *Token) TryLock(name string, ttl time.Duration) (func() error, error) {
	if ttl < time.Second {
		return nil, fmt.Errorf("hsm: lock %s: ttl %v, want at least 1s", name, ttl)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	me := hex.EncodeToString(nonce)
	val, _ := json.Marshal(lockValue{Owner: me, Expires: time.Now().Add(ttl).UnixNano()})
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_DATA),
		pkcs11.NewAttribute(pkcs11.CKA_APPLICATION, lockApplication),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, name),
	}
	var mine pkcs11.ObjectHandle
	err := t.local.write(func() error {
		return t.with("lock "+name, func(s pkcs11.SessionHandle) error {
			// List before creating: the creation adopts the token generation (see localLock).
			if err := t.reindex(s); err != nil {
				return err
			}
			var err error
			mine, err = t.p11.CreateObject(s, append(tmpl,
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE, val)))
			if err != nil {
				return fmt.Errorf("create lock object: %w", err)
			}
			handles, err := t.findObjects(s, tmpl)
			if err != nil {
				_ = t.p11.DestroyObject(s, mine)
				return err
			}
			now := time.Now().UnixNano()
			for _, h := range handles {
				if h == mine {
					continue
				}
				attrs, err := t.p11.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
				if err != nil {
					continue // destroyed meanwhile by its holder
				}
				var other lockValue
				if json.Unmarshal(attrs[0].Value, &other) == nil && other.Owner != me && other.Expires <= now {
					_ = t.p11.DestroyObject(s, h) // a dead holder's lock
					continue
				}
				_ = t.p11.DestroyObject(s, mine)
				return ErrLocked
			}
			return nil
		})
	})
	if err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, ErrLocked
		}
		return nil, err
	}
	// While held, the lock's expiry is pushed back every ttl/3, so that a holder that takes long (an
	// RSA key generation on a slow HSM) keeps it, and other machines' clocks may be off by up to 2/3 ttl.
	// The renewal stops at release, or when the token is closed; a failed renewal is reported by the
	// release (the lock may have been taken over meanwhile).
	stop, renewed := make(chan struct{}), make(chan struct{})
	var renewErr error // written by the renewal goroutine, read after it ends
	go func() {
		defer close(renewed)
		tick := time.NewTicker(ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				// Tokens keep a data object's CKA_VALUE read-only, so a new object with the later expiry
				// is made before the old ones go: the lock never looks free meanwhile.
				val, _ := json.Marshal(lockValue{Owner: me, Expires: time.Now().Add(ttl).UnixNano()})
				err := t.local.write(func() error {
					return t.with("renew lock "+name, func(s pkcs11.SessionHandle) error {
						if err := t.reindex(s); err != nil {
							return err
						}
						old, err := t.ownLocks(s, tmpl, me)
						if err != nil {
							return err
						}
						if _, err := t.p11.CreateObject(s, append(tmpl,
							pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
							pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
							pkcs11.NewAttribute(pkcs11.CKA_VALUE, val))); err != nil {
							return err
						}
						for _, h := range old {
							err = errors.Join(err, t.p11.DestroyObject(s, h))
						}
						return err
					})
				})
				if err != nil {
					renewErr = fmt.Errorf("renew lock %s: %w", name, err)
				}
				if errors.Is(err, ErrClosed) {
					return
				}
			}
		}
	}()
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			close(stop)
			<-renewed
			// The lock object is found again by its owner nonce rather than by the handle it was
			// created with: handles are only valid within one connection.
			err = t.local.write(func() error {
				return t.with("unlock "+name, func(s pkcs11.SessionHandle) error {
					if err := t.reindex(s); err != nil {
						return err
					}
					handles, err := t.ownLocks(s, tmpl, me)
					for _, h := range handles {
						err = errors.Join(err, t.p11.DestroyObject(s, h))
					}
					return err
				})
			})
			err = errors.Join(renewErr, err)
		})
		return err
	}, nil
}

// ownLocks returns the lock objects matching tmpl that owner holds.
func (t *Token) ownLocks(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, owner string) ([]pkcs11.ObjectHandle, error) {
	handles, err := t.findObjects(s, tmpl)
	if err != nil {
		return nil, err
	}
	var out []pkcs11.ObjectHandle
	for _, h := range handles {
		attrs, err := t.p11.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			continue
		}
		var v lockValue
		if json.Unmarshal(attrs[0].Value, &v) == nil && v.Owner == owner {
			out = append(out, h)
		}
	}
	return out, nil
}
