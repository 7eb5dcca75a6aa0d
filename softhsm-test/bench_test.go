package softhsmtest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/hsmstore"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// Each comparison runs its contenders in turn, in benchRounds rounds of benchSlice each (the order
// reversed every other round), and reports every contender's median rate and every ratio as the median
// of the ratios measured within one round. On a shared machine the speed drifts by tens of percent
// within a minute; contenders measured seconds apart, one after the other, would compare the drift as
// much as the code.
const (
	benchRounds = 5
	benchSlice  = 500 * time.Millisecond
	// benchMaxOps bounds one slice by count as well as by time.
	benchMaxOps = 1_000_000
)

// contender is one of the operations a comparison measures.
type contender struct {
	name string
	op   func() error
	// prepare, when set, runs untimed before each of the contender's slices (to make its inputs).
	prepare func() error
}

// ratio is a figure a comparison reports: rate of contender num as a percentage of contender den.
type ratio struct{ num, den, unit string }

// BenchmarkSign measures signs per second for ES256 and RS256 through the whole daemon path (gRPC over
// mutual TLS on loopback to a `signerd serve` process) next to two in-process baselines on the same token
// and key, at the same concurrency:
//
//   - inprocess: crypto11 signing with the key's token object in this process, as a service that used
//     the HSM directly would (hsm with NoSessionCopies: crypto11 plus signerd's input checks). The
//     daemon's %inprocess is measured against it.
//   - inprocess-copies: signerd's hsm package in this process as the daemon runs it, signing through
//     session copies of the keys (hsm.Token.Find), so %inprocess-copies is the cost of gRPC, mTLS and
//     the daemon alone.
//
// It also reports empty-rpc-ops/s: health checks on the same connection, which pass through the same
// mutual TLS, HTTP/2 and interceptor (identity, rate limit, metrics) and do nothing else. Their rate
// is the machine's ceiling for any RPC, against which a signature's cost in the token can be weighed.
// And for every contender the CPU time one operation cost this process and the daemon together
// (<name>-cpu-us/op): what the RPC adds to a signature on both of its sides, in microseconds, where
// the rates mix it with how the scheduler shared out the wall-clock time.
//
// `make bench` runs it (each sub-benchmark once: it times itself, see benchRounds).
//
// The daemon gets max_sessions 5, so at most 4 signs are inside SoftHSM at once: SoftHSM is CPU-bound
// on this 2-core machine and more concurrent calls only add lock contention inside it, while requests
// beyond that wait cheaply in the daemon. The client, in this process, competes for the same 2 cores.
func BenchmarkSign(b *testing.B) {
	in := startInstance(b, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256"}, maxSessions: 5})
	conn := in.conn(b, in.svc)
	c, health := signerv1.NewSignerClient(conn), healthpb.NewHealthClient(conn)
	empty := &healthpb.HealthCheckRequest{Service: "signer.v1.Signer"}

	_, stream := in.signStream(b, in.svc)

	tokenObjects, copies := in.openInProcess(b, true), in.openInProcess(b, false)
	for _, key := range []string{"es256", "rs256"} {
		k, _ := tokenObjects.Snapshot().Key(key)
		kc, _ := copies.Snapshot().Key(key)
		digest := k.Alg.Digest([]byte("benchmark message"))
		opts := k.Alg.SignerOpts()
		req := &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Digest{Digest: digest}}
		for _, conc := range []int{1, 8, 32, 64} {
			b.Run(fmt.Sprintf("%s/conc=%d", jose.Algorithm(k.Alg), conc), func(b *testing.B) {
				compare(b, conc, in.cpuTime(b), []contender{
					{name: "inprocess", op: func() error { _, err := k.Active.Signer.Sign(rand.Reader, digest, opts); return err }},
					{name: "inprocess-copies", op: func() error { _, err := kc.Active.Signer.Sign(rand.Reader, digest, opts); return err }},
					{name: "grpc", op: func() error { _, err := c.Sign(context.Background(), req); return err }},
					{name: "grpc-stream", op: func() error { _, err := stream.Sign(context.Background(), req); return err }},
					{name: "empty-rpc", op: func() error { _, err := health.Check(context.Background(), empty); return err }},
				}, []ratio{{"grpc", "inprocess", "%inprocess"}, {"grpc", "inprocess-copies", "%inprocess-copies"},
					{"grpc-stream", "inprocess", "%inprocess-stream"}, {"grpc-stream", "inprocess-copies", "%inprocess-copies-stream"}})
			})
		}
	}
}

// BenchmarkJWT measures, at the same concurrency: SignJWT ES256 and the raw Sign RPC on the same key
// through the daemon; VerifyJWT ES256 through the daemon (cached public key, never the token), of one
// repeated token and of tokens never verified before; and raw ES256 signing in this process on the same
// token (crypto11 with the token object, as a service using the HSM directly would sign), which
// VerifyJWT should at least match. For scale it also reports inprocess-verify: the ES256 signature check
// VerifyJWT makes for a never-seen token (jose, Go's crypto/ecdsa), alone in this process, without an
// RPC, as %inprocess-verify/inprocess-sign.
func BenchmarkJWT(b *testing.B) {
	in := startInstance(b, instanceOptions{keys: map[string]string{"es256": "ES256"}, maxSessions: 5})
	c := in.dial(b, in.svc)
	ring := in.openInProcess(b, true)
	k, _ := ring.Snapshot().Key("es256")
	digest := k.Alg.Digest([]byte("benchmark message"))
	s, opts := k.Active.Signer, k.Alg.SignerOpts()
	token, err := c.SignJWT(context.Background(), &signerv1.SignJWTRequest{Key: "es256", ClaimsJson: `{"sub":"bench"}`, TtlSeconds: 300})
	if err != nil {
		b.Fatal(err)
	}
	// Tokens never verified before, minted (untimed) before each slice, so that each verification checks
	// a signature instead of hitting the daemon's verified-token cache. A slice that runs out of them
	// ends early, its rate measured over the time it ran, and the next slice gets twice as many.
	var fresh *tokenPool
	freshSize := 12_000
	prepareFresh := func() error {
		if fresh != nil && fresh.empty() {
			freshSize *= 2
		}
		tokens, err := mintTokens(c, freshSize)
		fresh = &tokenPool{tokens: tokens}
		return err
	}
	// The signature check alone, as VerifyJWT makes it (no cache here: every call verifies).
	parts := strings.Split(token.GetToken(), ".")
	tokenSig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		b.Fatal(err)
	}
	method, signingInput := jose.NewSigningMethod(jose.Algorithm(k.Alg)), parts[0]+"."+parts[1]
	signReq := &signerv1.SignRequest{Key: "es256", Input: &signerv1.SignRequest_Digest{Digest: digest}}
	signJWTReq := &signerv1.SignJWTRequest{Key: "es256", ClaimsJson: `{"sub":"bench"}`}
	verifyReq := &signerv1.VerifyJWTRequest{Token: token.GetToken()}
	for _, conc := range []int{8, 32} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			compare(b, conc, in.cpuTime(b), []contender{
				{name: "Sign", op: func() error { _, err := c.Sign(context.Background(), signReq); return err }},
				{name: "SignJWT", op: func() error { _, err := c.SignJWT(context.Background(), signJWTReq); return err }},
				{name: "inprocess-sign", op: func() error { _, err := s.Sign(rand.Reader, digest, opts); return err }},
				{name: "inprocess-verify", op: func() error { return method.Verify(signingInput, tokenSig, k.Active.Public) }},
				{name: "VerifyJWT", op: func() error { _, err := c.VerifyJWT(context.Background(), verifyReq); return err }},
				{name: "VerifyJWT-uncached", op: func() error {
					t, ok := fresh.next()
					if !ok {
						return errPoolEmpty
					}
					_, err := c.VerifyJWT(context.Background(), &signerv1.VerifyJWTRequest{Token: t})
					return err
				}, prepare: prepareFresh},
			}, []ratio{
				{"SignJWT", "Sign", "%SignJWT/Sign"},
				{"VerifyJWT", "inprocess-sign", "%VerifyJWT/inprocess-sign"},
				{"VerifyJWT-uncached", "inprocess-sign", "%VerifyJWT-uncached/inprocess-sign"},
				{"inprocess-verify", "inprocess-sign", "%inprocess-verify/inprocess-sign"},
			})
		})
	}
}

// compare measures contenders in interleaved rounds at concurrency conc and reports each one's median
// rate (unit "<name>-ops/s"), the CPU time it cost per operation in this process and the daemon
// together over all its slices (unit "<name>-cpu-us/op", from cpu), and each ratio's median over the
// rounds. It ignores b.N: it times itself.
func compare(b *testing.B, conc int, cpu func() time.Duration, cs []contender, ratios []ratio) {
	b.Helper()
	rates := make(map[string][]float64, len(cs))
	cpuUsed := make(map[string]time.Duration, len(cs))
	ops := make(map[string]int64, len(cs))
	for round := range benchRounds {
		order := slices.Clone(cs)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, c := range order {
			if c.prepare != nil {
				if err := c.prepare(); err != nil {
					b.Fatalf("%s: %v", c.name, err)
				}
			}
			before := cpu()
			rate, done, err := rateFor(conc, benchSlice, c.op)
			if err != nil {
				b.Fatalf("%s: %v", c.name, err)
			}
			cpuUsed[c.name] += cpu() - before
			ops[c.name] += done
			rates[c.name] = append(rates[c.name], rate)
		}
	}
	b.ReportMetric(0, "ns/op")
	for _, c := range cs {
		b.ReportMetric(median(rates[c.name]), c.name+"-ops/s")
		b.ReportMetric(float64(cpuUsed[c.name].Microseconds())/float64(ops[c.name]), c.name+"-cpu-us/op")
	}
	for _, r := range ratios {
		pct := make([]float64, benchRounds)
		for i := range pct {
			pct[i] = 100 * rates[r.num][i] / rates[r.den][i]
		}
		b.ReportMetric(median(pct), r.unit)
	}
}

// errPoolEmpty ends a slice whose contender has run out of prepared inputs.
var errPoolEmpty = errors.New("no more prepared inputs")

// rateFor runs op over conc goroutines until d has passed, benchMaxOps operations were started or op
// ran out of inputs, and returns the operations completed per second and their number. A slice that
// completed nothing is an error, not a rate of zero.
func rateFor(conc int, d time.Duration, op func() error) (float64, int64, error) {
	var started, done atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && started.Add(1) <= benchMaxOps {
				if err := op(); err != nil {
					if !errors.Is(err, errPoolEmpty) {
						once.Do(func() { firstErr = err })
					}
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && done.Load() == 0 {
		firstErr = errors.New("no operation completed")
	}
	return float64(done.Load()) / time.Since(start).Seconds(), done.Load(), firstErr
}

// median returns the median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// tokenPool hands out each of its tokens once, to any number of goroutines.
type tokenPool struct {
	tokens []string
	used   atomic.Int64
}

// empty reports whether every token has been handed out.
func (p *tokenPool) empty() bool { return p.used.Load() >= int64(len(p.tokens)) }

func (p *tokenPool) next() (string, bool) {
	i := p.used.Add(1) - 1
	if i >= int64(len(p.tokens)) {
		return "", false
	}
	return p.tokens[i], true
}

// minted numbers the tokens mintTokens makes, so that no two are alike.
var minted atomic.Int64

// mintTokens signs n distinct ES256 tokens through the daemon.
func mintTokens(c signerv1.SignerClient, n int) ([]string, error) {
	out := make([]string, n)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				claims := fmt.Sprintf(`{"sub":"u%d"}`, minted.Add(1))
				r, err := c.SignJWT(context.Background(), &signerv1.SignJWTRequest{Key: "es256", ClaimsJson: claims, TtlSeconds: 300})
				if err != nil {
					errs[w] = err
					return
				}
				out[i] = r.GetToken()
			}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// openInProcess opens the instance's token in this process and loads its keys, for the in-process side
// of the comparisons: with tokenObjects, keys sign as the token objects themselves (crypto11 as a service
// would use it); otherwise through session copies, as the daemon does. The token is closed at cleanup.
func (in *instance) openInProcess(b *testing.B, tokenObjects bool) *keyring.Ring {
	b.Helper()
	tok, err := hsm.Open(hsm.Config{Module: in.tok.Module, TokenLabel: in.tok.Label, PIN: in.tok.PIN,
		MaxSessions: 17, PoolWaitTimeout: 5 * time.Second, NoSessionCopies: tokenObjects})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tok.Close() })
	ring, err := keyring.Open(hsmstore.New(tok), keyring.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return ring
}

// cpuTime returns a function that reads the CPU time (user and system) used so far by this process and
// the instance's daemon together: what the machine spent, on both sides of the RPC, whatever the
// scheduler did with the wall-clock time.
func (in *instance) cpuTime(b *testing.B) func() time.Duration {
	stat := fmt.Sprintf("/proc/%d/stat", in.proc.Pid)
	return func() time.Duration {
		var self syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
			b.Fatal(err)
		}
		raw, err := os.ReadFile(stat)
		if err != nil {
			b.Fatal(err)
		}
		// Fields 14 and 15 (utime, stime, in clock ticks of 1/100 s on Linux) follow the command name,
		// which ends at the last ')'.
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			b.Fatalf("%s: %q", stat, raw)
		}
		return time.Duration(self.Utime.Nano()+self.Stime.Nano()) + time.Duration(utime+stime)*10*time.Millisecond
	}
}
