package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/jose"
)

func TestBench(t *testing.T) {
	srv := setup(t, jose.ES256, jose.RS256, jose.EdDSA)
	tests := []struct {
		key, op string
	}{
		{"es256", benchSign}, {"rs256", benchSign}, {"eddsa", benchSign}, {"es256", benchSignStream}, {"eddsa", benchSignStream},
		{"es256", benchJWTSign}, {"es256", benchJWTVerify},
	}
	for _, tt := range tests {
		t.Run(tt.key+"/"+tt.op, func(t *testing.T) {
			streams := srv.Streams()
			out := mustRun(t, "", "bench", "--key", tt.key, "--op", tt.op, "--concurrency", "1,4", "--duration", "2s", "--requests", "40", "--json")
			var results []benchResult
			if err := json.Unmarshal([]byte(out), &results); err != nil {
				t.Fatalf("bench --json output %q: %v", out, err)
			}
			if len(results) != 2 || results[0].Concurrency != 1 || results[1].Concurrency != 4 {
				t.Fatalf("bench --json = %+v, want results for concurrency 1 and 4", results)
			}
			for _, r := range results {
				if r.Op != tt.op || r.Requests != 40 || r.Errors != 0 || r.PerSecond <= 0 {
					t.Errorf("result %+v: want op %s, exactly 40 requests (--requests), no errors, a rate", r, tt.op)
				}
				if !(0 < r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max) {
					t.Errorf("result %+v: latencies out of order", r)
				}
			}
			// sign-stream's requests travel on SignStream calls (one per concurrency level), the
			// others' as unary calls.
			if opened, stream := srv.Streams()-streams, tt.op == benchSignStream; (opened > 0) != stream {
				t.Errorf("bench --op %s opened %d streams", tt.op, opened)
			}
		})
	}

	table := mustRun(t, "", "bench", "--key", "es256", "--concurrency", "2", "--duration", "200ms")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "ops/s") || !strings.Contains(lines[1], "sign") {
		t.Errorf("bench table = %q, want a header and one row", table)
	}
}

func TestBenchErrors(t *testing.T) {
	srv := setup(t, jose.ES256)
	strangerCert, strangerKey := srv.IssueClient(t, "stranger")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no key", []string{"bench"}, cli.ExitUsage, "signerctl: bench: --key is required"},
		{"unknown op", []string{"bench", "--key", "es256", "--op", "decrypt"}, cli.ExitUsage, `signerctl: bench: --op "decrypt"`},
		{"zero concurrency", []string{"bench", "--key", "es256", "--concurrency", "0"}, cli.ExitUsage, `signerctl: bench: --concurrency "0"`},
		{"bad concurrency list", []string{"bench", "--key", "es256", "--concurrency", "1,,8"}, cli.ExitUsage, `signerctl: bench: --concurrency "1,,8"`},
		{"too many levels", []string{"bench", "--key", "es256", "--concurrency", strings.Repeat("1,", maxBenchLevels) + "1"}, cli.ExitUsage, "signerctl: bench: --concurrency: 17 levels"},
		{"zero duration", []string{"bench", "--key", "es256", "--duration", "0s"}, cli.ExitUsage, "signerctl: bench: --duration 0s"},
		{"negative requests", []string{"bench", "--key", "es256", "--requests", "-1"}, cli.ExitUsage, "signerctl: bench: --requests -1"},
		{"missing key", []string{"bench", "--key", "missing"}, cli.ExitFailure, "signerctl: bench: NotFound: "},
		{"not granted", []string{"--cert", strangerCert, "--key", strangerKey, "bench", "--key", "es256"}, cli.ExitFailure, "signerctl: bench: PermissionDenied: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := signerctl(t, "", tt.args...)
			if r.code != tt.code || !strings.HasPrefix(r.stderr, tt.stderr) || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
				t.Errorf("signerctl %q = exit %d, stdout %q, stderr %q; want exit %d, no output, one line starting %q",
					tt.args, r.code, r.stdout, r.stderr, tt.code, tt.stderr)
			}
		})
	}
}

// TestRunLevel: failures are counted, kept out of the latencies, and the first one is reported; the
// request limit is exact across goroutines.
func TestRunLevel(t *testing.T) {
	var n atomic.Int64
	call := func(context.Context) error {
		if n.Add(1)%4 == 0 {
			return status.Error(codes.ResourceExhausted, "rate limit exceeded for svc")
		}
		return nil
	}
	r := runLevel(call, 3, time.Minute, 100, time.Second)
	if r.Requests != 100 || r.Errors != 25 || r.Concurrency != 3 {
		t.Errorf("runLevel = %+v, want 100 requests of which 25 failed, at concurrency 3", r)
	}
	if r.FirstError != "ResourceExhausted: rate limit exceeded for svc" {
		t.Errorf("FirstError = %q", r.FirstError)
	}
	if r.PerSecond <= 0 || r.Max < r.P50 {
		t.Errorf("runLevel = %+v, want a rate and ordered latencies", r)
	}

	// A level ends at its duration when there is no request limit.
	start := time.Now()
	r = runLevel(func(context.Context) error { time.Sleep(time.Millisecond); return nil }, 2, 100*time.Millisecond, 0, time.Second)
	if el := time.Since(start); el > 5*time.Second || r.Requests == 0 {
		t.Errorf("runLevel for 100ms took %v with %d requests", el, r.Requests)
	}
}
