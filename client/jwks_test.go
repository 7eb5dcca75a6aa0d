package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/signerd/signerd/jose"
)

// jwksServer serves a JWK Set over HTTPS and counts the fetches.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int32

	mu           sync.Mutex
	set          jose.JWKS
	cacheControl string
	status       int
	raw          []byte // served in place of set when not nil
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cacheControl != "" {
			w.Header().Set("Cache-Control", s.cacheControl)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(s.status)
		if s.raw != nil {
			_, _ = w.Write(s.raw)
			return
		}
		_ = json.NewEncoder(w).Encode(s.set)
	}))
	t.Cleanup(s.Close)
	return s
}

// publish replaces the served set.
func (s *jwksServer) publish(keys ...jose.JWK) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set = jose.JWKS{Keys: keys}
}

func (s *jwksServer) setCacheControl(cc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cacheControl = cc
}

// serveRaw serves body in place of the set.
func (s *jwksServer) serveRaw(body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw = []byte(body)
}

func (s *jwksServer) setStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newKeyfunc returns a JWKSKeyfunc for s whose clock the test controls.
func newKeyfunc(s *jwksServer, opts ...JWKSOption) (*JWKSKeyfunc, *fakeClock) {
	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	kf := NewJWKSKeyfunc(s.URL+"/.well-known/jwks.json", s.Client(), opts...)
	kf.now = clock.Now
	return kf, clock
}

// testKey is a software signing key with its JWK.
type testKey struct {
	alg    jose.Algorithm
	signer crypto.Signer
	jwk    jose.JWK
}

func newTestKey(t *testing.T, alg jose.Algorithm) testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(alg.Curve(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jose.NewJWK(priv.Public(), alg)
	if err != nil {
		t.Fatalf("NewJWK(%s) = %v", alg, err)
	}
	return testKey{alg: alg, signer: priv, jwk: jwk}
}

// token signs a token with k, with header kid.
func (k testKey) token(t *testing.T, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jose.NewSigningMethod(k.alg), jwt.MapClaims{"sub": "alice"})
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k.signer)
	if err != nil {
		t.Fatalf("SignedString(%s) = %v", k.alg, err)
	}
	return s
}

// parse verifies token with kf.
func parse(kf *JWKSKeyfunc, token string) error {
	_, err := jwt.Parse(token, kf.Keyfunc)
	return err
}

func TestJWKSKeyfuncCaching(t *testing.T) {
	s := newJWKSServer(t)
	k1, k2 := newTestKey(t, jose.ES256), newTestKey(t, jose.ES384)
	s.publish(k1.jwk)
	s.setCacheControl("public, max-age=600")
	kf, clock := newKeyfunc(s)

	steps := []struct {
		name        string
		before      func()
		token       string
		wantErr     error // nil: the token verifies
		wantFetches int32
	}{
		{"first use fetches", nil, k1.token(t, k1.jwk.Kid), nil, 1},
		{"second use is cached", nil, k1.token(t, k1.jwk.Kid), nil, 1},
		{"unknown kid refetches", func() { clock.Advance(time.Minute) }, k2.token(t, k2.jwk.Kid), ErrUnknownKid, 2},
		{"unknown kid again is rate-limited", func() { s.publish(k1.jwk, k2.jwk); clock.Advance(10 * time.Second) }, k2.token(t, k2.jwk.Kid), ErrUnknownKid, 2},
		{"known kid still cached", nil, k1.token(t, k1.jwk.Kid), nil, 2},
		{"after the interval the new key is found", func() { clock.Advance(DefaultMinRefreshInterval) }, k2.token(t, k2.jwk.Kid), nil, 3},
		{"new key is cached", nil, k2.token(t, k2.jwk.Kid), nil, 3},
		{"max-age expiry refetches", func() { clock.Advance(601 * time.Second) }, k1.token(t, k1.jwk.Kid), nil, 4},
		{"stale key kept when the refetch fails", func() { s.setStatus(http.StatusInternalServerError); clock.Advance(time.Hour) }, k1.token(t, k1.jwk.Kid), nil, 5},
		{"stale key refused past the stale limit", func() { clock.Advance(jwksMaxStale) }, k1.token(t, k1.jwk.Kid), ErrStaleJWKS, 6},
		{"still refused until the next fetch is due", func() { clock.Advance(time.Second) }, k1.token(t, k1.jwk.Kid), ErrStaleJWKS, 6},
		{"removed key refused once refetched", func() { s.setStatus(http.StatusOK); s.publish(k2.jwk); clock.Advance(time.Hour) }, k1.token(t, k1.jwk.Kid), ErrUnknownKid, 7},
	}
	for _, st := range steps {
		// Steps depend on each other, so a failure stops the sequence.
		if !t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before()
			}
			err := parse(kf, st.token)
			if (st.wantErr == nil && err != nil) || (st.wantErr != nil && !errors.Is(err, st.wantErr)) {
				t.Errorf("jwt.Parse(token) = %v, want %v", err, st.wantErr)
			}
			if got := s.fetches.Load(); got != st.wantFetches {
				t.Errorf("fetches = %d, want %d", got, st.wantFetches)
			}
		}) {
			break
		}
	}
}

// hangingJWKS serves a JWK Set of one key whose every fetch after the first hangs until the test ends.
type hangingJWKS struct {
	*httptest.Server
	fetches atomic.Int32
}

func newHangingJWKS(t *testing.T, k testKey, cacheControl string) *hangingJWKS {
	t.Helper()
	release := make(chan struct{})
	s := &hangingJWKS{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.fetches.Add(1) > 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		_ = json.NewEncoder(w).Encode(jose.JWKS{Keys: []jose.JWK{k.jwk}})
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(release) }) // runs before Close, which waits for the handlers
	return s
}

// waitHung waits until a second fetch has started, which hangs.
func (s *hangingJWKS) waitHung(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); s.fetches.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the refetch did not start within 30s")
		}
	}
}

// parsesAtOnce checks that token, with the key of what, verifies without waiting for the fetch that
// hangs.
func parsesAtOnce(t *testing.T, kf *JWKSKeyfunc, token, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- parse(kf, token) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("jwt.Parse(token of %s) during a fetch = %v", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("a token of %s waited for another token's fetch", what)
	}
}

// TestJWKSKeyfuncFetchDoesNotBlockCachedKeys: while a fetch for an unknown kid hangs, tokens whose keys
// are cached and fresh still verify at once.
func TestJWKSKeyfuncFetchDoesNotBlockCachedKeys(t *testing.T) {
	k := newTestKey(t, jose.ES256)
	srv := newHangingJWKS(t, k, "")
	kf := NewJWKSKeyfunc(srv.URL, srv.Client(), WithMinRefreshInterval(0))
	if err := parse(kf, k.token(t, k.jwk.Kid)); err != nil {
		t.Fatal(err)
	}
	hung := make(chan error, 1)
	go func() { hung <- parse(kf, k.token(t, "made-up")) }()
	srv.waitHung(t)
	parsesAtOnce(t, kf, k.token(t, k.jwk.Kid), "a cached kid")
	select {
	case err := <-hung:
		t.Fatalf("the made-up kid's fetch returned early: %v", err)
	default:
	}
}

func TestJWKSKeyfuncNoCache(t *testing.T) {
	s := newJWKSServer(t)
	k := newTestKey(t, jose.ES256)
	s.publish(k.jwk)
	s.setCacheControl("no-store")
	kf, clock := newKeyfunc(s, WithMinRefreshInterval(time.Minute))
	tok := k.token(t, k.jwk.Kid)
	for i, advance := range []time.Duration{0, time.Second, time.Minute, time.Second} {
		clock.Advance(advance)
		if err := parse(kf, tok); err != nil {
			t.Fatalf("jwt.Parse(token) #%d = %v, want nil", i, err)
		}
	}
	// no-store makes the set stale at once, but the minimum interval still spaces the fetches.
	if got := s.fetches.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}

func TestJWKSKeyfuncHeaders(t *testing.T) {
	s := newJWKSServer(t)
	es256 := newTestKey(t, jose.ES256)
	noAlg := newTestKey(t, jose.ES256)
	noAlg.jwk.Alg = ""
	enc := newTestKey(t, jose.ES256)
	enc.jwk.Use = "enc"
	s.publish(es256.jwk, noAlg.jwk, enc.jwk)
	kf, _ := newKeyfunc(s)
	tests := []struct {
		name   string
		header map[string]any
		want   error // nil: the key is returned
	}{
		{"matching alg", map[string]any{"alg": "ES256", "kid": es256.jwk.Kid}, nil},
		{"other alg", map[string]any{"alg": "ES384", "kid": es256.jwk.Kid}, ErrAlgMismatch},
		{"RSA alg", map[string]any{"alg": "RS256", "kid": es256.jwk.Kid}, ErrAlgMismatch},
		{"none", map[string]any{"alg": "none", "kid": es256.jwk.Kid}, jose.ErrUnsupportedAlgorithm},
		{"HMAC", map[string]any{"alg": "HS256", "kid": es256.jwk.Kid}, jose.ErrUnsupportedAlgorithm},
		{"lower-case alg", map[string]any{"alg": "es256", "kid": es256.jwk.Kid}, jose.ErrUnsupportedAlgorithm},
		{"no alg", map[string]any{"kid": es256.jwk.Kid}, jose.ErrUnsupportedAlgorithm},
		{"no kid", map[string]any{"alg": "ES256"}, ErrUnknownKid},
		{"kid not a string", map[string]any{"alg": "ES256", "kid": 7}, ErrUnknownKid},
		{"JWK without alg", map[string]any{"alg": "ES256", "kid": noAlg.jwk.Kid}, ErrUnknownKid},
		{"encryption JWK", map[string]any{"alg": "ES256", "kid": enc.jwk.Kid}, ErrUnknownKid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := kf.Keyfunc(&jwt.Token{Header: tt.header})
			if tt.want == nil {
				pub, ok := key.(*ecdsa.PublicKey)
				if err != nil || !ok || !pub.Equal(es256.signer.Public()) {
					t.Errorf("Keyfunc(%v) = %T, %v, want the ES256 public key", tt.header, key, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || key != nil {
				t.Errorf("Keyfunc(%v) = %v, %v, want nil, %v", tt.header, key, err, tt.want)
			}
		})
	}
}

// TestJWKSKeyfuncAlgConfusion signs an HS256 token with the public key's JSON as the HMAC secret, the
// classic attack on verifiers that let the token choose the algorithm.
func TestJWKSKeyfuncAlgConfusion(t *testing.T) {
	s := newJWKSServer(t)
	k := newTestKey(t, jose.ES256)
	s.publish(k.jwk)
	kf, _ := newKeyfunc(s)
	secret, err := json.Marshal(k.jwk)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "mallory"})
	tok.Header["kid"] = k.jwk.Kid
	forged, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := parse(kf, forged); !errors.Is(err, jose.ErrUnsupportedAlgorithm) {
		t.Errorf("jwt.Parse(HS256 token) = %v, want ErrUnsupportedAlgorithm", err)
	}
	unsigned, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "mallory"}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	if err := parse(kf, unsigned); err == nil {
		t.Errorf("jwt.Parse(alg none token) = nil, want an error")
	}
}

// TestParseJWKSDuplicateKid: a kid that appears twice in a set is never usable, in either order, and
// also when the other key with it is one this client skips (another use, an HMAC alg); a set with one
// of each keeps the key.
func TestParseJWKSDuplicateKid(t *testing.T) {
	good := newTestKey(t, jose.ES256).jwk
	enc, hs, other := good, good, newTestKey(t, jose.ES256).jwk
	enc.Use, hs.Alg, other.Kid = "enc", "HS256", good.Kid
	for name, set := range map[string][]jose.JWK{
		"enc first": {enc, good}, "enc second": {good, enc}, "HS256 first": {hs, good},
		"two keys": {good, other}, "twice the same": {good, good},
	} {
		body, _ := json.Marshal(jose.JWKS{Keys: set})
		keys, err := parseJWKS(body)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := keys[good.Kid]; ok {
			t.Errorf("%s: kid %s appears twice in the set, but parseJWKS made it usable", name, good.Kid)
		}
	}
	body, _ := json.Marshal(jose.JWKS{Keys: []jose.JWK{good}})
	if keys, err := parseJWKS(body); err != nil || len(keys) != 1 {
		t.Errorf("parseJWKS(one key) = %d keys, %v; want 1", len(keys), err)
	}
}

func TestJWKSKeyfuncFetchErrors(t *testing.T) {
	k := newTestKey(t, jose.ES256)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JWKS{Keys: []jose.JWK{k.jwk}})
	}))
	t.Cleanup(plain.Close)
	tlsServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, plain.URL, http.StatusFound)
		case "/garbage":
			_, _ = w.Write([]byte("<html>"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(tlsServer.Close)
	tests := []struct {
		name string
		url  string
	}{
		{"http URL", plain.URL},
		{"redirect to http", tlsServer.URL + "/redirect"},
		{"not JSON", tlsServer.URL + "/garbage"},
		{"not found", tlsServer.URL + "/missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kf := NewJWKSKeyfunc(tt.url, tlsServer.Client())
			_, err := kf.Keyfunc(&jwt.Token{Header: map[string]any{"alg": "ES256", "kid": k.jwk.Kid}})
			if err == nil || errors.Is(err, ErrUnknownKid) {
				t.Errorf("Keyfunc() from %s = %v, want a fetch error", tt.url, err)
			}
		})
	}
}

// TestFreshFor: the time a JWKS response already spent in caches (Age) counts against its max-age.
func TestFreshFor(t *testing.T) {
	tests := []struct {
		cc, age string
		want    time.Duration
	}{
		{"max-age=300", "", 5 * time.Minute},
		{"max-age=300", "100", 200 * time.Second},
		{"max-age=300", "300", 0},
		{"max-age=300", "99999999999999999999", 0},
		{"max-age=300", "soon", 5 * time.Minute},
		{"max-age=300", "-5", 5 * time.Minute},
		{"", "60", jwksDefaultMaxAge - time.Minute},
		{"no-store", "10", 0},
	}
	for _, tt := range tests {
		h := http.Header{"Cache-Control": {tt.cc}, "Age": {tt.age}}
		if got := freshFor(h); got != tt.want {
			t.Errorf("freshFor(Cache-Control %q, Age %q) = %v, want %v", tt.cc, tt.age, got, tt.want)
		}
	} // Cache-Control on two lines is one list (RFC 9110 §5.3): no-cache on the second counts.
	if got := freshFor(http.Header{"Cache-Control": {"max-age=300", "no-cache"}}); got != 0 {
		t.Errorf("freshFor(Cache-Control max-age=300, then no-cache) = %v, want 0", got)
	}
}

func TestMaxAge(t *testing.T) {
	tests := []struct {
		cc   string
		want time.Duration
	}{
		{"", jwksDefaultMaxAge},
		{"public", jwksDefaultMaxAge},
		{"max-age=60", time.Minute},
		{"public, max-age=3600, must-revalidate", time.Hour},
		{`max-age="120"`, 2 * time.Minute},
		{"Max-Age=10", 10 * time.Second},
		{"max-age=0", 0},
		{"max-age=-1", 0},
		{"max-age=soon", 0},
		{"max-age=99999999999", jwksMaxMaxAge},
		{"no-store", 0},
		{"max-age=99999999999999999999999", jwksMaxMaxAge},
		{"no-cache, max-age=600", 0},
		{"max-age=600, no-store", 0},
	}
	for _, tt := range tests {
		t.Run(tt.cc, func(t *testing.T) {
			if got := maxAge(tt.cc); got != tt.want {
				t.Errorf("maxAge(%q) = %v, want %v", tt.cc, got, tt.want)
			}
		})
	}
}

// TestJWKSKeyfuncNotASet: a 200 answer that is JSON but no JWK Set ({}, null, {"keys": null}, as a
// misrouted proxy may give) is a failed fetch: the keys cached keep working through the stale window. An
// empty list of keys is a set, and withdraws them.
func TestJWKSKeyfuncNotASet(t *testing.T) {
	for _, body := range []string{`{}`, `null`, `{"keys":null}`} {
		t.Run(body, func(t *testing.T) {
			s := newJWKSServer(t)
			k := newTestKey(t, jose.ES256)
			s.publish(k.jwk)
			s.setCacheControl("max-age=60")
			kf, clock := newKeyfunc(s)
			if err := parse(kf, k.token(t, k.jwk.Kid)); err != nil {
				t.Fatal(err)
			}
			s.serveRaw(body)
			clock.Advance(61 * time.Second)
			if err := parse(kf, k.token(t, k.jwk.Kid)); err != nil || s.fetches.Load() != 2 {
				t.Errorf("jwt.Parse(cached kid) after the server answered %s = %v (%d fetches), want nil after 2", body, err, s.fetches.Load())
			}
			s.serveRaw(`{"keys":[]}`)
			clock.Advance(DefaultMinRefreshInterval)
			if err := parse(kf, k.token(t, k.jwk.Kid)); !errors.Is(err, ErrUnknownKid) {
				t.Errorf(`jwt.Parse(cached kid) after the server answered {"keys":[]} = %v, want %v`, err, ErrUnknownKid)
			}
		})
	}
}

// TestJWKSKeyfuncOutageIsNotUnknownKid: while the JWKS cannot be fetched, a kid the keyfunc does not
// know is reported with the fetch's failure, not as ErrUnknownKid (which a service may take for a forged
// token), also between two fetches.
func TestJWKSKeyfuncOutageIsNotUnknownKid(t *testing.T) {
	s := newJWKSServer(t)
	k := newTestKey(t, jose.ES256)
	s.publish(k.jwk)
	s.setStatus(http.StatusServiceUnavailable)
	kf, clock := newKeyfunc(s)
	for i, advance := range []time.Duration{0, time.Second} {
		clock.Advance(advance)
		err := parse(kf, k.token(t, k.jwk.Kid))
		if err == nil || errors.Is(err, ErrUnknownKid) || !strings.Contains(err.Error(), "503") || s.fetches.Load() != 1 {
			t.Errorf("jwt.Parse #%d during an outage = %v (%d fetches), want the fetch's failure (HTTP 503) after 1", i+1, err, s.fetches.Load())
		}
	}
	s.setStatus(http.StatusOK)
	clock.Advance(DefaultMinRefreshInterval)
	if err := parse(kf, k.token(t, k.jwk.Kid)); err != nil {
		t.Errorf("jwt.Parse once the JWKS is back = %v", err)
	}
}

// TestJWKSKeyfuncStaleKeysDuringHungFetch: once the set is stale, a token whose key is still within the
// stale window verifies at once while another token's refetch hangs, rather than after it.
func TestJWKSKeyfuncStaleKeysDuringHungFetch(t *testing.T) {
	k := newTestKey(t, jose.ES256)
	srv := newHangingJWKS(t, k, "max-age=60")
	clock := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	kf := NewJWKSKeyfunc(srv.URL, srv.Client())
	kf.now = clock.Now
	if err := parse(kf, k.token(t, k.jwk.Kid)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(61 * time.Second)
	go func() { _ = parse(kf, k.token(t, k.jwk.Kid)) }()
	srv.waitHung(t)
	parsesAtOnce(t, kf, k.token(t, k.jwk.Kid), "a stale but usable kid")
}
