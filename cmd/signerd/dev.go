package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/devca"
	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/internal/cli"
	"github.com/signerd/signerd/internal/safedir"
	"github.com/signerd/signerd/jose"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/server/wellknown"
)

// devToken is the label of the token `signerd dev` creates.
const devToken = "signerd-dev"

// devClient and devAdmin are the identities of the client certificates `signerd dev` issues: one may
// use every key, the other may manage keys through KeyAdmin.
const (
	devClient = "dev-client"
	devAdmin  = "dev-admin"
)

// devKeys are the keys `signerd dev` makes, one per algorithm family.
var devKeys = []struct {
	name string
	alg  jose.Algorithm
}{
	{"dev-es256", jose.ES256},
	{"dev-rs256", jose.RS256},
	{"dev-ps256", jose.PS256},
	{"dev-eddsa", jose.EdDSA},
}

// devRSABits keeps the dev keys quick to generate.
const devRSABits = 2048

// devSettings make rotation quick to watch locally: a new version signs after one JWKS max-age
// (60s in the dev config) and an old one verifies for ten minutes after it retires.
var devSettings = keyring.Settings{Prepublish: keyring.Duration(time.Minute), Grace: keyring.Duration(10 * time.Minute)}

// devFlags defines the flags of signerd dev, which runs runDev.
func devFlags(fs *flag.FlagSet) func(context.Context, *streams, []string) error {
	dir := fs.String("dir", ".signerd-dev", "`directory` for the dev token, certificates and config")
	addr := fs.String("addr", "127.0.0.1:7443", "gRPC listen `address` (loopback)")
	httpAddr := fs.String("http-addr", "127.0.0.1:7444", "HTTPS listen `address` for the JWKS (loopback)")
	return func(ctx context.Context, s *streams, _ []string) error {
		return runDev(ctx, s, *dir, *addr, *httpAddr)
	}
}

// runDev sets up (or reuses) a complete local instance in dir and serves it on loopback until
// interrupted: its own SoftHSM2 config and token, a PIN file, a dev CA with server and client
// certificates, the dev keys, a config file, and DIR/env for clients.
func runDev(ctx context.Context, s *streams, dir, addr, httpAddr string) error {
	for name, a := range map[string]string{"--addr": addr, "--http-addr": httpAddr} {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return cli.Usagef("%s: %v", name, err)
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return cli.Usagef("%s: signerd dev listens on loopback only, got %q", name, host)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	unlock, err := lockDevDir(abs)
	if err != nil {
		return err
	}
	defer unlock()
	hup, stopHup := reloadSignal()
	defer stopHup()
	cfgPath, err := devSetup(ctx, s, abs, addr, httpAddr)
	if err != nil {
		return fmt.Errorf("dev setup in %s: %w", abs, err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	d, err := startDaemon(ctx, cfgPath, cfg, newLogger(s.stderr, cfg.LogLevel))
	if err != nil {
		return err
	}
	listen := d.lis.Addr().String()
	httpURL := "https://" + d.httpLis.Addr().String()
	if err := writeEnv(abs, listen, httpURL); err != nil {
		d.close()
		return err
	}
	fmt.Fprintf(s.stdout, `signerd dev is serving on %[1]s (token %[2]q, keys %[3]s)
  JWKS: %[5]s/.well-known/jwks.json
  . %[4]s/env   # SIGNERD_* : address, CA, client and admin certificates, JWKS URL
  grpcurl -cacert "$SIGNERD_CACERT" -cert "$SIGNERD_CERT" -key "$SIGNERD_KEY" \
    -d '{"key":"dev-es256","message":"aGVsbG8="}' "$SIGNERD_ADDR" signer.v1.Signer/Sign
Ctrl-C stops it; the token and keys stay in %[4]s for next time.
`, listen, devToken, strings.Join(d.ring.Snapshot().Names(), ", "), abs, httpURL)
	return d.run(ctx, cfg.RefreshInterval, hup)
}

// lockDevDir creates dir if needed, checks that it is this user's and that no one else can change it
// (safedir.CheckOwn: it will hold a PIN and keys), and takes its lock for as long as this process runs:
// a second `signerd dev` on the same directory would otherwise rewrite the certificates under the
// first one.
func lockDevDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := safedir.CheckOwn(dir); err != nil {
		return nil, fmt.Errorf("%w; signerd dev keeps a PIN and keys there", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("another signerd dev is running with %s", dir)
	}
	return func() { _ = f.Close() }, nil
}

// devSetup creates or reuses everything under dir (which lockDevDir made) and returns the config
// file's path.
func devSetup(ctx context.Context, s *streams, dir, addr, httpAddr string) (string, error) {
	conf := filepath.Join(dir, "softhsm2.conf")
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return "", err
	}
	if err := writeIfMissing(conf, []byte("directories.tokendir = "+tokens+
		"\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"), 0o600); err != nil {
		return "", err
	}
	// SoftHSM reads its configuration when the module is initialised: set it before anything loads it.
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		return "", err
	}
	pinFile, soPINFile := filepath.Join(dir, "pin"), filepath.Join(dir, "so-pin")
	if err := writeIfMissing(pinFile, []byte(randomSecret()), 0o600); err != nil {
		return "", err
	}
	if err := writeIfMissing(soPINFile, []byte(randomSecret()), 0o600); err != nil {
		return "", err
	}
	if err := ensureDevToken(pinFile, soPINFile); err != nil {
		return "", err
	}
	if err := issueDevCerts(dir); err != nil {
		return "", err
	}
	// The token's lock file lives with the token: the default one is per user, module and token label, and
	// every dev token has the same label, so a user's dev instances in other directories (separate
	// SoftHSM stores) would otherwise wait on each other for nothing.
	lockFile := filepath.Join(dir, "token.lock")
	cfgPath := filepath.Join(dir, "signerd.yaml")
	cfg := fmt.Sprintf(`# Written by "signerd dev" on every start.
listen: %q
tls:
  cert_file: %q
  key_file: %q
  client_ca_file: %q
hsm:
  module: %q
  token_label: %q
  pin_file: %q
  lock_file: %q
  max_sessions: 8
  pool_wait_timeout: 5s
policy:
  admins: [%q]
  grants:
    - identity: %q
      keys: ["*"]
      operations: [sign, verify, public_key, sign_jwt, verify_jwt]
http:
  listen: %q
  jwks_max_age: 60s
refresh_interval: 10s
audit:
  file: %q
`, addr, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem"),
		hsm.DefaultModule, devToken, pinFile, lockFile, devAdmin, devClient, httpAddr, filepath.Join(dir, "audit.log"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	if err := ensureDevKeys(ctx, s, cfgPath); err != nil {
		return "", err
	}
	return cfgPath, nil
}

// ensureDevToken initialises the dev token unless it exists.
func ensureDevToken(pinFile, soPINFile string) error {
	slots, err := hsm.ListSlots(hsm.DefaultModule)
	if err != nil {
		return fmt.Errorf("%w (is softhsm2 installed? apt-get install softhsm2)", err)
	}
	for _, s := range slots {
		if s.Initialized && s.Label == devToken {
			return nil
		}
	}
	pin, err := hsm.PINSource{File: pinFile}.Read()
	if err != nil {
		return err
	}
	soPIN, err := hsm.PINSource{File: soPINFile}.Read()
	if err != nil {
		return err
	}
	_, err = hsm.InitToken(hsm.DefaultModule, devToken, soPIN, pin)
	return err
}

// ensureDevKeys creates whichever dev keys the token lacks, opening the token from the dev config as
// `signerd keys create --config` would.
func ensureDevKeys(ctx context.Context, s *streams, cfgPath string) error {
	return withRing(ctx, s, cfgPath, true, func(ring *keyring.Ring, _ *config.Config) error {
		for _, k := range devKeys {
			if ring.Snapshot().Exists(k.name) {
				continue
			}
			if _, err := ring.Create(k.name, k.alg, devRSABits, devSettings); err != nil && !errors.Is(err, keyring.ErrExists) {
				return err
			}
		}
		return nil
	})
}

// issueDevCerts makes a fresh dev CA, a server certificate for loopback and a client certificate for
// dev-client on every start, so that none is ever stale. The CA key is not kept.
func issueDevCerts(dir string) error {
	ca, err := devca.New("signerd dev CA", 30*24*time.Hour)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM(), 0o644); err != nil {
		return err
	}
	srv, err := ca.Issue(devca.Request{CommonName: "signerd dev server", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, Server: true, Validity: 30 * 24 * time.Hour})
	if err != nil {
		return err
	}
	if err := srv.WriteFiles(filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")); err != nil {
		return err
	}
	clientCert, err := ca.Issue(devca.Request{CommonName: devClient, Client: true, Validity: 30 * 24 * time.Hour})
	if err != nil {
		return err
	}
	if err := clientCert.WriteFiles(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")); err != nil {
		return err
	}
	adm, err := ca.Issue(devca.Request{CommonName: devAdmin, Client: true, Validity: 30 * 24 * time.Hour})
	if err != nil {
		return err
	}
	return adm.WriteFiles(filepath.Join(dir, "admin.pem"), filepath.Join(dir, "admin-key.pem"))
}

// writeEnv writes DIR/env for clients, in shell export form, each value quoted for the shell (DIR may
// hold spaces or other characters a shell would act on).
func writeEnv(dir, addr, httpURL string) error {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"SIGNERD_ADDR", addr},
		{"SIGNERD_CACERT", filepath.Join(dir, "ca.pem")},
		{"SIGNERD_CERT", filepath.Join(dir, "client.pem")},
		{"SIGNERD_KEY", filepath.Join(dir, "client-key.pem")},
		{"SIGNERD_HTTP_URL", httpURL},
		{"SIGNERD_JWKS_URL", httpURL + wellknown.JWKSPath},
		{"SIGNERD_ADMIN_CERT", filepath.Join(dir, "admin.pem")},
		{"SIGNERD_ADMIN_KEY", filepath.Join(dir, "admin-key.pem")},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return os.WriteFile(filepath.Join(dir, "env"), []byte(b.String()), 0o600)
}

// shellQuote quotes s for a POSIX shell: in single quotes, where a single quote of s ends the quoting,
// is escaped with a backslash, and the quoting starts again.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func writeIfMissing(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func randomSecret() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
