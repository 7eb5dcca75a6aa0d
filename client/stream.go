package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

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
// caller opens a new Stream. signerd also ends streams when it asks clients to reconnect (every 30
// minutes, so that a certificate or CA withdrawn by a reload stops being trusted), so a long-lived caller
// must expect that. A request's ctx deadline travels with it (its timeout), so that signerd does not
// sign a request whose deadline passed while it waited for a signing slot, as with a unary Sign; a ctx
// cancelled before its deadline, or without one, only ends the wait for the response: signerd still
// signs (and audits) that request, within the stream's own deadline.
type Stream struct {
	stream signerv1.Signer_SignStreamClient
	cancel context.CancelFunc

	sendq chan outgoing // the sender goroutine's input: Send may block on flow control

	mu      sync.Mutex // guards the fields below
	nextID  uint64
	pending map[uint64]chan *signerv1.SignStreamResponse
	cause   error         // why the stream ended; set once, when done is closed
	done    chan struct{} // closed when the stream has ended
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
	return newStream(st, cancel), nil
}

// newStream starts the goroutines of a Stream over st; cancel ends st.
func newStream(st signerv1.Signer_SignStreamClient, cancel context.CancelFunc) *Stream {
	s := &Stream{stream: st, cancel: cancel, pending: map[uint64]chan *signerv1.SignStreamResponse{}, done: make(chan struct{}),
		sendq: make(chan outgoing)}
	go s.receive()
	go s.send()
	return s
}

// outgoing is a request on its way to the sender goroutine, with its caller's deadline (zero if none).
type outgoing struct {
	m        *signerv1.SignStreamRequest
	deadline time.Time
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

// send is the only caller of the stream's Send, so that a Send blocked by flow control holds no
// caller past its ctx; it ends with the stream.
func (s *Stream) send() {
	for {
		select {
		case o := <-s.sendq:
			// The timeout is what is left of the deadline now, after the wait for this goroutine.
			if !o.deadline.IsZero() {
				d := time.Until(o.deadline)
				if d <= 0 {
					continue // its caller has given up, at its ctx's deadline
				}
				o.m.Timeout = durationpb.New(d)
			}
			if err := s.stream.Send(o.m); err != nil {
				<-s.done // receive has the reason
				return
			}
		case <-s.done:
			return
		}
	}
}

// end records why the stream ended and releases every waiting Sign.
func (s *Stream) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cause != nil {
		return
	}
	s.cause = err
	close(s.done)
	s.cancel()
}

// closed returns the error of a Sign on the ended stream: ErrStreamClosed, with why it ended.
func (s *Stream) closed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("%w: %w", ErrStreamClosed, s.cause)
}

// Sign sends req on the stream and waits for its response, or for ctx to end (a request whose ctx was
// cancelled may still be signed then, and audited: its response is dropped; see [Stream]). A refused
// request's error is the status Sign would have returned (test it with status.Code). The response is as
// Sign's.
func (s *Stream) Sign(ctx context.Context, req *signerv1.SignRequest) (*signerv1.SignResponse, error) {
	m := &signerv1.SignStreamRequest{Request: req}
	deadline, ok := ctx.Deadline()
	if ok {
		d := time.Until(deadline)
		if d <= 0 {
			return nil, status.FromContextError(context.DeadlineExceeded).Err()
		}
		m.Timeout = durationpb.New(d) // for the size check; the sender sets it again, no longer
	}
	// A request that cannot be marshalled, or that signerd's gRPC would refuse as too large, would end
	// the stream for every caller: refuse it here, as a unary Sign call fails alone.
	if !utf8.ValidString(req.GetKey()) {
		return nil, status.Error(codes.InvalidArgument, "client: key is not UTF-8")
	}
	if n := proto.Size(m) + 11; n > signerv1.MaxRequestBytes { // + the id set below, with its tag
		return nil, status.Errorf(codes.ResourceExhausted, "client: request of %d bytes, larger than signerd accepts (%d)", n, signerv1.MaxRequestBytes)
	}
	ch := make(chan *signerv1.SignStreamResponse, 1)
	s.mu.Lock()
	if s.cause != nil {
		s.mu.Unlock()
		return nil, s.closed()
	}
	s.nextID++
	id := s.nextID
	m.Id = id
	s.pending[id] = ch
	s.mu.Unlock()
	forget := func() {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
	}

	select {
	case s.sendq <- outgoing{m: m, deadline: deadline}:
	case <-ctx.Done():
		forget()
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-s.done:
		forget()
		return nil, s.closed()
	}
	select {
	case resp := <-ch:
		return result(resp)
	case <-s.done:
		forget()
		select {
		case resp := <-ch: // answered before the stream ended
			return result(resp)
		default:
		}
		return nil, s.closed()
	case <-ctx.Done():
		forget()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func result(resp *signerv1.SignStreamResponse) (*signerv1.SignResponse, error) {
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
}

// Close ends the stream: Signs waiting for their responses fail with [ErrStreamClosed]. It returns
// nil, or why the stream had already failed.
func (s *Stream) Close() error {
	s.mu.Lock()
	failed := s.cause != nil && status.Code(s.cause) != codes.Canceled
	s.mu.Unlock()
	if failed {
		return s.closed()
	}
	// Cancelling ends the stream on both sides, and unblocks a Send that waits for flow control; the
	// sender goroutine then returns.
	s.end(errors.New("closed"))
	return nil
}
