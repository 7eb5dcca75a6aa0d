package server

import (
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc/status"

	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// streamInFlight bounds the requests of one SignStream signed at once; the stream's further requests
// wait unread, and gRPC's flow control holds the caller back.
const streamInFlight = 64

// SignStream implements signer.v1.Signer: Sign for many requests over one stream, in flight together.
// Each request goes through what a Sign call goes through (admit, then Sign: policy, input, signing
// bound, audit, one status mapping, guard), so that a stream is only a cheaper way to make Sign calls.
func (s *Server) SignStream(stream signerv1.Signer_SignStreamServer) error {
	ctx := stream.Context()
	var (
		wg     sync.WaitGroup
		sendMu sync.Mutex // a gRPC stream takes one Send at a time
		slots  = make(chan struct{}, streamInFlight)
	)
	defer wg.Wait()
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err // the stream is gone (canceled, deadline, connection): gRPC's status already
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			req := in.GetRequest()
			resp, err := s.guard(signerv1.Signer_SignStream_FullMethodName, func() (any, error) {
				ctx, err := s.admit(ctx, signerv1.Signer_SignStream_FullMethodName, req)
				if err != nil {
					return nil, err
				}
				return s.Sign(ctx, req)
			})
			out := &signerv1.SignStreamResponse{Id: in.GetId()}
			if err != nil {
				st := status.Convert(err)
				out.Result = &signerv1.SignStreamResponse_Error{Error: &signerv1.SignStreamError{Code: int32(st.Code()), Message: st.Message()}}
			} else {
				out.Result = &signerv1.SignStreamResponse_Response{Response: resp.(*signerv1.SignResponse)}
			}
			sendMu.Lock()
			defer sendMu.Unlock()
			// A failed Send means the stream is gone; Recv reports it and ends the loop.
			_ = stream.Send(out)
		}()
	}
}
