package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/audit"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	"github.com/signerd/signerd/server/authz"
)

// streamInFlight bounds the requests of one SignStream signed at once; the stream's further requests
// wait unread, and gRPC's flow control holds the caller back.
const streamInFlight = 64

// SignStream implements signer.v1.Signer: Sign for many requests over one stream, in flight together.
// Each request goes through what a Sign call goes through (readmit, then Sign: policy, input, signing
// bound, audit, one status mapping, guard), so that a stream is only a cheaper way to make Sign calls.
//
// The requests are handed to workers, started as needed up to streamInFlight and kept for the stream's
// life: a goroutine per request would grow its stack anew to the depth of a token call every time.
func (s *Server) SignStream(stream signerv1.Signer_SignStreamServer) error {
	ctx := stream.Context()
	// The caller is the connection's: found once, its certificate's validity checked for each request.
	c, err := peerCaller(ctx)
	if err != nil {
		return s.refuse(c.id, signerv1.Signer_SignStream_FullMethodName, nil, err)
	}
	ctx = c.context(ctx)
	var (
		wg      sync.WaitGroup
		sendMu  sync.Mutex // a gRPC stream takes one Send at a time
		work    = make(chan streamRequest)
		workers int
	)
	defer func() {
		close(work)
		wg.Wait()
	}()
	worker := func() {
		defer wg.Done()
		for r := range work {
			out := s.streamSign(ctx, c, r)
			sendMu.Lock()
			// A failed Send means the stream is gone; Recv reports it and ends the loop.
			_ = stream.Send(out)
			sendMu.Unlock()
		}
	}
	// Requests are read apart, so that a drain (Drain) ends the stream while Recv waits. A request read
	// but not taken once the handler has returned is refused and audited, with left (done by then).
	left, leave := context.WithCancel(ctx)
	defer leave() // after the workers are done (deferred calls run last first)
	requests, recvErr := make(chan streamRequest), make(chan error, 1)
	go func() {
		for {
			in, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			r := streamRequest{in: in, read: time.Now()}
			select {
			case requests <- r:
			case <-left.Done():
				_ = s.streamSign(left, c, r)
				return
			}
		}
	}()
	for {
		var r streamRequest
		select {
		case r = <-requests:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err // the stream is gone (canceled, deadline, connection): gRPC's status already
		case <-s.draining:
			// The requests read so far are answered (the deferred wait) before the status goes.
			return status.Error(codes.Unavailable, "signerd is stopping: open a new stream")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		// An idle worker takes the request at once; if none is idle, one more is started while the
		// bound allows, and otherwise the request waits for the first worker to be free.
		select {
		case work <- r:
			continue
		default:
		}
		if workers < streamInFlight {
			workers++
			wg.Add(1)
			go worker()
		}
		select {
		case work <- r:
		case <-ctx.Done():
			// The request was read, so it is audited, refused as any Sign whose caller has gone; no
			// one is left to read the answer.
			_ = s.streamSign(ctx, c, r)
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// streamRequest is a request of a SignStream and when it was read, from which its timeout counts.
type streamRequest struct {
	in   *signerv1.SignStreamRequest
	read time.Time
}

// streamSign signs one request of caller c's SignStream and returns its response; ctx carries c.
func (s *Server) streamSign(ctx context.Context, c caller, r streamRequest) *signerv1.SignStreamResponse {
	const method = signerv1.Signer_SignStream_FullMethodName
	req := r.in.GetRequest()
	resp, err := s.guard(method, func() (any, error) {
		if err := s.readmit(c, method, req); err != nil {
			return nil, err
		}
		if t := r.in.GetTimeout(); t != nil {
			if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
				// Refused as a Sign input would be, and audited as one.
				ev := audit.Event{Identity: c.id, Op: string(authz.OpSign), Key: req.GetKey()}
				return nil, s.record(&ev, invalidArgument("timeout: %ds %dns is negative or malformed", t.GetSeconds(), t.GetNanos()))
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, r.read.Add(t.AsDuration()))
			defer cancel()
		}
		return s.Sign(ctx, req)
	})
	out := &signerv1.SignStreamResponse{Id: r.in.GetId()}
	if err != nil {
		st := status.Convert(err)
		out.Result = &signerv1.SignStreamResponse_Error{Error: &signerv1.SignStreamError{Code: int32(st.Code()), Message: st.Message()}}
	} else {
		out.Result = &signerv1.SignStreamResponse_Response{Response: resp.(*signerv1.SignResponse)}
	}
	return out
}
