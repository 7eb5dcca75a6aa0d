package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/keyring/keyringtest"
	"github.com/signerd/signerd/server"
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

// TestReloadWithBrokenKey: a key whose key pair cannot be loaded (another daemon created it, and its
// key pair is gone) does not hold a reload back: the renewed certificate is taken, and the key's
// problem is logged.
func TestReloadWithBrokenKey(t *testing.T) {
	dir := t.TempDir()
	ca, err := devca.New("reload CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) {
		t.Helper()
		leaf, err := ca.Issue(devca.Request{CommonName: cn, DNSNames: []string{"localhost"}, Server: true, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.WriteFiles(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
			t.Fatal(err)
		}
	}
	issue("server-A")
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pin"), []byte("1234"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgText := strings.ReplaceAll(`listen: 127.0.0.1:0
tls:
  cert_file: DIR/server.pem
  key_file: DIR/server-key.pem
  client_ca_file: DIR/ca.pem
hsm:
  token_label: x
  pin_file: DIR/pin
policy:
  grants:
    - identity: svc
      keys: [good]
      operations: [sign]
audit:
  file: DIR/audit.log
`, "DIR", dir)
	cfgPath := filepath.Join(dir, "signerd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	store := keyringtest.NewMemoryStore()
	ring, err := keyring.Open(store, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ring.Create("good", jose.ES256, 0, keyring.DefaultSettings()); err != nil {
		t.Fatal(err)
	}
	// Another daemon on the token creates "bad"; its key pair is then missing for this one.
	other, err := keyring.Open(store, keyring.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := other.Create("bad", jose.ES256, 0, keyring.DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	_ = store.Destroy(bad.Versions[0].ID)

	policy, err := authz.Compile(cfg.Policy, ring.Snapshot().Exists)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Keys: ring, Policy: policy, MaxInFlight: 1, Audit: audit.New(io.Discard)})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d := &daemon{cfgPath: cfgPath, log: slog.New(slog.NewTextHandler(&logs, nil)), ring: ring, srv: srv, started: cfg}
	files, err := loadTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.useTLS(files)

	issue("server-B") // the administrator renews the certificate, then sends SIGHUP
	d.reload()
	if got := d.cert.Load().Leaf.Subject.CommonName; got != "server-B" {
		t.Errorf("after reload the server certificate is %q, want server-B\nlogs:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), `key refresh failed`) || !strings.Contains(logs.String(), `key \"bad\"`) ||
		!strings.Contains(logs.String(), "msg=reloaded") {
		t.Errorf("reload logs = %s, want the refresh problem of key \"bad\", then reloaded", logs.String())
	}
}
