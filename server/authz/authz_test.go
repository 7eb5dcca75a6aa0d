package authz

import (
	"slices"
	"testing"
	"time"
)

// compiled compiles validPolicy or fails the test.
func compiled(tb testing.TB) *Authorizer {
	tb.Helper()
	a, err := Compile(validPolicy(), keyExists)
	if err != nil {
		tb.Fatalf("Compile(validPolicy()) error = %v", err)
	}
	return a
}

func TestOps(t *testing.T) {
	ops := Ops()
	if len(ops) != 5 {
		t.Fatalf("Ops() = %v, want 5 operations", ops)
	}
	seen := opSet(0)
	for _, op := range ops {
		bit := op.bit()
		if bit == 0 || seen&bit != 0 {
			t.Errorf("Ops() entry %q has bit %b, want a distinct non-zero bit", op, bit)
		}
		seen |= bit
	}
	ops[0] = "changed"
	if Ops()[0] != OpSign {
		t.Errorf("Ops() returned a shared slice")
	}
}

func TestAllow(t *testing.T) {
	a := compiled(t)
	api := "spiffe://example.org/api"
	tests := []struct {
		name      string
		identity  string
		key       string
		op        Op
		want      bool
		wantRules string // Issuer of the returned rules, "-" for nil
	}{
		{name: "exact grant", identity: api, key: "alpha", op: OpPublicKey, want: true, wantRules: "https://auth.example.org"},
		{name: "exact grant sign_jwt", identity: api, key: "beta", op: OpSignJWT, want: true, wantRules: "https://auth.example.org"},
		{name: "exact before wildcard", identity: api, key: "alpha", op: OpSignJWT, want: true, wantRules: "https://auth.example.org"},
		{name: "wildcard fills in op", identity: api, key: "alpha", op: OpVerify, want: true, wantRules: ""},
		{name: "wildcard grant", identity: api, key: "gamma", op: OpSignJWT, want: true, wantRules: ""},
		{name: "wildcard does not widen ops", identity: api, key: "gamma", op: OpSign, want: false, wantRules: "-"},
		{name: "wildcard without jwt", identity: "verifier.example.org", key: "anything", op: OpPublicKey, want: true, wantRules: "-"},
		{name: "wildcard needs a valid key name", identity: "verifier.example.org", key: "../etc", op: OpVerify, want: false, wantRules: "-"},
		{name: "wildcard does not match empty key", identity: "verifier.example.org", key: "", op: OpVerify, want: false, wantRules: "-"},
		{name: "wildcard does not match star", identity: "verifier.example.org", key: "*", op: OpVerify, want: false, wantRules: "-"},
		{name: "sign_jwt without jwt rules", identity: "signer", key: "web-1", op: OpSignJWT, want: true, wantRules: "-"},
		{name: "op not granted", identity: "signer", key: "web-1", op: OpSign, want: false, wantRules: "-"},
		{name: "unknown key", identity: "signer", key: "alpha", op: OpSignJWT, want: false, wantRules: "-"},
		{name: "unknown identity", identity: "spiffe://example.org/evil", key: "alpha", op: OpSign, want: false, wantRules: "-"},
		{name: "admin has no grants", identity: "spiffe://example.org/admin", key: "alpha", op: OpSign, want: false, wantRules: "-"},
		{name: "empty identity", identity: "", key: "alpha", op: OpSign, want: false, wantRules: "-"},
		{name: "unknown op", identity: api, key: "alpha", op: "sig", want: false, wantRules: "-"},
		{name: "empty op", identity: api, key: "alpha", op: "", want: false, wantRules: "-"},
		{name: "identity is exact", identity: api + "/", key: "alpha", op: OpSign, want: false, wantRules: "-"},
		{name: "key is exact", identity: "signer", key: "WEB-1", op: OpSignJWT, want: false, wantRules: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, got := a.Allow(tt.identity, tt.key, tt.op)
			if got != tt.want {
				t.Errorf("Allow(%q, %q, %q) = %v, want %v", tt.identity, tt.key, tt.op, got, tt.want)
			}
			gotRules := "-"
			if rules != nil {
				gotRules = rules.Issuer
			}
			if gotRules != tt.wantRules {
				t.Errorf("Allow(%q, %q, %q) rules issuer = %q, want %q", tt.identity, tt.key, tt.op, gotRules, tt.wantRules)
			}
		})
	}
}

func TestDenyByDefault(t *testing.T) {
	for _, tt := range []struct {
		name string
		a    *Authorizer
	}{
		{name: "nil", a: nil},
		{name: "zero", a: &Authorizer{}},
		{name: "empty policy", a: func() *Authorizer {
			a, err := Compile(Policy{}, nil)
			if err != nil {
				t.Fatalf("Compile(Policy{}) error = %v", err)
			}
			return a
		}()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, op := range Ops() {
				if _, ok := tt.a.Allow("spiffe://example.org/api", "alpha", op); ok {
					t.Errorf("Allow(%q) = %v, want %v", op, ok, false)
				}
			}
			if got := tt.a.Visible("spiffe://example.org/api", []string{"alpha"}); got != nil {
				t.Errorf("Visible() = %q, want nil", got)
			}
			if tt.a.IsAdmin("spiffe://example.org/admin") {
				t.Errorf("IsAdmin() = true, want false")
			}
		})
	}
}

func TestVisible(t *testing.T) {
	a := compiled(t)
	names := []string{"gamma", "web-1", "beta", "alpha", "beta", "Bad_Name"}
	orig := slices.Clone(names)
	tests := []struct {
		name     string
		identity string
		want     []string
	}{
		{name: "exact and wildcard", identity: "spiffe://example.org/api", want: []string{"alpha", "beta", "gamma", "web-1"}},
		{name: "exact only", identity: "signer", want: []string{"web-1"}},
		{name: "unknown identity", identity: "nobody", want: nil},
		{name: "admin without grants", identity: "spiffe://example.org/admin", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.Visible(tt.identity, names); !slices.Equal(got, tt.want) {
				t.Errorf("Visible(%q) = %q, want %q", tt.identity, got, tt.want)
			}
			if !slices.Equal(names, orig) {
				t.Errorf("Visible(%q) modified names: %q, want %q", tt.identity, names, orig)
			}
		})
	}
	if got := a.Visible("signer", []string{"alpha"}); got != nil {
		t.Errorf("Visible(%q) = %q, want nil", "signer", got)
	}
}

func TestIsAdmin(t *testing.T) {
	a := compiled(t)
	tests := []struct {
		identity string
		want     bool
	}{
		{identity: "spiffe://example.org/admin", want: true},
		{identity: "spiffe://example.org/api", want: false},
		{identity: "spiffe://example.org/admin/", want: false},
		{identity: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.identity, func(t *testing.T) {
			if got := a.IsAdmin(tt.identity); got != tt.want {
				t.Errorf("IsAdmin(%q) = %v, want %v", tt.identity, got, tt.want)
			}
		})
	}
}

// AllowsSome(identity, op) holds exactly when Allow(identity, key, op) does for some key: one the
// policy names, or any other through a "*" grant.
func TestAllowsSome(t *testing.T) {
	a := compiled(t)
	identities := []string{"spiffe://example.org/admin", "nobody"}
	keys := []string{"some-other-key"}
	for _, g := range validPolicy().Grants {
		identities = append(identities, g.Identity)
		keys = append(keys, g.Keys...)
	}
	for _, id := range identities {
		for _, op := range append(Ops(), Op("bogus")) {
			want := slices.ContainsFunc(keys, func(k string) bool { _, ok := a.Allow(id, k, op); return ok })
			if got := a.AllowsSome(id, op); got != want {
				t.Errorf("AllowsSome(%q, %q) = %v, want %v", id, op, got, want)
			}
		}
	}
	var none *Authorizer
	if none.AllowsSome("signer", OpSign) {
		t.Error("nil Authorizer AllowsSome = true, want false")
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	a := compiled(t)
	allocs := testing.AllocsPerRun(100, func() {
		a.Allow("spiffe://example.org/api", "gamma", OpSignJWT)
		a.Allow("spiffe://example.org/api", "alpha", OpPublicKey)
		a.Allow("nobody", "alpha", OpSign)
	})
	if allocs != 0 {
		t.Errorf("Allow allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkAllow(b *testing.B) {
	a := compiled(b)
	for _, bb := range []struct {
		name          string
		identity, key string
		op            Op
	}{
		{name: "exact", identity: "spiffe://example.org/api", key: "alpha", op: OpSignJWT},
		{name: "wildcard", identity: "spiffe://example.org/api", key: "gamma", op: OpVerify},
		{name: "deny", identity: "spiffe://example.org/evil", key: "alpha", op: OpSign},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				a.Allow(bb.identity, bb.key, bb.op)
			}
		})
	}
}

func TestMaxTTL(t *testing.T) {
	a, err := Compile(Policy{Grants: []Grant{
		{Identity: "a", Keys: []string{"k"}, Operations: []Op{OpSignJWT}, JWT: &JWTRules{MaxTTL: 10 * time.Minute}},
		{Identity: "b", Keys: []string{"*"}, Operations: []Op{OpSignJWT}},
		{Identity: "c", Keys: []string{"other"}, Operations: []Op{OpSign}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]time.Duration{"k": 10 * time.Minute, "other": DefaultMaxTTL, "Bad_Name": 0} {
		if got := a.MaxTTL(key); got != want {
			t.Errorf("MaxTTL(%q) = %v, want %v", key, got, want)
		}
	}
}
