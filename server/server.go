// Package server implements signerd's gRPC services. It authenticates callers from their verified client
// certificates, authorizes every request against the policy before it looks a key up, validates input,
// bounds the signs in flight, audits every operation, and maps every error to one gRPC status in one place.
// It signs through crypto.Signer values from the keyring and never imports the HSM layer.
package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
	"github.com/signerd/signerd/server/authz"
)

// MaxMessageBytes caps the message a caller may ask signerd to hash and sign.
const MaxMessageBytes = signerv1.MaxMessageBytes

// MaxRequestBytes caps a whole gRPC request; larger ones are refused by gRPC with RESOURCE_EXHAUSTED
// before any handler runs.
const MaxRequestBytes = signerv1.MaxRequestBytes

// Keys is what the server reads keys from: the keyring's current snapshot.
type Keys interface {
	Snapshot() *keyring.Snapshot
}

// Config configures a Server.
type Config struct {
	Keys Keys
	// Manager changes keys for the KeyAdmin service; nil leaves KeyAdmin unregistered.
	Manager KeyManager
	// MinPrepublish is the shortest prepublish period KeyAdmin accepts for a key: the JWKS max-age.
	MinPrepublish time.Duration
	// Policy is the compiled access policy; SetPolicy replaces it at run time.
	Policy *authz.Authorizer
	// MaxInFlight bounds concurrent signing operations; size it to the HSM session pool so that no request
	// waits inside the HSM library, where its deadline cannot reach it.
	MaxInFlight int
	// RatePerSecond and Burst limit each identity's requests; zero RatePerSecond disables the limit.
	RatePerSecond float64
	Burst         int
	// Leeway is the clock skew allowed when checking JWT time claims; zero allows none.
	Leeway time.Duration
	Audit  *audit.Log
	Log    *slog.Logger
	// Metrics, when set, receives the server's Prometheus metrics.
	Metrics prometheus.Registerer
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Server implements signer.v1.Signer.
type Server struct {
	signerv1.UnimplementedSignerServer

	keys          Keys
	manager       KeyManager
	minPrepublish time.Duration
	policy        atomic.Pointer[authz.Authorizer]
	sem           chan struct{}
	audit         *audit.Log
	log           *slog.Logger
	now           func() time.Time
	leeway        time.Duration

	verified *verifiedCache
	metrics  *metrics
	// lastKidRefresh rate-limits refreshes triggered by unknown kids (Unix nanoseconds).
	lastKidRefresh atomic.Int64

	rate     rate.Limit
	burst    int
	limiters sync.Map // identity -> *rate.Limiter
	// newLimiters counts the limiters made, so that every sweepEvery-th one sweeps the idle ones out.
	newLimiters atomic.Int64
	refusals    refusalSampler

	// draining is closed by Drain: SignStreams stop reading requests.
	draining  chan struct{}
	drainOnce sync.Once
}

// Drain prepares a stop: every SignStream stops reading requests, answers those it has read, and ends
// with UNAVAILABLE, so that its caller opens a new stream (to another instance); a stream never ends
// by itself, and grpc.Server.GracefulStop would otherwise wait for each until its timeout and then cut
// it, requests in flight and all. Unary calls are not affected. Drain is idempotent.
func (s *Server) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// New validates cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Keys == nil {
		errs = append(errs, errors.New("server: Keys is nil"))
	}
	if cfg.Policy == nil {
		errs = append(errs, errors.New("server: Policy is nil"))
	}
	if cfg.MaxInFlight < 1 {
		errs = append(errs, fmt.Errorf("server: MaxInFlight %d, want at least 1", cfg.MaxInFlight))
	}
	if cfg.Audit == nil {
		errs = append(errs, errors.New("server: Audit is nil"))
	}
	if cfg.Leeway < 0 || cfg.Leeway > 5*time.Minute {
		errs = append(errs, fmt.Errorf("server: Leeway %v, want 0 to 5m", cfg.Leeway))
	}
	if cfg.RatePerSecond < 0 || (cfg.RatePerSecond > 0 && cfg.Burst < 1) {
		errs = append(errs, errors.New("server: rate limit needs RatePerSecond >= 0 and Burst >= 1"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Server{keys: cfg.Keys, manager: cfg.Manager, minPrepublish: cfg.MinPrepublish, sem: make(chan struct{}, cfg.MaxInFlight), audit: cfg.Audit, log: cfg.Log, verified: newVerifiedCache(),
		now: cfg.Now, leeway: cfg.Leeway, rate: rate.Limit(cfg.RatePerSecond), burst: cfg.Burst, draining: make(chan struct{})}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.policy.Store(cfg.Policy)
	s.metrics = newMetrics(cfg.Metrics, func() float64 { return float64(len(s.sem)) })
	return s, nil
}

// SetPolicy replaces the access policy atomically (on SIGHUP).
func (s *Server) SetPolicy(p *authz.Authorizer) { s.policy.Store(p) }

// Register adds the Signer service to g.
func (s *Server) Register(g *grpc.Server) { signerv1.RegisterSignerServer(g, s) }

type identityKey struct{}

// identity returns the caller identity the interceptor put in ctx.
func identity(ctx context.Context) string {
	id, _ := ctx.Value(identityKey{}).(string)
	return id
}

// UnaryInterceptor authenticates the caller and applies its rate limit (admit), recovers panics, and
// makes sure every error leaving a handler is a gRPC status (guard). Health and reflection calls pass
// through the same checks, though they carry no key operation.
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return s.guard(info.FullMethod, func() (any, error) {
			ctx, err := s.admit(ctx, info.FullMethod, req)
			if err != nil {
				return nil, err
			}
			return handler(ctx, req)
		})
	}
}

// guard runs one request of method (a unary call, or one request of a SignStream): a panic becomes
// INTERNAL, every error a gRPC status, and the request is counted in the metrics with its code.
func (s *Server) guard(method string, call func() (any, error)) (resp any, err error) {
	// Deferred first so that it runs last, after a recovered panic has become an error.
	start := time.Now()
	defer func() { s.metrics.observe(method, start, err) }()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in handler", "method", method, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, toStatus(s.log, errors.New("panic"))
		}
	}()
	resp, err = call()
	return resp, toStatus(s.log, err)
}

// admit authenticates the caller of one request of method from ctx's connection and applies the
// caller's rate limit. It returns ctx with the caller's identity, or the refusal as a status, which it
// audits (see refusalSampler).
func (s *Server) admit(ctx context.Context, method string, req any) (context.Context, error) {
	c, err := peerCaller(ctx)
	if err != nil {
		return nil, s.refuse(c.id, method, req, err)
	}
	if err := s.readmit(c, method, req); err != nil {
		return nil, err
	}
	return c.context(ctx), nil
}

// readmit applies to one request of caller c what can change from one request of a connection to the
// next: the certificate chain's validity period and the rate limit. A refusal is audited.
func (s *Server) readmit(c caller, method string, req any) error {
	err := s.current(c)
	if err == nil && !s.allowRate(c.id) {
		err = &apiError{code: codes.ResourceExhausted, msg: "rate limit exceeded for " + c.id}
	}
	if err != nil {
		return s.refuse(c.id, method, req, err)
	}
	return nil
}

// refuse turns err, a refusal of a request of method by identity id, into its status and audits it
// (see refusalSampler).
func (s *Server) refuse(id, method string, req any, err error) error {
	err = toStatus(s.log, err)
	s.auditRefusal(id, method, req, err)
	return err
}

// StreamInterceptor authenticates streaming calls (server reflection, SignStream, which admits each of
// its requests again).
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		c, err := peerCaller(ss.Context())
		if err == nil {
			err = s.current(c)
		}
		if err != nil {
			return s.refuse(c.id, info.FullMethod, nil, err)
		}
		return handler(srv, ss)
	}
}

// caller is the client of a connection: the identity its verified certificate chains name, and the
// chains. Both last as long as the connection.
type caller struct {
	id     string
	chains [][]*x509.Certificate
}

// context returns ctx carrying c's identity, for identity.
func (c caller) context(ctx context.Context) context.Context {
	return context.WithValue(ctx, identityKey{}, c.id)
}

// peerCaller reads the caller from the verified client certificate chains of ctx's connection.
func peerCaller(ctx context.Context) (caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return caller{}, unauthenticated("no peer")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return caller{}, unauthenticated("mutual TLS required")
	}
	chains := tlsInfo.State.VerifiedChains
	id, err := authz.IdentityFromChains(chains)
	if err != nil {
		return caller{}, unauthenticated("no identity in client certificate")
	}
	return caller{id: id, chains: chains}, nil
}

// current refuses caller c unless one of its chains is within its validity period: the chain was
// verified at the handshake, but a connection can outlive a certificate, so each request checks again.
func (s *Server) current(c caller) error {
	now := s.now()
	for _, chain := range c.chains {
		if chainValidAt(chain, now) {
			return nil
		}
	}
	return unauthenticated("client certificate chain expired or not yet valid; reconnect with a current certificate")
}

// chainValidAt reports whether every certificate of chain is within its validity period at now.
func chainValidAt(chain []*x509.Certificate, now time.Time) bool {
	for _, c := range chain {
		if now.After(c.NotAfter) || now.Before(c.NotBefore) {
			return false
		}
	}
	return true
}

func (s *Server) allowRate(id string) bool {
	if s.rate == 0 {
		return true
	}
	l, ok := s.limiters.Load(id)
	if !ok {
		var loaded bool
		l, loaded = s.limiters.LoadOrStore(id, rate.NewLimiter(s.rate, s.burst))
		if !loaded && s.newLimiters.Add(1)%sweepEvery == 0 {
			s.sweepLimiters()
		}
	}
	return l.(*rate.Limiter).Allow()
}

// sweepEvery is how many new limiters are made between two sweeps of the idle ones.
const sweepEvery = 1024

// sweepLimiters drops the limiters whose bucket is full again: their identities have been idle, and a new
// limiter would be the same, so that identities that come and go (a certificate per instance) do not
// grow the map without end.
func (s *Server) sweepLimiters() {
	now := time.Now()
	s.limiters.Range(func(id, l any) bool {
		if l.(*rate.Limiter).TokensAt(now) >= float64(s.burst) {
			s.limiters.Delete(id)
		}
		return true
	})
}

// minKidRefresh is the least time between two refreshes triggered by unknown kids, so that a caller
// sending random kids cannot make signerd re-read the token on every request.
const minKidRefresh = time.Second

// refreshForKid re-reads the keys after a request named a kid this daemon does not know, in case another
// daemon or the CLI just rotated. It reports whether it refreshed.
func (s *Server) refreshForKid() bool {
	r, ok := s.keys.(interface{ TryRefresh() error })
	if !ok {
		return false
	}
	now, last := s.now().UnixNano(), s.lastKidRefresh.Load()
	if now-last < int64(minKidRefresh) || !s.lastKidRefresh.CompareAndSwap(last, now) {
		return false
	}
	if err := r.TryRefresh(); err != nil {
		s.log.Warn("refresh for unknown kid failed", "err", err)
		return false
	}
	return true
}

// published returns the version with thumbprint kid if it is published (pending, active, or retired
// within its grace), re-reading the token once if this daemon does not know the kid at all.
func (s *Server) published(kid string) (*keyring.LoadedVersion, bool) {
	v, ok := s.keys.Snapshot().Kid(kid)
	if !ok && s.refreshForKid() {
		v, ok = s.keys.Snapshot().Kid(kid)
	}
	return v, ok && v.State.Publishable() && v.Public != nil
}

// acquire takes a signing slot, giving up at the request's deadline.
func (s *Server) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
	default:
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// The HSM call cannot be cancelled, so a request whose deadline passed while waiting stops here.
	if err := ctx.Err(); err != nil {
		<-s.sem
		return err
	}
	return nil
}

func (s *Server) release() { <-s.sem }
