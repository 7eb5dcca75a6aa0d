package keyring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/signerd/signerd/jose"
)

// Errors of lifecycle operations; test them with errors.Is.
var (
	ErrNoVersion = errors.New("keyring: no such version")
	ErrState     = errors.New("keyring: not allowed in the version's state")
)

// update runs one read-modify-write of key name's record, holding the key's token-wide lock so that
// daemons and CLIs on any machine never interleave. fn gets the current record read from the token
// under the lock (nil if the key does not exist) and returns the record to write, plus the CKA_ID of a
// key pair it generated, which is destroyed again if the write fails. The new snapshot is published
// before update returns.
func (r *Ring) update(name string, fn func(cur *Meta, now time.Time) (*Meta, []byte, error)) (*Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	unlock, err := r.store.Lock(name)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer func() { _ = unlock() }()
	cur, err := r.readMeta(name)
	if err != nil {
		return nil, err
	}
	// Keys are never deleted: a key this ring has seen but the token does not list means the token's
	// listing is incomplete, and acting on it (creating the key again, say) would be wrong.
	if cur == nil && r.snap.Load().Exists(name) {
		return nil, fmt.Errorf("keyring: %q is loaded but its record is missing from the token's listing; not changing it", name)
	}
	read := revision(cur) // fn may change cur itself
	next, generated, err := fn(cur, r.clock().UTC())
	if err != nil {
		return nil, err
	}
	next.Revision = read + 1
	// The token-wide lock lapses if its renewals fail for longer than its time to live (a token slow
	// to generate a key pair, say), and another process may then have changed the key. PKCS#11 has no
	// compare-and-swap: reading the record again just before the write is the nearest thing, so that a
	// change made meanwhile (a revocation) is not silently written over.
	if again, err := r.readMeta(name); err != nil || revision(again) != read {
		if generated != nil {
			_ = r.store.Destroy(generated)
		}
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %q changed while this change was being made (its lock had lapsed); nothing written, retry", ErrLocked, name)
	}
	if err := r.write(next); err != nil {
		// A write reported failed may have landed all the same (a network HSM that timed out after
		// committing it): the new key pair goes only once the record is known not to name it, for a
		// record naming a key pair that is gone would stop every daemon from loading the key.
		again, rerr := r.readMeta(name)
		switch {
		case rerr == nil && revision(again) == next.Revision:
			// Written after all: the change is made.
		case rerr == nil && revision(again) == read:
			if generated != nil {
				_ = r.store.Destroy(generated)
			}
			return nil, err
		default:
			return nil, fmt.Errorf("%w; whether the record was written is unknown, so the new key pair (if any) is kept", err)
		}
	}
	// The change is made once the record is written. A refresh problem after it, even in loading this
	// key's new version, must not be reported as the change failing: callers would retry a change that
	// happened (an emergency rotation retried revokes the version it just made). Load problems show in
	// the key (a version without key material) and in every refresh's error until they clear.
	refreshErr := r.refreshLocked()
	k := r.snap.Load().keys[name]
	if k == nil || k.meta.Revision != next.Revision {
		return nil, fmt.Errorf("keyring: %q %w, but the refresh after it failed: %w", name, errWritten, refreshErr)
	}
	return k, nil
}

// revision is m's revision, zero for no record.
func revision(m *Meta) uint64 {
	if m == nil {
		return 0
	}
	return m.Revision
}

// readMeta reads key name's newest record from the store; nil if there is none.
func (r *Ring) readMeta(name string) (*Meta, error) {
	raw, err := r.store.ReadRecords(name)
	if err != nil {
		return nil, fmt.Errorf("keyring: read records: %w", err)
	}
	var cur *Meta
	for _, rec := range raw {
		m, err := decodeMeta(rec.Name, rec.Value)
		if err != nil {
			return nil, err
		}
		if cur == nil || m.Revision > cur.Revision {
			cur = m
		}
	}
	return cur, nil
}

func (r *Ring) write(m *Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("keyring: encode %q: %w", m.Name, err)
	}
	if err := r.store.WriteRecord(m.Name, b); err != nil {
		return fmt.Errorf("keyring: write %q: %w", m.Name, err)
	}
	return nil
}

// newVersion generates the next version's key pair in the token.
func (r *Ring) newVersion(m *Meta, now, activateAt time.Time) (Version, error) {
	n := len(m.Versions) + 1
	id, s, err := r.store.Generate(m.Alg, m.Bits, versionLabel(m.Name, n))
	if err != nil {
		return Version{}, fmt.Errorf("keyring: generate %q version %d: %w", m.Name, n, err)
	}
	kid, err := jose.Thumbprint(s.Public())
	if err != nil {
		_ = r.store.Destroy(id)
		return Version{}, fmt.Errorf("keyring: generate %q version %d: %w", m.Name, n, err)
	}
	return Version{Number: n, ID: id, Kid: kid, Created: now, ActivateAt: activateAt}, nil
}

func mustExist(name string, cur *Meta) error {
	if cur == nil {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return nil
}

// versionState returns the state at now of version n of key name, whose record is cur (nil if the key
// does not exist).
func versionState(name string, cur *Meta, n int, now time.Time) (State, error) {
	if err := mustExist(name, cur); err != nil {
		return "", err
	}
	if n < 1 || n > len(cur.Versions) {
		return "", fmt.Errorf("%w: %q version %d", ErrNoVersion, name, n)
	}
	return cur.StateAt(n-1, now).State, nil
}

// Rotate adds a new version to key name. A staged rotation publishes it now and activates it after the
// key's prepublish period, which retires the active version at that moment. An emergency rotation
// activates it at once and revokes the active version at once. Rotating a key that already has a pending
// version is refused (staged) or revokes that pending version too (emergency).
func (r *Ring) Rotate(name string, emergency bool) (*Key, *Version, error) {
	var added Version
	k, err := r.update(name, func(cur *Meta, now time.Time) (*Meta, []byte, error) {
		if err := mustExist(name, cur); err != nil {
			return nil, nil, err
		}
		activate := now.Add(r.prepublish(cur))
		if emergency {
			activate = now
		}
		for i := range cur.Versions {
			switch cur.StateAt(i, now).State {
			case Pending:
				if !emergency {
					return nil, nil, fmt.Errorf("%w: %q already has pending version %d", ErrState, name, cur.Versions[i].Number)
				}
				cur.Versions[i].RevokedAt = &now
			case Active:
				if emergency {
					cur.Versions[i].RevokedAt = &now
				}
			}
		}
		v, err := r.newVersion(cur, now, activate)
		if err != nil {
			return nil, nil, err
		}
		cur.Versions = append(cur.Versions, v)
		added = v
		return cur, v.ID, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return k, &added, nil
}

// Revoke withdraws version n of key name at once: it leaves the JWKS, stops verifying and never signs
// again. Revoking the active version leaves the key without one until it is rotated.
func (r *Ring) Revoke(name string, n int) (*Key, error) {
	return r.update(name, func(cur *Meta, now time.Time) (*Meta, []byte, error) {
		st, err := versionState(name, cur, n, now)
		if err != nil {
			return nil, nil, err
		}
		switch st {
		case Revoked, Destroyed:
			return nil, nil, fmt.Errorf("%w: %q version %d is %s", ErrState, name, n, st)
		}
		cur.Versions[n-1].RevokedAt = &now
		return cur, nil, nil
	})
}

// Destroy deletes the key pair of version n of key name from the token. Only a version that no longer
// signs may be destroyed (retired, expired or revoked); its kid stays in the record as destroyed, so it
// can never be reused or come back.
func (r *Ring) Destroy(name string, n int) (*Key, error) {
	return r.update(name, func(cur *Meta, now time.Time) (*Meta, []byte, error) {
		st, err := versionState(name, cur, n, now)
		if err != nil {
			return nil, nil, err
		}
		switch st {
		case Retired, Expired, Revoked:
		default:
			return nil, nil, fmt.Errorf("%w: %q version %d is %s; only retired, expired or revoked versions are destroyed", ErrState, name, n, st)
		}
		// Destroy first: a record that says "destroyed" while the objects remain would hide them.
		if err := r.store.Destroy(cur.Versions[n-1].ID); err != nil {
			return nil, nil, fmt.Errorf("keyring: destroy %q version %d: %w", name, n, err)
		}
		cur.Versions[n-1].DestroyedAt = &now
		return cur, nil, nil
	})
}

// prepublish is how long a staged rotation of the key whose record is m publishes its new version
// before it signs: the key's prepublish, or the ring's minimum if that is longer.
func (r *Ring) prepublish(m *Meta) time.Duration {
	return max(m.Prepublish.D(), r.minPrepublish)
}

// RotateDue staged-rotates every key whose active version is older than its rotation period and that
// has no pending version. Each key is re-checked under its lock, so processes running it at the same
// time (on one machine or several) rotate each due key exactly once. It returns the versions it added,
// a rotation whose record was written counted even if what followed failed; it stops between keys once
// ctx ends.
func (r *Ring) RotateDue(ctx context.Context) ([]KeyVersion, error) {
	var rotated []KeyVersion
	var errs []error
	// One key's trouble must not stop the others' rotations: each key is read again under its lock.
	if err := r.Refresh(); err != nil {
		errs = append(errs, err)
	}
	snap := r.Snapshot()
	for _, name := range snap.Names() {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		// Only keys due by the fresh view take their locks in the token.
		if k, _ := snap.Key(name); !k.meta.due(snap.at) {
			continue
		}
		var added *Version
		_, err := r.update(name, func(cur *Meta, now time.Time) (*Meta, []byte, error) {
			if err := mustExist(name, cur); err != nil {
				return nil, nil, err
			}
			if !cur.due(now) {
				return nil, nil, errNotDue
			}
			v, err := r.newVersion(cur, now, now.Add(r.prepublish(cur)))
			if err != nil {
				return nil, nil, err
			}
			cur.Versions = append(cur.Versions, v)
			added = &v
			return cur, v.ID, nil
		})
		switch {
		case errors.Is(err, errNotDue):
		case added != nil && (err == nil || errors.Is(err, errWritten)):
			rotated = append(rotated, KeyVersion{Key: name, Version: *added})
			if err != nil {
				errs = append(errs, err)
			}
		case err != nil:
			errs = append(errs, err)
		}
	}
	return rotated, errors.Join(errs...)
}

var errNotDue = errors.New("keyring: not due")

// errWritten is in the error of a change whose record was written though the refresh after it failed:
// the change happened.
var errWritten = errors.New("written")

// RotationDue reports whether RotateDue would rotate a key of the snapshot, as of the moment it was
// taken, so that a process checking often takes keys' locks in the token only when one is due.
func (s *Snapshot) RotationDue() bool {
	for _, k := range s.keys {
		if k.meta.due(s.at) {
			return true
		}
	}
	return false
}

// due reports whether m needs a scheduled rotation at now.
func (m *Meta) due(now time.Time) bool {
	if m.RotationPeriod <= 0 {
		return false
	}
	var active *Version
	for i := range m.Versions {
		switch m.StateAt(i, now).State {
		case Pending:
			return false
		case Active:
			active = &m.Versions[i]
		}
	}
	// A key without an active version has had it revoked: it stays out of service until an
	// administrator rotates it.
	return active != nil && !now.Before(active.ActivateAt.Add(m.RotationPeriod.D()))
}

// KeyVersion is a version with its key's name: one RotateDue added or DestroyExpired destroyed.
type KeyVersion struct {
	Key string
	Version
}

// DestroyExpired destroys the key pairs of every version past its grace period, except in keys that
// keep retired versions. A running daemon calls it after each refresh; it returns what it destroyed.
func (r *Ring) DestroyExpired() ([]KeyVersion, error) {
	var done []KeyVersion
	var errs []error
	for _, name := range r.Snapshot().Names() {
		k, _ := r.Snapshot().Key(name)
		if k.meta.KeepRetired || !k.hasState(Expired) {
			continue
		}
		// Reported only once the record saying so is written: a destroy or a write that fails leaves
		// the key for the next round, which destroys again (Destroy of a gone key pair does nothing).
		var destroyed []KeyVersion
		_, err := r.update(name, func(cur *Meta, now time.Time) (*Meta, []byte, error) {
			if err := mustExist(name, cur); err != nil {
				return nil, nil, err
			}
			n := 0
			for i := range cur.Versions {
				if cur.StateAt(i, now).State != Expired {
					continue
				}
				if err := r.store.Destroy(cur.Versions[i].ID); err != nil {
					return nil, nil, fmt.Errorf("keyring: destroy %q version %d: %w", name, i+1, err)
				}
				cur.Versions[i].DestroyedAt = &now
				destroyed = append(destroyed, KeyVersion{Key: name, Version: cur.Versions[i]})
				n++
			}
			if n == 0 {
				return nil, nil, errNotDue
			}
			return cur, nil, nil
		})
		switch {
		case err == nil:
			done = append(done, destroyed...)
		case !errors.Is(err, errNotDue):
			errs = append(errs, err)
		}
	}
	return done, errors.Join(errs...)
}

// NextTransition returns the first instant after the snapshot at which a version changes state (a
// pending version activates, a retired one expires); zero if none is scheduled. A daemon refreshes then,
// so transitions happen on time.
func (s *Snapshot) NextTransition() time.Time {
	var next time.Time
	for _, k := range s.keys {
		if t := k.meta.nextTransition(s.at); !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

func (k *Key) hasState(st State) bool {
	for _, v := range k.Versions {
		if v.State == st {
			return true
		}
	}
	return false
}

// Settings returns the key's rotation settings.
func (k *Key) Settings() Settings { return k.meta.Settings }
