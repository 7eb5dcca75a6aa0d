package softhsmtest_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/hsmstore"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

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
// Compare the ratios within one run: absolute figures drift on a shared machine. `make bench` runs it.
//
// The daemon gets max_sessions 5, so at most 4 signs are inside SoftHSM at once: SoftHSM is CPU-bound
// on this 2-core machine and more concurrent calls only add lock contention inside it, while requests
// beyond that wait cheaply in the daemon. The client, in this process, competes for the same 2 cores.
func BenchmarkSign(b *testing.B) {
	in := startInstance(b, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256"}, maxSessions: 5})
	c := in.dial(b, in.svc)

	tokenObjects, copies := in.openInProcess(b, true), in.openInProcess(b, false)
	for _, key := range []string{"es256", "rs256"} {
		k, _ := tokenObjects.Snapshot().Key(key)
		kc, _ := copies.Snapshot().Key(key)
		alg := jose.Algorithm(k.Alg)
		digest := k.Alg.Digest([]byte("benchmark message"))
		opts := k.Alg.SignerOpts()
		for _, conc := range []int{1, 8, 32, 64} {
			var base, baseCopies float64
			b.Run(fmt.Sprintf("%s/conc=%d/inprocess", alg, conc), func(b *testing.B) {
				base = parallel(b, conc, func() error { _, err := k.Active.Signer.Sign(rand.Reader, digest, opts); return err })
			})
			b.Run(fmt.Sprintf("%s/conc=%d/inprocess-copies", alg, conc), func(b *testing.B) {
				baseCopies = parallel(b, conc, func() error { _, err := kc.Active.Signer.Sign(rand.Reader, digest, opts); return err })
			})
			b.Run(fmt.Sprintf("%s/conc=%d/grpc", alg, conc), func(b *testing.B) {
				req := &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Digest{Digest: digest}}
				rate := parallel(b, conc, func() error {
					_, err := c.Sign(context.Background(), req)
					return err
				})
				reportPercent(b, rate, base, "%inprocess")
				reportPercent(b, rate, baseCopies, "%inprocess-copies")
			})
		}
	}
}

// parallel runs op b.N times over exactly conc goroutines and reports and returns operations per second.
func parallel(b *testing.B, conc int, op func() error) float64 {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rate := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(rate, "ops/s")
	return rate
}

// reportPercent reports rate as a percentage of base (a rate measured just before in the same run), the
// figure the targets are stated in.
func reportPercent(b *testing.B, rate, base float64, unit string) {
	if base > 0 {
		b.ReportMetric(100*rate/base, unit)
	}
}

// BenchmarkJWT measures, in one run and at the same concurrency: SignJWT ES256 and the raw Sign RPC on the
// same key through the daemon; VerifyJWT ES256 through the daemon (cached public key, never the token);
// and raw ES256 signing in this process on the same token (crypto11 with the token object, as a service
// using the HSM directly would sign), which VerifyJWT should at least match.
func BenchmarkJWT(b *testing.B) {
	in := startInstance(b, instanceOptions{keys: map[string]string{"es256": "ES256"}, maxSessions: 5})
	c := in.dial(b, in.svc)
	ring := in.openInProcess(b, true)
	k, _ := ring.Snapshot().Key("es256")
	digest := k.Alg.Digest([]byte("benchmark message"))
	token, err := c.SignJWT(context.Background(), &signerv1.SignJWTRequest{Key: "es256", ClaimsJson: `{"sub":"bench"}`, TtlSeconds: 300})
	if err != nil {
		b.Fatal(err)
	}
	for _, conc := range []int{8, 32} {
		var sign, inProcess float64
		b.Run(fmt.Sprintf("conc=%d/Sign", conc), func(b *testing.B) {
			req := &signerv1.SignRequest{Key: "es256", Input: &signerv1.SignRequest_Digest{Digest: digest}}
			sign = parallel(b, conc, func() error { _, err := c.Sign(context.Background(), req); return err })
		})
		b.Run(fmt.Sprintf("conc=%d/SignJWT", conc), func(b *testing.B) {
			req := &signerv1.SignJWTRequest{Key: "es256", ClaimsJson: `{"sub":"bench"}`}
			reportPercent(b, parallel(b, conc, func() error { _, err := c.SignJWT(context.Background(), req); return err }),
				sign, "%Sign")
		})
		b.Run(fmt.Sprintf("conc=%d/inprocess-sign", conc), func(b *testing.B) {
			s, opts := k.Active.Signer, k.Alg.SignerOpts()
			inProcess = parallel(b, conc, func() error { _, err := s.Sign(rand.Reader, digest, opts); return err })
		})
		b.Run(fmt.Sprintf("conc=%d/VerifyJWT", conc), func(b *testing.B) {
			req := &signerv1.VerifyJWTRequest{Token: token.GetToken()}
			reportPercent(b, parallel(b, conc, func() error { _, err := c.VerifyJWT(context.Background(), req); return err }),
				inProcess, "%inprocess-sign")
		})
		b.Run(fmt.Sprintf("conc=%d/VerifyJWT-uncached", conc), func(b *testing.B) {
			// b.N tokens never verified before, minted first (not timed), so that each verification
			// checks a signature instead of hitting the daemon's verified-token cache.
			fresh := mintTokens(b, c, b.N)
			var next atomic.Int64
			reportPercent(b, parallel(b, conc, func() error {
				_, err := c.VerifyJWT(context.Background(), &signerv1.VerifyJWTRequest{Token: fresh[next.Add(1)-1]})
				return err
			}), inProcess, "%inprocess-sign")
		})
	}
}

// mintTokens signs n distinct ES256 tokens through the daemon.
func mintTokens(b *testing.B, c signerv1.SignerClient, n int) []string {
	b.Helper()
	out := make([]string, n)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				r, err := c.SignJWT(context.Background(), &signerv1.SignJWTRequest{Key: "es256", ClaimsJson: fmt.Sprintf(`{"sub":"u%d-%d"}`, n, i), TtlSeconds: 300})
				if err != nil {
					b.Error(err)
					return
				}
				out[i] = r.GetToken()
			}
		}()
	}
	wg.Wait()
	return out
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
