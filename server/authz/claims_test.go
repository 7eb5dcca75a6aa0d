package authz

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testRules are rules as Compile would build them from a full jwt section.
func testRules() *Rules {
	return &Rules{
		Issuer:          "https://auth.example.org",
		Audiences:       []string{"api", "web"},
		Subject:         regexp.MustCompile(`^(?:user-[0-9]+)$`),
		MaxTTL:          time.Hour,
		DefaultTTL:      5 * time.Minute,
		ForbiddenClaims: []string{"admin", "role"},
		GenerateJTI:     true,
	}
}

func TestCheckClaims(t *testing.T) {
	full := testRules()
	open := &Rules{MaxTTL: time.Hour, DefaultTTL: time.Hour}
	tests := []struct {
		name    string
		rules   *Rules
		claims  string // JSON object
		ttl     time.Duration
		want    time.Duration
		wantErr string // substring naming the rule; "" for success
	}{
		{name: "conforming", rules: full, claims: `{"sub":"user-42","aud":"api","iss":"https://auth.example.org","scope":"read"}`, ttl: 10 * time.Minute, want: 10 * time.Minute},
		{name: "aud array", rules: full, claims: `{"sub":"user-42","aud":["api","web"]}`, want: 5 * time.Minute},
		{name: "default ttl", rules: full, claims: `{"sub":"user-1"}`, want: 5 * time.Minute},
		{name: "max ttl", rules: full, claims: `{"sub":"user-1"}`, ttl: time.Hour, want: time.Hour},
		{name: "ttl above max", rules: full, claims: `{"sub":"user-1"}`, ttl: time.Hour + time.Second, wantErr: "exceeds jwt.max_ttl"},
		{name: "negative ttl", rules: full, claims: `{"sub":"user-1"}`, ttl: -time.Second, wantErr: "negative"},
		{name: "iat", rules: full, claims: `{"sub":"user-1","iat":1}`, wantErr: `claim "iat" is set by signerd`},
		{name: "nbf", rules: full, claims: `{"sub":"user-1","nbf":1}`, wantErr: `claim "nbf" is set by signerd`},
		{name: "exp", rules: full, claims: `{"sub":"user-1","exp":1}`, wantErr: `claim "exp" is set by signerd`},
		{name: "exp without rules", rules: nil, claims: `{"exp":1}`, wantErr: `claim "exp" is set by signerd`},
		{name: "jti with generate_jti", rules: full, claims: `{"sub":"user-1","jti":"x"}`, wantErr: "jwt.generate_jti"},
		{name: "jti without generate_jti", rules: open, claims: `{"jti":"x"}`, want: time.Hour},
		{name: "forbidden claim", rules: full, claims: `{"sub":"user-1","role":"admin"}`, wantErr: `claim "role" is in jwt.forbidden_claims`},
		{name: "forbidden null claim", rules: full, claims: `{"sub":"user-1","admin":null}`, wantErr: `claim "admin" is in jwt.forbidden_claims`},
		{name: "iss differs", rules: full, claims: `{"sub":"user-1","iss":"https://evil.example.org"}`, wantErr: "differs from jwt.issuer"},
		{name: "iss not a string", rules: full, claims: `{"sub":"user-1","iss":1}`, wantErr: `claim "iss" must be a string`},
		{name: "iss refused without issuer", rules: open, claims: `{"iss":"anyone"}`, wantErr: "no jwt.issuer"},
		{name: "aud not allowed", rules: full, claims: `{"sub":"user-1","aud":"admin"}`, wantErr: `claim "aud" value "admin" is not in jwt.audiences`},
		{name: "aud array with one bad", rules: full, claims: `{"sub":"user-1","aud":["api","admin"]}`, wantErr: `"admin" is not in jwt.audiences`},
		{name: "aud empty array", rules: full, claims: `{"sub":"user-1","aud":[]}`, wantErr: "empty array"},
		{name: "aud not strings", rules: full, claims: `{"sub":"user-1","aud":["api",1]}`, wantErr: "must be a string or an array of strings"},
		{name: "aud object", rules: full, claims: `{"sub":"user-1","aud":{"a":1}}`, wantErr: "must be a string or an array of strings"},
		{name: "aud without audiences", rules: open, claims: `{"aud":"api"}`, wantErr: "jwt.audiences is empty"},
		{name: "sub mismatch", rules: full, claims: `{"sub":"user-1x"}`, wantErr: `claim "sub" "user-1x" does not match jwt.subject`},
		{name: "sub anchored", rules: full, claims: `{"sub":"xuser-1"}`, wantErr: "does not match jwt.subject"},
		{name: "sub not a string", rules: full, claims: `{"sub":42}`, wantErr: `claim "sub" must be a string`},
		{name: "sub missing", rules: full, claims: `{}`, wantErr: `claim "sub" is required by jwt.subject`},
		{name: "sub missing allowed", rules: open, claims: `{}`, want: time.Hour},
		{name: "sub any", rules: open, claims: `{"sub":"whatever"}`, want: time.Hour},
		{name: "sub not a string without pattern", rules: open, claims: `{"sub":false}`, wantErr: `claim "sub" must be a string`},
		{name: "nil rules default", rules: nil, claims: `{"sub":"x"}`, want: DefaultMaxTTL},
		{name: "nil rules above default max", rules: nil, claims: `{}`, ttl: DefaultMaxTTL + 1, wantErr: "exceeds jwt.max_ttl"},
		{name: "nil rules aud", rules: nil, claims: `{"aud":"api"}`, wantErr: "jwt.audiences is empty"},
		{name: "null claims", rules: open, claims: `null`, want: time.Hour},
		{name: "hand-built rules without ttl", rules: &Rules{}, claims: `{}`, wantErr: "jwt.max_ttl is not set"},
		{name: "long value shortened", rules: full, claims: `{"sub":"` + strings.Repeat("é", 100) + `"}`, wantErr: `"... does not match`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var claims map[string]any
			if err := json.Unmarshal([]byte(tt.claims), &claims); err != nil {
				t.Fatalf("json.Unmarshal(%s): %v", tt.claims, err)
			}
			got, err := tt.rules.CheckClaims(claims, tt.ttl)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Errorf("CheckClaims(%s, %v) = %v, %v, want %v, nil", tt.claims, tt.ttl, got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckClaims(%s, %v) = %v, %v, want error containing %q", tt.claims, tt.ttl, got, err, tt.wantErr)
			}
			if !errors.Is(err, ErrClaimPolicy) {
				t.Errorf("CheckClaims(%s, %v) error = %v, want errors.Is ErrClaimPolicy", tt.claims, tt.ttl, err)
			}
			if got != 0 {
				t.Errorf("CheckClaims(%s, %v) ttl = %v with error, want 0", tt.claims, tt.ttl, got)
			}
		})
	}
}

func TestCheckClaimsGoSlices(t *testing.T) {
	r := testRules()
	for _, tt := range []struct {
		name string
		aud  any
		ok   bool
	}{
		{name: "allowed", aud: []string{"api", "web"}, ok: true},
		{name: "one bad", aud: []string{"api", "evil"}, ok: false},
		{name: "empty", aud: []string{}, ok: false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.CheckClaims(map[string]any{"sub": "user-1", "aud": tt.aud}, 0)
			if (err == nil) != tt.ok {
				t.Errorf("CheckClaims(aud %q) error = %v, want ok %v", tt.aud, err, tt.ok)
			}
		})
	}
}

func TestCheckClaimsFromCompile(t *testing.T) {
	a := compiled(t)
	r, ok := a.Allow("spiffe://example.org/api", "alpha", OpSignJWT)
	if !ok {
		t.Fatalf("Allow() = %v, want true", ok)
	}
	// "iss" is listed in forbidden_claims: even the configured issuer is
	// refused then.
	for _, tt := range []struct {
		claims  map[string]any
		wantErr bool
	}{
		{claims: map[string]any{"sub": "user-7", "aud": "web"}},
		{claims: map[string]any{"sub": "user-7", "iss": "https://auth.example.org"}, wantErr: true},
		{claims: map[string]any{"sub": "user-7", "role": "x"}, wantErr: true},
	} {
		_, err := r.CheckClaims(tt.claims, 0)
		if (err != nil) != tt.wantErr {
			t.Errorf("CheckClaims(%v) error = %v, want error %v", tt.claims, err, tt.wantErr)
		}
	}
}

func FuzzCheckClaims(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `{"sub":"user-1","aud":"api"}`, `{"aud":["api",1,null]}`, `{"iss":"x","exp":1}`,
		`{"sub":null}`, `{"aud":[]}`, `{"role":{"nested":[1,2]}}`, `{"jti":"a","sub":"user-0"}`,
	} {
		f.Add([]byte(s), int64(0), "user-[0-9]+", true)
	}
	f.Add([]byte(`{"sub":"x"}`), int64(-1), "", false)
	f.Add([]byte(`{"sub":"x"}`), int64(time.Hour+1), "(", false)
	f.Fuzz(func(t *testing.T, data []byte, ttl int64, subject string, rich bool) {
		var claims map[string]any
		if err := json.Unmarshal(data, &claims); err != nil {
			return
		}
		rules := []*Rules{nil, testRules(), {MaxTTL: time.Hour}}
		if rich {
			if _, err := regexp.Compile(subject); err == nil {
				if anchored, err := regexp.Compile(`^(?:` + subject + `)$`); err == nil {
					rules = append(rules, &Rules{Subject: anchored, MaxTTL: time.Minute, Audiences: []string{subject}, ForbiddenClaims: []string{subject}})
				}
			}
		}
		for _, r := range rules {
			got, err := r.CheckClaims(claims, time.Duration(ttl))
			if err != nil {
				if !errors.Is(err, ErrClaimPolicy) {
					t.Fatalf("CheckClaims() error = %v, want errors.Is ErrClaimPolicy", err)
				}
				if got != 0 {
					t.Fatalf("CheckClaims() = %v, %v, want 0 with an error", got, err)
				}
				continue
			}
			max := DefaultMaxTTL
			if r != nil {
				max = r.MaxTTL
			}
			if got <= 0 || got > max {
				t.Fatalf("CheckClaims(ttl %v) = %v, want in (0, %v]", time.Duration(ttl), got, max)
			}
			for _, c := range reservedClaims {
				if _, set := claims[c]; set {
					t.Fatalf("CheckClaims() accepted reserved claim %q", c)
				}
			}
		}
	})
}
