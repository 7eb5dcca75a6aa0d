// Package authz is signerd's access policy. It is pure: it decides who may do
// what from an identity string and a compiled [Policy], and knows nothing of
// gRPC, TLS handshakes or HSMs.
//
// The flow is: [IdentityFromChains] turns the verified client certificate
// chain into an identity; [Compile] validates the configured [Policy] once at
// start (and on reload) and returns an immutable [Authorizer]; the server asks
// [Authorizer.Allow] on every request, before it looks the key up, so that a
// caller cannot probe which key names exist. Everything not granted is denied.
package authz

import (
	"slices"
	"time"
)

// Op is an operation a grant can allow.
type Op string

// The operations a grant can allow, as written in the policy.
const (
	// OpSign allows Signer.Sign.
	OpSign Op = "sign"
	// OpVerify allows Signer.Verify.
	OpVerify Op = "verify"
	// OpPublicKey allows Signer.GetPublicKey.
	OpPublicKey Op = "public_key"
	// OpSignJWT allows Signer.SignJWT, subject to the grant's JWT rules.
	OpSignJWT Op = "sign_jwt"
	// OpVerifyJWT allows Signer.VerifyJWT.
	OpVerifyJWT Op = "verify_jwt"
)

// Ops returns every operation, in declaration order. The slice is new on each
// call, so the caller may modify it.
func Ops() []Op {
	return []Op{OpSign, OpVerify, OpPublicKey, OpSignJWT, OpVerifyJWT}
}

// opSet is a set of operations, one bit per Op, so that Allow is a mask test.
type opSet uint8

// bit returns op's bit, or 0 for an unknown operation (which then matches
// nothing: deny by default).
func (op Op) bit() opSet {
	switch op {
	case OpSign:
		return 1 << 0
	case OpVerify:
		return 1 << 1
	case OpPublicKey:
		return 1 << 2
	case OpSignJWT:
		return 1 << 3
	case OpVerifyJWT:
		return 1 << 4
	}
	return 0
}

// Policy is the access policy as written in signerd's YAML config.
//
// An identity is granted nothing unless a grant names it. An identity may
// have several grants, but each (identity, key) pair appears at most once, so
// that the JWT rules that apply to a request are never ambiguous. A grant for
// one key and a grant for "*" may coexist for the same identity: the grant
// naming the key is consulted first (see [Authorizer.Allow]).
type Policy struct {
	// Admins are identities allowed to call the KeyAdmin service.
	Admins []string `yaml:"admins"`
	// Grants allow identities operations on keys.
	Grants []Grant `yaml:"grants"`
}

// Grant allows one identity some operations on some keys.
type Grant struct {
	// Identity is the exact caller identity (see IdentityFromChains). There
	// are no wildcards or prefixes: an identity containing "*" is refused.
	Identity string `yaml:"identity"`
	// Keys are key names, or the single entry "*" for every key.
	Keys []string `yaml:"keys"`
	// Operations are the operations allowed on Keys; at least one.
	Operations []Op `yaml:"operations"`
	// JWT constrains the tokens issued through this grant. It is only
	// allowed when Operations contains sign_jwt, and optional even then: a
	// sign_jwt grant without it gets the defaults described on [Rules].
	JWT *JWTRules `yaml:"jwt"`
}

// JWTRules constrains the JWTs a grant may have signerd issue.
type JWTRules struct {
	// Issuer is stamped as iss; a caller-supplied iss that differs is
	// refused. Empty means the caller's iss, if any, is used as is.
	Issuer string `yaml:"issuer"`
	// Audiences are the allowed aud values; empty means the caller may not
	// set aud.
	Audiences []string `yaml:"audiences"`
	// Subject is an RE2 regular expression the whole sub must match (it is
	// anchored as ^(?:Subject)$). Empty means any sub, or none.
	Subject string `yaml:"subject"`
	// MaxTTL is the longest lifetime a caller may request; at least 1s, at most a year (MaxTokenTTL).
	MaxTTL time.Duration `yaml:"max_ttl"`
	// DefaultTTL is the lifetime used when the caller requests none; 0
	// means MaxTTL.
	DefaultTTL time.Duration `yaml:"default_ttl"`
	// ForbiddenClaims are claims the caller may not set. iss, iat, nbf and
	// exp are always controlled by signerd; listing them is redundant but
	// allowed.
	ForbiddenClaims []string `yaml:"forbidden_claims"`
	// GenerateJTI makes signerd set a random jti; the caller may then not
	// set one.
	GenerateJTI bool `yaml:"generate_jti"`
}

// Authorizer answers access questions for one compiled [Policy]. It is
// immutable and safe for concurrent use. The zero value and a nil
// *Authorizer deny everything.
type Authorizer struct {
	admins map[string]struct{}
	grants map[string]*identityGrants
}

// identityGrants is everything one identity is granted.
type identityGrants struct {
	keys     map[string]*entry // by exact key name
	wildcard *entry            // the grant for "*", or nil
	ops      opSet             // every operation some grant allows
}

// entry is one grant, compiled.
type entry struct {
	ops   opSet
	rules *Rules
}

// Allow reports whether identity may perform op on key and, if so, returns
// the JWT rules of the grant that allows it (nil if that grant has none).
//
// A grant naming key is consulted before the identity's "*" grant; the first
// of the two that allows op decides, so an exact grant's JWT rules take
// precedence over the wildcard's. Unknown identities, keys and operations are
// denied. A "*" grant only matches well-formed key names. Allow does not
// allocate.
func (a *Authorizer) Allow(identity, key string, op Op) (*Rules, bool) {
	bit := op.bit()
	if a == nil || bit == 0 {
		return nil, false
	}
	g := a.grants[identity]
	if g == nil {
		return nil, false
	}
	if e := g.keys[key]; e != nil && e.ops&bit != 0 {
		return e.rules, true
	}
	if w := g.wildcard; w != nil && w.ops&bit != 0 && validKeyName(key) {
		return w.rules, true
	}
	return nil, false
}

// AllowsSome reports whether identity may perform op on some key: a question to ask before work
// that names no key yet (VerifyJWT before it reads the token's kid), so that a caller with no such
// grant gets nothing done for it.
func (a *Authorizer) AllowsSome(identity string, op Op) bool {
	if a == nil || op.bit() == 0 {
		return false
	}
	g := a.grants[identity]
	return g != nil && g.ops&op.bit() != 0
}

// Visible returns, sorted and without duplicates, those of names (the keys
// that exist) that identity may use for at least one operation; ListKeys
// shows only these. It returns nil when there are none. names is not
// modified.
func (a *Authorizer) Visible(identity string, names []string) []string {
	if a == nil {
		return nil
	}
	g := a.grants[identity]
	if g == nil {
		return nil
	}
	var out []string
	for _, name := range names {
		if g.keys[name] != nil || (g.wildcard != nil && validKeyName(name)) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// MaxTTL returns the longest token lifetime any grant lets a caller request for key: the bound a key's
// grace period must cover, so that every token signed by a version verifies until it expires. It is 0
// when no grant allows sign_jwt on key.
func (a *Authorizer) MaxTTL(key string) time.Duration {
	if a == nil {
		return 0
	}
	var longest time.Duration
	consider := func(e *entry) {
		if e == nil || e.ops&OpSignJWT.bit() == 0 {
			return
		}
		ttl := DefaultMaxTTL
		if e.rules != nil {
			ttl = e.rules.MaxTTL
		}
		longest = max(longest, ttl)
	}
	for _, g := range a.grants {
		consider(g.keys[key])
		if validKeyName(key) {
			consider(g.wildcard)
		}
	}
	return longest
}

// IsAdmin reports whether identity is an administrator, allowed to call the
// KeyAdmin service.
func (a *Authorizer) IsAdmin(identity string) bool {
	if a == nil {
		return false
	}
	_, ok := a.admins[identity]
	return ok
}

// validKeyName reports whether name matches ^[a-z0-9][a-z0-9-]{0,62}$. It is
// written out by hand because Allow calls it on the hot path.
func validKeyName(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
