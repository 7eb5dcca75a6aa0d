package wellknown_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/keyring/keyringtest"
	"github.com/signerd/signerd/server/wellknown"
)

// ringWithHistory builds a key whose versions are in every state at now: expired, retired (in grace),
// active, pending, revoked.
func ringWithHistory(t *testing.T, now time.Time) (*keyring.Ring, map[keyring.State]string) {
	t.Helper()
	store := keyringtest.NewMemoryStore()
	meta := keyring.Meta{Format: 1, Name: "k", Alg: jose.ES256, Revision: 1, Settings: keyring.Settings{Grace: keyring.Duration(time.Hour)}}
	kids := map[keyring.State]string{}
	at := []struct {
		activate time.Duration
		revoked  bool
		state    keyring.State
	}{
		{-10 * time.Hour, false, keyring.Expired},
		{-5 * time.Hour, false, keyring.Retired},
		{-30 * time.Minute, false, keyring.Active},
		{time.Hour, false, keyring.Pending},
		{-20 * time.Minute, true, keyring.Revoked},
	}
	for i, a := range at {
		id, s, err := store.Generate(jose.ES256, 0, "k")
		if err != nil {
			t.Fatal(err)
		}
		kid, _ := jose.Thumbprint(s.Public())
		v := keyring.Version{Number: i + 1, ID: id, Kid: kid, Created: now.Add(-11 * time.Hour), ActivateAt: now.Add(a.activate)}
		if a.revoked {
			r := now.Add(-10 * time.Minute)
			v.RevokedAt = &r
		}
		meta.Versions = append(meta.Versions, v)
		kids[a.state] = kid
	}
	// The retired version's successor activated 30 minutes ago: it is retired within its 1h grace.
	b, _ := json.Marshal(meta)
	if err := store.WriteRecord("k", b); err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.Open(store, keyring.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return ring, kids
}

func TestJWKSHasExactlyPublishableVersions(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	ring, kids := ringWithHistory(t, now)
	h := wellknown.New(wellknown.Config{Keys: ring, BaseURL: "https://signerd.test", MaxAge: 2 * time.Minute})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, wellknown.JWKSPath, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET jwks = %d", rec.Code)
	}
	var set jose.JWKS
	if err := json.Unmarshal(rec.Body.Bytes(), &set); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, k := range set.Keys {
		got[k.Kid] = true
	}
	for state, kid := range kids {
		if want := state.Publishable(); got[kid] != want {
			t.Errorf("%s version in JWKS = %v, want %v", state, got[kid], want)
		}
	}
	if len(set.Keys) != 3 {
		t.Errorf("JWKS has %d keys, want 3 (pending, active, retired)", len(set.Keys))
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=120" {
		t.Errorf("Cache-Control = %q", cc)
	}

	etag := rec.Header().Get("ETag")
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		req := httptest.NewRequest(http.MethodGet, wellknown.JWKSPath, nil)
		req.Header.Set("If-None-Match", inm)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("If-None-Match %q: %d with %d bytes, want 304 and empty", inm, rec.Code, rec.Body.Len())
		}
	}
	// The header given twice is one list (RFC 9110 §5.3).
	req := httptest.NewRequest(http.MethodGet, wellknown.JWKSPath, nil)
	req.Header.Add("If-None-Match", `"other"`)
	req.Header.Add("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Errorf(`If-None-Match "other" and the ETag on two lines: %d, want 304`, rec.Code)
	}
	req = httptest.NewRequest(http.MethodGet, wellknown.JWKSPath, nil)
	req.Header.Set("If-None-Match", `"stale"`)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("stale If-None-Match: %d, want 200", rec.Code)
	}
}

func TestDiscoveryAndProbes(t *testing.T) {
	ring, _ := ringWithHistory(t, time.Now())
	ready := error(nil)
	h := wellknown.New(wellknown.Config{Keys: ring, BaseURL: "https://signerd.test:8444/", Issuer: "https://issuer.test",
		Ready: func() error { return ready }})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, wellknown.DiscoveryPath, nil))
	var d map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	if d["issuer"] != "https://issuer.test" || d["jwks_uri"] != "https://signerd.test:8444/.well-known/jwks.json" {
		t.Errorf("discovery = %v", d)
	}
	for _, tc := range []struct {
		method, path string
		ready        error
		want         int
	}{
		{"GET", wellknown.HealthPath, nil, 200},
		{"GET", wellknown.ReadyPath, nil, 200},
		{"GET", wellknown.ReadyPath, http.ErrServerClosed, 503},
		{"HEAD", wellknown.JWKSPath, nil, 200},
		{"DELETE", wellknown.JWKSPath, nil, 405},
		{"GET", "/.well-known/other", nil, 404},
	} {
		ready = tc.ready
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, strings.NewReader("")))
		if rec.Code != tc.want {
			t.Errorf("%s %s (ready err %v) = %d, want %d", tc.method, tc.path, tc.ready, rec.Code, tc.want)
		}
	}
}
