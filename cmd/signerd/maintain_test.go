package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/keyring/keyringtest"
)

// failingWriter fails every write, as a full disk does.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestRefreshDestroysOnlyWhenAudited: a version past its grace is destroyed by a refresh only while the
// audit trail can record it; with the trail failing it waits for a refresh after the trail recovers.
func TestRefreshDestroysOnlyWhenAudited(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ring, err := keyring.Open(keyringtest.NewMemoryStore(), keyring.Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	settings := keyring.DefaultSettings()
	settings.Prepublish, settings.Grace = 0, keyring.Duration(time.Hour)
	if _, err := ring.Create("k", jose.ES256, 0, settings); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ring.Rotate("k", false); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	trail := audit.New(failingWriter{})
	defer trail.Close()
	trail.Record(audit.Event{Op: "probe"})
	if err := trail.Flush(); err == nil {
		t.Fatal("Flush to a failing writer = nil, want its error")
	}
	d := &daemon{log: slog.New(slog.DiscardHandler), ring: ring, audit: trail, started: &config.Config{}}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	d.refresh(timer)
	if k, _ := ring.Snapshot().Key("k"); k.Versions[0].State == keyring.Destroyed {
		t.Errorf("version 1 destroyed while the audit trail fails")
	}
	d.audit = audit.New(io.Discard)
	defer d.audit.Close()
	d.refresh(timer)
	if k, _ := ring.Snapshot().Key("k"); k.Versions[0].State != keyring.Destroyed {
		t.Errorf("version 1 is %s once the trail works, want destroyed", k.Versions[0].State)
	}
}

// A health check that finishes after the stop began does not put health back to SERVING.
func TestHealthStaysDownOnceStopping(t *testing.T) {
	d := &daemon{health: health.NewServer()}
	d.setHealth(true)
	d.stopHealth()
	d.setHealth(true) // a token check that ran on into the stop
	resp, err := d.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "signer.v1.Signer"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING || d.healthy.Load() {
		t.Errorf("health after the stop = %v, %v, ready %v; want NOT_SERVING, not ready", resp.GetStatus(), err, d.healthy.Load())
	}
}
