package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/devca"
)

// TestPanicIsAnInternalError: a handler that panics answers INTERNAL, and the request is counted with
// that code in the metrics, not as OK.
func TestPanicIsAnInternalError(t *testing.T) {
	r := newRotationServer(t, &clock{t: time.Now()})
	ca, err := devca.New("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(devca.Request{CommonName: "svc", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf.Cert, ca.Cert}}}}})
	const method = "/signer.v1.Signer/Sign"
	_, err = r.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
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
