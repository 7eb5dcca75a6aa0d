package server

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// KeyManager changes keys in the token. *keyring.Ring implements it.
type KeyManager interface {
	Create(name string, alg jose.Algorithm, bits int, settings keyring.Settings) (*keyring.Key, error)
	Rotate(name string, emergency bool) (*keyring.Key, *keyring.Version, error)
	Revoke(name string, n int) (*keyring.Key, error)
	Destroy(name string, n int) (*keyring.Key, error)
}

// Audit operation names of the KeyAdmin service.
const (
	opCreateKey      = "admin.create_key"
	opRotateKey      = "admin.rotate_key"
	opRevokeVersion  = "admin.revoke_version"
	opDestroyVersion = "admin.destroy_version"
	opAdminListKeys  = "admin.list_keys"
)

// adminServer implements signer.v1.KeyAdmin for identities the policy marks as admins.
//
// Like signing, every key change is refused while the audit trail cannot be written (auditStart): a
// change with no record of who made it is what the trail exists to prevent. An administrator who must
// revoke a version then does it with 'signerd keys revoke' on the token, whose output is the record.
type adminServer struct {
	signerv1.UnimplementedKeyAdminServer
	s *Server
}

// RegisterAdmin adds the KeyAdmin service to g. It needs Config.Manager.
func (s *Server) RegisterAdmin(g *grpc.Server) error {
	if s.manager == nil {
		return errors.New("server: KeyAdmin needs a KeyManager")
	}
	signerv1.RegisterKeyAdminServer(g, &adminServer{s: s})
	return nil
}

// admin checks that the caller is an administrator.
func (a *adminServer) admin(ctx context.Context) error {
	if id := identity(ctx); !a.s.policy.Load().IsAdmin(id) {
		return permissionDenied("identity %q is not an administrator", id)
	}
	return nil
}

// CreateKey implements signer.v1.KeyAdmin.
func (a *adminServer) CreateKey(ctx context.Context, req *signerv1.CreateKeyRequest) (*signerv1.CreateKeyResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: opCreateKey, Key: req.GetName(), Alg: req.GetAlg()}
	resp, err := a.createKey(ctx, req, &ev)
	return resp, a.s.record(&ev, err)
}

func (a *adminServer) createKey(ctx context.Context, req *signerv1.CreateKeyRequest, ev *audit.Event) (*signerv1.CreateKeyResponse, error) {
	if err := a.admin(ctx); err != nil {
		return nil, err
	}
	alg, err := jose.ParseAlgorithm(req.GetAlg())
	if err != nil {
		return nil, invalidArgument("alg: %q is not one of RS256..RS512, PS256..PS512, ES256..ES512, EdDSA", req.GetAlg())
	}
	if !keyring.ValidName(req.GetName()) {
		return nil, invalidArgument("name: %q must match [a-z0-9][a-z0-9-]{0,62}", req.GetName())
	}
	settings, err := a.s.settings(req.GetName(), req.GetSettings())
	if err != nil {
		return nil, err
	}
	if err := a.s.auditStart(ev); err != nil {
		return nil, err
	}
	k, err := a.s.manager.Create(req.GetName(), alg, int(req.GetRsaBits()), settings)
	if err != nil {
		return nil, err
	}
	ev.Kid = k.Versions[0].Kid // a new key has one version
	return &signerv1.CreateKeyResponse{Key: adminKeyInfo(k)}, nil
}

// settings turns the request's settings into keyring settings (defaults for unset fields) and checks
// them against the configuration.
func (s *Server) settings(name string, in *signerv1.KeySettings) (keyring.Settings, error) {
	out := keyring.DefaultSettings()
	if in != nil {
		if d := in.GetPrepublish(); d != nil {
			out.Prepublish = keyring.Duration(d.AsDuration())
		}
		if d := in.GetGrace(); d != nil {
			out.Grace = keyring.Duration(d.AsDuration())
		}
		out.RotationPeriod = keyring.Duration(in.GetRotationPeriod().AsDuration())
		out.KeepRetired = in.GetKeepRetired()
	}
	if err := out.Validate(); err != nil {
		return out, invalidArgument("settings: %v", err)
	}
	if err := out.CheckAgainst(s.minPrepublish, s.policy.Load().MaxTTL(name)); err != nil {
		return out, invalidArgument("settings: %v", err)
	}
	return out, nil
}

// RotateKey implements signer.v1.KeyAdmin.
func (a *adminServer) RotateKey(ctx context.Context, req *signerv1.RotateKeyRequest) (*signerv1.RotateKeyResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: opRotateKey, Key: req.GetKey()}
	if req.GetEmergency() {
		ev.Reason = "emergency: previous active version revoked"
	}
	resp, err := a.rotateKey(ctx, req, &ev)
	return resp, a.s.record(&ev, err)
}

func (a *adminServer) rotateKey(ctx context.Context, req *signerv1.RotateKeyRequest, ev *audit.Event) (*signerv1.RotateKeyResponse, error) {
	if err := a.admin(ctx); err != nil {
		return nil, err
	}
	if err := checkKeyName(req.GetKey()); err != nil {
		return nil, err
	}
	if err := a.s.auditStart(ev); err != nil {
		return nil, err
	}
	k, v, err := a.s.manager.Rotate(req.GetKey(), req.GetEmergency())
	if err != nil {
		return nil, err
	}
	ev.Kid, ev.Alg = v.Kid, string(k.Alg)
	info := adminKeyInfo(k)
	return &signerv1.RotateKeyResponse{Key: info, Version: info.Versions[v.Number-1]}, nil
}

// RevokeVersion implements signer.v1.KeyAdmin.
func (a *adminServer) RevokeVersion(ctx context.Context, req *signerv1.RevokeVersionRequest) (*signerv1.RevokeVersionResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: opRevokeVersion, Key: req.GetKey()}
	k, err := a.change(ctx, req.GetKey(), req.GetVersion(), &ev, a.s.manager.Revoke)
	if err != nil {
		return nil, err
	}
	return &signerv1.RevokeVersionResponse{Key: k}, nil
}

// DestroyVersion implements signer.v1.KeyAdmin.
func (a *adminServer) DestroyVersion(ctx context.Context, req *signerv1.DestroyVersionRequest) (*signerv1.DestroyVersionResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: opDestroyVersion, Key: req.GetKey()}
	k, err := a.change(ctx, req.GetKey(), req.GetVersion(), &ev, a.s.manager.Destroy)
	if err != nil {
		return nil, err
	}
	return &signerv1.DestroyVersionResponse{Key: k}, nil
}

// change runs a revoke or destroy of one version, audited with the version's kid.
func (a *adminServer) change(ctx context.Context, key string, n uint32, ev *audit.Event, op func(string, int) (*keyring.Key, error)) (*signerv1.KeyInfo, error) {
	err := a.admin(ctx)
	if err == nil {
		err = checkKeyName(key)
	}
	var k *keyring.Key
	switch {
	case err != nil:
	case n == 0:
		err = invalidArgument("version: must be 1 or more")
	default:
		if cur, ok := a.s.keys.Snapshot().Key(key); ok && int(n) <= len(cur.Versions) {
			ev.Kid = cur.Versions[n-1].Kid
		}
		if err = a.s.auditStart(ev); err == nil {
			k, err = op(key, int(n))
		}
	}
	if err = a.s.record(ev, err); err != nil {
		return nil, err
	}
	return adminKeyInfo(k), nil
}

// ListKeys implements signer.v1.KeyAdmin: every key, every version.
func (a *adminServer) ListKeys(ctx context.Context, _ *signerv1.ListKeysRequest) (*signerv1.ListKeysResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: opAdminListKeys}
	if err := a.s.record(&ev, a.admin(ctx)); err != nil {
		return nil, err
	}
	snap := a.s.keys.Snapshot()
	resp := &signerv1.ListKeysResponse{}
	for _, name := range snap.Names() {
		k, _ := snap.Key(name)
		resp.Keys = append(resp.Keys, adminKeyInfo(k))
	}
	return resp, nil
}

// adminKeyInfo describes a key with all its versions and settings.
func adminKeyInfo(k *keyring.Key) *signerv1.KeyInfo {
	info := keyInfo(k, k.Versions)
	for i, v := range k.Versions {
		if v.RevokedAt != nil {
			info.Versions[i].RevokedAt = timestamppb.New(*v.RevokedAt)
		}
		if v.DestroyedAt != nil {
			info.Versions[i].DestroyedAt = timestamppb.New(*v.DestroyedAt)
		}
	}
	st := k.Settings()
	info.Settings = &signerv1.KeySettings{Prepublish: durationpb.New(st.Prepublish.D()), Grace: durationpb.New(st.Grace.D()),
		RotationPeriod: durationpb.New(st.RotationPeriod.D()), KeepRetired: st.KeepRetired}
	return info
}

// checkKeyName refuses, before it goes near the token, a key name that no key can have.
func checkKeyName(name string) error {
	switch {
	case name == "":
		return invalidArgument("key: empty")
	case !keyring.ValidName(name):
		return invalidArgument("key: not a key name (want [a-z0-9][a-z0-9-]{0,62})")
	}
	return nil
}
