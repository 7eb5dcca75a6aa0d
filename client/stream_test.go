package client_test

import (
	"context"
	"crypto"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/client/clienttest"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// streamServer starts a clienttest server with ES256 key "k" signing through wrap, and a Stream on it.
func streamServer(t *testing.T, wrap func(crypto.Signer) crypto.Signer) (*client.Client, *client.Stream) {
	t.Helper()
	srv := clienttest.NewServer(t, clienttest.DefaultPolicy())
	srv.Store.Wrap = wrap
	srv.CreateKey(t, "k", jose.ES256)
	c := srv.Dial(t)
	st, err := c.SignStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c, st
}

func msgReq(n int) *signerv1.SignRequest {
	return &signerv1.SignRequest{Key: "k", Input: &signerv1.SignRequest_Message{Message: make([]byte, n)}}
}

// TestStreamOversizedRequestFailsAlone: a request larger than the server's MaxRecvMsgSize is refused
// with RESOURCE_EXHAUSTED as a unary Sign is, and the stream (with a request in flight) goes on.
func TestStreamOversizedRequestFailsAlone(t *testing.T) {
	gate := clienttest.NewGate()
	defer gate.Open()
	_, st := streamServer(t, gate.Wrap)
	inFlight := make(chan error, 1)
	go func() {
		_, err := st.Sign(context.Background(), msgReq(1))
		inFlight <- err
	}()
	for gate.Inside() < 1 {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := st.Sign(ctx, msgReq(80<<10)) // over MaxRequestBytes
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized Sign = %v, want ResourceExhausted", err)
	}
	gate.Open()
	if err := <-inFlight; err != nil {
		t.Errorf("in-flight Sign on the same stream = %v, want a signature (a refused request must fail alone)", err)
	}
	if _, err := st.Sign(ctx, msgReq(1)); err != nil {
		t.Errorf("Sign after an oversized request = %v, want a signature (the stream must go on)", err)
	}
}

// TestStreamUnmarshalableRequestFailsAlone: a request that cannot be marshalled (a key that is not
// UTF-8) fails alone, as unary Sign's does, and does not end the stream for every other caller.
func TestStreamUnmarshalableRequestFailsAlone(t *testing.T) {
	c, st := streamServer(t, nil)
	bad := &signerv1.SignRequest{Key: "k\xff", Input: &signerv1.SignRequest_Message{Message: []byte("m")}}
	_, uerr := c.Signer().Sign(context.Background(), bad)
	_, serr := st.Sign(context.Background(), bad)
	if uerr == nil || status.Code(serr) != codes.InvalidArgument {
		t.Errorf("Sign with a key that is not UTF-8: unary = %v, stream = %v; want errors, InvalidArgument on the stream", uerr, serr)
	}
	if _, err := c.Signer().Sign(context.Background(), msgReq(1)); err != nil {
		t.Fatalf("unary Sign after the bad one = %v", err)
	}
	if _, err := st.Sign(context.Background(), msgReq(1)); err != nil {
		t.Errorf("Stream.Sign after a request with a non-UTF-8 key = %v, want a signature (the stream must go on)", err)
	}
}

// TestStreamSignHonoursCtxWhileSendBlocked: when signerd stops reading the stream (its 64 workers are
// busy, the token is slow), the flow-control window fills and Send blocks; Sign must still return at
// its ctx's deadline, and Close must still end the stream.
func TestStreamSignHonoursCtxWhileSendBlocked(t *testing.T) {
	gate := clienttest.NewGate()
	defer gate.Open()
	_, st := streamServer(t, gate.Wrap)
	// Enough 60 KiB requests to fill 64 workers, the server's receive window and the client's write
	// quota; each with a short ctx.
	const n = 160
	results := make(chan error, n)
	for range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_, err := st.Sign(ctx, msgReq(60<<10))
			results <- err
		}()
	}
	deadline := time.After(5 * time.Second)
	for i := range n {
		select {
		case err := <-results:
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("Sign with a 500ms ctx while the token is held = %v, want DeadlineExceeded", err)
			}
		case <-deadline:
			t.Errorf("%d of %d Signs with a 500ms ctx had not returned after 5s (blocked in Send, ignoring ctx)", n-i, n)
			closed := make(chan error, 1)
			go func() { closed <- st.Close() }()
			select {
			case <-closed:
			case <-time.After(2 * time.Second):
				t.Errorf("Close had not returned after 2s (waiting for a Send blocked by flow control)")
			}
			return
		}
	}
	gate.Open()
	if err := st.Close(); err != nil && !errors.Is(err, client.ErrStreamClosed) {
		t.Errorf("Close = %v", err)
	}
}
