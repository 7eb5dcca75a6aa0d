package server_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/client/clienttest"
	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// backendError is what the hsm package returns: an error with optional abilities.
type backendError struct{ busy, unavailable, missing bool }

func (e *backendError) Error() string {
	return "hsm: injected failure with detail the caller must not see"
}
func (e *backendError) Busy() bool        { return e.busy }
func (e *backendError) Unavailable() bool { return e.unavailable }
func (e *backendError) Missing() bool     { return e.missing }

// faultySigner fails while its fault is set, and signs normally otherwise.
type faultySigner struct {
	crypto.Signer
	fault *atomic.Pointer[error]
}

func (f faultySigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if e := f.fault.Load(); e != nil {
		return nil, *e
	}
	return f.Signer.Sign(r, d, o)
}

// wrappedServer starts a test server whose keys sign through wrap (the fault-injection seam), creates the
// ES256 key "k", and returns a client of it, closed at cleanup.
func wrappedServer(t *testing.T, wrap func(crypto.Signer) crypto.Signer) *client.Client {
	t.Helper()
	srv := clienttest.NewServer(t, clienttest.DefaultPolicy())
	srv.Store.Wrap = wrap
	srv.CreateKey(t, "k", jose.ES256)
	return srv.Dial(t)
}

// TestBackendFailures injects failures at the key seam and checks the status callers see: retryable
// UNAVAILABLE for a busy or lost token, FAILED_PRECONDITION for a key pair gone from the token (destroyed
// there since it was loaded), INTERNAL for anything else, never the backend's detail; and the server signs
// again once the fault clears.
func TestBackendFailures(t *testing.T) {
	var fault atomic.Pointer[error]
	c := wrappedServer(t, func(s crypto.Signer) crypto.Signer { return faultySigner{s, &fault} })
	sign := func() error {
		_, err := c.Signer().Sign(context.Background(), &signerv1.SignRequest{Key: "k", Input: &signerv1.SignRequest_Message{Message: []byte("m")}})
		if err != nil {
			// SignJWT signs through the same seam: its status must be the same.
			_, jerr := c.Signer().SignJWT(context.Background(), &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{"sub":"s"}`})
			if status.Code(jerr) != status.Code(err) {
				t.Errorf("SignJWT = %v, Sign = %v: want the same code", jerr, err)
			}
		}
		return err
	}
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"busy", &backendError{busy: true}, codes.Unavailable},
		{"token gone", &backendError{unavailable: true}, codes.Unavailable},
		{"key pair gone", &backendError{missing: true}, codes.FailedPrecondition},
		{"other", errors.New("hsm: CKR_GENERAL_ERROR with detail"), codes.Internal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fault.Store(&tc.err)
			err := sign()
			st := status.Convert(err)
			if st.Code() != tc.want {
				t.Errorf("Sign with %s = %v, want %v", tc.name, err, tc.want)
			}
			if st.Message() == tc.err.Error() || len(st.Message()) > 60 {
				t.Errorf("Sign with %s leaked backend detail: %q", tc.name, st.Message())
			}
			fault.Store(nil)
			if err := sign(); err != nil {
				t.Errorf("Sign after %s cleared = %v", tc.name, err)
			}
		})
	}
}

// TestDeadlineWhileWaitingForSlot fills every signing slot and checks that a request whose deadline
// passes while it waits gets DEADLINE_EXCEEDED without reaching the key.
func TestDeadlineWhileWaitingForSlot(t *testing.T) {
	gate := clienttest.NewGate()
	defer gate.Open()
	c := wrappedServer(t, gate.Wrap)
	req := &signerv1.SignRequest{Key: "k", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	done := make(chan error, 4)
	for range 4 { // clienttest's MaxInFlight
		go func() {
			_, err := c.Signer().Sign(context.Background(), req)
			done <- err
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); gate.Inside() < 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d signs reached the key after 30s, want 4", gate.Inside())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Signer().Sign(ctx, req); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Sign while all slots are busy = %v, want DeadlineExceeded", err)
	}
	if n := gate.Inside(); n != 4 {
		t.Errorf("%d signs reached the key, want 4: the one that waited for a slot must not", n)
	}
	gate.Open()
	for range 4 {
		if err := <-done; err != nil {
			t.Errorf("slow Sign = %v", err)
		}
	}
}

// garbageSigner returns bytes that are no signature while garbage is set.
type garbageSigner struct {
	crypto.Signer
	garbage *atomic.Bool
}

func (g garbageSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if g.garbage.Load() {
		return []byte{1, 2, 3}, nil
	}
	return g.Signer.Sign(r, d, o)
}

// TestMalformedSignatureFromToken: when the token returns something that is not a signature, the JOSE
// conversions fail with INTERNAL and no detail, not INVALID_ARGUMENT (the caller did nothing wrong).
func TestMalformedSignatureFromToken(t *testing.T) {
	var garbage atomic.Bool
	c := wrappedServer(t, func(s crypto.Signer) crypto.Signer { return garbageSigner{s, &garbage} })
	garbage.Store(true)
	_, err := c.Signer().Sign(context.Background(), &signerv1.SignRequest{Key: "k", Format: signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE,
		Input: &signerv1.SignRequest_Message{Message: []byte("m")}})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Errorf("Sign (JOSE) with a garbage signature from the token = %v, want Internal with no detail", err)
	}
	_, err = c.Signer().SignJWT(context.Background(), &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{}`})
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Errorf("SignJWT with a garbage signature from the token = %v, want Internal with no detail", err)
	}
	garbage.Store(false)
	if _, err := c.Signer().SignJWT(context.Background(), &signerv1.SignJWTRequest{Key: "k", ClaimsJson: `{}`}); err != nil {
		t.Errorf("SignJWT once the token behaves = %v", err)
	}
}

// TestExpiredCertificateOnOpenConnection: a connection made with a valid certificate stops working when
// the certificate expires, although the handshake it was verified in stays in the past.
func TestExpiredCertificateOnOpenConnection(t *testing.T) {
	srv := clienttest.NewServer(t, clienttest.DefaultPolicy())
	srv.CreateKey(t, "k", jose.ES256)
	// X.509 times are whole seconds: a few of them leave time to connect and sign under -race.
	leaf, err := srv.CA.Issue(devca.Request{CommonName: clienttest.Identity, Client: true, Validity: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := srv.ClientTLS.Clone()
	cfg.Certificates = []tls.Certificate{leaf.TLS()}
	c, err := client.Dial(srv.Addr, client.Options{TLSConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := &signerv1.SignRequest{Key: "k", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	if _, err := c.Signer().Sign(context.Background(), req); err != nil {
		t.Fatalf("Sign with a fresh certificate = %v", err)
	}
	time.Sleep(time.Until(leaf.Cert.NotAfter.Add(1100 * time.Millisecond)))
	_, err = c.Signer().Sign(context.Background(), req)
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "expired") {
		t.Errorf("Sign on the same connection after the certificate expired = %v, want Unauthenticated (expired)", err)
	}
}
