package server

import (
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// verifiedCacheSize bounds the verified-token cache: at most 16384 tokens of at most maxCachedToken
// bytes each (about 64 MiB with their claims, at worst).
const (
	verifiedCacheSize = 16384
	maxCachedToken    = 2 << 10
)

// verified is a token whose signature has been checked against the public key of kid. A signature,
// once valid for a key, stays valid, so only that part is cached: every hit still checks that kid is
// published now (revocation), the caller's grant, and the time, issuer and audience claims.
type verified struct {
	kid     string
	payload []byte
	claims  jwt.MapClaims // read-only once cached
}

// verifiedCache remembers tokens whose signatures verified, keyed by the whole token, so that a service
// verifying the same bearer token on every call pays for the signature check once.
type verifiedCache struct {
	mu sync.Mutex
	m  map[string]*verified
}

func newVerifiedCache() *verifiedCache { return &verifiedCache{m: make(map[string]*verified)} }

func (c *verifiedCache) get(tok string) *verified {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[tok]
}

func (c *verifiedCache) put(tok string, v *verified) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= verifiedCacheSize {
		// Evict an arbitrary eighth: map order is random, and an evicted token is only re-verified.
		n := verifiedCacheSize / 8
		for k := range c.m {
			delete(c.m, k)
			if n--; n == 0 {
				break
			}
		}
	}
	c.m[tok] = v
}
