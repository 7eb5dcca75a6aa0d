package softhsmtest_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// TestSignStream signs over one SignStream from many goroutines at once, good requests and bad mixed:
// each good one is signed (and verifies), each bad one fails alone with the status Sign gives it, the
// caller's grant applies per request, each request is audited, and the daemon goes on serving after
// the stream ends.
func TestSignStream(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256", "eddsa": "EdDSA"}})
	raw := in.dial(t, in.svc)
	pubs := map[string]any{}
	for _, key := range []string{"es256", "rs256", "eddsa"} {
		_, pubs[key] = publicKey(t, raw, key)
	}
	cl, stream := in.signStream(t, in.svc)

	d32 := sha256.Sum256([]byte("m"))
	msg := func(key string, m string) *signerv1.SignRequest {
		return &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Message{Message: []byte(m)}}
	}
	cases := []struct {
		name string
		req  *signerv1.SignRequest
		want codes.Code
	}{
		{"es256 message", msg("es256", "a"), codes.OK},
		{"es256 JOSE", &signerv1.SignRequest{Key: "es256", Input: &signerv1.SignRequest_Digest{Digest: d32[:]}, Format: signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE}, codes.OK},
		{"rs256 digest", &signerv1.SignRequest{Key: "rs256", Input: &signerv1.SignRequest_Digest{Digest: d32[:]}}, codes.OK},
		{"eddsa message", msg("eddsa", "b"), codes.OK},
		{"short digest", &signerv1.SignRequest{Key: "es256", Input: &signerv1.SignRequest_Digest{Digest: d32[:20]}}, codes.InvalidArgument},
		{"digest for EdDSA", &signerv1.SignRequest{Key: "eddsa", Input: &signerv1.SignRequest_Digest{Digest: d32[:]}}, codes.InvalidArgument},
		{"unknown key", msg("nope", "c"), codes.NotFound},
		{"empty key", msg("", "c"), codes.InvalidArgument},
		{"no request", nil, codes.InvalidArgument},
		{"message over the cap", msg("es256", string(make([]byte, 64<<10+1))), codes.InvalidArgument},
	}
	const rounds = 30
	var wg sync.WaitGroup
	errs := make(chan string, rounds*len(cases))
	for round := range rounds {
		for _, tc := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := stream.Sign(ctxT(t), tc.req)
				if got := status.Code(err); got != tc.want {
					errs <- fmt.Sprintf("round %d, %s: %v, want %v", round, tc.name, err, tc.want)
					return
				}
				if err != nil {
					return
				}
				alg, _ := jose.ParseAlgorithm(resp.GetAlg())
				sig := resp.GetSignature()
				if tc.req.GetFormat() == signerv1.SignatureFormat_SIGNATURE_FORMAT_JOSE {
					if sig, err = jose.RawToDER(sig, jose.CurveSize(alg.Curve())); err != nil {
						errs <- fmt.Sprintf("round %d, %s: JOSE signature: %v", round, tc.name, err)
						return
					}
				}
				input := tc.req.GetDigest()
				if m, ok := tc.req.GetInput().(*signerv1.SignRequest_Message); ok {
					input = alg.Digest(m.Message)
				}
				if err := alg.Verify(pubs[tc.req.GetKey()], input, sig); err != nil {
					errs <- fmt.Sprintf("round %d, %s: signature does not verify: %v", round, tc.name, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	// A caller's grant applies to each request: limited.test may sign with es256 only.
	_, ls := in.signStream(t, in.limited)
	if _, err := ls.Sign(ctxT(t), msg("rs256", "x")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("limited: SignStream rs256 = %v, want PermissionDenied", err)
	}
	if _, err := ls.Sign(ctxT(t), msg("es256", "x")); err != nil {
		t.Errorf("limited: SignStream es256 after a refusal = %v, want a signature", err)
	}
	if err := ls.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, err := ls.Sign(ctxT(t), msg("es256", "x")); !errors.Is(err, client.ErrStreamClosed) {
		t.Errorf("Sign after Close = %v, want ErrStreamClosed", err)
	}

	// Each request is audited as a Sign call: the refused one by its caller, with its reason.
	denied := auditEvents(t, in, func(e map[string]any) bool {
		return e["op"] == "sign" && e["identity"] == "limited.test" && e["key"] == "rs256" && e["outcome"] == "denied"
	})
	if len(denied) != 1 {
		t.Errorf("audit lines of limited's refused stream request: %d, want 1", len(denied))
	}
	good := auditEvents(t, in, func(e map[string]any) bool {
		return e["op"] == "sign" && e["identity"] == "spiffe://test/svc" && e["outcome"] == "ok"
	})
	if len(good) != 4*rounds {
		t.Errorf("audit lines of svc's signed stream requests: %d, want %d", len(good), 4*rounds)
	}

	// The raw stream: ids come back as sent; a cancelled client.Stream fails the Signs made on it after;
	// and the daemon serves on.
	ctx, cancel := context.WithCancel(context.Background())
	rs, err := raw.SignStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id := range uint64(5) {
		if err := rs.Send(&signerv1.SignStreamRequest{Id: 1000 + id, Request: msg("es256", "r")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := rs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for {
		resp, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("raw SignStream Recv = %v", err)
		}
		if resp.GetResponse() == nil {
			t.Errorf("raw SignStream response %d: %v, want a signature", resp.GetId(), resp.GetError())
		}
		seen[resp.GetId()] = true
	}
	cancel()
	if len(seen) != 5 || !seen[1000] || !seen[1004] {
		t.Errorf("raw SignStream answered ids %v, want 1000..1004", seen)
	}
	sctx, scancel := context.WithCancel(context.Background())
	cs, err := cl.SignStream(sctx)
	if err != nil {
		t.Fatal(err)
	}
	scancel()
	if _, err := cs.Sign(ctxT(t), msg("es256", "x")); !errors.Is(err, client.ErrStreamClosed) && status.Code(err) != codes.Canceled {
		t.Errorf("Sign on a cancelled stream = %v, want ErrStreamClosed", err)
	}
	if err := stream.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if _, err := raw.Sign(ctxT(t), msg("es256", "after")); err != nil {
		t.Errorf("Sign after the streams = %v", err)
	}
	h, err := grpc_health_v1.NewHealthClient(in.conn(t, in.svc)).Check(ctxT(t), &grpc_health_v1.HealthCheckRequest{Service: "signer.v1.Signer"})
	if err != nil || h.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		t.Errorf("health after the streams = %v, %v; want SERVING", h, err)
	}
}

// TestSignStreamRateLimit: the caller's rate limit applies to each request of a stream, not to the
// stream once: requests past the burst fail alone with RESOURCE_EXHAUSTED, audited, and the stream
// stays open for the next.
func TestSignStreamRateLimit(t *testing.T) {
	in := startInstance(t, instanceOptions{keys: map[string]string{"es256": "ES256"},
		extraConfig: "limits:\n  rate_per_second: 0.001\n  burst: 3\n"})
	_, stream := in.signStream(t, in.svc)
	req := &signerv1.SignRequest{Key: "es256", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	var got []codes.Code
	for range 6 {
		_, err := stream.Sign(ctxT(t), req)
		got = append(got, status.Code(err))
	}
	want := []codes.Code{codes.OK, codes.OK, codes.OK, codes.ResourceExhausted, codes.ResourceExhausted, codes.ResourceExhausted}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("six requests on one stream with a burst of 3 = %v, want %v", got, want)
	}
	refused := auditEvents(t, in, func(e map[string]any) bool {
		return e["op"] == "sign" && e["identity"] == "spiffe://test/svc" && e["code"] == "ResourceExhausted"
	})
	if len(refused) == 0 {
		t.Error("no audit line for the stream's rate-limited requests")
	}
}
