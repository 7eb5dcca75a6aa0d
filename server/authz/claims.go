package authz

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"
)

// ErrClaimPolicy is wrapped by every refusal from [Rules.CheckClaims]. The
// server maps it to PermissionDenied.
var ErrClaimPolicy = errors.New("authz: claims refused by policy")

// DefaultMaxTTL is the maximum, and default, token lifetime of a sign_jwt
// grant that has no jwt section (a nil *Rules).
const DefaultMaxTTL = 5 * time.Minute

// MaxTokenTTL bounds every token lifetime: a grant's max_ttl, and what a caller may request at all.
const MaxTokenTTL = 365 * 24 * time.Hour

// Rules are compiled [JWTRules]: the subject pattern compiled and anchored,
// DefaultTTL filled in from MaxTTL when it was 0, lists copied.
//
// Rules returned by an [Authorizer] are shared by every request under the
// grant and must not be modified. A nil *Rules, which [Authorizer.Allow]
// returns for a sign_jwt grant without a jwt section, is usable: it behaves
// as Rules with no Issuer, no Audiences, any Subject, no ForbiddenClaims and
// a MaxTTL and DefaultTTL of [DefaultMaxTTL].
type Rules struct {
	// Issuer is stamped as iss; empty means tokens carry no iss (a caller may not set one).
	Issuer string
	// Audiences are the allowed aud values; empty means aud may not be set.
	Audiences []string
	// Subject must match the whole sub; nil means any sub, or none.
	Subject *regexp.Regexp
	// MaxTTL is the longest lifetime a caller may request.
	MaxTTL time.Duration
	// DefaultTTL is the lifetime used when the caller requests none.
	DefaultTTL time.Duration
	// ForbiddenClaims are the claims the caller may not set, sorted.
	ForbiddenClaims []string
	// GenerateJTI makes signerd set jti; the caller may then not set it.
	GenerateJTI bool
}

// noRules stands in for a nil *Rules.
var noRules = Rules{MaxTTL: DefaultMaxTTL, DefaultTTL: DefaultMaxTTL}

// reservedClaims are always set by signerd, never by the caller.
var reservedClaims = [...]string{"iat", "nbf", "exp"}

// CheckClaims applies r to the caller's claims (a decoded JSON object) and
// requested ttl, and returns the TTL to use: ttl, or r.DefaultTTL when ttl is
// 0.
//
// It refuses, with an error wrapping [ErrClaimPolicy] that names the rule:
// a negative ttl or one above MaxTTL (it is never silently shortened); the
// claims iat, nbf and exp, which signerd sets, and jti when GenerateJTI is
// set; any of ForbiddenClaims; an iss when Issuer is empty, one that is not a string or, when Issuer is
// set, differs from it; an aud (a string or an array of strings) with any
// value not in Audiences, or any aud at all when Audiences is empty; a sub
// that is not a string or does not match Subject, or no sub when Subject is
// set. The first refusal is returned, in that order. claims is not modified.
func (r *Rules) CheckClaims(claims map[string]any, ttl time.Duration) (time.Duration, error) {
	if r == nil {
		r = &noRules
	}
	if ttl < 0 {
		return 0, refuse("ttl %v is negative", ttl)
	}
	if ttl == 0 {
		ttl = r.DefaultTTL
		if ttl <= 0 {
			// Only reachable with hand-built Rules; Compile fills DefaultTTL.
			ttl = r.MaxTTL
		}
		if ttl <= 0 {
			return 0, refuse("jwt.max_ttl is not set")
		}
	}
	if ttl > r.MaxTTL {
		return 0, refuse("ttl %v exceeds jwt.max_ttl %v", ttl, r.MaxTTL)
	}

	for _, name := range reservedClaims {
		if _, set := claims[name]; set {
			return 0, refuse("claim %q is set by signerd", name)
		}
	}
	if _, set := claims["jti"]; set && r.GenerateJTI {
		return 0, refuse(`claim "jti" is set by signerd (jwt.generate_jti)`)
	}
	for _, name := range r.ForbiddenClaims {
		if _, set := claims[name]; set {
			return 0, refuse("claim %s is in jwt.forbidden_claims", quote(name))
		}
	}

	if v, set := claims["iss"]; set {
		s, ok := v.(string)
		switch {
		case !ok:
			return 0, refuse(`claim "iss" must be a string`)
		case r.Issuer == "":
			// Every key's versions are in one JWKS, so a caller choosing iss could mint tokens that
			// another service's verifiers accept as their own: only a configured issuer is stamped.
			return 0, refuse(`claim "iss" may not be set: the grant has no jwt.issuer`)
		case s != r.Issuer:
			return 0, refuse(`claim "iss" %s differs from jwt.issuer`, quote(s))
		}
	}

	if v, set := claims["aud"]; set {
		if err := r.checkAudience(v); err != nil {
			return 0, err
		}
	}

	v, set := claims["sub"]
	if !set {
		if r.Subject != nil {
			return 0, refuse(`claim "sub" is required by jwt.subject`)
		}
		return ttl, nil
	}
	s, ok := v.(string)
	if !ok {
		return 0, refuse(`claim "sub" must be a string`)
	}
	if r.Subject != nil && !r.Subject.MatchString(s) {
		return 0, refuse(`claim "sub" %s does not match jwt.subject`, quote(s))
	}
	return ttl, nil
}

// checkAudience checks a caller-supplied aud against r.Audiences.
func (r *Rules) checkAudience(v any) error {
	if len(r.Audiences) == 0 {
		return refuse(`claim "aud" may not be set (jwt.audiences is empty)`)
	}
	switch aud := v.(type) {
	case string:
		return r.checkAud(aud)
	case []string:
		if len(aud) == 0 {
			return refuse(`claim "aud" is an empty array`)
		}
		for _, s := range aud {
			if err := r.checkAud(s); err != nil {
				return err
			}
		}
		return nil
	case []any:
		if len(aud) == 0 {
			return refuse(`claim "aud" is an empty array`)
		}
		for _, e := range aud {
			s, ok := e.(string)
			if !ok {
				return refuse(`claim "aud" must be a string or an array of strings`)
			}
			if err := r.checkAud(s); err != nil {
				return err
			}
		}
		return nil
	}
	return refuse(`claim "aud" must be a string or an array of strings`)
}

// checkAud checks one audience value.
func (r *Rules) checkAud(s string) error {
	for _, a := range r.Audiences {
		if s == a {
			return nil
		}
	}
	return refuse(`claim "aud" value %s is not in jwt.audiences`, quote(s))
}

// refuse returns a refusal wrapping ErrClaimPolicy.
func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrClaimPolicy, fmt.Sprintf(format, args...))
}

// maxQuoted bounds how much of a caller-supplied value goes into an error
// message, which ends up in logs and audit records.
const maxQuoted = 64

// quote quotes s for an error message, shortened to maxQuoted bytes.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
