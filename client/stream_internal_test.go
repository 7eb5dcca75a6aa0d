package client

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// recordingStream is the client side of a SignStream that records what is sent and answers each
// request with an empty response. Its first Send waits for gate.
type recordingStream struct {
	grpc.ClientStream
	ctx   context.Context
	gate  chan struct{}
	mu    sync.Mutex
	sent  []*signerv1.SignStreamRequest
	resps chan *signerv1.SignStreamResponse
}

func (r *recordingStream) Send(m *signerv1.SignStreamRequest) error {
	r.mu.Lock()
	first := len(r.sent) == 0
	r.sent = append(r.sent, m)
	r.mu.Unlock()
	if first {
		<-r.gate
	}
	r.resps <- &signerv1.SignStreamResponse{Id: m.GetId(), Result: &signerv1.SignStreamResponse_Response{Response: &signerv1.SignResponse{}}}
	return nil
}

func (r *recordingStream) Recv() (*signerv1.SignStreamResponse, error) {
	select {
	case resp := <-r.resps:
		return resp, nil
	case <-r.ctx.Done():
		return nil, status.FromContextError(r.ctx.Err()).Err()
	}
}

// TestStreamSendsDeadlineAsTimeout: a request goes out with what is left of its ctx's deadline when it
// is sent, after any wait behind another request's Send, so that signerd does not wait for it longer
// than its caller does; without a deadline it has no timeout; with one already passed it is not sent.
func TestStreamSendsDeadlineAsTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	rs := &recordingStream{ctx: ctx, gate: make(chan struct{}), resps: make(chan *signerv1.SignStreamResponse, 10)}
	s := newStream(rs, cancel)
	defer func() { _ = s.Close() }()
	req := &signerv1.SignRequest{Key: "k", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}

	errs := make(chan error, 2)
	go func() { // held in Send until the gate opens
		_, err := s.Sign(context.Background(), req)
		errs <- err
	}()
	for rs.count() < 1 {
		time.Sleep(time.Millisecond)
	}
	const deadline, held = 5 * time.Second, 500 * time.Millisecond
	go func() { // waits for the sender meanwhile
		dctx, dcancel := context.WithTimeout(context.Background(), deadline)
		defer dcancel()
		_, err := s.Sign(dctx, req)
		errs <- err
	}()
	time.Sleep(held)
	close(rs.gate)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("Sign = %v", err)
		}
	}
	if got := rs.request(0).GetTimeout(); got != nil {
		t.Errorf("request without a deadline went out with timeout %v, want none", got.AsDuration())
	}
	if got := rs.request(1).GetTimeout().AsDuration(); got <= 0 || got > deadline-held {
		t.Errorf("request with a %v deadline sent after waiting %v went out with timeout %v, want (0, %v]", deadline, held, got, deadline-held)
	}

	expired, ecancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer ecancel()
	if _, err := s.Sign(expired, req); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Sign with a deadline already passed = %v, want DeadlineExceeded", err)
	}
	if n := rs.count(); n != 2 {
		t.Errorf("%d requests sent, want 2: one whose deadline had passed must not go out", n)
	}
}

func (r *recordingStream) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent)
}

func (r *recordingStream) request(i int) *signerv1.SignStreamRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent[i]
}
