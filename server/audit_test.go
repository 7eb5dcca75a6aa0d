package server

import (
	"errors"
	"log/slog"
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

// TestAuditFailureStopsSigning: once the audit trail cannot be written, signerd refuses to sign
// (UNAVAILABLE) rather than hand out unaudited signatures.
func TestAuditFailureStopsSigning(t *testing.T) {
	clk := &clock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	r := newRotationServer(t, clk)
	log := audit.New(brokenDisk{})
	t.Cleanup(func() { _ = log.Close() })
	r.audit, r.log = log, slog.New(slog.DiscardHandler)
	if _, err := r.ring.Create("k", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	req := &signerv1.SignRequest{Key: "k", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	if _, err := r.Sign(r.svc, req); err != nil {
		t.Fatalf("first Sign (error not yet seen) = %v", err)
	}
	if err := log.Flush(); err == nil {
		t.Fatal("Flush to a broken disk = nil, want an error")
	}
	if _, err := r.Sign(r.svc, req); status.Code(err) != codes.Unavailable {
		t.Errorf("Sign with a broken audit trail = %v, want Unavailable", err)
	}
	if _, err := r.SignJWT(r.svc, &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{}`}); status.Code(err) != codes.Unavailable {
		t.Errorf("SignJWT with a broken audit trail = %v, want Unavailable", err)
	}
}
