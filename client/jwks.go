package client

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/signerd/signerd/jose"
)

// DefaultMinRefreshInterval is the shortest time between two fetches of a JWKS unless
// [WithMinRefreshInterval] says otherwise.
const DefaultMinRefreshInterval = 30 * time.Second

const (
	// jwksDefaultMaxAge is how long a JWKS is fresh when the response has no Cache-Control max-age.
	jwksDefaultMaxAge = 5 * time.Minute
	// jwksMaxMaxAge caps max-age, so that a revoked key leaves the cache within a day whatever the
	// server said (plus jwksMaxStale while the JWKS cannot be fetched).
	jwksMaxMaxAge = 24 * time.Hour
	// jwksMaxStale is how long past its expiry a cached set stays usable while refetches fail: long
	// enough to ride out a JWKS outage, short enough that blocking the JWKS cannot keep a revoked key
	// alive.
	jwksMaxStale = time.Hour
	// jwksFetchTimeout bounds one fetch when the HTTP client has no timeout of its own.
	jwksFetchTimeout = 10 * time.Second
	// jwksMaxBytes bounds the JWKS document read.
	jwksMaxBytes = 1 << 20
)

// Errors returned (wrapped) by [JWKSKeyfunc.Keyfunc]; jwt.Parse wraps them again, and [errors.Is]
// finds them through both.
var (
	// ErrUnknownKid means the JWKS has no usable key with the token's kid, even after a refetch, or the
	// token has no kid. While the set cannot be fetched, a kid not cached is reported with the fetch's
	// failure instead: an outage is not to pass for a made-up kid.
	ErrUnknownKid = errors.New("client: no key with this kid in the JWKS")
	// ErrAlgMismatch means the token's alg header differs from the alg of the JWK with its kid.
	ErrAlgMismatch = errors.New("client: token alg does not match the key's alg")
	// ErrStaleJWKS means the cached set expired more than an hour ago and could not be fetched again.
	ErrStaleJWKS = errors.New("client: the cached JWKS is too old to use and could not be refetched")
)

// JWKSKeyfunc finds the public keys of tokens in a JWK Set fetched over HTTPS, such as signerd's
// /.well-known/jwks.json. Pass its Keyfunc method to jwt.Parse. It is safe for concurrent use.
//
// The set is fetched on first use and cached for the Cache-Control max-age of the response less its
// Age (5 minutes when there is none, at most a day). A token whose kid is not in the cache triggers a
// refetch, so keys published after a rotation are found at once; but no two fetches are closer
// together than the minimum refresh interval ([DefaultMinRefreshInterval]), so that a stream of tokens
// with made-up kids cannot turn the verifier against the JWKS server. If a refetch fails, the keys
// already cached keep working for up to an hour past their expiry; after that, tokens are refused with
// [ErrStaleJWKS] until a fetch succeeds, so that keeping the JWKS out of reach cannot keep a revoked key
// in use.
type JWKSKeyfunc struct {
	url        string
	http       *http.Client
	minRefresh time.Duration
	now        func() time.Time

	// fetching is held during a fetch, so that concurrent misses wait for one fetch rather than each
	// start one; tokens whose keys are cached and fresh never wait for it, and neither do those whose
	// keys are stale but still usable while another token's fetch is under way.
	fetching sync.Mutex
	// mu guards the fields below; it is never held during a fetch.
	mu      sync.Mutex
	keys    map[string]jwksKey
	expires time.Time // when keys go stale
	fetched time.Time // when the last fetch started; zero before the first
	lastErr error     // why the last fetch failed; nil if it succeeded
}

// jwksKey is one usable key of the set.
type jwksKey struct {
	alg jose.Algorithm
	pub crypto.PublicKey
}

// JWKSOption configures a JWKSKeyfunc.
type JWKSOption func(*JWKSKeyfunc)

// WithMinRefreshInterval sets the shortest time between two fetches of the JWKS, DefaultMinRefreshInterval
// by default. It also bounds how often an expired set is refetched.
func WithMinRefreshInterval(d time.Duration) JWKSOption {
	return func(j *JWKSKeyfunc) { j.minRefresh = d }
}

// NewJWKSKeyfunc returns a JWKSKeyfunc for the JWKS at url, which must be an https URL, fetched with
// httpClient (http.DefaultClient when nil). The set is not fetched until a token needs it.
func NewJWKSKeyfunc(url string, httpClient *http.Client, opts ...JWKSOption) *JWKSKeyfunc {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	// A copy, so that refusing redirects away from HTTPS does not change the caller's client.
	c := *httpClient
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("JWKS redirected to %s, which is not https", req.URL.Redacted())
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("JWKS: stopped after 10 redirects")
		}
		return nil
	}
	j := &JWKSKeyfunc{url: url, http: &c, minRefresh: DefaultMinRefreshInterval, now: time.Now}
	for _, o := range opts {
		o(j)
	}
	return j
}

// Keyfunc returns the public key that verifies token, for jwt.Parse: the key of the JWKS whose kid is
// the token's kid header. The token's alg header must be one of the asymmetric algorithms signerd
// supports ("none" and HS* are refused, whatever the JWKS says) and equal the alg of that JWK, or the
// error wraps [ErrAlgMismatch]; a JWK without an alg is never used.
func (j *JWKSKeyfunc) Keyfunc(token *jwt.Token) (any, error) {
	name, _ := token.Header["alg"].(string)
	alg, err := jose.ParseAlgorithm(name)
	if err != nil {
		return nil, fmt.Errorf("client: JWKS keyfunc: token alg: %w", err)
	}
	kid, _ := token.Header["kid"].(string)
	if kid == "" {
		return nil, fmt.Errorf("client: JWKS keyfunc: %w: the token has no kid", ErrUnknownKid)
	}
	k, err := j.lookup(kid)
	if err != nil {
		return nil, fmt.Errorf("client: JWKS keyfunc: %w", err)
	}
	if k.alg != alg {
		return nil, fmt.Errorf("client: JWKS keyfunc: %w: token says %s, key %s is %s", ErrAlgMismatch, alg, kid, k.alg)
	}
	return k.pub, nil
}

// lookup returns the key with kid, fetching the set if it is stale or lacks kid and the last fetch is
// at least minRefresh ago.
func (j *JWKSKeyfunc) lookup(kid string) (jwksKey, error) {
	if k, ok := j.cached(kid, j.now()); ok {
		return k, nil
	}
	if !j.fetching.TryLock() {
		// A fetch is under way: a key still within the stale window answers now rather than after it
		// (which, from a JWKS server that does not answer, is the whole fetch timeout).
		if k, ok := j.usable(kid, j.now()); ok {
			return k, nil
		}
		j.fetching.Lock()
	}
	defer j.fetching.Unlock()
	now := j.now()
	// Another goroutine may have fetched while this one waited.
	if k, ok := j.cached(kid, now); ok {
		return k, nil
	}
	j.mu.Lock()
	due := j.fetched.IsZero() || now.Sub(j.fetched) >= j.minRefresh
	if due {
		j.fetched = now
	}
	j.mu.Unlock()
	var fetchErr error
	if due {
		var keys map[string]jwksKey
		var expires time.Time
		keys, expires, fetchErr = j.fetch(now)
		j.mu.Lock()
		if fetchErr == nil {
			j.keys, j.expires = keys, expires
		}
		j.lastErr = fetchErr
		j.mu.Unlock()
	}
	j.mu.Lock()
	k, ok := j.keys[kid]
	usable := now.Before(j.expires.Add(jwksMaxStale))
	expires, nextFetch, lastErr := j.expires, j.fetched.Add(j.minRefresh), j.lastErr
	j.mu.Unlock()
	switch {
	case ok && usable:
		return k, nil
	case ok && fetchErr != nil:
		return jwksKey{}, fmt.Errorf("kid %q: %w (expired %s): %w", kid, ErrStaleJWKS, expires.Format(time.RFC3339), fetchErr)
	case ok:
		return jwksKey{}, fmt.Errorf("kid %q: %w (expired %s; next fetch after %s)", kid, ErrStaleJWKS,
			expires.Format(time.RFC3339), nextFetch.Format(time.RFC3339))
	case fetchErr != nil:
		return jwksKey{}, fmt.Errorf("kid %q: %w", kid, fetchErr)
	case lastErr != nil:
		// The set could not be fetched lately: the kid may be one it has gained since. An outage is
		// not to pass for a token with a made-up kid.
		return jwksKey{}, fmt.Errorf("kid %q: not in the keys cached, and the last fetch failed (next after %s): %w",
			kid, nextFetch.Format(time.RFC3339), lastErr)
	}
	return jwksKey{}, fmt.Errorf("%w: kid %q at %s", ErrUnknownKid, kid, j.url)
}

// cached returns the key with kid if the cached set has it and is fresh at now.
func (j *JWKSKeyfunc) cached(kid string, now time.Time) (jwksKey, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	k, ok := j.keys[kid]
	return k, ok && now.Before(j.expires)
}

// usable returns the key with kid if the cached set has it and is within the stale window at now.
func (j *JWKSKeyfunc) usable(kid string, now time.Time) (jwksKey, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	k, ok := j.keys[kid]
	return k, ok && now.Before(j.expires.Add(jwksMaxStale))
}

// fetch fetches the set, returning its usable keys and when they go stale.
func (j *JWKSKeyfunc) fetch(now time.Time) (map[string]jwksKey, time.Time, error) {
	u, err := url.Parse(j.url)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS: %w", err)
	}
	if u.Scheme != "https" {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS: %s is not an https URL", u.Redacted())
	}
	ctx := context.Background()
	if j.http.Timeout == 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, jwksFetchTimeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.http.Do(req)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer func() {
		// Drained (a little) so that the connection can be used again.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS %s: HTTP status %s", u.Redacted(), resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS %s: %w", u.Redacted(), err)
	}
	if len(body) > jwksMaxBytes {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS %s: larger than %d bytes", u.Redacted(), jwksMaxBytes)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("fetch JWKS %s: %w", u.Redacted(), err)
	}
	return keys, now.Add(freshFor(resp.Header)), nil
}

// freshFor returns how long a response with header h stays fresh from now: its freshness lifetime
// (maxAge) less the time it has already spent in caches on its way here, its Age (RFC 9111 §4.2.3), so
// that a CDN in front of the JWKS cannot double how long a revoked key stays trusted. An Age that is not
// a number of seconds is ignored.
func freshFor(h http.Header) time.Duration {
	life := maxAge(strings.Join(h.Values("Cache-Control"), ","))
	age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange) && age > 0, err == nil && age >= int64(life/time.Second):
		return 0 // older than any lifetime (RFC 9111 §1.2.2: too large a number is a very large age)
	case err != nil || age <= 0:
		return life
	}
	return life - time.Duration(age)*time.Second
}

// parseJWKS decodes a JWK Set and keeps the keys a verifier may use: signature keys with a kid, a
// supported alg, and a public key that suits the alg. Other keys are skipped rather than fail the set,
// so that one key this client does not understand does not hide the others. A kid that appears twice is
// ambiguous, and neither key is used, whatever the other one is (a key this client skips included).
func parseJWKS(body []byte) (map[string]jwksKey, error) {
	var set jose.JWKS
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	if set.Keys == nil {
		// {}, null or {"keys": null} (a proxy's answer, say) is no set of keys: the keys cached are
		// kept, as for any failed fetch, rather than all withdrawn. An empty list withdraws them all.
		return nil, errors.New(`decode JWKS: not a JWK Set (no "keys" array)`)
	}
	kids := make(map[string]int, len(set.Keys))
	for _, jwk := range set.Keys {
		kids[jwk.Kid]++
	}
	keys := make(map[string]jwksKey, len(set.Keys))
	for _, jwk := range set.Keys {
		if jwk.Kid == "" || kids[jwk.Kid] > 1 || (jwk.Use != "" && jwk.Use != "sig") {
			continue
		}
		alg, err := jose.ParseAlgorithm(jwk.Alg)
		if err != nil {
			continue
		}
		pub, err := jwk.PublicKey()
		if err != nil || alg.CheckPublicKey(pub) != nil {
			continue
		}
		keys[jwk.Kid] = jwksKey{alg: alg, pub: pub}
	}
	return keys, nil
}

// maxAge returns how long a response with Cache-Control header cc stays fresh: its max-age, bounded by
// jwksMaxMaxAge; zero for no-store or no-cache; jwksDefaultMaxAge when it says nothing.
func maxAge(cc string) time.Duration {
	age := jwksDefaultMaxAge
	for d := range strings.SplitSeq(cc, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return 0
		case "max-age":
			secs, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64)
			switch {
			case err != nil && errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(value, "-"):
				age = jwksMaxMaxAge
			case err != nil || secs < 0:
				age = 0 // RFC 9111 §4.2.1: an invalid freshness lifetime means stale
			case secs > int64(jwksMaxMaxAge/time.Second):
				age = jwksMaxMaxAge
			default:
				age = time.Duration(secs) * time.Second
			}
		}
	}
	return age
}
