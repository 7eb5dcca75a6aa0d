package authz

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wildcardKey is the key entry that grants every key.
const wildcardKey = "*"

// minTTL is the smallest max_ttl or default_ttl accepted. JWT times have
// one-second resolution, and a bare YAML integer decodes into a
// time.Duration as nanoseconds: "max_ttl: 300" would otherwise mean 300ns.
const minTTL = time.Second

// Compile validates p and builds the [Authorizer].
//
// keyExists reports whether a key name exists, so that a grant for a missing
// key fails at start rather than silently granting nothing; nil skips that
// check. Compile reports every problem at once, joined with [errors.Join],
// each naming its field path, for example
//
//	policy.grants[2].keys[0]: key "foo" does not exist
//
// The Authorizer shares nothing with p: later changes to p do not affect it.
func Compile(p Policy, keyExists func(name string) bool) (*Authorizer, error) {
	c := compiler{keyExists: keyExists, firstPair: make(map[pair]string)}
	a := &Authorizer{
		admins: make(map[string]struct{}, len(p.Admins)),
		grants: make(map[string]*identityGrants),
	}

	firstAdmin := make(map[string]int, len(p.Admins))
	for i, id := range p.Admins {
		path := fmt.Sprintf("policy.admins[%d]", i)
		if msg := identityProblem(id); msg != "" {
			c.fail(path, "%s", msg)
			continue
		}
		if j, dup := firstAdmin[id]; dup {
			c.fail(path, "duplicate of policy.admins[%d]", j)
			continue
		}
		firstAdmin[id] = i
		a.admins[id] = struct{}{}
	}

	for i, g := range p.Grants {
		c.grant(a, fmt.Sprintf("policy.grants[%d]", i), g)
	}
	c.rawSigningOverRules(p.Grants)

	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// pair is an (identity, key) pair; each may be granted only once.
type pair struct{ identity, key string }

// compiler collects the problems found while compiling one Policy.
type compiler struct {
	keyExists func(string) bool
	firstPair map[pair]string // path of the keys entry that first granted the pair
	errs      []error
}

// fail records a problem at path.
func (c *compiler) fail(path, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// grant validates g (at path) and adds it to a.
func (c *compiler) grant(a *Authorizer, path string, g Grant) {
	var ig *identityGrants // nil when the identity is invalid
	if msg := identityProblem(g.Identity); msg != "" {
		c.fail(path+".identity", "%s", msg)
	} else if ig = a.grants[g.Identity]; ig == nil {
		ig = &identityGrants{keys: make(map[string]*entry)}
		a.grants[g.Identity] = ig
	}
	// One entry is shared by all of the grant's keys. It is filled in after
	// the keys so that problems are reported in field order; nothing reads
	// it before Compile returns.
	e := &entry{}
	c.keys(path+".keys", g.Identity, g.Keys, ig, e)
	e.ops = c.operations(path+".operations", g.Operations)
	e.rules = c.jwt(path+".jwt", g.JWT, e.ops)
	if ig != nil {
		ig.ops |= e.ops
	}
}

// keys validates a grant's keys (at path) and records e for each of them in
// ig, unless ig is nil.
func (c *compiler) keys(path, identity string, keys []string, ig *identityGrants, e *entry) {
	if len(keys) == 0 {
		c.fail(path, "empty")
	}
	if len(keys) > 1 && slices.Contains(keys, wildcardKey) {
		c.fail(path, "%q must be the only entry", wildcardKey)
	}
	for i, key := range keys {
		kp := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case key == "":
			c.fail(kp, "empty")
			continue
		case key == wildcardKey:
		case !validKeyName(key):
			c.fail(kp, "invalid key name %q: must match ^[a-z0-9][a-z0-9-]{0,62}$", key)
			continue
		case c.keyExists != nil && !c.keyExists(key):
			c.fail(kp, "key %q does not exist", key)
			continue
		}
		if ig == nil {
			continue
		}
		pk := pair{identity, key}
		if first, dup := c.firstPair[pk]; dup {
			c.fail(kp, "identity %q is already granted key %q at %s", identity, key, first)
			continue
		}
		c.firstPair[pk] = kp
		if key == wildcardKey {
			ig.wildcard = e
		} else {
			ig.keys[key] = e
		}
	}
}

// operations validates ops (at path) and returns them as a set.
func (c *compiler) operations(path string, ops []Op) opSet {
	if len(ops) == 0 {
		c.fail(path, "empty")
	}
	var set opSet
	for i, op := range ops {
		bit := op.bit()
		switch {
		case bit == 0:
			c.fail(fmt.Sprintf("%s[%d]", path, i), "unknown operation %q (want one of %s)", op, opList())
		case set&bit != 0:
			c.fail(fmt.Sprintf("%s[%d]", path, i), "duplicate operation %q", op)
		}
		set |= bit
	}
	return set
}

// jwt validates j (at path) for a grant of ops and compiles it; nil if j is.
func (c *compiler) jwt(path string, j *JWTRules, ops opSet) *Rules {
	if j == nil {
		return nil
	}
	if ops&OpSignJWT.bit() == 0 {
		c.fail(path, "only allowed with operation %s", OpSignJWT)
	}
	r := &Rules{
		Issuer:      j.Issuer,
		MaxTTL:      j.MaxTTL,
		DefaultTTL:  j.DefaultTTL,
		GenerateJTI: j.GenerateJTI,
	}

	switch {
	case j.MaxTTL <= 0:
		c.fail(path+".max_ttl", "must be > 0 (a duration such as \"5m\")")
	case j.MaxTTL < minTTL:
		c.fail(path+".max_ttl", "%v is less than %v (write a duration such as \"5m\", not a bare number)", j.MaxTTL, minTTL)
	case j.MaxTTL > MaxTokenTTL:
		c.fail(path+".max_ttl", "%v is more than a year (%v), the longest lifetime signerd issues", j.MaxTTL, MaxTokenTTL)
	}
	switch {
	case j.DefaultTTL < 0:
		c.fail(path+".default_ttl", "must not be negative (0 means max_ttl)")
	case j.DefaultTTL == 0:
		r.DefaultTTL = j.MaxTTL
	case j.DefaultTTL < minTTL:
		c.fail(path+".default_ttl", "%v is less than %v (write a duration such as \"5m\", not a bare number)", j.DefaultTTL, minTTL)
	case j.DefaultTTL > j.MaxTTL:
		c.fail(path+".default_ttl", "%v exceeds max_ttl %v", j.DefaultTTL, j.MaxTTL)
	}

	if j.Subject != "" {
		// Compile the pattern alone first: it must be well formed by itself,
		// or a pattern such as `a)|(b` could escape the anchoring group.
		if _, err := regexp.Compile(j.Subject); err != nil {
			c.fail(path+".subject", "invalid regexp: %s", regexpProblem(err))
		} else if re, err := regexp.Compile(`^(?:` + j.Subject + `)$`); err != nil {
			c.fail(path+".subject", "invalid regexp: %s", regexpProblem(err))
		} else {
			r.Subject = re
		}
	}

	r.Audiences = c.names(path+".audiences", j.Audiences)
	r.ForbiddenClaims = c.names(path+".forbidden_claims", j.ForbiddenClaims)
	slices.Sort(r.ForbiddenClaims)
	return r
}

// rawSigningOverRules refuses a policy in which a key that issues JWTs under a grant's jwt rules may
// also be used with sign. A raw signature over "header.payload" is a JWT: whoever may sign raw data with
// the key could mint tokens with any claims, lifetime and issuer, which VerifyJWT, the JWKS and every
// verifier would accept. Keys named by "*" overlap with every key.
func (c *compiler) rawSigningOverRules(grants []Grant) {
	for i, ruled := range grants {
		if ruled.JWT == nil || !slices.Contains(ruled.Operations, OpSignJWT) {
			continue
		}
		for j, raw := range grants {
			if !slices.Contains(raw.Operations, OpSign) {
				continue
			}
			key, ok := sharedKey(ruled.Keys, raw.Keys)
			if !ok {
				continue
			}
			path := fmt.Sprintf("policy.grants[%d]", max(i, j))
			switch {
			case i == j:
				c.fail(path+".operations", "sign lets %q sign any token with %s, whatever this grant's jwt rules say; "+
					"grant sign_jwt alone, and sign on a separate key", ruled.Identity, key)
			default:
				c.fail(path, "%s may sign raw data (policy.grants[%d], identity %q) and issues JWTs under the jwt rules of "+
					"policy.grants[%d] (identity %q): a raw signature can be a token that breaks those rules; "+
					"use separate keys for JWTs and raw signatures", key, j, raw.Identity, i, ruled.Identity)
			}
		}
	}
}

// sharedKey returns a description of a key that both key lists name, if there is one.
func sharedKey(a, b []string) (string, bool) {
	switch {
	case slices.Contains(a, wildcardKey) && slices.Contains(b, wildcardKey):
		return "every key", true
	case slices.Contains(a, wildcardKey) && len(b) > 0:
		return fmt.Sprintf("key %q", b[0]), true
	case slices.Contains(b, wildcardKey) && len(a) > 0:
		return fmt.Sprintf("key %q", a[0]), true
	}
	for _, k := range a {
		if k != "" && slices.Contains(b, k) {
			return fmt.Sprintf("key %q", k), true
		}
	}
	return "", false
}

// names validates a list of non-empty, distinct strings (at path) and
// returns a copy of it.
func (c *compiler) names(path string, list []string) []string {
	first := make(map[string]int, len(list))
	for i, s := range list {
		switch j, dup := first[s]; {
		case s == "":
			c.fail(fmt.Sprintf("%s[%d]", path, i), "empty")
		case dup:
			c.fail(fmt.Sprintf("%s[%d]", path, i), "duplicate of %s[%d]", path, j)
		default:
			first[s] = i
		}
	}
	return slices.Clone(list)
}

// regexpProblem describes a regexp compile error on one line: the
// standard message embeds the pattern raw, new lines included.
func regexpProblem(err error) string {
	var se *syntax.Error
	if errors.As(err, &se) {
		return fmt.Sprintf("%s: %q", se.Code, se.Expr)
	}
	return strconv.Quote(err.Error())
}

// identityProblem returns what is wrong with id as a policy identity, or "".
func identityProblem(id string) string {
	switch {
	case id == "":
		return "empty"
	case strings.TrimSpace(id) != id:
		return fmt.Sprintf("identity %q has leading or trailing white space", id)
	case strings.Contains(id, "*"):
		return fmt.Sprintf("identity %q contains \"*\": identities are exact, wildcards are not supported", id)
	}
	return ""
}

// opList returns the known operations for error messages.
func opList() string {
	var b strings.Builder
	for i, op := range Ops() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(op))
	}
	return b.String()
}
