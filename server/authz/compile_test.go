package authz

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// existing is the key set the tests' keyExists reports.
var existing = map[string]bool{"alpha": true, "beta": true, "gamma": true, "web-1": true}

func keyExists(name string) bool { return existing[name] }

// validPolicy returns a policy that compiles, exercising every feature.
func validPolicy() Policy {
	return Policy{
		Admins: []string{"spiffe://example.org/admin"},
		Grants: []Grant{
			{
				Identity:   "spiffe://example.org/api",
				Keys:       []string{"alpha", "beta"},
				Operations: []Op{OpSignJWT, OpPublicKey},
				JWT: &JWTRules{
					Issuer:          "https://auth.example.org",
					Audiences:       []string{"api", "web"},
					Subject:         `user-[0-9]+`,
					MaxTTL:          time.Hour,
					DefaultTTL:      5 * time.Minute,
					ForbiddenClaims: []string{"role", "iss", "exp"},
					GenerateJTI:     true,
				},
			},
			{
				Identity:   "spiffe://example.org/api",
				Keys:       []string{"*"},
				Operations: []Op{OpVerify, OpVerifyJWT, OpSignJWT},
				JWT:        &JWTRules{MaxTTL: 10 * time.Minute},
			},
			{
				Identity:   "verifier.example.org",
				Keys:       []string{"*"},
				Operations: []Op{OpVerify, OpVerifyJWT, OpPublicKey},
			},
			{
				Identity:   "signer",
				Keys:       []string{"web-1"},
				Operations: []Op{OpSignJWT},
			},
		},
	}
}

func TestCompileValid(t *testing.T) {
	for _, tt := range []struct {
		name      string
		p         Policy
		keyExists func(string) bool
	}{
		{name: "full", p: validPolicy(), keyExists: keyExists},
		{name: "no key check", p: validPolicy()},
		{name: "empty", p: Policy{}, keyExists: keyExists},
		{name: "unknown key without check", p: Policy{Grants: []Grant{{Identity: "a", Keys: []string{"nope"}, Operations: []Op{OpSign}}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Compile(tt.p, tt.keyExists)
			if err != nil {
				t.Fatalf("Compile() error = %v, want nil", err)
			}
			if a == nil {
				t.Fatal("Compile() = nil, want an Authorizer")
			}
		})
	}
}

func TestCompileRules(t *testing.T) {
	p := validPolicy()
	a, err := Compile(p, keyExists)
	if err != nil {
		t.Fatalf("Compile() error = %v", err)
	}
	r, ok := a.Allow("spiffe://example.org/api", "alpha", OpSignJWT)
	if !ok || r == nil {
		t.Fatalf("Allow(alpha, sign_jwt) = %v, %v, want rules, true", r, ok)
	}
	if r.Issuer != "https://auth.example.org" || r.MaxTTL != time.Hour || r.DefaultTTL != 5*time.Minute || !r.GenerateJTI {
		t.Errorf("rules = %+v, want the grant's jwt section", r)
	}
	if got, want := strings.Join(r.ForbiddenClaims, ","), "exp,iss,role"; got != want {
		t.Errorf("ForbiddenClaims = %q, want %q (sorted)", got, want)
	}
	if got, want := r.Subject.String(), `^(?:user-[0-9]+)$`; got != want {
		t.Errorf("Subject = %q, want %q", got, want)
	}

	// DefaultTTL 0 means MaxTTL.
	w, ok := a.Allow("spiffe://example.org/api", "gamma", OpSignJWT)
	if !ok || w == nil || w.DefaultTTL != 10*time.Minute || w.Subject != nil {
		t.Errorf("Allow(gamma, sign_jwt) = %+v, %v, want wildcard rules with DefaultTTL 10m and no Subject", w, ok)
	}

	// The Authorizer must not share the policy's slices.
	p.Grants[0].JWT.Audiences[0] = "changed"
	p.Grants[0].JWT.ForbiddenClaims[0] = "changed"
	if r.Audiences[0] != "api" || !strings.Contains(strings.Join(r.ForbiddenClaims, ","), "role") {
		t.Errorf("rules changed with the policy: %+v", r)
	}
}

func TestCompileErrors(t *testing.T) {
	grant := func(identity string, keys []string, ops ...Op) Grant {
		return Grant{Identity: identity, Keys: keys, Operations: ops}
	}
	jwtGrant := func(j JWTRules) Grant {
		g := grant("svc", []string{"alpha"}, OpSignJWT)
		g.JWT = &j
		return g
	}
	tests := []struct {
		name string
		p    Policy
		want []string // each must appear in the error
	}{
		{
			name: "key does not exist",
			p:    Policy{Grants: []Grant{grant("a", []string{"alpha"}, OpSign), grant("b", []string{"alpha"}, OpSign), grant("c", []string{"foo"}, OpSign)}},
			want: []string{`policy.grants[2].keys[0]: key "foo" does not exist`},
		},
		{
			name: "unknown operation",
			p:    Policy{Grants: []Grant{grant("a", []string{"alpha"}, OpSign, "sig")}},
			want: []string{`policy.grants[0].operations[1]: unknown operation "sig"`},
		},
		{
			name: "duplicate operation",
			p:    Policy{Grants: []Grant{grant("a", []string{"alpha"}, OpSign, OpSign)}},
			want: []string{`policy.grants[0].operations[1]: duplicate operation "sign"`},
		},
		{
			name: "no operations",
			p:    Policy{Grants: []Grant{grant("a", []string{"alpha"})}},
			want: []string{`policy.grants[0].operations: empty`},
		},
		{
			name: "empty identity",
			p:    Policy{Grants: []Grant{grant("a", []string{"alpha"}, OpSign), grant("", []string{"beta"}, OpSign)}},
			want: []string{`policy.grants[1].identity: empty`},
		},
		{
			name: "wildcard identity",
			p:    Policy{Grants: []Grant{grant("spiffe://example.org/*", []string{"alpha"}, OpSign)}},
			want: []string{`policy.grants[0].identity: identity "spiffe://example.org/*" contains "*"`},
		},
		{
			name: "identity with white space",
			p:    Policy{Grants: []Grant{grant(" svc", []string{"alpha"}, OpSign)}},
			want: []string{`policy.grants[0].identity: identity " svc" has leading or trailing white space`},
		},
		{
			name: "no keys",
			p:    Policy{Grants: []Grant{grant("a", nil, OpSign)}},
			want: []string{`policy.grants[0].keys: empty`},
		},
		{
			name: "empty key",
			p:    Policy{Grants: []Grant{grant("a", []string{""}, OpSign)}},
			want: []string{`policy.grants[0].keys[0]: empty`},
		},
		{
			name: "invalid key names",
			p:    Policy{Grants: []Grant{grant("a", []string{"Alpha", "-x", "a_b", strings.Repeat("a", 64)}, OpSign)}},
			want: []string{
				`policy.grants[0].keys[0]: invalid key name "Alpha"`,
				`policy.grants[0].keys[1]: invalid key name "-x"`,
				`policy.grants[0].keys[2]: invalid key name "a_b"`,
				`policy.grants[0].keys[3]: invalid key name "aaaa`,
			},
		},
		{
			name: "wildcard mixed with names",
			p:    Policy{Grants: []Grant{grant("a", []string{"alpha", "*"}, OpSign)}},
			want: []string{`policy.grants[0].keys: "*" must be the only entry`},
		},
		{
			name: "duplicate identity and key",
			p: Policy{Grants: []Grant{
				grant("a", []string{"alpha", "beta"}, OpSign),
				grant("b", []string{"beta"}, OpSign),
				grant("a", []string{"gamma", "beta"}, OpVerify),
			}},
			want: []string{`policy.grants[2].keys[1]: identity "a" is already granted key "beta" at policy.grants[0].keys[1]`},
		},
		{
			name: "duplicate key in one grant",
			p:    Policy{Grants: []Grant{grant("a", []string{"alpha", "alpha"}, OpSign)}},
			want: []string{`policy.grants[0].keys[1]: identity "a" is already granted key "alpha" at policy.grants[0].keys[0]`},
		},
		{
			name: "duplicate wildcard",
			p:    Policy{Grants: []Grant{grant("a", []string{"*"}, OpSign), grant("a", []string{"*"}, OpVerify)}},
			want: []string{`policy.grants[1].keys[0]: identity "a" is already granted key "*" at policy.grants[0].keys[0]`},
		},
		{
			name: "jwt without sign_jwt",
			p: Policy{Grants: []Grant{{
				Identity: "a", Keys: []string{"alpha"}, Operations: []Op{OpSign},
				JWT: &JWTRules{MaxTTL: time.Minute},
			}}},
			want: []string{`policy.grants[0].jwt: only allowed with operation sign_jwt`},
		},
		{
			name: "invalid subject",
			p: Policy{Grants: []Grant{
				grant("a", []string{"alpha"}, OpVerify), grant("b", []string{"alpha"}, OpVerify), grant("c", []string{"alpha"}, OpVerify),
				jwtGrant(JWTRules{Subject: `user-(`, MaxTTL: time.Minute}),
			}},
			want: []string{`policy.grants[3].jwt.subject: invalid regexp: `},
		},
		{
			name: "subject escaping the anchors",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{Subject: `a)|(b`, MaxTTL: time.Minute})}},
			want: []string{`policy.grants[0].jwt.subject: invalid regexp: `},
		},
		{
			name: "max_ttl missing",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{})}},
			want: []string{`policy.grants[0].jwt.max_ttl: must be > 0`},
		},
		{
			name: "max_ttl negative",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: -time.Minute})}},
			want: []string{`policy.grants[0].jwt.max_ttl: must be > 0`},
		},
		{
			name: "max_ttl a bare number",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: 300})}},
			want: []string{`policy.grants[0].jwt.max_ttl: 300ns is less than 1s`},
		},
		{
			name: "max_ttl over a year",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: 400 * 24 * time.Hour, DefaultTTL: 399 * 24 * time.Hour})}},
			want: []string{`policy.grants[0].jwt.max_ttl: 9600h0m0s is more than a year (8760h0m0s)`},
		},
		{
			name: "default_ttl above max_ttl",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: time.Minute, DefaultTTL: time.Hour})}},
			want: []string{`policy.grants[0].jwt.default_ttl: 1h0m0s exceeds max_ttl 1m0s`},
		},
		{
			name: "default_ttl negative",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: time.Minute, DefaultTTL: -1})}},
			want: []string{`policy.grants[0].jwt.default_ttl: must not be negative`},
		},
		{
			name: "default_ttl a bare number",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: time.Minute, DefaultTTL: 30})}},
			want: []string{`policy.grants[0].jwt.default_ttl: 30ns is less than 1s`},
		},
		{
			name: "bad audiences",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: time.Minute, Audiences: []string{"api", "", "api"}})}},
			want: []string{
				`policy.grants[0].jwt.audiences[1]: empty`,
				`policy.grants[0].jwt.audiences[2]: duplicate of policy.grants[0].jwt.audiences[0]`,
			},
		},
		{
			name: "bad forbidden claims",
			p:    Policy{Grants: []Grant{jwtGrant(JWTRules{MaxTTL: time.Minute, ForbiddenClaims: []string{"", "role", "role"}})}},
			want: []string{
				`policy.grants[0].jwt.forbidden_claims[0]: empty`,
				`policy.grants[0].jwt.forbidden_claims[2]: duplicate of policy.grants[0].jwt.forbidden_claims[1]`,
			},
		},
		{
			name: "bad admins",
			p:    Policy{Admins: []string{"root", "", "root", "*"}},
			want: []string{
				`policy.admins[1]: empty`,
				`policy.admins[2]: duplicate of policy.admins[0]`,
				`policy.admins[3]: identity "*" contains "*"`,
			},
		},
		{
			name: "every problem at once",
			p: Policy{
				Admins: []string{""},
				Grants: []Grant{
					grant("", []string{"foo"}, "sig"),
					{Identity: "a", Keys: []string{"*", "alpha"}, Operations: []Op{OpSign}, JWT: &JWTRules{Subject: "(", DefaultTTL: time.Hour}},
				},
			},
			want: []string{
				`policy.admins[0]: empty`,
				`policy.grants[0].identity: empty`,
				`policy.grants[0].operations[0]: unknown operation "sig"`,
				`policy.grants[0].keys[0]: key "foo" does not exist`,
				`policy.grants[1].keys: "*" must be the only entry`,
				`policy.grants[1].jwt: only allowed with operation sign_jwt`,
				`policy.grants[1].jwt.max_ttl: must be > 0`,
				`policy.grants[1].jwt.default_ttl: 1h0m0s exceeds max_ttl 0s`,
				`policy.grants[1].jwt.subject: invalid regexp`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Compile(tt.p, keyExists)
			if err == nil {
				t.Fatalf("Compile() = %v, nil, want an error containing %q", a, tt.want)
			}
			if a != nil {
				t.Errorf("Compile() = %v, want nil Authorizer with error", a)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Compile() error = %q, want it to contain %q", msg, w)
				}
			}
			// One joined error per problem, one line each.
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) {
				t.Fatalf("Compile() error %T is not joined with errors.Join", err)
			}
			if got := len(joined.Unwrap()); got != len(tt.want) {
				t.Errorf("Compile() reported %d problems, want %d:\n%s", got, len(tt.want), msg)
			}
		})
	}
}

// TestRawSigningOverRules: a key that issues JWTs under jwt rules may not also sign raw data, for any
// identity, "*" included: a raw signature over header.payload would be a token outside the rules.
func TestRawSigningOverRules(t *testing.T) {
	rules := &JWTRules{MaxTTL: time.Minute}
	ruled := func(identity string, keys ...string) Grant {
		return Grant{Identity: identity, Keys: keys, Operations: []Op{OpSignJWT, OpVerifyJWT}, JWT: rules}
	}
	raw := func(identity string, keys ...string) Grant {
		return Grant{Identity: identity, Keys: keys, Operations: []Op{OpSign, OpVerify}}
	}
	tests := []struct {
		name   string
		grants []Grant
		want   string // "" when the policy is fine
	}{
		{"raw signer of an issuer's key", []Grant{ruled("issuer", "alpha"), raw("other", "beta", "alpha")},
			`policy.grants[1]: key "alpha" may sign raw data (policy.grants[1], identity "other") and issues JWTs under the jwt rules of policy.grants[0] (identity "issuer")`},
		{"issuer after the raw signer", []Grant{raw("other", "alpha"), ruled("issuer", "alpha")},
			`policy.grants[1]: key "alpha" may sign raw data (policy.grants[0], identity "other")`},
		{"one grant with both", []Grant{{Identity: "svc", Keys: []string{"alpha"}, Operations: []Op{OpSign, OpSignJWT}, JWT: rules}},
			`policy.grants[0].operations: sign lets "svc" sign any token with key "alpha"`},
		{"raw signer of every key", []Grant{ruled("issuer", "alpha"), raw("other", "*")}, `key "alpha" may sign raw data`},
		{"issuer of every key", []Grant{ruled("issuer", "*"), raw("other", "beta")}, `key "beta" may sign raw data`},
		{"both wildcards", []Grant{ruled("issuer", "*"), raw("other", "*")}, `every key may sign raw data`},
		{"separate keys", []Grant{ruled("issuer", "alpha"), raw("other", "beta"), raw("issuer", "beta")}, ""},
		{"sign_jwt without rules next to sign", []Grant{{Identity: "svc", Keys: []string{"*"}, Operations: Ops()}}, ""},
		{"verifying next to rules", []Grant{ruled("issuer", "alpha"), {Identity: "v", Keys: []string{"*"}, Operations: []Op{OpVerify, OpVerifyJWT, OpPublicKey}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(Policy{Grants: tt.grants}, keyExists)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Compile() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Compile() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidKeyName(t *testing.T) {
	re := regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	for _, name := range []string{
		"", "a", "0", "-", "a-", "-a", "web-1", "Web", "a_b", "a.b", "a b", "é", "*",
		strings.Repeat("a", 63), strings.Repeat("a", 64), "a\n", "\x00",
	} {
		t.Run(name, func(t *testing.T) {
			if got, want := validKeyName(name), re.MatchString(name); got != want {
				t.Errorf("validKeyName(%q) = %v, want %v", name, got, want)
			}
		})
	}
}

func FuzzCompile(f *testing.F) {
	f.Add("root", "spiffe://example.org/api", "alpha", "*", "sign", "sign_jwt", true,
		"https://auth.example.org", "api", "user-[0-9]+", "role", int64(time.Hour), int64(0),
		"spiffe://example.org/api", "alpha", "sign")
	f.Add("", "svc", "*", "", "verify", "", false, "", "", "", "", int64(0), int64(0), "svc", "beta", "verify")
	f.Add("a", "a", "Alpha", "beta", "sig", "sign_jwt", true, "", "", "a)|(b", "", int64(-1), int64(2), "a", "beta", "sign_jwt")
	f.Fuzz(func(t *testing.T, admin, identity, key1, key2, op1, op2 string, withJWT bool,
		issuer, aud, subject, forbidden string, maxTTL, defaultTTL int64,
		probeID, probeKey, probeOp string) {
		g := Grant{Identity: identity, Keys: []string{key1}, Operations: []Op{Op(op1)}}
		if key2 != "" {
			g.Keys = append(g.Keys, key2)
		}
		if op2 != "" {
			g.Operations = append(g.Operations, Op(op2))
		}
		if withJWT {
			g.JWT = &JWTRules{
				Issuer: issuer, Audiences: []string{aud}, Subject: subject,
				MaxTTL: time.Duration(maxTTL), DefaultTTL: time.Duration(defaultTTL),
				ForbiddenClaims: []string{forbidden}, GenerateJTI: len(issuer)%2 == 0,
			}
		}
		p := Policy{Admins: []string{admin}, Grants: []Grant{g}}

		a, err := Compile(p, nil)
		if err != nil {
			if a != nil {
				t.Fatalf("Compile() = %v, %v, want nil Authorizer with an error", a, err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "policy.") {
					t.Fatalf("Compile() error line %q does not start with a field path", line)
				}
			}
			return
		}

		// Arbitrary questions never panic, and only the granted identity,
		// operations and admin get a yes.
		rules, ok := a.Allow(probeID, probeKey, Op(probeOp))
		if ok && (probeID != identity || (probeOp != op1 && probeOp != op2)) {
			t.Fatalf("Allow(%q, %q, %q) = true, want false (policy %+v)", probeID, probeKey, probeOp, p)
		}
		if ok {
			if _, err := rules.CheckClaims(map[string]any{"sub": probeKey, "aud": probeKey}, 0); err != nil && !errors.Is(err, ErrClaimPolicy) {
				t.Fatalf("CheckClaims() error = %v, want errors.Is ErrClaimPolicy", err)
			}
		}
		if got := a.IsAdmin(probeID); got != (probeID == admin) {
			t.Fatalf("IsAdmin(%q) = %v, want %v", probeID, got, probeID == admin)
		}
		visible := a.Visible(probeID, []string{probeKey, key1, key2})
		if len(visible) > 0 && probeID != identity {
			t.Fatalf("Visible(%q) = %q, want nothing", probeID, visible)
		}

		// What was granted is allowed.
		key := key1
		if key == wildcardKey {
			key = "alpha"
		}
		if _, ok := a.Allow(identity, key, Op(op1)); !ok {
			t.Fatalf("Allow(%q, %q, %q) = false, want true (policy %+v)", identity, key, op1, p)
		}
	})
}
