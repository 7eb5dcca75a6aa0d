// Package keyring is signerd's key model: named keys with one fixed JOSE algorithm, their versions and
// states, kid thumbprints, and the view of them that requests read. It knows nothing of PKCS#11: the
// token is behind the Store interface, whose key material arrives as crypto.Signer values.
//
// The token is the single source of truth. A Ring reads every key record from the Store, loads the
// versions that can still sign or verify, and publishes an immutable Snapshot; a refresh builds a new
// Snapshot and swaps it in atomically, keeping the old one if anything fails.
package keyring

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signerd/signerd/jose"
)

// Store is what the keyring needs from the token. cmd/signerd adapts *hsm.Token to it; tests use
// software keys (keyringtest.MemoryStore).
type Store interface {
	// Generate creates a key pair for alg (bits for RSA) inside the token, labelled label, and returns
	// its ID and signer.
	Generate(alg jose.Algorithm, bits int, label string) (id []byte, s crypto.Signer, err error)
	// Load finds and checks the key pair with ID id. If the token has no key pair with that ID, the
	// error wraps ErrMissing.
	Load(alg jose.Algorithm, bits int, id []byte) (crypto.Signer, error)
	// Destroy deletes the key pair with ID id; a missing one is not an error.
	Destroy(id []byte) error
	// ReadRecords returns the records written under name (more than one if a replacement was
	// interrupted), or every key record if name is empty.
	ReadRecords(name string) ([]Record, error)
	// WriteRecord creates or replaces the record of key name.
	WriteRecord(name string, value []byte) error
	// Lock takes the lock of key name, shared by every process using the token, waiting a bounded time
	// for it; the returned function releases it. Every read-modify-write of a record holds it.
	Lock(name string) (unlock func() error, err error)
}

// Record is a key record as the Store holds it: the name it was written under (the key's) and its value.
type Record struct {
	Name  string
	Value []byte
}

// Errors returned by the Ring; test them with errors.Is.
var (
	ErrNotFound = errors.New("keyring: no such key")
	ErrExists   = errors.New("keyring: key exists")
	ErrNoActive = errors.New("keyring: key has no active version")
	// ErrInvalid means a request the keyring refuses outright: a key size or settings out of bounds.
	ErrInvalid = errors.New("keyring: invalid request")
	// ErrLocked means another process kept the key's lock longer than the store waits; retry later.
	ErrLocked = errors.New("keyring: key is being changed by another process")
	// ErrMissing is what a Store's Load wraps when the token has no key pair with the ID.
	ErrMissing = errors.New("keyring: key pair missing from the token")
)

// DefaultRSABits is the RSA modulus size of new keys when none is given.
const DefaultRSABits = 3072

// Options configure a Ring.
type Options struct {
	// Now is the clock; time.Now when nil. Tests inject their own.
	Now func() time.Time
	// Changed, when set, is called after each new snapshot is published (from the goroutine that
	// published it), so that an owner can re-arm timers for the next transition.
	Changed func()
	// LoadProblems, when set, makes Open tolerant: keys whose key pairs cannot all be loaded are opened
	// all the same (those versions without material, as a refresh leaves them) and their problems are
	// passed to it. Administrative commands use it, so that one broken key does not stop changes to
	// the others. Without it, Open fails: a daemon does not start with a key it cannot check.
	LoadProblems func(error)
	// MinPrepublish is the shortest time a staged rotation publishes a new version before it signs,
	// whatever the key's own prepublish: the JWKS cache lifetime of the configuration in force, for keys
	// whose settings were checked against a shorter one, so that no verifier meets a kid its cached JWKS
	// lacks.
	MinPrepublish time.Duration
}

// Ring is the loaded view of every key in the Store. It is safe for concurrent use; readers never block.
type Ring struct {
	store   Store
	now     func() time.Time
	changed func()
	// minPrepublish is Options.MinPrepublish.
	minPrepublish time.Duration
	mu            sync.Mutex // serialises writers and refreshes
	snap          atomic.Pointer[Snapshot]
	// strict makes a refresh that meets key problems fail without publishing: only Open's first load
	// (unless Options.LoadProblems is set). Guarded by mu.
	strict bool
	// latest is the latest time the ring has read from its clock, guarded by mu: see clock.
	latest time.Time
}

// Open loads every key from store.
func Open(store Store, opts Options) (*Ring, error) {
	r := &Ring{store: store, now: opts.Now, changed: opts.Changed, minPrepublish: opts.MinPrepublish, strict: opts.LoadProblems == nil}
	if r.now == nil {
		r.now = time.Now
	}
	r.snap.Store(&Snapshot{keys: map[string]*Key{}, byKid: map[string]*LoadedVersion{}})
	err := r.Refresh()
	r.mu.Lock()
	r.strict = false // later refreshes keep working keys past others' problems
	r.mu.Unlock()
	switch {
	case err == nil:
	case opts.LoadProblems == nil || errors.Is(err, errRead):
		return nil, err
	default:
		opts.LoadProblems(err)
	}
	return r, nil
}

// errRead marks a refresh that could not read the records at all.
var errRead = errors.New("keyring: read records")

// maxClockHold is how far behind its latest reading the ring's clock may fall and still be held there.
const maxClockHold = time.Minute

// clock returns the ring's time: its clock's, but never earlier than a time it returned before, so
// that a clock stepping back a little cannot show a version written a moment ago in an earlier state
// (a key just created without its active version, say). A clock that steps back further than
// maxClockHold is followed: that is a wrong clock corrected (a jump ahead of days, say), and holding
// the ring at the wrong time would go on timing its changes by it, pending versions activating days
// early in every other daemon's view. The caller holds mu.
func (r *Ring) clock() time.Time {
	if now := r.now(); now.After(r.latest) || r.latest.Sub(now) > maxClockHold {
		r.latest = now
	}
	return r.latest
}

// Snapshot returns the current view. It never changes; a later refresh publishes a new one.
func (r *Ring) Snapshot() *Snapshot { return r.snap.Load() }

// TryRefresh refreshes unless a refresh or a change is already under way (which publishes a fresh view
// itself), so that a request never waits behind a key change for it.
func (r *Ring) TryRefresh() error {
	if !r.mu.TryLock() {
		return nil
	}
	defer r.mu.Unlock()
	return r.refreshLocked()
}

// Refresh re-reads every record from the store and publishes a new Snapshot. Versions already loaded are
// reused, so a refresh costs one read of the records unless a version appeared. On error the previous
// Snapshot stays.
func (r *Ring) Refresh() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refreshLocked()
}

func (r *Ring) refreshLocked() error {
	raw, err := r.store.ReadRecords("")
	if err != nil {
		// The records cannot be read, but the clock still moves: states are derived again from the
		// records already held (publish keeps every key a listing lacks), so that a grace period ends
		// on time even while the token is down.
		if len(r.snap.Load().keys) > 0 {
			_ = r.publish(nil, nil)
		}
		return fmt.Errorf("%w: %w", errRead, err)
	}
	metas := map[string]*Meta{}
	var errs []error
	for _, rec := range raw {
		m, err := decodeMeta(rec.Name, rec.Value)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// Two records for one key are left by an interrupted write; the higher revision is the newer.
		if old, ok := metas[m.Name]; !ok || m.Revision > old.Revision {
			metas[m.Name] = m
		}
	}
	return r.publish(metas, errs)
}

// publish builds and publishes the snapshot of metas at the ring's time; errs are problems met reading
// them, returned with the key-loading problems.
func (r *Ring) publish(metas map[string]*Meta, errs []error) error {
	prev := r.snap.Load()
	next := &Snapshot{at: r.clock(), keys: map[string]*Key{}, byKid: map[string]*LoadedVersion{}}
	add := func(name string, k *Key, kerrs []error) {
		next.keys[name] = k
		if len(kerrs) > 0 {
			errs = append(errs, fmt.Errorf("key %q: %w", name, errors.Join(kerrs...)))
		}
	}
	for name, m := range metas {
		k, kerrs := r.loadKey(m, prev)
		add(name, k, kerrs)
	}
	// One key's trouble must not freeze any key's view: every key is built from its newest record, so
	// revocations and the clock's transitions always arrive; a version whose key pair cannot be loaded
	// just has none (it neither signs, verifies nor is published) until a later refresh loads it. A key
	// that the listing lacks (keys are never deleted, so that is the token's listing, not the truth)
	// keeps its previous record, its states derived again. The first load, by Open, is strict
	// instead (see Options.LoadProblems): a daemon does not start with a key it cannot check.
	if len(errs) > 0 && r.strict {
		return errors.Join(errs...)
	}
	for name, k := range prev.keys {
		if _, ok := next.keys[name]; !ok {
			nk, kerrs := r.loadKey(k.meta, prev)
			add(name, nk, kerrs)
		}
	}
	for _, k := range next.keys {
		for _, v := range k.Versions {
			if v.Public != nil {
				next.byKid[v.Kid] = v
			}
		}
	}
	next.names = make([]string, 0, len(next.keys))
	for name := range next.keys {
		next.names = append(next.names, name)
	}
	sort.Strings(next.names)
	r.snap.Store(next)
	if r.changed != nil {
		r.changed()
	}
	return errors.Join(errs...)
}

// loadKey builds a Key from its record m with the states of the ring's time. Key material is reused
// from prev for versions loaded before, and loaded from the store for the others that need it. A
// version whose material cannot be loaded is left without it, and its problem returned.
func (r *Ring) loadKey(m *Meta, prev *Snapshot) (*Key, []error) {
	now := r.clock()
	k := &Key{Name: m.Name, Alg: m.Alg, meta: m}
	var prevKey *Key
	if pk, ok := prev.keys[m.Name]; ok && pk.Alg == m.Alg {
		prevKey = pk
	}
	var errs []error
	for i, v := range m.Versions {
		lv := &LoadedVersion{Key: k, Version: v, Timeline: m.StateAt(i, now)}
		k.Versions = append(k.Versions, lv)
		if lv.State == Active {
			k.Active = lv
		}
		if !lv.State.Publishable() && lv.State != Expired {
			continue
		}
		if prevKey != nil {
			if old := prevKey.version(v.Number); old != nil && old.Signer != nil && slices.Equal(old.ID, v.ID) {
				lv.Signer, lv.Public, lv.JWK = old.Signer, old.Public, old.JWK
				continue
			}
		}
		if err := r.loadVersion(m, lv); err != nil {
			switch {
			case lv.State == Expired:
				// Past its grace: nothing needs it, and it may already be gone.
			case lv.State == Retired && errors.Is(err, ErrMissing):
				// Its destruction was interrupted before the record said so: it stays unusable.
			default:
				errs = append(errs, fmt.Errorf("version %d: %w", v.Number, err))
			}
		}
	}
	return k, errs
}

// loadVersion loads lv's key pair from the store and checks it against the record.
func (r *Ring) loadVersion(m *Meta, lv *LoadedVersion) error {
	s, err := r.store.Load(m.Alg, m.Bits, lv.ID)
	if err != nil {
		return err
	}
	jwk, err := jose.NewJWK(s.Public(), m.Alg)
	if err != nil {
		return err
	}
	// The key found under the ID must be the key the record describes.
	if jwk.Kid != lv.Kid {
		return fmt.Errorf("token key has kid %s, record says %s", jwk.Kid, lv.Kid)
	}
	lv.Signer, lv.Public, lv.JWK = s, s.Public(), jwk
	return nil
}

// Create makes a new key with one active version generated in the token. bits applies to RSA keys (0
// means DefaultRSABits).
func (r *Ring) Create(name string, alg jose.Algorithm, bits int, settings Settings) (*Key, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	if _, err := jose.ParseAlgorithm(string(alg)); err != nil {
		return nil, err
	}
	if err := settings.Validate(); err != nil {
		return nil, fmt.Errorf("%w: create %q: %w", ErrInvalid, name, err)
	}
	if alg.KeyType() == jose.KeyRSA {
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < jose.MinRSABits || bits > 16384 {
			return nil, fmt.Errorf("%w: RSA key of %d bits: want %d to 16384", ErrInvalid, bits, jose.MinRSABits)
		}
	} else {
		bits = 0
	}
	return r.update(name, func(cur *Meta, now time.Time) (*Meta, []byte, error) {
		if cur != nil {
			return nil, nil, fmt.Errorf("%w: %q", ErrExists, name)
		}
		m := &Meta{Format: metaFormat, Name: name, Alg: alg, Bits: bits, Settings: settings}
		v, err := r.newVersion(m, now, now)
		if err != nil {
			return nil, nil, err
		}
		m.Versions = []Version{v}
		return m, v.ID, nil
	})
}

// versionLabel is the CKA_LABEL of a version's key pair, for people reading the token with other tools.
func versionLabel(name string, n int) string { return fmt.Sprintf("signerd:%s:v%d", name, n) }

// Snapshot is an immutable view of every key at one moment.
type Snapshot struct {
	at    time.Time
	keys  map[string]*Key
	byKid map[string]*LoadedVersion
	names []string
}

// Key returns the key called name.
func (s *Snapshot) Key(name string) (*Key, bool) {
	k, ok := s.keys[name]
	return k, ok
}

// Names returns every key name, sorted.
func (s *Snapshot) Names() []string { return s.names }

// Exists reports whether a key called name exists.
func (s *Snapshot) Exists(name string) bool {
	_, ok := s.keys[name]
	return ok
}

// Kid returns the loaded version with thumbprint kid, whatever its state.
func (s *Snapshot) Kid(kid string) (*LoadedVersion, bool) {
	v, ok := s.byKid[kid]
	return v, ok
}

// Publishable returns every version that belongs in the JWKS, ordered by key name then version.
func (s *Snapshot) Publishable() []*LoadedVersion {
	var out []*LoadedVersion
	for _, name := range s.names {
		out = append(out, s.keys[name].Publishable()...)
	}
	return out
}

// Key is one named key and its versions.
type Key struct {
	Name string
	Alg  jose.Algorithm
	// Active is the version that signs; nil if none (every version revoked).
	Active *LoadedVersion
	// Versions are all versions, in order.
	Versions []*LoadedVersion
	meta     *Meta
}

func (k *Key) version(n int) *LoadedVersion {
	if n < 1 || n > len(k.Versions) {
		return nil
	}
	return k.Versions[n-1]
}

// Publishable returns the versions in the JWKS that verify: pending, active and retired within grace.
func (k *Key) Publishable() []*LoadedVersion {
	var out []*LoadedVersion
	for _, v := range k.Versions {
		if v.State.Publishable() && v.Public != nil {
			out = append(out, v)
		}
	}
	return out
}

// LoadedVersion is a version with its key material: Signer and Public are set for versions that are
// pending, active or retired.
type LoadedVersion struct {
	Key *Key
	Version
	Timeline
	Signer crypto.Signer
	Public crypto.PublicKey
	JWK    jose.JWK
}
