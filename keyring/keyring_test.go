package keyring_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/keyring/keyringtest"
)

func TestCreateAndReload(t *testing.T) {
	store := keyringtest.NewMemoryStore()
	r, err := keyring.Open(store, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
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
	r2, err := keyring.Open(store, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
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
	r, err := keyring.Open(store, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create("a", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	other, _ := keyring.Open(store, keyring.Options{})
	if _, err := other.Create("b", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	store.FailLoad = errors.New("injected token failure")
	if err := r.Refresh(); err == nil {
		t.Fatal("Refresh with failing store = nil, want error")
	}
	// The key that failed to load is left out; the others stay as they were.
	if !r.Snapshot().Exists("a") || r.Snapshot().Exists("b") {
		t.Errorf("after a partly failed Refresh: names %v, want a kept and b not yet loaded", r.Snapshot().Names())
	}
	store.FailLoad = nil
	if err := r.Refresh(); err != nil {
		t.Fatalf("Refresh = %v", err)
	}
	if !r.Snapshot().Exists("b") {
		t.Error("Refresh did not pick up key b created by another ring")
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
}

// failingReads is a store whose record reads fail on demand.
type failingReads struct {
	*keyringtest.MemoryStore
	fail bool
}

func (f *failingReads) ReadRecords() ([][]byte, error) {
	if f.fail {
		return nil, errors.New("token unreachable")
	}
	return f.MemoryStore.ReadRecords()
}

// TestStatesFollowTheClockWhenReadsFail: while the token cannot be read, a refresh still re-derives
// states from the records held, so a retired version stops verifying when its grace ends.
func TestStatesFollowTheClockWhenReadsFail(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	store := &failingReads{MemoryStore: keyringtest.NewMemoryStore()}
	r, err := keyring.Open(store, keyring.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create("k", jose.ES256, 0, keyring.Settings{Grace: keyring.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
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
	if _, ok := r.Snapshot().Kid(k.Versions[0].Kid); ok && k.Versions[0].State.Publishable() {
		t.Error("v1 is still publishable after its grace")
	}
}
