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
// mutual TLS on loopback to a `signerd serve` process) next to crypto11 called in this process on the
// same token and key, at the same concurrency. Compare the ratio within one run: absolute figures drift
// on a shared machine. `make bench` runs it.
//
// The daemon gets max_sessions 5, so at most 4 signs are inside SoftHSM at once: SoftHSM is CPU-bound
// on this 2-core machine and more concurrent calls only add lock contention inside it, while requests
// beyond that wait cheaply in the daemon. The client, in this process, competes for the same 2 cores.
func BenchmarkSign(b *testing.B) {
	in := startInstance(b, instanceOptions{keys: map[string]string{"es256": "ES256", "rs256": "RS256"}, maxSessions: 5})
	c := in.dial(b, in.svc)

	tok, err := hsm.Open(hsm.Config{Module: in.tok.Module, TokenLabel: in.tok.Label, PIN: in.tok.PIN,
		MaxSessions: 17, PoolWaitTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tok.Close() }()
	ring, err := keyring.Open(hsmstore.New(tok), keyring.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, key := range []string{"es256", "rs256"} {
		k, _ := ring.Snapshot().Key(key)
		digest := k.Alg.Digest([]byte("benchmark message"))
		for _, conc := range []int{1, 8, 32} {
			b.Run(fmt.Sprintf("%s/conc=%d/grpc", jose.Algorithm(k.Alg), conc), func(b *testing.B) {
				req := &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Digest{Digest: digest}}
				parallel(b, conc, func() error {
					_, err := c.Sign(context.Background(), req)
					return err
				})
			})
			b.Run(fmt.Sprintf("%s/conc=%d/inprocess", jose.Algorithm(k.Alg), conc), func(b *testing.B) {
				s, opts := k.Active.Signer, k.Alg.SignerOpts()
				parallel(b, conc, func() error {
					_, err := s.Sign(rand.Reader, digest, opts)
					return err
				})
			})
		}
	}
}

// parallel runs op b.N times over exactly conc goroutines and reports signs per second.
func parallel(b *testing.B, conc int, op func() error) {
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
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "signs/s")
}
