package hsm

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
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
	return func() error {
		return t.local.write(func() error {
			return t.with("unlock "+name, func(s pkcs11.SessionHandle) error {
				if err := t.reindex(s); err != nil {
					return err
				}
				return t.p11.DestroyObject(s, mine)
			})
		})
	}, nil
}
