package server

import (
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/audit"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	"github.com/signerd/signerd/server/authz"
)

// methodOps are the audit operations of the RPCs, for requests the interceptor refuses before their
// handler runs (which names its own). Other methods (health, reflection) are audited by their full name.
var methodOps = map[string]string{
	signerv1.Signer_Sign_FullMethodName:             string(authz.OpSign),
	signerv1.Signer_SignStream_FullMethodName:       string(authz.OpSign),
	signerv1.Signer_Verify_FullMethodName:           string(authz.OpVerify),
	signerv1.Signer_GetPublicKey_FullMethodName:     string(authz.OpPublicKey),
	signerv1.Signer_ListKeys_FullMethodName:         opListKeys,
	signerv1.Signer_SignJWT_FullMethodName:          string(authz.OpSignJWT),
	signerv1.Signer_VerifyJWT_FullMethodName:        string(authz.OpVerifyJWT),
	signerv1.KeyAdmin_CreateKey_FullMethodName:      opCreateKey,
	signerv1.KeyAdmin_RotateKey_FullMethodName:      opRotateKey,
	signerv1.KeyAdmin_RevokeVersion_FullMethodName:  opRevokeVersion,
	signerv1.KeyAdmin_DestroyVersion_FullMethodName: opDestroyVersion,
	signerv1.KeyAdmin_ListKeys_FullMethodName:       opAdminListKeys,
}

// refusalSampler lets through the first refusal of each caller and status code in each second. A caller
// whose requests the interceptor refuses (over its rate limit, or on a connection that outlived its
// certificate) is in the audit trail, but cannot make the trail grow with the rate of its requests:
// the refusals not written are counted in signerd_grpc_requests_total only.
type refusalSampler struct {
	mu     sync.Mutex
	second int64
	seen   map[refusalKey]struct{}
}

type refusalKey struct {
	identity string
	code     string
}

// first reports whether k's is the first refusal in the second of now.
func (r *refusalSampler) first(k refusalKey, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sec := now.Unix(); sec != r.second || r.seen == nil {
		r.second, r.seen = sec, map[refusalKey]struct{}{}
	}
	if _, ok := r.seen[k]; ok {
		return false
	}
	r.seen[k] = struct{}{}
	return true
}

// auditRefusal records a request the interceptor refused with the status err, unless the same caller
// had one refused with the same code in the same second. id is the caller's identity, empty when its
// certificate has none.
func (s *Server) auditRefusal(id, method string, req any, err error) {
	st := status.Convert(err)
	if !s.refusals.first(refusalKey{id, st.Code().String()}, s.now()) {
		return
	}
	op, ok := methodOps[method]
	if !ok {
		op = method
	}
	ev := audit.Event{Identity: id, Op: op}
	switch r := req.(type) {
	case interface{ GetKey() string }:
		ev.Key = r.GetKey()
	case interface{ GetName() string }:
		ev.Key = r.GetName()
	}
	// record gives the event its outcome (denied for UNAUTHENTICATED) and code from err, a status already.
	_ = s.record(&ev, err)
}
