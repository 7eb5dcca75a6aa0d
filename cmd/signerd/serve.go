package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/signerd/signerd/audit"
	"github.com/signerd/signerd/config"
	"github.com/signerd/signerd/hsm"
	"github.com/signerd/signerd/hsmstore"
	"github.com/signerd/signerd/keyring"
	"github.com/signerd/signerd/server"
	"github.com/signerd/signerd/server/authz"
	"github.com/signerd/signerd/server/wellknown"
	"github.com/signerd/signerd/unseal"
)

// healthInterval is how often the token is pinged for the health service.
const healthInterval = 5 * time.Second

// maxConnectionAge is how long a client connection lives before signerd asks the client to reconnect
// (gRPC adds up to 10% of jitter); calls in flight get maxConnectionAgeGrace to finish.
const (
	maxConnectionAge      = 30 * time.Minute
	maxConnectionAgeGrace = time.Minute
)

// maxBusyChecks is how many health checks in a row may find the token without a free session before
// the daemon reports NOT_SERVING (about 15 s at healthInterval).
const maxBusyChecks = 3

// stopTimeout bounds the graceful stop before in-flight calls are cut.
const stopTimeout = 10 * time.Second

// cutTimeout bounds the wait, after in-flight calls are cut, for their handlers to return: one stuck in
// a token call (a hung network HSM) never does.
const cutTimeout = 5 * time.Second

// daemon is a running signerd: the token, the key ring and the gRPC server.
type daemon struct {
	cfgPath string
	log     *slog.Logger
	tok     *hsm.Token
	ring    *keyring.Ring
	srv     *server.Server
	grpc    *grpc.Server
	health  *health.Server
	lis     net.Listener
	audit   *audit.Log
	// httpSrv serves the JWKS and probes when http.listen is set.
	httpSrv *http.Server
	httpLis net.Listener
	healthy atomic.Bool
	// busyChecks counts the health checks in a row that found no free session (checkToken's alone).
	busyChecks int
	metrics    *prometheus.Registry
	// changed is signalled whenever the key ring publishes a new view (a KeyAdmin change, an
	// unknown-kid refresh), so that the transition timer follows it.
	changed chan struct{}
	cert    atomic.Pointer[tls.Certificate]
	// httpCert is the public HTTPS listener's certificate, swapped on reload.
	httpCert atomic.Pointer[tls.Certificate]
	// clientCAs is swapped on reload; the TLS config reads it per handshake.
	clientCAs atomic.Pointer[x509.CertPool]
	// started is the configuration the daemon started with: what a reload cannot change stays as it.
	started *config.Config
	// rotation is the auto_rotate round under way, if any (the run loop's alone); rotateAfter holds
	// the next round back after one failed.
	rotation    *rotationRound
	rotateAfter time.Time
}

// rotationRound is one auto_rotate round, running beside the run loop: generating key pairs can take
// seconds, during which health checks, reloads and a stop must not wait.
type rotationRound struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the round has ended; err is then its outcome
	err    error
}

// startDaemon opens the token, loads the keys, checks the policy against them and starts listening.
// Every failure names the config field or the part that failed; none contains the PIN. A sealed
// configuration first waits, until ctx ends, for an administrator to send the PIN (see unsealToken).
func startDaemon(ctx context.Context, cfgPath string, cfg *config.Config, log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{cfgPath: cfgPath, log: log, started: cfg}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	hcfg, err := cfg.HSMConfig()
	switch {
	case errors.Is(err, config.ErrSealed):
		var answer func(string, error)
		if d.tok, answer, err = d.unsealToken(ctx, cfg.HSM.UnsealSocket, hcfg); err != nil {
			return nil, err
		}
		// The administrator who unsealed learns how the start ended.
		defer func() {
			if err != nil {
				answer("", err)
				return
			}
			answer(fmt.Sprintf("signerd serving on %s with %d keys from token %q", d.lis.Addr(), len(d.ring.Snapshot().Names()), d.tok.Label()), nil)
		}()
	case err != nil:
		return nil, err
	default:
		if d.tok, err = hsm.Open(hcfg); err != nil {
			return nil, err // its errors say "hsm: ..."
		}
	}
	d.changed = make(chan struct{}, 1)
	if d.ring, err = keyring.Open(hsmstore.New(d.tok), keyring.Options{Changed: d.notifyChanged}); err != nil {
		return nil, fmt.Errorf("keys in token %q: %w", d.tok.Label(), err)
	}
	policy, err := authz.Compile(cfg.Policy, d.ring.Snapshot().Exists)
	if err != nil {
		return nil, err
	}
	files, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	d.useTLS(files)
	if d.audit, err = openAudit(cfg.Audit.File); err != nil {
		return nil, err
	}
	d.warnShortSettings(minPrepublish(cfg), policy)
	d.metrics = d.newMetrics()
	d.srv, err = server.New(server.Config{Keys: d.ring, Manager: d.ring, MinPrepublish: minPrepublish(cfg), Metrics: d.metrics,
		Policy: policy, MaxInFlight: cfg.HSM.MaxSessions - 1,
		RatePerSecond: cfg.Limits.RatePerSecond, Burst: cfg.Limits.Burst, Leeway: cfg.JWT.Leeway,
		Audit: d.audit, Log: log})
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return d.cert.Load(), nil
		},
	}
	// The CA pool can be reloaded (SIGHUP), so each handshake gets a config with the current one.
	tlsCfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := tlsCfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = d.clientCAs.Load()
		return c, nil
	}
	d.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.MaxRecvMsgSize(server.MaxRequestBytes),
		// Fixed flow-control windows turn off BDP estimation, whose PING frames otherwise cost a write and
		// a read per small request; requests are at most MaxRequestBytes, far below the window.
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<20),
		// Long-lived workers keep their grown stacks; a goroutine per call grows a fresh one each time.
		grpc.NumStreamWorkers(uint32(max(32, 8*runtime.GOMAXPROCS(0)))),
		// A connection was authorised by the chain and CA pool of its handshake: have clients reconnect
		// now and then, so that a CA removed by a reload stops being trusted within maxConnectionAge.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: maxConnectionAge, MaxConnectionAgeGrace: maxConnectionAgeGrace}),
		grpc.UnaryInterceptor(d.srv.UnaryInterceptor()),
		grpc.StreamInterceptor(d.srv.StreamInterceptor()),
	)
	d.srv.Register(d.grpc)
	if err := d.srv.RegisterAdmin(d.grpc); err != nil {
		return nil, err
	}
	d.health = health.NewServer()
	healthpb.RegisterHealthServer(d.grpc, d.health)
	reflection.Register(d.grpc)
	if d.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if cfg.HTTP.Listen != "" {
		if err := d.startHTTP(cfg); err != nil {
			return nil, err
		}
	}
	d.setHealth(d.tok.Ping() == nil)
	return d, nil
}

// unsealToken opens the token with a PIN an administrator sends to the unseal socket at path. A wrong
// PIN is answered and another awaited; any other failure to open the token is answered and ends the
// start. It returns the answer to the request that opened the token, for startDaemon to give once it
// has started or failed to. The PIN stays in memory only (the token keeps it to log in again after a
// reset).
func (d *daemon) unsealToken(ctx context.Context, path string, hcfg hsm.Config) (*hsm.Token, func(string, error), error) {
	l, err := unseal.Listen(path, func(uid uint32, err error) {
		d.log.Warn("unseal attempt refused", "uid", uid, "err", err)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("hsm.unseal_socket: %w", err)
	}
	defer l.Close()
	d.log.Info("sealed: waiting for an administrator to send the token PIN", "socket", path,
		"command", "signerd unseal --socket "+path)
	for {
		r, err := l.Next(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("sealed: %w", err)
		}
		hcfg.PIN = r.PIN
		tok, err := hsm.Open(hcfg)
		if err == nil {
			d.log.Info("unsealed: logged in to the token", "uid", r.UID)
			return tok, r.Reply, nil
		}
		if !errors.Is(err, hsm.ErrWrongPIN) {
			r.Reply("", err)
			return nil, nil, err
		}
		d.log.Warn("unseal: wrong PIN; still sealed", "uid", r.UID, "err", err)
		// Guesses wait, and so does the token's count of wrong PINs towards its lockout.
		select {
		case <-time.After(wrongPINDelay):
		case <-ctx.Done():
		}
		r.Reply("", err)
	}
}

// wrongPINDelay is how long a sealed daemon waits before it answers a wrong PIN and takes another.
const wrongPINDelay = time.Second

// minPrepublish is how long before it signs a new version must be published: the JWKS max-age, when
// the JWKS is served.
func minPrepublish(cfg *config.Config) time.Duration {
	if cfg.HTTP.Listen == "" {
		return 0
	}
	return cfg.HTTP.JWKSMaxAge
}

// warnShortSettings logs each key whose prepublish period is shorter than minPrepublish or whose grace
// is shorter than the longest token lifetime policy grants for it: tokens could then fail to verify
// around its rotations.
func (d *daemon) warnShortSettings(minPrepublish time.Duration, policy *authz.Authorizer) {
	snap := d.ring.Snapshot()
	for _, name := range snap.Names() {
		k, _ := snap.Key(name)
		if err := k.Settings().CheckAgainst(minPrepublish, policy.MaxTTL(name)); err != nil {
			d.log.Warn("key settings too short for this configuration", "key", name, "err", err)
		}
	}
}

// newMetrics makes the daemon's Prometheus registry: Go runtime and process metrics, whether the token
// is usable, and the versions by state; the server adds its request metrics.
func (d *daemon) newMetrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_token_up", Help: "1 while the token answers, 0 while it is unusable."},
			func() float64 {
				if d.healthy.Load() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_keys", Help: "Keys loaded from the token."},
			func() float64 { return float64(len(d.ring.Snapshot().Names())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "signerd_published_versions", Help: "Key versions in the JWKS (pending, active, retired in grace)."},
			func() float64 { return float64(len(d.ring.Snapshot().Publishable())) }),
	)
	return reg
}

// startHTTP opens the public HTTPS listener: server-authenticated TLS only, since it serves public data.
func (d *daemon) startHTTP(cfg *config.Config) error {
	var err error
	if d.httpLis, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	base := cfg.HTTP.PublicURL
	if base == "" {
		base = "https://" + d.httpLis.Addr().String()
	}
	h := wellknown.New(wellknown.Config{Keys: d.ring, BaseURL: base, Issuer: cfg.HTTP.Issuer,
		MaxAge: cfg.HTTP.JWKSMaxAge, Metrics: promhttp.HandlerFor(d.metrics, promhttp.HandlerOpts{}), Ready: func() error {
			if !d.healthy.Load() {
				return errors.New("token unusable")
			}
			return nil
		}})
	d.httpSrv = &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return d.httpCert.Load(), nil
		}},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelWarn),
	}
	return nil
}

func (d *daemon) setHealth(ok bool) {
	d.healthy.Store(ok)
	st := healthpb.HealthCheckResponse_SERVING
	if !ok {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	d.health.SetServingStatus("", st)
	d.health.SetServingStatus("signer.v1.Signer", st)
}

// tlsFiles is the certificate material read from the files the config names; a reload replaces it as
// a whole or not at all.
type tlsFiles struct {
	cert      *tls.Certificate
	clientCAs *x509.CertPool
	httpCert  *tls.Certificate // nil without the HTTPS listener
}

// loadTLS reads the server certificate, the client CA bundle and, with the HTTPS listener, its
// certificate.
func loadTLS(cfg *config.Config) (*tlsFiles, error) {
	var f tlsFiles
	var err error
	if f.cert, err = loadKeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile, "tls"); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(cfg.TLS.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("tls.client_ca_file: %w", err)
	}
	f.clientCAs = x509.NewCertPool()
	if !f.clientCAs.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls.client_ca_file: no certificate in %s", cfg.TLS.ClientCAFile)
	}
	if cfg.HTTP.Listen != "" {
		if f.httpCert, err = loadKeyPair(cfg.HTTP.CertFile, cfg.HTTP.KeyFile, "http"); err != nil {
			return nil, err
		}
	}
	return &f, nil
}

// loadKeyPair reads a certificate and its key; section names the config section in errors.
func loadKeyPair(certFile, keyFile, section string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%[1]s.cert_file/%[1]s.key_file: %[2]w", section, err)
	}
	return &cert, nil
}

// useTLS makes f the material the listeners hand out from the next handshake on.
func (d *daemon) useTLS(f *tlsFiles) {
	d.cert.Store(f.cert)
	d.clientCAs.Store(f.clientCAs)
	if f.httpCert != nil {
		d.httpCert.Store(f.httpCert)
	}
}

func openAudit(file string) (*audit.Log, error) {
	if file == "-" {
		return audit.New(os.Stdout), nil
	}
	l, err := audit.Open(file)
	if err != nil {
		return nil, fmt.Errorf("audit.file: %w", err)
	}
	return l, nil
}

// reloadSignal starts catching SIGHUP for the daemon's run loop. It is called before the config is
// read, so that a reload asked for while the daemon starts is kept (one is enough) and carried out once
// it serves, instead of killing it or being lost.
func reloadSignal() (hup <-chan os.Signal, stop func()) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	return c, func() { signal.Stop(c) }
}

// run serves until ctx ends, refreshing keys and health in the background and reloading on hup.
func (d *daemon) run(ctx context.Context, refresh time.Duration, hup <-chan os.Signal) error {

	errc := make(chan error, 2)
	go func() {
		if err := d.grpc.Serve(d.lis); err != nil {
			errc <- fmt.Errorf("grpc serve: %w", err)
		}
	}()
	httpAddr := ""
	if d.httpSrv != nil {
		httpAddr = d.httpLis.Addr().String()
		go func() {
			if err := d.httpSrv.ServeTLS(d.httpLis, "", ""); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("https serve: %w", err)
			}
		}()
	}
	d.log.Info("signerd serving", "addr", d.lis.Addr().String(), "http", httpAddr, "token", d.tok.Label(),
		"keys", len(d.ring.Snapshot().Names()))

	refreshT := time.NewTicker(refresh)
	defer refreshT.Stop()
	// transition fires when the next version changes state, so that activation and expiry happen on
	// time rather than at the next refresh tick.
	transition := time.NewTimer(time.Hour)
	defer transition.Stop()
	d.scheduleTransition(transition)
	healthT := time.NewTicker(healthInterval)
	defer healthT.Stop()
	for {
		// A stop comes first, even when other cases are ready too (select picks among those at random).
		if ctx.Err() != nil {
			d.stop()
			return nil
		}
		select {
		case <-ctx.Done():
			d.stop()
			return nil
		case err := <-errc:
			d.stop()
			return err
		case <-refreshT.C:
			d.refresh(transition)
		case <-transition.C:
			d.refresh(transition)
		case <-d.changed:
			d.scheduleTransition(transition)
		case <-healthT.C:
			d.checkToken()
		case <-hup:
			d.reload()
			d.scheduleTransition(transition)
		}
	}
}

func (d *daemon) notifyChanged() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// checkToken pings the token; if it is unusable (reset, removed, logged out) it reports NOT_SERVING and
// reconnects: a new module initialisation and login. Keys find themselves again on first use. It runs
// every healthInterval, which is the back-off between reconnect attempts.
func (d *daemon) checkToken() {
	if err := d.audit.Err(); err != nil {
		// Signing is refused without an audit trail; say so to the load balancer too.
		d.log.Error("audit trail unwritable", "err", err)
		d.setHealth(false)
		return
	}
	err := d.tok.Ping()
	if err == nil {
		d.busyChecks = 0
		d.setHealth(true)
		return
	}
	if errors.Is(err, hsm.ErrBusy) {
		// Every raw session is in use: the token may only be loaded, and reconnecting would wait for
		// all of it and then cut it off. But a token that stays busy is hung (a network HSM that stopped
		// answering): after maxBusyChecks in a row, say so to health checks, still without reconnecting.
		d.busyChecks++
		d.log.Warn("token busy", "err", err, "checks", d.busyChecks)
		if d.busyChecks >= maxBusyChecks {
			d.setHealth(false)
		}
		return
	}
	d.busyChecks = 0
	d.setHealth(false)
	d.log.Error("token unusable; reconnecting", "err", err)
	if err := d.tok.Reconnect(); err != nil {
		d.log.Error("reconnect failed; will retry", "err", err, "in", healthInterval)
		return
	}
	if err := d.tok.Ping(); err != nil {
		d.log.Error("token still unusable after reconnect", "err", err)
		return
	}
	d.log.Info("token reconnected")
	if err := d.ring.Refresh(); err != nil {
		d.log.Error("key refresh after reconnect failed", "err", err)
	}
	d.setHealth(true)
}

// Audit ops of the changes the daemon makes by itself: a version destroyed after its grace, a key
// rotated because its rotation period passed (auto_rotate).
const (
	opDestroyExpired = "destroy_expired"
	opRotateDue      = "rotate_due"
)

// refresh re-reads the keys from the token, rotates those due (with auto_rotate), destroys versions
// past their grace (unless their key keeps them), and schedules the next transition.
func (d *daemon) refresh(transition *time.Timer) {
	// A rotation round holds the ring for as long as a key pair takes to generate, and publishes a
	// fresh view after each key itself: the loop does not wait for it, and leaves destroying expired
	// versions (which needs the ring too) to a refresh after the round.
	rotating := d.rotating()
	refresh := d.ring.Refresh
	if rotating {
		refresh = d.ring.TryRefresh
	}
	if err := refresh(); err != nil {
		d.log.Error("key refresh failed; keeping the previous view", "err", err)
	}
	if d.started.AutoRotate {
		d.startRotation()
	}
	if rotating {
		d.scheduleTransition(transition)
		return
	}
	destroyed, err := d.ring.DestroyExpired()
	for _, v := range destroyed {
		d.log.Info("destroyed expired version", "key", v.Key, "version", v.Number, "kid", v.Kid)
		d.audit.Record(audit.Event{Identity: "signerd", Op: opDestroyExpired, Key: v.Key, Kid: v.Kid,
			Outcome: audit.OutcomeOK, Reason: fmt.Sprintf("version %d past its grace", v.Number)})
	}
	if err != nil {
		d.log.Error("destroying expired versions failed", "err", err)
	}
	d.scheduleTransition(transition)
}

// rotationBackoff holds auto_rotate back after a round that failed, so that a token in trouble is not
// asked again for key pairs and locks at every refresh.
const rotationBackoff = 5 * time.Minute

// rotating reports whether an auto_rotate round is under way.
func (d *daemon) rotating() bool {
	if d.rotation == nil {
		return false
	}
	select {
	case <-d.rotation.done:
		return false
	default:
		return true
	}
}

// startRotation starts an auto_rotate round if a key is due by the fresh view, none is under way, the
// last failure's back-off has passed and the audit trail can record it.
func (d *daemon) startRotation() {
	if d.rotating() {
		return // one round at a time
	}
	if r := d.rotation; r != nil { // ended: its outcome
		d.rotation = nil
		if r.err != nil {
			d.rotateAfter = time.Now().Add(rotationBackoff)
			d.log.Error("scheduled rotation failed; retrying later", "err", r.err, "in", rotationBackoff)
		}
	}
	if time.Now().Before(d.rotateAfter) || d.audit.Err() != nil || !d.ring.Snapshot().RotationDue() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rotationRound{cancel: cancel, done: make(chan struct{})}
	d.rotation = r
	go func() {
		defer close(r.done)
		r.err = d.rotateDue(ctx)
	}()
}

// rotateDue staged-rotates every key whose rotation period has passed, auditing each new version.
// Other daemons on the token may be doing the same: each key is rotated once, by whichever gets its
// lock first. It stops between keys once ctx ends.
func (d *daemon) rotateDue(ctx context.Context) error {
	rotated, err := d.ring.RotateDue(ctx)
	for _, v := range rotated {
		d.log.Info("rotated key: its rotation period passed", "key", v.Key, "version", v.Number, "kid", v.Kid, "activates", v.ActivateAt)
		ev := audit.Event{Identity: "signerd", Op: opRotateDue, Key: v.Key, Kid: v.Kid, Outcome: audit.OutcomeOK,
			Reason: fmt.Sprintf("rotation period passed; version %d signs from %s", v.Number, v.ActivateAt.Format(time.RFC3339))}
		if k, ok := d.ring.Snapshot().Key(v.Key); ok {
			ev.Alg = string(k.Alg)
		}
		d.audit.Record(ev)
	}
	return err
}

// waitRotation waits at most wait for an auto_rotate round that stop cancelled (it stops before its
// next key; a key pair being generated is finished) and reports whether the round has ended.
func (d *daemon) waitRotation(wait time.Duration) bool {
	if d.rotation == nil {
		return true
	}
	select {
	case <-d.rotation.done:
		return true
	case <-time.After(wait):
		return false
	}
}

// scheduleTransition sets t to fire at the snapshot's next transition (or in an hour if none).
func (d *daemon) scheduleTransition(t *time.Timer) {
	wait := time.Hour
	if next := d.ring.Snapshot().NextTransition(); !next.IsZero() {
		wait = time.Until(next) + 10*time.Millisecond
		if wait <= 10*time.Millisecond {
			// The transition is due but the last refresh did not take it (it failed): retry calmly
			// rather than spin on the token.
			wait = time.Second
		}
	}
	t.Reset(wait)
}

// stop drains the servers: health NOT_SERVING, then both listeners stop gracefully within one
// stopTimeout (then hard), so that the whole stop stays inside systemd's TimeoutStopSec.
func (d *daemon) stop() {
	d.setHealth(false)
	if d.rotation != nil {
		d.rotation.cancel() // no new key after the one being generated, if any
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		d.grpc.GracefulStop()
		close(done)
	}()
	if d.httpSrv != nil {
		if err := d.httpSrv.Shutdown(ctx); err != nil {
			_ = d.httpSrv.Close()
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		d.grpc.Stop()
		select {
		case <-done:
		case <-time.After(cutTimeout):
			// Closing the token would wait for the calls stuck in it: the audit trail is closed (its
			// buffered lines written), and the process exit ends the rest.
			d.log.Error("requests still inside the token after the stop timeouts; exiting without closing the token")
			d.release(false)
			return
		}
	}
	if !d.waitRotation(stopTimeout) {
		d.log.Error("a scheduled rotation is still inside the token after the stop timeouts; exiting without closing the token")
		d.release(false)
		return
	}
	d.close()
}

// close releases everything startDaemon opened; the token goes last.
func (d *daemon) close() { d.release(true) }

// release closes the servers, the listeners and the audit trail, and the token if closeToken.
func (d *daemon) release(closeToken bool) {
	if d.grpc != nil {
		d.grpc.Stop() // also ends its stream workers when startDaemon failed after creating it
	}
	if d.lis != nil {
		_ = d.lis.Close()
	}
	if d.httpLis != nil {
		_ = d.httpLis.Close()
	}
	if d.audit != nil {
		if err := d.audit.Close(); err != nil {
			d.log.Error("audit log", "err", err)
		}
	}
	if d.tok != nil && closeToken {
		_ = d.tok.Close()
	}
}

// errUsage marks a command-line mistake: main prints usage and exits 2.
var errUsage = errors.New("usage")
