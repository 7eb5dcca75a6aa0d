package server

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	"github.com/signerd/signerd/server/authz"
)

// authorize checks the caller may perform op on key. It runs before any key lookup, and its refusal is
// the same whether or not the key exists.
func (s *Server) authorize(ctx context.Context, key string, op authz.Op) (*authz.Rules, error) {
	if key == "" {
		return nil, invalidArgument("key: empty")
	}
	rules, ok := s.policy.Load().Allow(identity(ctx), key, op)
	if !ok {
		return nil, permissionDenied("identity %q may not %s with key %q", identity(ctx), op, key)
	}
	return rules, nil
}

// lookup returns the key from the current snapshot.
func (s *Server) lookup(name string) (*keyring.Key, error) {
	k, ok := s.keys.Snapshot().Key(name)
	if !ok {
		return nil, notFound("key %q does not exist", name)
	}
	return k, nil
}

// input turns a digest-or-message request into the bytes the key signs: the digest as given (its length
// checked), or the message hashed with the key's hash; EdDSA keys take the message itself.
func input(alg jose.Algorithm, digest, message []byte, isDigest, isMessage bool) ([]byte, error) {
	switch {
	case isDigest && isMessage:
		return nil, invalidArgument("set digest or message, not both")
	case isDigest:
		if alg == jose.EdDSA {
			return nil, invalidArgument("digest: EdDSA keys sign messages, not digests")
		}
		if want := alg.Hash().Size(); len(digest) != want {
			return nil, invalidArgument("digest: %d bytes, %s needs %d", len(digest), alg, want)
		}
		return digest, nil
	case isMessage:
		if len(message) > MaxMessageBytes {
			return nil, invalidArgument("message: %d bytes, limit is %d", len(message), MaxMessageBytes)
		}
		return alg.Digest(message), nil
	}
	return nil, invalidArgument("set digest or message")
}

// signedData is what Sign and Verify requests share: a key, a digest or a message, a signature format.
type signedData interface {
	GetKey() string
	GetDigest() []byte
	GetMessage() []byte
	GetFormat() signerv1.SignatureFormat
}

// keyAndInput authorizes op on the request's key, looks the key up and returns it with the digest to
// sign or verify (the message hashed, or the digest checked). isDigest and isMessage say which of the
// request's oneof is set.
func (s *Server) keyAndInput(ctx context.Context, op authz.Op, req signedData, isDigest, isMessage bool) (*keyring.Key, []byte, error) {
	if _, err := s.authorize(ctx, req.GetKey(), op); err != nil {
		return nil, nil, err
	}
	k, err := s.lookup(req.GetKey())
	if err != nil {
		return nil, nil, err
	}
	in, err := input(k.Alg, req.GetDigest(), req.GetMessage(), isDigest, isMessage)
	if err != nil {
		return nil, nil, err
	}
	if err := checkFormat(req.GetFormat()); err != nil {
		return nil, nil, err
	}
	return k, in, nil
}

// Sign implements signer.v1.Signer.
func (s *Server) Sign(ctx context.Context, req *signerv1.SignRequest) (*signerv1.SignResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: string(authz.OpSign), Key: req.GetKey()}
	resp, err := s.sign(ctx, req, &ev)
	err = s.record(&ev, err)
	return resp, err
}

func (s *Server) sign(ctx context.Context, req *signerv1.SignRequest, ev *audit.Event) (*signerv1.SignResponse, error) {
	_, isDigest := req.GetInput().(*signerv1.SignRequest_Digest)
	_, isMessage := req.GetInput().(*signerv1.SignRequest_Message)
	k, in, err := s.keyAndInput(ctx, authz.OpSign, req, isDigest, isMessage)
	if err != nil {
		return nil, err
	}
	v := k.Active
	if v == nil || v.Signer == nil {
		return nil, failedPrecondition("key %q has no active version", k.Name)
	}
	ev.Kid, ev.Alg, ev.Input = v.Kid, string(k.Alg), audit.InputHash(in)
	sig, err := s.signWith(ctx, v, in, ev)
	if err != nil {
		return nil, err
	}
	if req.GetFormat() == signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE && k.Alg.KeyType() == jose.KeyEC {
		if sig, err = jose.DERToRaw(sig, jose.CurveSize(k.Alg.Curve())); err != nil {
			return nil, err // the token's output, not the caller's: INTERNAL
		}
	}
	return &signerv1.SignResponse{Signature: sig, Kid: v.Kid, Alg: string(k.Alg), Version: uint32(v.Number)}, nil
}

// signWith signs in with version v: its digest, or the message for EdDSA.
func (s *Server) signWith(ctx context.Context, v *keyring.LoadedVersion, in []byte, ev *audit.Event) ([]byte, error) {
	return s.signInSlot(ctx, v, ev, func() ([]byte, error) { return v.Signer.Sign(rand.Reader, in, v.Key.Alg.SignerOpts()) })
}

// signInSlot makes the signature sign makes with version v: after auditing the attempt, inside the
// in-flight bound. The audit line is written out before a signing slot is taken, so that no slot sits
// idle during the write, and a request whose deadline passed meanwhile gives up in acquire rather than
// reach the token. A key pair destroyed in the token after the version was loaded (by another daemon or
// an administrator's tool) is FAILED_PRECONDITION: retrying will not bring it back.
func (s *Server) signInSlot(ctx context.Context, v *keyring.LoadedVersion, ev *audit.Event, sign func() ([]byte, error)) ([]byte, error) {
	if err := s.auditStart(ev); err != nil {
		return nil, err
	}
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	sig, err := sign()
	if err == nil {
		return sig, nil
	}
	if m := missingError(nil); errors.As(err, &m) && m.Missing() {
		s.log.Error("key pair missing from the token", "key", v.Key.Name, "kid", v.Kid, "err", err)
		return nil, failedPrecondition("key %q version %d: its key pair is no longer in the token", v.Key.Name, v.Number)
	}
	return sig, err
}

// auditStart records that a signature or a key change is about to be made and writes the line out
// before the token is asked. If the audit trail cannot be written, nothing is signed or changed: no
// signature leaves signerd, and no key changes through it, unaudited.
func (s *Server) auditStart(ev *audit.Event) error {
	start := *ev
	start.Outcome = audit.OutcomeStarted
	if err := s.audit.RecordNow(start); err != nil {
		s.log.Error("audit trail unwritable; refusing the operation", "op", ev.Op, "err", err)
		return &apiError{code: codes.Unavailable, msg: "audit trail unavailable"}
	}
	return nil
}

func checkFormat(f signerv1.SignatureFormat) error {
	switch f {
	case signerv1.SignatureFormat_SIGNATURE_FORMAT_UNSPECIFIED, signerv1.SignatureFormat_SIGNATURE_FORMAT_DER,
		signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE:
		return nil
	}
	return invalidArgument("format: unknown value %d", f)
}

// Verify implements signer.v1.Signer. It uses the public keys cached in the keyring and never touches
// the token.
func (s *Server) Verify(ctx context.Context, req *signerv1.VerifyRequest) (*signerv1.VerifyResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: string(authz.OpVerify), Key: req.GetKey(), Kid: req.GetKid()}
	resp, err := s.verify(ctx, req, &ev)
	if err == nil && !resp.GetValid() {
		ev.Reason = "signature does not verify"
	}
	err = s.record(&ev, err)
	return resp, err
}

func (s *Server) verify(ctx context.Context, req *signerv1.VerifyRequest, ev *audit.Event) (*signerv1.VerifyResponse, error) {
	_, isDigest := req.GetInput().(*signerv1.VerifyRequest_Digest)
	_, isMessage := req.GetInput().(*signerv1.VerifyRequest_Message)
	k, in, err := s.keyAndInput(ctx, authz.OpVerify, req, isDigest, isMessage)
	if err != nil {
		return nil, err
	}
	ev.Alg, ev.Input = string(k.Alg), audit.InputHash(in)
	sig := req.GetSignature()
	if len(sig) == 0 {
		return nil, invalidArgument("signature: empty")
	}
	if req.GetFormat() == signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE && k.Alg.KeyType() == jose.KeyEC {
		if sig, err = jose.RawToDER(sig, jose.CurveSize(k.Alg.Curve())); err != nil {
			return nil, invalidArgument("signature: %v", err)
		}
	}
	versions := k.Publishable()
	if kid := req.GetKid(); kid != "" {
		v, err := s.publishedVersion(k, kid)
		if err != nil {
			return nil, err
		}
		versions = []*keyring.LoadedVersion{v}
	}
	for _, v := range versions {
		err := k.Alg.Verify(v.Public, in, sig)
		switch {
		case err == nil:
			ev.Kid = v.Kid
			return &signerv1.VerifyResponse{Valid: true, Kid: v.Kid}, nil
		case errors.Is(err, jose.ErrMalformedSignature):
			// The caller's signature cannot be one for this key (length, encoding).
			return nil, invalidArgument("signature: %v", err)
		case !errors.Is(err, jose.ErrVerification):
			return nil, err
		}
	}
	return &signerv1.VerifyResponse{Valid: false}, nil
}

// publishedVersion returns key k's published version with thumbprint kid, re-reading the token once if
// this daemon does not know the kid yet (another daemon may have just rotated).
func (s *Server) publishedVersion(k *keyring.Key, kid string) (*keyring.LoadedVersion, error) {
	v, ok := s.published(kid)
	if !ok || v.Key.Name != k.Name {
		return nil, notFound("kid %q is not a published version of key %q", kid, k.Name)
	}
	return v, nil
}

// GetPublicKey implements signer.v1.Signer.
func (s *Server) GetPublicKey(ctx context.Context, req *signerv1.GetPublicKeyRequest) (*signerv1.GetPublicKeyResponse, error) {
	ev := audit.Event{Identity: identity(ctx), Op: string(authz.OpPublicKey), Key: req.GetKey(), Kid: req.GetKid()}
	resp, err := s.getPublicKey(ctx, req)
	if resp != nil {
		ev.Kid, ev.Alg = resp.GetKid(), resp.GetAlg()
	}
	err = s.record(&ev, err)
	return resp, err
}

func (s *Server) getPublicKey(ctx context.Context, req *signerv1.GetPublicKeyRequest) (*signerv1.GetPublicKeyResponse, error) {
	if _, err := s.authorize(ctx, req.GetKey(), authz.OpPublicKey); err != nil {
		return nil, err
	}
	k, err := s.lookup(req.GetKey())
	if err != nil {
		return nil, err
	}
	v := k.Active
	if kid := req.GetKid(); kid != "" {
		if v, err = s.publishedVersion(k, kid); err != nil {
			return nil, err
		}
	}
	if v == nil || v.Public == nil {
		return nil, failedPrecondition("key %q has no active version", k.Name)
	}
	der, err := x509.MarshalPKIXPublicKey(v.Public)
	if err != nil {
		return nil, err
	}
	jwk, err := json.Marshal(v.JWK)
	if err != nil {
		return nil, err
	}
	return &signerv1.GetPublicKeyResponse{
		Kid: v.Kid, Alg: string(k.Alg), Version: uint32(v.Number),
		PublicKeyPem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		JwkJson:      string(jwk),
	}, nil
}

// opListKeys is the audit operation name of Signer.ListKeys, which has no policy operation of its own.
const opListKeys = "list_keys"

// ListKeys implements signer.v1.Signer: the keys the caller may use, with their published versions.
func (s *Server) ListKeys(ctx context.Context, _ *signerv1.ListKeysRequest) (*signerv1.ListKeysResponse, error) {
	snap := s.keys.Snapshot()
	resp := &signerv1.ListKeysResponse{}
	for _, name := range s.policy.Load().Visible(identity(ctx), snap.Names()) {
		k, _ := snap.Key(name)
		resp.Keys = append(resp.Keys, keyInfo(k, k.Publishable()))
	}
	ev := audit.Event{Identity: identity(ctx), Op: opListKeys}
	return resp, s.record(&ev, nil)
}

func keyInfo(k *keyring.Key, versions []*keyring.LoadedVersion) *signerv1.KeyInfo {
	info := &signerv1.KeyInfo{Name: k.Name, Alg: string(k.Alg)}
	if k.Active != nil {
		info.ActiveKid = k.Active.Kid
	}
	for _, v := range versions {
		vi := &signerv1.VersionInfo{Version: uint32(v.Number), Kid: v.Kid, State: stateProto(v.State),
			CreatedAt: timestamppb.New(v.Created), ActivateAt: timestamppb.New(v.ActivateAt)}
		if !v.RetiredAt.IsZero() {
			vi.RetiredAt, vi.ExpiresAt = timestamppb.New(v.RetiredAt), timestamppb.New(v.ExpiresAt)
		}
		info.Versions = append(info.Versions, vi)
	}
	return info
}

func stateProto(s keyring.State) signerv1.VersionState {
	switch s {
	case keyring.Pending:
		return signerv1.VersionState_VERSION_STATE_PENDING
	case keyring.Active:
		return signerv1.VersionState_VERSION_STATE_ACTIVE
	case keyring.Retired, keyring.Expired:
		return signerv1.VersionState_VERSION_STATE_RETIRED
	case keyring.Revoked:
		return signerv1.VersionState_VERSION_STATE_REVOKED
	case keyring.Destroyed:
		return signerv1.VersionState_VERSION_STATE_DESTROYED
	}
	return signerv1.VersionState_VERSION_STATE_UNSPECIFIED
}

// record completes and writes the audit event of a finished request, and returns err as a gRPC status.
func (s *Server) record(ev *audit.Event, err error) error {
	err = toStatus(s.log, err)
	if err == nil {
		ev.Outcome = audit.OutcomeOK
	} else {
		st, _ := status.FromError(err)
		ev.Code, ev.Reason = st.Code().String(), st.Message()
		ev.Outcome = audit.OutcomeError
		if st.Code() == codes.PermissionDenied || st.Code() == codes.Unauthenticated {
			ev.Outcome = audit.OutcomeDenied
		}
	}
	s.audit.Record(*ev)
	return err
}
