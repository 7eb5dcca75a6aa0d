package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// ErrStreamClosed is returned (wrapped) by [Stream.Sign] once the stream has ended: Close was called,
// or the stream failed, and the error that ended it is wrapped too.
var ErrStreamClosed = errors.New("client: sign stream closed")

// Stream signs over one SignStream call: Sign requests from any number of goroutines travel on it
// together, each costing a message each way instead of a whole call, for callers that sign at high rates
// (see signer.v1.Signer.SignStream). signerd signs up to 64 of a stream's requests at once. A Stream is
// safe for concurrent use; a failed request fails alone, but once the stream itself fails (signerd
// restarts, the connection drops) every waiting and later Sign fails with [ErrStreamClosed], and the
// caller opens a new Stream.
type Stream struct {
	stream signerv1.Signer_SignStreamClient
	cancel context.CancelFunc

	sendMu sync.Mutex // a gRPC stream takes one Send at a time

	mu      sync.Mutex // guards the fields below
	nextID  uint64
	pending map[uint64]chan *signerv1.SignStreamResponse
	err     error // ErrStreamClosed with why the stream ended; set once
	cause   error // why the stream ended
	done    chan struct{}
}

// SignStream opens a Stream. ctx bounds the whole stream: cancelling it ends the stream, and its
// deadline, if any, is every request's. Close the Stream when done with it.
func (c *Client) SignStream(ctx context.Context) (*Stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := c.signer.SignStream(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: open sign stream: %w", err)
	}
	s := &Stream{stream: st, cancel: cancel, pending: map[uint64]chan *signerv1.SignStreamResponse{}, done: make(chan struct{})}
	go s.receive()
	return s, nil
}

// receive hands each response to the Sign waiting for it, until the stream ends.
func (s *Stream) receive() {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.end(err)
			return
		}
		s.mu.Lock()
		ch := s.pending[resp.GetId()]
		delete(s.pending, resp.GetId())
		s.mu.Unlock()
		if ch != nil {
			ch <- resp // buffered: never blocks
		}
	}
}

// end records why the stream ended and releases every waiting Sign.
func (s *Stream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.err, s.cause = fmt.Errorf("%w: %w", ErrStreamClosed, err), err
	close(s.done)
	s.cancel()
}

// Sign sends req on the stream and waits for its response, or for ctx to end (the request may still
// be signed then, and audited: its response is dropped). A refused request's error is the status Sign
// would have returned (test it with status.Code). The response is as Sign's.
func (s *Stream) Sign(ctx context.Context, req *signerv1.SignRequest) (*signerv1.SignResponse, error) {
	ch := make(chan *signerv1.SignStreamResponse, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	s.nextID++
	id := s.nextID
	s.pending[id] = ch
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}

	s.sendMu.Lock()
	err := s.stream.Send(&signerv1.SignStreamRequest{Id: id, Request: req})
	s.sendMu.Unlock()
	if err != nil {
		forget()
		// Send's own error is io.EOF when the stream has ended; Recv (receive) has the reason.
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		return nil, s.err
	}
	select {
	case resp := <-ch:
		if e := resp.GetError(); e != nil {
			code := codes.Code(e.GetCode())
			if code == codes.OK {
				code = codes.Unknown
			}
			return nil, status.Error(code, e.GetMessage())
		}
		if resp.GetResponse() == nil {
			return nil, status.Error(codes.Internal, "client: sign stream response without a result")
		}
		return resp.GetResponse(), nil
	case <-s.done:
		forget()
		s.mu.Lock()
		defer s.mu.Unlock()
		return nil, s.err
	case <-ctx.Done():
		forget()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// Close ends the stream: Signs waiting for their responses fail with [ErrStreamClosed]. It returns
// nil, or why the stream had already failed.
func (s *Stream) Close() error {
	s.sendMu.Lock()
	_ = s.stream.CloseSend()
	s.sendMu.Unlock()
	s.mu.Lock()
	failed, cause := s.err, s.cause
	s.mu.Unlock()
	s.end(errors.New("closed"))
	if failed != nil && status.Code(cause) != codes.Canceled {
		return failed
	}
	return nil
}
