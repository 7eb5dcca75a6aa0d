package server

import (
	"bytes"
	"crypto"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

type brokenDisk struct{}

func (brokenDisk) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestAuditFailureStopsSigning: when the audit trail cannot be written, signerd refuses to sign
// (UNAVAILABLE) rather than hand out unaudited signatures, from the first signature on, and refuses
// every key change through KeyAdmin, which leaves the token as it was.
func TestAuditFailureStopsSigning(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	r := newRotationServer(t, clk)
	log := audit.New(brokenDisk{})
	t.Cleanup(func() { _ = log.Close() })
	r.audit, r.log = log, slog.New(slog.DiscardHandler)
	for _, name := range []string{"k", "r"} {
		if _, err := r.ring.Create(name, jose.ES256, 0, keyring.DefaultSettings()); err != nil {
			t.Fatal(err)
		}
	}
	req := &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	if _, err := r.Sign(r.signer, req); status.Code(err) != codes.Unavailable {
		t.Errorf("Sign with a broken audit trail = %v, want Unavailable", err)
	}
	if _, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{}`}); status.Code(err) != codes.Unavailable {
		t.Errorf("SignJWT with a broken audit trail = %v, want Unavailable", err)
	}

	a := &adminServer{s: r.Server}
	changes := map[string]func() error{
		"CreateKey": func() error {
			_, err := a.CreateKey(r.admin, &signerv1.CreateKeyRequest{Name: "n", Alg: "ES256"})
			return err
		},
		"RotateKey": func() error {
			_, err := a.RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "r"})
			return err
		},
		"RotateKey emergency": func() error {
			_, err := a.RotateKey(r.admin, &signerv1.RotateKeyRequest{Key: "r", Emergency: true})
			return err
		},
		"RevokeVersion": func() error {
			_, err := a.RevokeVersion(r.admin, &signerv1.RevokeVersionRequest{Key: "r", Version: 1})
			return err
		},
		"DestroyVersion": func() error {
			_, err := a.DestroyVersion(r.admin, &signerv1.DestroyVersionRequest{Key: "r", Version: 1})
			return err
		},
	}
	for name, change := range changes {
		if err := change(); status.Code(err) != codes.Unavailable {
			t.Errorf("%s with a broken audit trail = %v, want Unavailable", name, err)
		}
	}
	snap := r.ring.Snapshot()
	k, _ := snap.Key("r")
	if snap.Exists("n") || len(k.Versions) != 1 || k.Versions[0].State != keyring.Active {
		t.Errorf("after refused key changes: key n exists %v, key r has %d versions, version 1 %s; want no n, r's one version active",
			snap.Exists("n"), len(k.Versions), k.Versions[0].State)
	}
}

// syncBuffer is an audit destination that tests may read while the Log writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// atSign calls seen each time the token is asked to sign, before it signs.
type atSign struct {
	crypto.Signer
	seen func()
}

func (s atSign) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	s.seen()
	return s.Signer.Sign(r, d, o)
}

// TestSignatureAuditedBeforeItLeaves: when the token is asked for a signature (Sign or SignJWT), its
// "started" line is already written out, not merely buffered.
func TestSignatureAuditedBeforeItLeaves(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	r := newRotationServer(t, clk)
	var out syncBuffer
	log := audit.New(&out)
	t.Cleanup(func() { _ = log.Close() })
	r.audit = log
	var mu sync.Mutex
	var written []string // what the trail held at each signature
	r.store.Wrap = func(s crypto.Signer) crypto.Signer {
		return atSign{s, func() { mu.Lock(); written = append(written, out.String()); mu.Unlock() }}
	}
	for _, name := range []string{"k", "r"} {
		if _, err := r.ring.Create(name, jose.ES256, 0, keyring.DefaultSettings()); err != nil {
			t.Fatal(err)
		}
	}
	written = nil
	if _, err := r.Sign(r.signer, &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{}`}); err != nil {
		t.Fatal(err)
	}
	if len(written) != 2 {
		t.Fatalf("the token signed %d times, want 2", len(written))
	}
	for i, op := range []string{`"op":"sign"`, `"op":"sign_jwt"`} {
		if !strings.Contains(written[i], op) || strings.Count(written[i], `"outcome":"started"`) != i+1 {
			t.Errorf("audit trail when the token signed for %s = %q, want its started line written out", op, written[i])
		}
	}
}

// TestListKeysAudited: listing keys is an operation like the others, in the trail with its caller.
func TestListKeysAudited(t *testing.T) {
	r := newRotationServer(t, &clock{t: time.Now()})
	var out syncBuffer
	log := audit.New(&out)
	r.audit = log
	if _, err := r.ListKeys(r.svc, &signerv1.ListKeysRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}
	if trail := out.String(); !strings.Contains(trail, `"identity":"svc","op":"list_keys"`) || !strings.Contains(trail, `"outcome":"ok"`) {
		t.Errorf("audit trail after ListKeys = %q, want a list_keys event for svc", trail)
	}
}
