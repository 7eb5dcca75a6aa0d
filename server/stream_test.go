package server

import (
	"context"
	"crypto"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

type fakeSignStream struct {
	grpc.ServerStream
	ctx context.Context
	in  chan *signerv1.SignStreamRequest
	out chan *signerv1.SignStreamResponse
}

func (f *fakeSignStream) Context() context.Context { return f.ctx }
func (f *fakeSignStream) Recv() (*signerv1.SignStreamRequest, error) {
	select {
	case r, ok := <-f.in:
		if !ok {
			return nil, io.EOF
		}
		return r, nil
	case <-f.ctx.Done():
		return nil, f.ctx.Err()
	}
}
func (f *fakeSignStream) Send(r *signerv1.SignStreamResponse) error {
	select {
	case f.out <- r:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

type countingSigner struct {
	crypto.Signer
	inside, max *atomic.Int32
	release     chan struct{}
	panics      *atomic.Bool
}

func (c countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if c.panics.Load() {
		panic("token library bug")
	}
	n := c.inside.Add(1)
	defer c.inside.Add(-1)
	for {
		m := c.max.Load()
		if n <= m || c.max.CompareAndSwap(m, n) {
			break
		}
	}
	<-c.release
	return c.Signer.Sign(r, d, o)
}

// TestSignStreamWorkers: at most streamInFlight requests sign at once, every request is answered, a
// panicking signer fails its request alone, and no goroutine outlives the handler.
func TestSignStreamWorkers(t *testing.T) {
	r := newRotationServer(t, &clock{t: time.Now()})
	r.sem = make(chan struct{}, 500) // not the bound under test
	var inside, max atomic.Int32
	var panics atomic.Bool
	release := make(chan struct{})
	r.store.Wrap = func(s crypto.Signer) crypto.Signer { return countingSigner{s, &inside, &max, release, &panics} }
	if _, err := r.ring.Create("r", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	pctx, _ := peerContext(t, "signer", 0)
	ctx, cancel := context.WithCancel(pctx)
	defer cancel()
	before := runtime.NumGoroutine()
	fs := &fakeSignStream{ctx: ctx, in: make(chan *signerv1.SignStreamRequest), out: make(chan *signerv1.SignStreamResponse, 1000)}
	done := make(chan error, 1)
	go func() { done <- r.SignStream(fs) }()
	const n = 200
	go func() {
		for i := range n {
			fs.in <- &signerv1.SignStreamRequest{Id: uint64(i), Request: &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}}
		}
	}()
	for inside.Load() < streamInFlight {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if m := max.Load(); m != streamInFlight {
		t.Errorf("max signing at once = %d, want %d", m, streamInFlight)
	}
	close(release)
	seen := map[uint64]bool{}
	for range n {
		select {
		case resp := <-fs.out:
			if resp.GetResponse() == nil {
				t.Errorf("response %d: %v", resp.GetId(), resp.GetError())
			}
			seen[resp.GetId()] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d answered", len(seen), n)
		}
	}
	panics.Store(true)
	fs.in <- &signerv1.SignStreamRequest{Id: 999, Request: &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}}
	if resp := <-fs.out; codes.Code(resp.GetError().GetCode()) != codes.Internal {
		t.Errorf("panicking signer: %v, want Internal", resp)
	}
	panics.Store(false)
	close(fs.in)
	if err := <-done; err != nil {
		t.Errorf("SignStream after EOF = %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Errorf("goroutines %d before, %d after the stream", before, after)
	}
}

// TestSignStreamAdmitsEachRequest: the rate limit and the certificate's validity apply to each request.
func TestSignStreamAdmitsEachRequest(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRotationServer(t, clk)
	r.rate, r.burst = 1e-9, 2
	if _, err := r.ring.Create("r", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	pctx, leaf := peerContext(t, "signer", time.Minute)
	ctx, cancel := context.WithCancel(pctx)
	defer cancel()
	fs := &fakeSignStream{ctx: ctx, in: make(chan *signerv1.SignStreamRequest), out: make(chan *signerv1.SignStreamResponse, 10)}
	done := make(chan error, 1)
	go func() { done <- r.SignStream(fs) }()
	req := &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	var got []codes.Code
	for i := range 3 {
		fs.in <- &signerv1.SignStreamRequest{Id: uint64(i), Request: req}
		got = append(got, codes.Code((<-fs.out).GetError().GetCode()))
	}
	r.rate = 0
	clk.Set(leaf.Cert.NotAfter.Add(time.Second))
	fs.in <- &signerv1.SignStreamRequest{Id: 3, Request: req}
	got = append(got, codes.Code((<-fs.out).GetError().GetCode()))
	want := []codes.Code{codes.OK, codes.OK, codes.ResourceExhausted, codes.Unauthenticated}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: %v, want %v", i, got[i], want[i])
		}
	}
	close(fs.in)
	<-done
}

// TestSignStreamOpenRefusalAudited: a SignStream opened on a connection whose certificate has expired is
// refused; the refusal is audited as a refused Sign call is.
func TestSignStreamOpenRefusalAudited(t *testing.T) {
	clk := &clock{t: time.Now()}
	r := newRotationServer(t, clk)
	var out syncBuffer
	r.audit = audit.New(&out)
	ctx, leaf := peerContext(t, "signer", time.Minute)
	clk.Set(leaf.Cert.NotAfter.Add(time.Second))
	fs := &fakeSignStream{ctx: ctx}
	err := r.StreamInterceptor()(r.Server, fs, &grpc.StreamServerInfo{FullMethod: signerv1.Signer_SignStream_FullMethodName},
		func(srv any, ss grpc.ServerStream) error { t.Fatal("handler ran"); return nil })
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("StreamInterceptor = %v, want Unauthenticated", err)
	}
	if err := r.audit.Flush(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"code":"Unauthenticated"`) {
		t.Errorf("SignStream refused for an expired certificate: nothing in the audit trail")
	}
}

// stalledStream starts a SignStream of caller "signer" on a server with key "r" (ES256) whose one
// signing slot is taken, so that its requests wait; the server's audit trail goes to the buffer
// returned. done receives SignStream's result.
func stalledStream(t *testing.T) (r *rotationServer, trail *syncBuffer, fs *fakeSignStream, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	r = newRotationServer(t, &clock{t: time.Now()})
	trail = &syncBuffer{}
	r.audit = audit.New(trail)
	if _, err := r.ring.Create("r", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	r.sem = make(chan struct{}, 1)
	r.sem <- struct{}{} // every slot taken
	pctx, _ := peerContext(t, "signer", 0)
	ctx, cancel := context.WithCancel(pctx)
	t.Cleanup(cancel)
	fs = &fakeSignStream{ctx: ctx, in: make(chan *signerv1.SignStreamRequest), out: make(chan *signerv1.SignStreamResponse, 2*streamInFlight)}
	result := make(chan error, 1)
	go func() { result <- r.SignStream(fs) }()
	return r, trail, fs, cancel, result
}

// TestSignStreamRequestTimeout: a request's own timeout, counted from when it is read, bounds its wait
// for a worker and a signing slot as a unary call's deadline does (DEADLINE_EXCEEDED, never signed), while
// the stream and requests without one go on; a negative or malformed timeout is INVALID_ARGUMENT, audited.
func TestSignStreamRequestTimeout(t *testing.T) {
	r, out, fs, _, done := stalledStream(t)
	req := &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	answer := func() *signerv1.SignStreamResponse {
		t.Helper()
		select {
		case resp := <-fs.out:
			return resp
		case <-time.After(10 * time.Second):
			t.Fatal("no response after 10s")
			return nil
		}
	}

	fs.in <- &signerv1.SignStreamRequest{Id: 1, Request: req} // no timeout: waits for a slot
	fs.in <- &signerv1.SignStreamRequest{Id: 2, Request: req, Timeout: durationpb.New(100 * time.Millisecond)}
	if resp := answer(); resp.GetId() != 2 || codes.Code(resp.GetError().GetCode()) != codes.DeadlineExceeded {
		t.Errorf("request with a 100ms timeout while no slot is free = %v, want id 2 DeadlineExceeded", resp)
	}
	for _, bad := range []*durationpb.Duration{durationpb.New(-time.Second), {Seconds: 1, Nanos: -1}, {Nanos: 2e9}} {
		fs.in <- &signerv1.SignStreamRequest{Id: 3, Request: req, Timeout: bad}
		if resp := answer(); resp.GetId() != 3 || codes.Code(resp.GetError().GetCode()) != codes.InvalidArgument {
			t.Errorf("request with timeout %v = %v, want id 3 InvalidArgument", bad, resp)
		}
	}
	// Every worker busy (waiting for the slot, with request 1): the timeout of a request read meanwhile
	// runs while it waits for a worker too.
	for i := range streamInFlight - 1 {
		fs.in <- &signerv1.SignStreamRequest{Id: uint64(100 + i), Request: req}
	}
	fs.in <- &signerv1.SignStreamRequest{Id: 4, Request: req, Timeout: durationpb.New(100 * time.Millisecond)}
	time.Sleep(300 * time.Millisecond) // past request 4's timeout, counted from when it was read
	<-r.sem                            // a slot frees: the requests without a timeout sign, one after another
	for range streamInFlight + 1 {
		resp := answer()
		switch {
		case resp.GetId() == 4 && codes.Code(resp.GetError().GetCode()) != codes.DeadlineExceeded:
			t.Errorf("request with a 100ms timeout that waited 300ms for a worker = %v, want DeadlineExceeded", resp)
		case resp.GetId() != 4 && resp.GetResponse() == nil:
			t.Errorf("request %d without a timeout once a slot is free = %v, want a signature", resp.GetId(), resp)
		}
	}
	fs.in <- &signerv1.SignStreamRequest{Id: 5, Request: req, Timeout: durationpb.New(time.Minute)}
	if resp := answer(); resp.GetId() != 5 || resp.GetResponse() == nil {
		t.Errorf("request with a timeout and a free slot = %v, want id 5 signed", resp)
	}
	close(fs.in)
	if err := <-done; err != nil {
		t.Errorf("SignStream after EOF = %v", err)
	}
	if err := r.audit.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "is negative or malformed"); n != 3 {
		t.Errorf("%d refusals of a bad timeout in the audit trail, want 3", n)
	}
}

// TestSignStreamEndAuditsWaitingRequest: a request read while every worker is busy, when the stream
// then ends, is audited (refused, unsigned) like those the workers hold.
func TestSignStreamEndAuditsWaitingRequest(t *testing.T) {
	r, out, fs, cancel, done := stalledStream(t) // the workers wait with their requests
	req := &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	for i := range streamInFlight + 1 {
		fs.in <- &signerv1.SignStreamRequest{Id: uint64(i), Request: req}
	}
	time.Sleep(100 * time.Millisecond) // the last one read, waiting for a worker
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Errorf("SignStream after the caller cancelled = %v, want Canceled", err)
	}
	if err := r.audit.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), `"op":"sign"`); n != 2*(streamInFlight+1) {
		t.Errorf("%d sign events in the audit trail, want %d: the attempt and the outcome of every request read", n, 2*(streamInFlight+1))
	}
}

// TestSignStreamDrain: on Drain a stream stops reading, answers the requests it has read (signed once
// a slot frees), and ends with UNAVAILABLE; a request read after that is refused and audited, unsigned.
func TestSignStreamDrain(t *testing.T) {
	r, out, fs, _, done := stalledStream(t)
	req := &signerv1.SignRequest{Key: "r", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	fs.in <- &signerv1.SignStreamRequest{Id: 1, Request: req}
	fs.in <- &signerv1.SignStreamRequest{Id: 2, Request: req}
	time.Sleep(100 * time.Millisecond) // both with workers, waiting for the slot
	r.Drain()
	r.Drain() // idempotent
	select {
	case err := <-done:
		t.Fatalf("SignStream ended with requests in flight: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	<-r.sem // the slot frees
	for range 2 {
		select {
		case resp := <-fs.out:
			if resp.GetResponse() == nil {
				t.Errorf("request %d read before the drain = %v, want a signature", resp.GetId(), resp)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no response after 10s")
		}
	}
	select {
	case err := <-done:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("SignStream after Drain = %v, want Unavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SignStream still running 10s after Drain")
	}
	fs.in <- &signerv1.SignStreamRequest{Id: 3, Request: req} // read by the reader, left behind
	time.Sleep(100 * time.Millisecond)
	if err := r.audit.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), `"outcome":"ok"`); n != 2 {
		t.Errorf("%d signatures audited, want 2", n)
	}
	if n := strings.Count(out.String(), `"op":"sign"`); n != 6 {
		t.Errorf("%d sign events, want 6: the attempt and the outcome of each of the three requests read", n)
	}
	if len(fs.out) != 0 {
		t.Errorf("a response after the stream ended: %v", <-fs.out)
	}
}
