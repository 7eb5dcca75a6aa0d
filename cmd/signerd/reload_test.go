package main

import (
	"slices"
	"testing"
	"time"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/server/authz"
)

// TestRestartNeeded: a reload names every changed setting it does not apply, and none of those it does
// (the policy and the TLS material).
func TestRestartNeeded(t *testing.T) {
	running := &config.Config{Listen: "127.0.0.1:7443", LogLevel: "info", RefreshInterval: time.Minute,
		TLS:    config.TLS{CertFile: "a.pem", KeyFile: "a-key.pem", ClientCAFile: "ca.pem"},
		HTTP:   config.HTTP{Listen: "127.0.0.1:7444", CertFile: "h.pem", KeyFile: "h-key.pem"},
		Limits: config.Limits{RatePerSecond: 100, Burst: 10}}
	next := *running
	if got := restartNeeded(running, &next); len(got) != 0 {
		t.Errorf("restartNeeded(same config) = %v, want none", got)
	}
	next.TLS = config.TLS{CertFile: "b.pem", KeyFile: "b-key.pem", ClientCAFile: "ca2.pem"}
	next.HTTP.CertFile, next.HTTP.KeyFile = "h2.pem", "h2-key.pem"
	next.Policy = authz.Policy{Admins: []string{"ops"}}
	if got := restartNeeded(running, &next); len(got) != 0 {
		t.Errorf("restartNeeded(new policy and TLS files) = %v, want none: a reload applies them", got)
	}
	next.Limits.RatePerSecond, next.LogLevel, next.HTTP.Listen, next.HSM.File = 5, "debug", "127.0.0.1:9", "/run/pin"
	want := []string{"hsm.pin_file", "limits.rate_per_second", "http.listen", "log_level"}
	if got := restartNeeded(running, &next); !slices.Equal(got, want) {
		t.Errorf("restartNeeded = %v, want %v", got, want)
	}
}
