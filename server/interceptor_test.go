package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// peerContext is the context of a request on a connection whose client presented a certificate for
// identity cn (valid for validity) from a fresh CA; it returns the certificate too.
func peerContext(t testing.TB, cn string, validity time.Duration) (context.Context, *devca.Leaf) {
	t.Helper()
	ca, err := devca.New("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(devca.Request{CommonName: cn, Client: true, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf.Cert, ca.Cert}}}}}), leaf
}

// TestPanicIsAnInternalError: a handler that panics answers INTERNAL, and the request is counted with
// that code in the metrics, not as OK.
func TestPanicIsAnInternalError(t *testing.T) {
	r := newRotationServer(t, &clock{t: time.Now()})
	ctx, _ := peerContext(t, "svc", 0)
	const method = "/signer.v1.Signer/Sign"
	_, err := r.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
		panic("boom")
	})
	if status.Code(err) != codes.Internal {
		t.Errorf("interceptor with a panicking handler = %v, want Internal", err)
	}
	count := func(code codes.Code) float64 {
		var m dto.Metric
		if err := r.metrics.requests.WithLabelValues(method, code.String()).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	if got := count(codes.Internal); got != 1 {
		t.Errorf("requests counted as Internal = %v, want 1", got)
	}
	if got := count(codes.OK); got != 0 {
		t.Errorf("requests counted as OK = %v, want 0", got)
	}
}

// limiterCount counts the rate limiters s holds.
func limiterCount(s *Server) int {
	n := 0
	s.limiters.Range(func(any, any) bool { n++; return true })
	return n
}

// TestIdleLimitersSwept: identities that come and go do not grow the rate limiters without end (the
// idle ones, whose bucket is full again, are dropped), while an identity that has used up its burst
// keeps its limiter, and its limit, through a sweep.
func TestIdleLimitersSwept(t *testing.T) {
	r := newRotationServer(t, &clock{t: time.Now()})
	r.rate, r.burst = 1e9, 1 // buckets refill at once: every identity is idle by the next sweep
	for i := range 5 * sweepEvery {
		r.allowRate(fmt.Sprintf("instance-%d", i))
	}
	if n := limiterCount(r.Server); n > sweepEvery {
		t.Errorf("%d limiters after %d identities, want at most %d", n, 5*sweepEvery, sweepEvery)
	}

	r.rate = 1e-9 // nothing refills: an identity that used its burst stays limited
	if !r.allowRate("busy") || r.allowRate("busy") {
		t.Fatal("busy: want its first request allowed and its second refused")
	}
	r.sweepLimiters()
	if r.allowRate("busy") {
		t.Error("busy allowed again after a sweep: its used-up limiter was dropped")
	}
}

// TestInterceptorRefusalsAudited: a request the interceptor refuses before its handler runs (over the
// caller's rate limit, or on a connection whose client certificate has expired since the handshake)
// is in the audit trail with the caller, the operation and the key, once per caller and code in each
// second, so that a caller cannot grow the trail at the rate of its refused requests.
func TestInterceptorRefusalsAudited(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRotationServer(t, clk)
	var out syncBuffer
	r.audit = audit.New(&out)
	if _, err := r.ring.Create("r", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	ctx, leaf := peerContext(t, "signer", 0)
	req := &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	call := func() error {
		_, err := r.UnaryInterceptor()(ctx, req, &grpc.UnaryServerInfo{FullMethod: signerv1.Signer_Sign_FullMethodName},
			func(ctx context.Context, req any) (any, error) { return r.Sign(ctx, req.(*signerv1.SignRequest)) })
		return err
	}
	// refusals returns the trail's lines with code, checking each names the caller, op and key.
	refusals := func(code codes.Code, outcome string) int {
		t.Helper()
		if err := r.audit.Flush(); err != nil {
			t.Fatal(err)
		}
		n := 0
		for line := range strings.Lines(out.String()) {
			var e audit.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatal(err)
			}
			if e.Code != code.String() {
				continue
			}
			n++
			if e.Identity != "signer" || e.Op != "sign" || e.Key != "r" || e.Outcome != outcome {
				t.Errorf("refusal line %s: want identity signer, op sign, key r, outcome %s", line, outcome)
			}
		}
		return n
	}

	r.rate, r.burst = 1e-9, 1 // one request, then refused
	if err := call(); err != nil {
		t.Fatalf("first Sign = %v", err)
	}
	for range 3 {
		if err := call(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("Sign over the rate limit = %v, want ResourceExhausted", err)
		}
	}
	if n := refusals(codes.ResourceExhausted, audit.OutcomeError); n != 1 {
		t.Errorf("3 rate-limited Signs in one second left %d audit lines, want 1", n)
	}
	clk.Set(clk.Now().Add(time.Second))
	if err := call(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Sign over the rate limit = %v, want ResourceExhausted", err)
	}
	if n := refusals(codes.ResourceExhausted, audit.OutcomeError); n != 2 {
		t.Errorf("a rate-limited Sign a second later left %d audit lines in all, want 2", n)
	}

	r.rate = 0
	clk.Set(leaf.Cert.NotAfter.Add(time.Minute))
	if err := call(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Sign after the certificate expired = %v, want Unauthenticated", err)
	}
	if n := refusals(codes.Unauthenticated, audit.OutcomeDenied); n != 1 {
		t.Errorf("a Sign refused for an expired certificate left %d audit lines, want 1", n)
	}
}
