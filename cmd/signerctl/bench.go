package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/signerd/signerd/client"
	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/jose"
	signerv1 "github.com/signerd/signerd/proto/signer/v1"
)

// Operations that bench can measure.
const (
	benchSign       = "sign"
	benchSignStream = "sign-stream"
	benchJWTSign    = "jwt-sign"
	benchJWTVerify  = "jwt-verify"
)

// maxBenchLevels bounds how many concurrency levels one bench run measures.
const maxBenchLevels = 16

// benchResult is what one concurrency level measured.
type benchResult struct {
	Op          string  `json:"op"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	PerSecond   float64 `json:"ops_per_second"`
	// Latencies of the successful requests, in milliseconds.
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	// FirstError is the first failure's status code and message, if any.
	FirstError string `json:"first_error,omitempty"`
}

func benchFlags(fs *flag.FlagSet) func(*invocation, []string) error {
	var (
		key, op, levels string
		duration        time.Duration
		requests        int
		asJSON          bool
	)
	fs.StringVar(&key, "key", "", "`name` of the signerd key (required)")
	fs.StringVar(&op, "op", benchSign, "`operation` to measure: sign (a digest, or a message for EdDSA keys), sign-stream (the same requests over one SignStream), jwt-sign, or jwt-verify (one token minted first, then verified again and again: the path of a service that checks the same bearer token on every call)")
	fs.StringVar(&levels, "concurrency", "1,8,32", "comma-separated `list` of how many requests to keep in flight; each level is measured in turn")
	fs.DurationVar(&duration, "duration", 5*time.Second, "how long to measure each concurrency level")
	fs.IntVar(&requests, "requests", 0, "stop a level after this many requests, if sooner than --duration (0: no limit)")
	fs.BoolVar(&asJSON, "json", false, "print a JSON array of results instead of a table")
	return func(cl *invocation, _ []string) error {
		if err := needKey(key); err != nil {
			return err
		}
		concs, err := parseLevels(levels)
		if err != nil {
			return err
		}
		if duration <= 0 {
			return cli.Usagef("--duration %v: want a positive duration", duration)
		}
		if requests < 0 {
			return cli.Usagef("--requests %d: want 0 (no limit) or more", requests)
		}
		c, err := cl.dial()
		if err != nil {
			return err
		}
		defer c.Close()
		call, err := cl.benchCall(c, op, key)
		if err != nil {
			return err
		}
		var results []benchResult
		for _, conc := range concs {
			r := runLevel(call, conc, duration, requests, cl.timeout)
			r.Op = op
			results = append(results, r)
		}
		if asJSON {
			err = writeJSON(cl.stdout, results)
		} else {
			err = writeBenchTable(cl, results)
		}
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.Errors > 0 {
				return fmt.Errorf("%d of %d requests failed at concurrency %d, the first with %s", r.Errors, r.Requests, r.Concurrency, r.FirstError)
			}
		}
		return nil
	}
}

// parseLevels parses the --concurrency list.
func parseLevels(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 10000 {
			return nil, cli.Usagef("--concurrency %q: want a comma-separated list of numbers from 1 to 10000", s)
		}
		out = append(out, n)
	}
	if len(out) > maxBenchLevels {
		return nil, cli.Usagef("--concurrency: %d levels, at most %d", len(out), maxBenchLevels)
	}
	return out, nil
}

// benchCall prepares op on key and returns one request of it. Preparing makes one untimed call that
// checks the key and the caller's grant (and mints the token that jwt-verify verifies).
// For sign-stream, the stream lasts as long as c.
func (cl *invocation) benchCall(c *client.Client, op, key string) (func(context.Context) error, error) {
	s := c.Signer()
	ctx, cancel := cl.context()
	defer cancel()
	switch op {
	case benchSign, benchSignStream:
		pub, err := s.GetPublicKey(ctx, &signerv1.GetPublicKeyRequest{Key: key})
		if err != nil {
			return nil, rpcErr(err)
		}
		alg, err := jose.ParseAlgorithm(pub.GetAlg())
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		msg := make([]byte, 64)
		_, _ = rand.Read(msg)
		req := &signerv1.SignRequest{Key: key, Input: &signerv1.SignRequest_Digest{Digest: alg.Digest(msg)}}
		if alg.KeyType() == jose.KeyEd25519 {
			req.Input = &signerv1.SignRequest_Message{Message: msg}
		}
		call := func(ctx context.Context) error { _, err := s.Sign(ctx, req); return err }
		if op == benchSignStream {
			stream, err := c.SignStream(context.Background())
			if err != nil {
				return nil, rpcErr(err)
			}
			call = func(ctx context.Context) error { _, err := stream.Sign(ctx, req); return err }
		}
		return call, rpcErr(call(ctx))
	case benchJWTSign:
		req := &signerv1.SignJWTRequest{Key: key, ClaimsJson: `{}`}
		call := func(ctx context.Context) error { _, err := s.SignJWT(ctx, req); return err }
		return call, rpcErr(call(ctx))
	case benchJWTVerify:
		tok, err := s.SignJWT(ctx, &signerv1.SignJWTRequest{Key: key, ClaimsJson: `{}`})
		if err != nil {
			return nil, rpcErr(err)
		}
		req := &signerv1.VerifyJWTRequest{Token: tok.GetToken()}
		call := func(ctx context.Context) error { _, err := s.VerifyJWT(ctx, req); return err }
		return call, rpcErr(call(ctx))
	}
	return nil, cli.Usagef("--op %q: want %s, %s, %s or %s", op, benchSign, benchSignStream, benchJWTSign, benchJWTVerify)
}

// runLevel keeps conc requests in flight for d, or until limit requests have started (limit > 0), each
// with its own timeout, and measures them.
func runLevel(call func(context.Context) error, conc int, d time.Duration, limit int, timeout time.Duration) benchResult {
	var (
		started  atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	begin := time.Now()
	deadline := begin.Add(d)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var myErrs int
			var myFirst error
			for time.Now().Before(deadline) && (limit == 0 || started.Add(1) <= int64(limit)) {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				t := time.Now()
				err := call(ctx)
				elapsed := time.Since(t)
				cancel()
				if err != nil {
					myErrs++
					if myFirst == nil {
						myFirst = err
					}
					continue
				}
				mine = append(mine, elapsed)
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			errs += myErrs
			if firstErr == nil {
				firstErr = myFirst
			}
		}()
	}
	wg.Wait()
	secs := time.Since(begin).Seconds()
	r := benchResult{Concurrency: conc, Requests: len(lat) + errs, Errors: errs, Seconds: secs}
	r.PerSecond = float64(len(lat)) / secs
	if firstErr != nil {
		r.FirstError = rpcErr(firstErr).Error()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		ms := func(q float64) float64 {
			return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
		}
		r.P50, r.P90, r.P99, r.Max = ms(0.50), ms(0.90), ms(0.99), ms(1)
	}
	return r
}

func writeBenchTable(cl *invocation, results []benchResult) error {
	tw := tabwriter.NewWriter(cl.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tconcurrency\trequests\terrors\tops/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
			r.Op, r.Concurrency, r.Requests, r.Errors, r.PerSecond, r.P50, r.P90, r.P99, r.Max)
	}
	return tw.Flush()
}
