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

// ErrLockLost means a holder found, when renewing its lock, that the lock was no longer its own: it had
// gone unrenewed past its ttl and another process took it. Its release reports it.
var ErrLockLost = errors.New("hsm: lock lost to another process")

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
	l := &tokenLock{t: t, name: name, owner: hex.EncodeToString(nonce), ttl: ttl, tmpl: dataTemplate(lockApplication, name)}
	if err := l.write("lock", l.acquire); err != nil {
		return nil, err
	}
	stop, renewed := make(chan struct{}), make(chan struct{})
	var renewErr error // written by the renewal goroutine, read after it ends
	go func() {
		defer close(renewed)
		renewErr = l.renewUntil(stop)
	}()
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			close(stop)
			<-renewed
			err = errors.Join(renewErr, l.write("unlock", func(s pkcs11.SessionHandle) error {
				// Lost since the last renewal (the renewal reports a loss it saw itself)?
				var lost error
				if !errors.Is(renewErr, ErrLockLost) && errors.Is(l.stillMine(s), ErrLockLost) {
					lost = ErrLockLost
				}
				return errors.Join(lost, l.destroyOwn(s, 0))
			}))
		})
		return err
	}, nil
}

// tokenLock is one holder's claim on a token-wide lock: lock objects labelled name whose value names
// owner. Handles are never kept across operations: a reconnect renumbers them, so each operation finds
// the holder's objects again by owner.
type tokenLock struct {
	t           *Token
	name, owner string
	ttl         time.Duration
	tmpl        []*pkcs11.Attribute // finds every lock object called name
}

// write runs f on a session under the local lock, after listing the token, as every object-store
// write does (the write adopts the token generation, see localLock).
func (l *tokenLock) write(op string, f func(pkcs11.SessionHandle) error) error {
	return l.t.local.write(func() error {
		return l.t.with(op+" "+l.name, func(s pkcs11.SessionHandle) error {
			if err := l.t.reindex(s); err != nil {
				return err
			}
			return f(s)
		})
	})
}

// acquire creates the holder's lock object, then gives it up with ErrLocked if another live one exists;
// dead holders' objects (past their expiry) are removed on the way.
func (l *tokenLock) acquire(s pkcs11.SessionHandle) error {
	mine, err := l.create(s)
	if err != nil {
		return fmt.Errorf("create lock object: %w", err)
	}
	handles, err := l.t.findObjects(s, l.tmpl)
	if err != nil {
		_ = l.t.p11.DestroyObject(s, mine)
		return err
	}
	now := time.Now().UnixNano()
	for _, h := range handles {
		if h == mine {
			continue
		}
		other, err := l.value(s, h)
		switch {
		case errors.Is(err, errLockGone):
			continue // destroyed meanwhile by its holder
		case err == nil && other.Owner != l.owner && other.Expires <= now:
			// A dead holder's lock (or a value no holder wrote, see value).
			_ = l.t.p11.DestroyObject(s, h)
			continue
		}
		// A live lock, or one that cannot be read now: held by someone else.
		_ = l.t.p11.DestroyObject(s, mine)
		return ErrLocked
	}
	return nil
}

// renewUntil pushes the lock's expiry back every ttl/3 until stop is closed, so that a holder that takes
// long (an RSA key generation on a slow HSM) keeps it, and other machines' clocks may be off by up to
// 2/3 ttl. Tokens keep a data object's CKA_VALUE read-only, so a new object is made before the older ones
// go: the lock never looks free meanwhile. A holder whose lock is no longer its own (its object removed
// as expired by another process taking the lock) does not take it back: it stops and reports
// ErrLockLost. It returns the last renewal error, and stops early once the token is closed.
func (l *tokenLock) renewUntil(stop <-chan struct{}) error {
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-stop:
			return last
		case <-tick.C:
			err := l.write("renew lock", func(s pkcs11.SessionHandle) error {
				if err := l.stillMine(s); err != nil {
					return err
				}
				h, err := l.create(s)
				if err != nil {
					return err
				}
				return l.destroyOwn(s, h)
			})
			if err != nil {
				last = err // named by write: "renew lock NAME: ..."
			}
			if errors.Is(err, ErrClosed) || errors.Is(err, ErrLockLost) {
				return last
			}
		}
	}
}

// stillMine checks that the lock is the holder's: one of its objects is there and has not expired.
// That alone tells. A contender takes the lock by finding the holder's object expired (acquire), so an
// expired one may already count as free for another process, which then holds the lock as soon as it
// removes it: the holder must give up. Another process's live object beside a live one of the holder's
// is a contender's attempt between its create and its withdrawal, which sees the holder's object and
// withdraws; taking that for a takeover would stop the renewals of a lock still held, let it lapse and
// give it to a third process while this one works.
func (l *tokenLock) stillMine(s pkcs11.SessionHandle) error {
	handles, err := l.t.findObjects(s, l.tmpl)
	if err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for _, h := range handles {
		v, err := l.value(s, h)
		switch {
		case errors.Is(err, errLockGone):
		case err != nil:
			return err
		case v.Owner == l.owner && v.Expires > now:
			return nil
		}
	}
	return ErrLockLost
}

// create makes a lock object of the holder's that expires ttl from now.
func (l *tokenLock) create(s pkcs11.SessionHandle) (pkcs11.ObjectHandle, error) {
	val, _ := json.Marshal(lockValue{Owner: l.owner, Expires: time.Now().Add(l.ttl).UnixNano()})
	return l.t.createData(s, l.tmpl, val)
}

// destroyOwn destroys the holder's lock objects but keep (0 keeps none).
func (l *tokenLock) destroyOwn(s pkcs11.SessionHandle, keep pkcs11.ObjectHandle) error {
	handles, err := l.t.findObjects(s, l.tmpl)
	if err != nil {
		return err
	}
	for _, h := range handles {
		if v, verr := l.value(s, h); verr == nil && v.Owner == l.owner && h != keep {
			err = errors.Join(err, l.t.p11.DestroyObject(s, h))
		}
	}
	return err
}

// errLockGone means a lock object is no longer there: its holder destroyed it meanwhile.
var errLockGone = errors.New("lock object gone")

// value reads lock object h. Only a handle that names no object any more means it is gone; any other
// failure to read it is an error, so that a live lock the token failed to read is never taken for a
// free one. A value that is not a lock value (its writer died while creating it) is the zero value: no
// holder's, long expired, so that every reader sees it as dead instead of holding the lock for ever.
func (l *tokenLock) value(s pkcs11.SessionHandle, h pkcs11.ObjectHandle) (lockValue, error) {
	attrs, err := l.t.p11.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	switch {
	case hasCode(err, goneObjectCodes...):
		return lockValue{}, errLockGone
	case err != nil:
		return lockValue{}, err
	}
	var v lockValue
	if json.Unmarshal(attrs[0].Value, &v) != nil {
		return lockValue{}, nil
	}
	return v, nil
}
