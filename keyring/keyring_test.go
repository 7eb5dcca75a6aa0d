package keyring_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/keyring/keyringtest"
)

func TestCreateAndReload(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	r := openRing(t, store, keyring.Options{})
	for _, alg := range jose.Algorithms() {
		name := "k-" + strings.ToLower(string(alg))
		k, err := r.Create(name, alg, 2048, keyring.DefaultSettings())
		if err != nil {
			t.Fatalf("Create(%q, %s) = %v", name, alg, err)
		}
		if k.Active == nil || k.Active.Number != 1 || k.Active.Signer == nil {
			t.Fatalf("Create(%q).Active = %+v, want version 1 with a signer", name, k.Active)
		}
		want, _ := jose.Thumbprint(k.Active.Public)
		if k.Active.Kid != want || k.Active.JWK.Kid != want {
			t.Errorf("kid = %s (JWK %s), want thumbprint %s", k.Active.Kid, k.Active.JWK.Kid, want)
		}
	}
	if _, err := r.Create("k-es256", jose.ES256, 0, keyring.DefaultSettings()); !errors.Is(err, keyring.ErrExists) {
		t.Errorf("Create(existing) = %v, want ErrExists", err)
	}
	for _, bad := range []string{"", "Upper", "-lead", "has_underscore", string(make([]byte, 64))} {
		if _, err := r.Create(bad, jose.ES256, 0, keyring.DefaultSettings()); !errors.Is(err, keyring.ErrBadName) {
			t.Errorf("Create(%q) = %v, want ErrBadName", bad, err)
		}
	}
	if _, err := r.Create("small-rsa", jose.RS256, 1024, keyring.DefaultSettings()); err == nil {
		t.Error("Create(RSA-1024) = nil error, want refusal")
	}

	// A second ring on the same store (a second daemon on the same token) sees the same keys.
	r2 := openRing(t, store, keyring.Options{})
	s1, s2 := r.Snapshot(), r2.Snapshot()
	if len(s1.Names()) != len(jose.Algorithms()) || len(s2.Names()) != len(s1.Names()) {
		t.Fatalf("names = %v and %v, want %d each", s1.Names(), s2.Names(), len(jose.Algorithms()))
	}
	for _, name := range s1.Names() {
		k1, _ := s1.Key(name)
		k2, ok := s2.Key(name)
		if !ok || k2.Active.Kid != k1.Active.Kid || k2.Alg != k1.Alg {
			t.Errorf("second ring key %q = %+v, want kid %s", name, k2, k1.Active.Kid)
		}
		if v, ok := s2.Kid(k1.Active.Kid); !ok || v.Key.Name != name {
			t.Errorf("Kid(%s) = %v, %v; want key %q", k1.Active.Kid, v, ok, name)
		}
	}
	if got := len(s2.Publishable()); got != len(jose.Algorithms()) {
		t.Errorf("len(Publishable()) = %d, want %d", got, len(jose.Algorithms()))
	}
}

func TestRefreshKeepsWorkingKeysOnError(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	r := openRing(t, store, keyring.Options{})
	mustCreate(t, r, "a", keyring.DefaultSettings())
	other := openRing(t, store, keyring.Options{})
	mustCreate(t, other, "b", keyring.DefaultSettings())
	store.FailLoad = errors.New("injected token failure")
	if err := r.Refresh(); err == nil {
		t.Fatal("Refresh with failing store = nil, want error")
	}
	// The key whose version failed to load is there without key material: it neither signs nor is
	// published. The others keep theirs.
	a, _ := r.Snapshot().Key("a")
	b, ok := r.Snapshot().Key("b")
	if a == nil || a.Active == nil || a.Active.Signer == nil {
		t.Errorf("after a partly failed Refresh: a = %+v, want it still signing", a)
	}
	if !ok || b.Active == nil || b.Active.Signer != nil || len(b.Publishable()) != 0 {
		t.Errorf("after a partly failed Refresh: b = %+v, want it listed without key material", b)
	}
	store.FailLoad = nil
	if err := r.Refresh(); err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	if b, _ := r.Snapshot().Key("b"); b == nil || b.Active.Signer == nil {
		t.Error("Refresh did not load key b created by another ring")
	}
}

// TestRevocationReachesReplicaThatCannotLoad: an emergency rotation made by one ring reaches another
// whose token cannot load the new version yet: the revoked version stops signing and verifying there
// at once, and the key signs again once the new version loads.
func TestRevocationReachesReplicaThatCannotLoad(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	a := openRing(t, store, keyring.Options{})
	k := mustCreate(t, a, "k", keyring.DefaultSettings())
	v1 := k.Active.Kid
	b := openRing(t, store, keyring.Options{})
	if _, _, err := a.Rotate("k", true); err != nil {
		t.Fatal(err)
	}
	store.FailLoad = errors.New("token cannot see the new object yet")
	if err := b.Refresh(); err == nil {
		t.Fatal("Refresh that cannot load the new version = nil, want its error")
	}
	bk, _ := b.Snapshot().Key("k")
	if _, ok := b.Snapshot().Kid(v1); ok || bk.Versions[0].State != keyring.Revoked {
		t.Errorf("replica still knows revoked v1 (state %s)", bk.Versions[0].State)
	}
	if bk.Active == nil || bk.Active.Number != 2 || bk.Active.Signer != nil {
		t.Errorf("replica's active version = %+v, want v2 without key material (no signing)", bk.Active)
	}
	store.FailLoad = nil
	if err := b.Refresh(); err != nil {
		t.Fatal(err)
	}
	if bk, _ := b.Snapshot().Key("k"); bk.Active == nil || bk.Active.Signer == nil || bk.Active.Number != 2 {
		t.Errorf("after the new version loads: active = %+v, want v2 signing", bk.Active)
	}
}

// TestInterruptedDestroy: a retired version whose key pair is gone while its record still says
// retired (the record write after the destruction failed) does not stop the ring from opening; the
// version is just unusable.
func TestInterruptedDestroy(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := keyringtest.NewMemoryStore()
	r := openRing(t, store, keyring.Options{Now: clock})
	settings := keyring.DefaultSettings()
	settings.Prepublish = 0
	mustCreate(t, r, "k", settings)
	k, _, err := r.Rotate("k", false)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if err := store.Destroy(k.Versions[0].ID); err != nil { // the objects went, the record was not written
		t.Fatal(err)
	}
	fresh, err := keyring.Open(store, keyring.Options{Now: clock})
	if err != nil {
		t.Fatalf("Open with a retired version's key pair gone = %v, want it to open", err)
	}
	fk, _ := fresh.Snapshot().Key("k")
	if fk.Versions[0].State != keyring.Retired || fk.Versions[0].Public != nil || fk.Active == nil || fk.Active.Signer == nil {
		t.Errorf("key after Open = v1 %s (public %v), active %+v; want v1 retired without material, v2 signing",
			fk.Versions[0].State, fk.Versions[0].Public != nil, fk.Active)
	}
}

// TestChangeNotFailedByAnotherKey: a change to one key succeeds even when another key cannot be
// loaded, so that callers do not retry a change that happened.
func TestChangeNotFailedByAnotherKey(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	r := openRing(t, store, keyring.Options{})
	mustCreate(t, r, "k", keyring.DefaultSettings())
	createUnloadable(t, store, keyring.Options{}, "broken", keyring.DefaultSettings())
	if _, _, err := r.Rotate("k", true); err != nil {
		t.Errorf("emergency rotation of k while another key cannot load = %v, want success", err)
	}
	if err := r.Refresh(); err == nil || !strings.Contains(err.Error(), `key "broken"`) {
		t.Errorf("Refresh = %v, want the broken key's problem reported", err)
	}
	if k, _ := r.Snapshot().Key("k"); k == nil || k.Active == nil || k.Active.Number != 2 || k.Active.Signer == nil {
		t.Errorf("k after its rotation = %+v, want v2 signing", k)
	}
}

func TestStateAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	revoked := t0.Add(time.Hour)
	m := &keyring.Meta{Settings: keyring.Settings{Grace: keyring.Duration(2 * time.Hour)}, Versions: []keyring.Version{
		{Number: 1, ActivateAt: t0},
		{Number: 2, ActivateAt: t0.Add(10 * time.Hour)},
		{Number: 3, ActivateAt: t0.Add(20 * time.Hour), RevokedAt: &revoked},
	}}
	tests := []struct {
		at   time.Duration
		want []keyring.State
	}{
		{0, []keyring.State{keyring.Active, keyring.Pending, keyring.Revoked}},
		{10 * time.Hour, []keyring.State{keyring.Retired, keyring.Active, keyring.Revoked}},
		{12 * time.Hour, []keyring.State{keyring.Expired, keyring.Active, keyring.Revoked}},
		{30 * time.Hour, []keyring.State{keyring.Expired, keyring.Active, keyring.Revoked}},
	}
	for _, tc := range tests {
		for i, want := range tc.want {
			if got := m.StateAt(i, t0.Add(tc.at)).State; got != want {
				t.Errorf("StateAt(v%d, +%v) = %s, want %s", i+1, tc.at, got, want)
			}
		}
	}
	// A version is active from the instant of its activation: revoked at that instant, it was active,
	// and the version it retired stays retired.
	at := t0.Add(10 * time.Hour)
	m.Versions[1].RevokedAt = &at
	if got := m.StateAt(0, at.Add(time.Minute)).State; got != keyring.Retired {
		t.Errorf("v1 after v2 was revoked at its activation instant: %s, want retired", got)
	}
}

// failingReads is a store whose record reads fail on demand.
type failingReads struct {
	*keyringtest.MemoryStore
	fail bool
}

func (f *failingReads) ReadRecords(name string) ([]keyring.Record, error) {
	if f.fail {
		return nil, errors.New("token unreachable")
	}
	return f.MemoryStore.ReadRecords(name)
}

// TestStatesFollowTheClockWhenReadsFail: while the token cannot be read, a refresh still re-derives
// states from the records held, so a retired version stops verifying when its grace ends.
func TestStatesFollowTheClockWhenReadsFail(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store := &failingReads{MemoryStore: keyringtest.NewMemoryStore()}
	r := openRing(t, store, keyring.Options{Now: func() time.Time { return now }})
	mustCreate(t, r, "k", keyring.Settings{Grace: keyring.Duration(time.Hour)})
	if _, _, err := r.Rotate("k", false); err != nil {
		t.Fatal(err)
	}
	k, _ := r.Snapshot().Key("k")
	if k.Versions[0].State != keyring.Retired {
		t.Fatalf("v1 after rotation = %s, want retired", k.Versions[0].State)
	}
	store.fail = true
	now = now.Add(2 * time.Hour)
	if err := r.Refresh(); err == nil {
		t.Fatal("Refresh with unreadable records = nil, want an error")
	}
	k, _ = r.Snapshot().Key("k")
	if k.Versions[0].State != keyring.Expired || k.Active == nil || k.Active.Number != 2 {
		t.Errorf("after the grace, with the token unreadable: v1 %s, active %v; want v1 expired, v2 active", k.Versions[0].State, k.Active)
	}
	if pub := r.Snapshot().Publishable(); len(pub) != 1 || pub[0].Number != 2 {
		t.Errorf("published after the grace = %d versions, want v2 alone", len(pub))
	}
}

// TestWrittenChangeIsNotReportedFailed: a rotation whose new version cannot be loaded at once (no free
// session, say) still succeeded, and says so; reporting it failed would make the caller retry it.
func TestWrittenChangeIsNotReportedFailed(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	r := openRing(t, store, keyring.Options{})
	mustCreate(t, r, "k", keyring.DefaultSettings())
	store.FailLoad = errors.New("no free session")
	k, v, err := r.Rotate("k", true)
	if err != nil {
		t.Fatalf("emergency rotation whose new version cannot be loaded yet = %v, want success", err)
	}
	if v.Number != 2 || k.Active == nil || k.Active.Number != 2 || k.Versions[0].State != keyring.Revoked {
		t.Errorf("after the rotation: active %+v, v1 %s; want v2 active, v1 revoked", k.Active, k.Versions[0].State)
	}
	store.FailLoad = nil
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if k, _ := r.Snapshot().Key("k"); len(k.Versions) != 2 || k.Active.Signer == nil {
		t.Errorf("after the load recovers: %d versions, active signer %v; want 2 versions, v2 signing", len(k.Versions), k.Active.Signer != nil)
	}
}

// TestRotateDueGoesOnPastTrouble: a key that cannot be loaded does not stop the scheduled rotation of
// the others; its trouble is still reported.
func TestRotateDueGoesOnPastTrouble(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	store := keyringtest.NewMemoryStore()
	r := openRing(t, store, keyring.Options{Now: clock})
	settings := keyring.DefaultSettings()
	settings.RotationPeriod = keyring.Duration(time.Hour)
	mustCreate(t, r, "good", settings)
	createUnloadable(t, store, keyring.Options{Now: clock}, "broken", settings)
	now = now.Add(2 * time.Hour)
	rotated, err := r.RotateDue(context.Background())
	if err == nil || !strings.Contains(err.Error(), `key "broken"`) {
		t.Errorf("RotateDue error = %v, want the broken key's trouble", err)
	}
	k, _ := r.Snapshot().Key("good")
	if !slices.ContainsFunc(rotated, func(rot keyring.KeyVersion) bool {
		return rot.Key == "good" && rot.Number == 2 && rot.Kid == k.Versions[1].Kid
	}) {
		t.Errorf("RotateDue rotated %+v, want good's version 2 among them despite the broken key", rotated)
	}
}

// TestRotateDueLeavesRevokedKeys: a key whose active version was revoked (taken out of service) is
// not due, however old; a key that is due is rotated once, and not again while its new version is
// pending; an ended context stops RotateDue before it changes anything.
func TestRotateDueLeavesRevokedKeys(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := openRing(t, keyringtest.NewMemoryStore(), keyring.Options{Now: func() time.Time { return now }})
	settings := keyring.DefaultSettings()
	settings.RotationPeriod = keyring.Duration(time.Hour)
	mustCreate(t, r, "live", settings)
	mustCreate(t, r, "pulled", settings)
	if _, err := r.Revoke("pulled", 1); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if err := r.Refresh(); err != nil { // a snapshot is due as of when it was taken
		t.Fatal(err)
	}
	if !r.Snapshot().RotationDue() {
		t.Fatal("RotationDue = false with live due")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rotated, err := r.RotateDue(ctx); len(rotated) != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("RotateDue(ended context) = %v, %v", rotated, err)
	}
	rotated, err := r.RotateDue(context.Background())
	if err != nil || len(rotated) != 1 || rotated[0].Key != "live" {
		t.Fatalf("RotateDue = %+v, %v; want live alone", rotated, err)
	}
	if r.Snapshot().RotationDue() {
		t.Error("RotationDue = true right after the rotation")
	}
	if again, err := r.RotateDue(context.Background()); err != nil || len(again) != 0 {
		t.Errorf("second RotateDue = %+v, %v", again, err)
	}
}

// openRing opens a ring on store or fails the test.
func openRing(t *testing.T, store keyring.Store, opts keyring.Options) *keyring.Ring {
	t.Helper()
	r, err := keyring.Open(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// mustCreate creates ES256 key name in r or fails the test.
func mustCreate(t *testing.T, r *keyring.Ring, name string, settings keyring.Settings) *keyring.Key {
	t.Helper()
	k, err := r.Create(name, jose.ES256, 0, settings)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// createUnloadable has another ring create key name in store and then removes its key pair, so that
// rings which have not loaded it yet cannot.
func createUnloadable(t *testing.T, store *keyringtest.MemoryStore, opts keyring.Options, name string, settings keyring.Settings) {
	t.Helper()
	k := mustCreate(t, openRing(t, store, opts), name, settings)
	if err := store.Destroy(k.Active.ID); err != nil {
		t.Fatal(err)
	}
}

// TestOpenTolerant: with Options.LoadProblems, a key whose key pair is gone does not stop the ring from
// opening: the other keys are there and can be changed, and the problem is reported. Without it, Open
// fails, as a daemon's start must.
func TestOpenTolerant(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	mustCreate(t, openRing(t, store, keyring.Options{}), "good", keyring.DefaultSettings())
	createUnloadable(t, store, keyring.Options{}, "broken", keyring.DefaultSettings())
	if _, err := keyring.Open(store, keyring.Options{}); err == nil {
		t.Fatal("Open (strict) with a broken key = nil error")
	}
	var problems []error
	r, err := keyring.Open(store, keyring.Options{LoadProblems: func(err error) { problems = append(problems, err) }})
	if err != nil {
		t.Fatalf("Open (tolerant) = %v", err)
	}
	if len(problems) != 1 || !strings.Contains(problems[0].Error(), `key "broken"`) {
		t.Errorf("problems reported = %v, want one about key \"broken\"", problems)
	}
	if _, _, err := r.Rotate("good", false); err != nil {
		t.Errorf("Rotate(good) with another key broken = %v", err)
	}
}

// TestUnreadableRecordNamed: a record that is not a key record (written by something else, or damaged)
// stops a strict Open with an error that names the record, so that an operator can find the object in
// the token; a tolerant Open reports it and opens with the other keys.
func TestUnreadableRecordNamed(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	mustCreate(t, openRing(t, store, keyring.Options{}), "good", keyring.DefaultSettings())
	if err := store.WriteRecord("stray", []byte("not a key record")); err != nil {
		t.Fatal(err)
	}
	if _, err := keyring.Open(store, keyring.Options{}); err == nil || !strings.Contains(err.Error(), `record "stray"`) {
		t.Errorf("Open (strict) with a record that is not JSON = %v, want an error naming record \"stray\"", err)
	}
	var problems []error
	r, err := keyring.Open(store, keyring.Options{LoadProblems: func(err error) { problems = append(problems, err) }})
	if err != nil {
		t.Fatalf("Open (tolerant) = %v", err)
	}
	if _, ok := r.Snapshot().Key("good"); !ok || len(problems) != 1 || !strings.Contains(problems[0].Error(), `record "stray"`) {
		t.Errorf("tolerant Open: key good there = %v, problems %v; want good and one problem naming record \"stray\"", ok, problems)
	}
}

// TestRefreshAfterEmptyStart: a ring that opened with no keys is strict no longer: a later refresh
// that meets one broken key still shows the others, and a key created through it is there.
func TestRefreshAfterEmptyStart(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	r := openRing(t, store, keyring.Options{})
	mustCreate(t, openRing(t, store, keyring.Options{}), "good", keyring.DefaultSettings())
	createUnloadable(t, store, keyring.Options{}, "broken", keyring.DefaultSettings())
	if err := r.Refresh(); err == nil {
		t.Error("Refresh with a broken key = nil error, want its problem")
	}
	if !r.Snapshot().Exists("good") {
		t.Error("key good not visible after a refresh that met another key's problem")
	}
	if _, err := r.Create("new", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Errorf("Create(new) = %v", err)
	}
}

// TestClockStepsBack: a clock that steps back between writing a record and publishing it does not
// show the new key without its active version.
func TestClockStepsBack(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	calls := 0
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return now.Add(-time.Duration(calls) * time.Second) // each reading a second earlier
	}
	r := openRing(t, keyringtest.NewMemoryStore(), keyring.Options{Now: clock})
	k, err := r.Create("k", jose.ES256, 0, keyring.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	if k.Active == nil || k.Active.Number != 1 {
		t.Errorf("key created while the clock steps back: active version %v, want version 1", k.Active)
	}
}

// lapsedLockStore is a store whose key lock lapses while a key pair is generated: another process
// (duringGenerate) changes the key meanwhile, and the release reports the loss, as hsm's does.
type lapsedLockStore struct {
	*keyringtest.MemoryStore
	duringGenerate func()
	generated      [][]byte
}

func (s *lapsedLockStore) Lock(string) (func() error, error) {
	return func() error { return errors.New("hsm: lock lost to another process") }, nil
}

func (s *lapsedLockStore) Generate(alg jose.Algorithm, bits int, label string) ([]byte, crypto.Signer, error) {
	if f := s.duringGenerate; f != nil {
		s.duringGenerate = nil
		f()
	}
	id, signer, err := s.MemoryStore.Generate(alg, bits, label)
	s.generated = append(s.generated, id)
	return id, signer, err
}

// TestChangeUnderLapsedLock: a change whose key lock lapsed, while another process revoked the key's
// version, is not written over the revocation: it fails with ErrLocked (retry), and the key pair it
// generated is destroyed again.
func TestChangeUnderLapsedLock(t *testing.T) {
	mem := keyringtest.NewMemoryStore()
	other := openRing(t, mem, keyring.Options{})
	mustCreate(t, other, "k", keyring.DefaultSettings())
	lapsed := &lapsedLockStore{MemoryStore: mem}
	r := openRing(t, lapsed, keyring.Options{})
	lapsed.duringGenerate = func() {
		if _, err := other.Revoke("k", 1); err != nil {
			t.Errorf("Revoke by the other process = %v", err)
		}
	}
	if _, _, err := r.Rotate("k", false); !errors.Is(err, keyring.ErrLocked) {
		t.Errorf("Rotate while another process revoked the key = %v, want ErrLocked", err)
	}
	if err := other.Refresh(); err != nil {
		t.Fatal(err)
	}
	k, _ := other.Snapshot().Key("k")
	if len(k.Versions) != 1 || k.Versions[0].State != keyring.Revoked {
		t.Errorf("after the refused rotation k has %d versions, version 1 %s; want the one, revoked", len(k.Versions), k.Versions[0].State)
	}
	for _, id := range lapsed.generated {
		if _, err := mem.Load(jose.ES256, 0, id); err == nil {
			t.Errorf("the key pair %x generated for the refused rotation is still in the token", id)
		}
	}
	// With nothing in its way, the same ring's next change is written.
	if _, _, err := r.Rotate("k", false); err != nil {
		t.Errorf("Rotate after the conflict = %v", err)
	}
}

// failingWrites is a store whose record writes fail while fail is set; with landed set, they are
// written and then reported failed (a network HSM timing out after the commit).
type failingWrites struct {
	*keyringtest.MemoryStore
	fail, landed bool
}

func (s *failingWrites) WriteRecord(name string, value []byte) error {
	switch {
	case s.fail && s.landed:
		_ = s.MemoryStore.WriteRecord(name, value)
		return errors.New("timeout")
	case s.fail:
		return errors.New("token full")
	}
	return s.MemoryStore.WriteRecord(name, value)
}

// TestWriteReportedFailedButLanded: when a record write is reported failed but landed, the new version's
// key pair is kept, since the record names it, and the change counts as made: the key still signs, and
// a fresh ring loads it.
func TestWriteReportedFailedButLanded(t *testing.T) {
	store := &failingWrites{MemoryStore: keyringtest.NewMemoryStore()}
	r := openRing(t, store, keyring.Options{})
	mustCreate(t, r, "k", keyring.DefaultSettings())
	store.fail, store.landed = true, true
	k, _, err := r.Rotate("k", true)
	store.fail = false
	if err != nil || k.Active == nil || k.Active.Number != 2 {
		t.Fatalf("emergency Rotate whose write landed but was reported failed = %+v, %v; want version 2 active", k, err)
	}
	if _, err := k.Active.Signer.Sign(rand.Reader, make([]byte, 32), crypto.SHA256); err != nil {
		t.Errorf("version 2 signs = %v", err)
	}
	fresh := openRing(t, store, keyring.Options{})
	if k, ok := fresh.Snapshot().Key("k"); !ok || k.Active == nil || k.Active.Number != 2 {
		t.Errorf("a fresh ring sees k = %+v, want version 2 active", k)
	}
}

// TestDestroyExpiredReportsWrittenOnly: a version past its grace is reported destroyed (and so audited)
// once, when the record saying so is written: not when the write fails, though its key pair went.
func TestDestroyExpiredReportsWrittenOnly(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store := &failingWrites{MemoryStore: keyringtest.NewMemoryStore()}
	r := openRing(t, store, keyring.Options{Now: func() time.Time { return now }})
	settings := keyring.DefaultSettings()
	settings.Prepublish, settings.Grace = 0, keyring.Duration(time.Hour)
	mustCreate(t, r, "k", settings)
	if _, _, err := r.Rotate("k", false); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	store.fail = true
	if done, err := r.DestroyExpired(); err == nil || len(done) != 0 {
		t.Errorf("DestroyExpired with failing writes = %v, %v; want an error and nothing reported", done, err)
	}
	store.fail = false
	done, err := r.DestroyExpired()
	if err != nil || len(done) != 1 || done[0].Key != "k" || done[0].Number != 1 {
		t.Errorf("DestroyExpired once writes work = %+v, %v; want k version 1, once", done, err)
	}
	k, _ := r.Snapshot().Key("k")
	if k.Versions[0].State != keyring.Destroyed {
		t.Errorf("k version 1 is %s, want destroyed", k.Versions[0].State)
	}
}

// TestRotationPrepublishFloor: with Options.MinPrepublish (the JWKS max-age of the configuration in
// force), a staged rotation, by hand or because it is due, publishes the new version at least that long
// before it signs, even for a key whose own prepublish is shorter (set under an earlier configuration);
// a longer prepublish of the key's own is kept, and an emergency rotation still signs at once.
func TestRotationPrepublishFloor(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := openRing(t, keyringtest.NewMemoryStore(), keyring.Options{Now: func() time.Time { return now }, MinPrepublish: 5 * time.Minute})
	short, long := keyring.DefaultSettings(), keyring.DefaultSettings()
	short.Prepublish, long.Prepublish = keyring.Duration(time.Minute), keyring.Duration(10*time.Minute)
	short.RotationPeriod = keyring.Duration(time.Hour)
	mustCreate(t, r, "short", short)
	mustCreate(t, r, "long", long)
	mustCreate(t, r, "urgent", short)
	for name, want := range map[string]time.Duration{"short": 5 * time.Minute, "long": 10 * time.Minute} {
		if _, v, err := r.Rotate(name, false); err != nil || !v.ActivateAt.Equal(now.Add(want)) {
			t.Errorf("Rotate(%s) = version activating at %v, %v; want %v", name, v.ActivateAt, err, now.Add(want))
		}
	}
	if _, v, err := r.Rotate("urgent", true); err != nil || !v.ActivateAt.Equal(now) {
		t.Errorf("emergency Rotate = version activating at %v, %v; want now", v.ActivateAt, err)
	}
	now = now.Add(2 * time.Hour)
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	rotated, err := r.RotateDue(context.Background())
	if err != nil || !slices.ContainsFunc(rotated, func(v keyring.KeyVersion) bool {
		return v.Key == "short" && v.ActivateAt.Equal(now.Add(5*time.Minute))
	}) {
		t.Errorf("RotateDue = %+v, %v; want short's new version activating at %v", rotated, err, now.Add(5*time.Minute))
	}
}

// TestClockCorrected: a clock that jumped ahead and is then put right is followed, not held at the
// wrong time: a rotation after the correction is timed by the right clock.
func TestClockCorrected(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	r := openRing(t, keyringtest.NewMemoryStore(), keyring.Options{Now: func() time.Time { return now }})
	mustCreate(t, r, "k", keyring.DefaultSettings())
	now = t0.Add(72 * time.Hour) // a wrong clock
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	now = t0.Add(time.Hour) // put right
	_, v, err := r.Rotate("k", false)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(keyring.DefaultSettings().Prepublish.D()); !v.ActivateAt.Equal(want) {
		t.Errorf("version 2 activates at %v, want %v (prepublish from the corrected clock)", v.ActivateAt, want)
	}
}
