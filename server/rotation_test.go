package server

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/keyring/keyringtest"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	"github.com/signerd/signerd/server/authz"
	"github.com/signerd/signerd/server/wellknown"
)

// clock is an injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// rotationServer is a server over software keys with an injected clock, and callers' contexts.
type rotationServer struct {
	*Server
	ring               *keyring.Ring
	store              *keyringtest.MemoryStore
	svc, signer, admin context.Context
}

func newRotationServer(t testing.TB, clk *clock) *rotationServer {
	t.Helper()
	store := keyringtest.NewMemoryStore()
	ring, err := keyring.Open(store, keyring.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	// svc issues and verifies tokens with keys k and n (under jwt rules, so they may not sign raw data); signer
	// signs raw data with key r.
	policy, err := authz.Compile(authz.Policy{Admins: []string{"ops"}, Grants: []authz.Grant{
		{Identity: "svc", Keys: []string{"k", "n"}, Operations: []authz.Op{authz.OpVerify, authz.OpPublicKey, authz.OpSignJWT, authz.OpVerifyJWT},
			JWT: &authz.JWTRules{MaxTTL: 2 * time.Hour}},
		{Identity: "signer", Keys: []string{"r"}, Operations: []authz.Op{authz.OpSign, authz.OpVerify, authz.OpPublicKey}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := audit.New(io.Discard)
	t.Cleanup(func() { _ = log.Close() })
	s, err := New(Config{Keys: ring, Manager: ring, Policy: policy, MaxInFlight: 2, Audit: log, Now: clk.Now, Leeway: 30 * time.Second,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &rotationServer{Server: s, ring: ring, store: store,
		svc:    context.WithValue(context.Background(), identityKey{}, "svc"),
		signer: context.WithValue(context.Background(), identityKey{}, "signer"),
		admin:  context.WithValue(context.Background(), identityKey{}, "ops")}
}

func (r *rotationServer) token(t testing.TB, ttl time.Duration) (string, string) {
	t.Helper()
	resp, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{"sub":"x"}`, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		t.Fatalf("SignJWT = %v", err)
	}
	return resp.GetToken(), resp.GetKid()
}

func (r *rotationServer) verifies(tok string) error {
	_, err := r.VerifyJWT(r.svc, &signerv1.VerifyJWTRequest{Token: tok})
	return err
}

func (r *rotationServer) jwksKids() map[string]bool {
	out := map[string]bool{}
	for _, k := range wellknown.JWKS(r.ring.Snapshot()).Keys {
		out[k.Kid] = true
	}
	return out
}

// TestStagedRotationWalk walks one key through a whole staged rotation with an injected clock and checks,
// at each phase, the JWKS, the kid that signs, and which tokens verify.
func TestStagedRotationWalk(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	clk := &clock{t: t0}
	r := newRotationServer(t, clk)
	settings := keyring.Settings{Prepublish: keyring.Duration(10 * time.Minute), Grace: keyring.Duration(time.Hour)}
	k, err := r.ring.Create("k", jose.ES256, 0, settings)
	if err != nil {
		t.Fatal(err)
	}
	v1 := k.Active.Kid
	old, kid := r.token(t, 90*time.Minute) // outlives the grace on purpose, to see grace end it
	if kid != v1 {
		t.Fatalf("first token kid %s, want v1 %s", kid, v1)
	}

	// t0+1m: staged rotation. v2 is published, v1 still signs.
	clk.Set(t0.Add(time.Minute))
	rot, err := (&adminServer{s: r.Server}).RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "k"})
	if err != nil {
		t.Fatalf("RotateKey = %v", err)
	}
	v2 := rot.GetVersion().GetKid()
	if rot.GetVersion().GetState() != signerv1.VersionState_VERSION_STATE_PENDING || !rot.GetVersion().GetActivateAt().AsTime().Equal(t0.Add(11*time.Minute)) {
		t.Fatalf("new version = %v, want pending until t0+11m", rot.GetVersion())
	}
	if next := r.ring.Snapshot().NextTransition(); !next.Equal(t0.Add(11 * time.Minute)) {
		t.Errorf("NextTransition = %v, want t0+11m", next)
	}
	for _, at := range []time.Duration{time.Minute, 5 * time.Minute, 11*time.Minute - time.Second} {
		clk.Set(t0.Add(at))
		if err := r.ring.Refresh(); err != nil {
			t.Fatal(err)
		}
		if kids := r.jwksKids(); !kids[v1] || !kids[v2] || len(kids) != 2 {
			t.Errorf("t0+%v: JWKS %v, want v1 and v2 (v2 prepublished)", at, kids)
		}
		if _, kid := r.token(t, time.Minute); kid != v1 {
			t.Errorf("t0+%v: signing kid %s, want v1 (v2 still pending)", at, kid)
		}
	}

	// t0+11m: v2 activates, v1 retires; both still published; old tokens verify.
	clk.Set(t0.Add(11 * time.Minute))
	if err := r.ring.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, kid := r.token(t, time.Minute); kid != v2 {
		t.Errorf("t0+11m: signing kid %s, want v2", kid)
	}
	if kids := r.jwksKids(); !kids[v1] || !kids[v2] {
		t.Errorf("t0+11m: JWKS %v, want v1 (retired, in grace) and v2", kids)
	}
	if err := r.verifies(old); err != nil {
		t.Errorf("t0+11m: token from v1 = %v, want it to verify during grace", err)
	}
	if next := r.ring.Snapshot().NextTransition(); !next.Equal(t0.Add(71 * time.Minute)) {
		t.Errorf("NextTransition = %v, want v1's grace end t0+1h11m", next)
	}

	// Just before the grace ends v1 tokens verify; at its end they do not, and v1 leaves the JWKS.
	clk.Set(t0.Add(71*time.Minute - time.Second))
	_ = r.ring.Refresh()
	if err := r.verifies(old); err != nil {
		t.Errorf("t0+1h11m-1s: token from v1 = %v, want valid", err)
	}
	clk.Set(t0.Add(71 * time.Minute))
	_ = r.ring.Refresh()
	if err := r.verifies(old); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "unknown kid") {
		t.Errorf("t0+1h11m: token from v1 = %v, want refused (grace over)", err)
	}
	if kids := r.jwksKids(); kids[v1] || !kids[v2] || len(kids) != 1 {
		t.Errorf("t0+1h11m: JWKS %v, want only v2", kids)
	}

	// The daemon then destroys v1 in the token; the record keeps its kid as destroyed.
	done, err := r.ring.DestroyExpired()
	if err != nil || len(done) != 1 || done[0].Key != "k" || done[0].Number != 1 || done[0].Kid != v1 {
		t.Fatalf("DestroyExpired = %+v, %v; want k version 1 (%s)", done, err, v1)
	}
	kk, _ := r.ring.Snapshot().Key("k")
	if kk.Versions[0].State != keyring.Destroyed || kk.Versions[0].Kid != v1 {
		t.Errorf("v1 after destroy: %s kid %s, want destroyed with its kid kept", kk.Versions[0].State, kk.Versions[0].Kid)
	}
	if _, err := r.store.Load(jose.ES256, 0, kk.Versions[0].ID); err == nil {
		t.Error("v1's key pair is still in the store after destroy")
	}
}

// TestEmergencyRotation revokes the old version at once: its tokens are refused (even ones verified
// before and cached), it leaves the JWKS, and it never signs again.
func TestEmergencyRotation(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	clk := &clock{t: t0}
	r := newRotationServer(t, clk)
	for _, name := range []string{"k", "r"} {
		if _, err := r.ring.Create(name, jose.ES256, 0, keyring.DefaultSettings()); err != nil {
			t.Fatal(err)
		}
	}
	old, v1 := r.token(t, 30*time.Minute)
	if err := r.verifies(old); err != nil { // now in the verified-token cache
		t.Fatal(err)
	}
	raw, err := r.Sign(r.signer, &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}})
	if err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(time.Minute))
	rot, err := (&adminServer{s: r.Server}).RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "k", Emergency: true})
	if err != nil {
		t.Fatalf("RotateKey(emergency) = %v", err)
	}
	if _, err := (&adminServer{s: r.Server}).RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "r", Emergency: true}); err != nil {
		t.Fatalf("RotateKey(r, emergency) = %v", err)
	}
	v2 := rot.GetVersion().GetKid()
	if rot.GetVersion().GetState() != signerv1.VersionState_VERSION_STATE_ACTIVE {
		t.Errorf("emergency version state %v, want active at once", rot.GetVersion().GetState())
	}
	if err := r.verifies(old); status.Code(err) != codes.Unauthenticated {
		t.Errorf("VerifyJWT(token from revoked v1) = %v, want refused", err)
	}
	v, err := r.Verify(r.signer, &signerv1.VerifyRequest{Key: "r", Input: &signerv1.VerifyRequest_Message{Message: []byte("m")}, Signature: raw.GetSignature()})
	if err != nil || v.GetValid() {
		t.Errorf("Verify(signature from revoked v1) = %v, %v; want valid=false", v, err)
	}
	if kids := r.jwksKids(); kids[v1] || !kids[v2] {
		t.Errorf("JWKS after emergency rotation %v, want v2 only", kids)
	}
	if _, kid := r.token(t, time.Minute); kid != v2 {
		t.Errorf("signing kid after emergency rotation %s, want %s", kid, v2)
	}
	// Revoking the active version leaves the key unable to sign rather than reviving v1.
	if _, err := (&adminServer{s: r.Server}).RevokeVersion(r.admin, &signerv1.RevokeVersionRequest{Key: "k", Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{}`}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("SignJWT with every version revoked = %v, want FailedPrecondition", err)
	}
}

// TestKeyAdminRefusals checks KeyAdmin's answers to non-admins and to bad requests.
func TestKeyAdminRefusals(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	r := newRotationServer(t, clk)
	r.minPrepublish = 5 * time.Minute
	a := &adminServer{s: r.Server}
	if _, err := r.ring.Create("k", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"non-admin create", func() error {
			_, err := a.CreateKey(r.svc, &signerv1.CreateKeyRequest{Name: "n", Alg: "ES256"})
			return err
		}, codes.PermissionDenied},
		{"non-admin rotate", func() error { _, err := a.RotateKey(r.svc, &signerv1.RotateKeyRequest{Key: "k"}); return err }, codes.PermissionDenied},
		{"non-admin list", func() error { _, err := a.ListKeys(r.svc, &signerv1.ListKeysRequest{}); return err }, codes.PermissionDenied},
		{"create exists", func() error {
			_, err := a.CreateKey(r.admin, &signerv1.CreateKeyRequest{Name: "k", Alg: "ES256"})
			return err
		}, codes.AlreadyExists},
		{"create bad alg", func() error {
			_, err := a.CreateKey(r.admin, &signerv1.CreateKeyRequest{Name: "n", Alg: "HS256"})
			return err
		}, codes.InvalidArgument},
		{"create bad name", func() error {
			_, err := a.CreateKey(r.admin, &signerv1.CreateKeyRequest{Name: "N_", Alg: "ES256"})
			return err
		}, codes.InvalidArgument},
		{"create grace shorter than max TTL", func() error {
			_, err := a.CreateKey(r.admin, &signerv1.CreateKeyRequest{Name: "n", Alg: "ES256",
				Settings: &signerv1.KeySettings{Grace: durationpb.New(time.Minute)}})
			return err
		}, codes.InvalidArgument},
		{"create prepublish shorter than JWKS max-age", func() error {
			_, err := a.CreateKey(r.admin, &signerv1.CreateKeyRequest{Name: "n", Alg: "ES256",
				Settings: &signerv1.KeySettings{Prepublish: durationpb.New(time.Minute)}})
			return err
		}, codes.InvalidArgument},
		{"rotate unknown key", func() error { _, err := a.RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "nope"}); return err }, codes.NotFound},
		{"rotate bad name", func() error {
			_, err := a.RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "BAD/../" + strings.Repeat("x", 1000)})
			return err
		}, codes.InvalidArgument},
		{"revoke bad name", func() error {
			_, err := a.RevokeVersion(r.admin, &signerv1.RevokeVersionRequest{Key: "UPPER", Version: 1})
			return err
		}, codes.InvalidArgument},
		{"destroy bad name", func() error {
			_, err := a.DestroyVersion(r.admin, &signerv1.DestroyVersionRequest{Key: "a b", Version: 1})
			return err
		}, codes.InvalidArgument},
		{"destroy active", func() error {
			_, err := a.DestroyVersion(r.admin, &signerv1.DestroyVersionRequest{Key: "k", Version: 1})
			return err
		}, codes.FailedPrecondition},
		{"revoke missing version", func() error {
			_, err := a.RevokeVersion(r.admin, &signerv1.RevokeVersionRequest{Key: "k", Version: 9})
			return err
		}, codes.NotFound},
		{"revoke version 0", func() error {
			_, err := a.RevokeVersion(r.admin, &signerv1.RevokeVersionRequest{Key: "k", Version: 0})
			return err
		}, codes.InvalidArgument},
		{"second staged rotation while one is pending", func() error {
			if _, err := a.RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "k"}); err != nil {
				return err
			}
			_, err := a.RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "k"})
			return err
		}, codes.FailedPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != tc.want {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			}
		})
	}
	list, err := a.ListKeys(r.admin, &signerv1.ListKeysRequest{})
	if err != nil || len(list.GetKeys()) != 1 || len(list.GetKeys()[0].GetVersions()) != 2 {
		t.Errorf("admin ListKeys = %v, %v; want k with 2 versions", list, err)
	}
}
