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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
)

// maxConnectionAge is how long a client connection lives before signerd asks the client to reconnect
// (gRPC adds up to 10% of jitter); calls in flight get maxConnectionAgeGrace to finish.
const (
	maxConnectionAge      = 30 * time.Minute
	maxConnectionAgeGrace = time.Minute
)

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
	// rotation is the auto_rotate round under way, if any; rotateAfter holds the next round back after
	// one failed; stopping, once set by a stop, starts no more. rotMu guards the three: the maintenance
	// goroutine starts rounds, a stop cancels them.
	rotMu       sync.Mutex
	rotation    *rotationRound
	rotateAfter time.Time
	stopping    bool
	// stopped is set by a stop: health stays NOT_SERVING from then on. healthMu orders it with
	// setHealth.
	healthMu sync.Mutex
	stopped  bool
	// taskSince is when the maintenance task under way started (Unix nanoseconds), 0 between tasks.
	taskSince atomic.Int64
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
	if d.ring, err = keyring.Open(hsmstore.New(d.tok), keyring.Options{Changed: d.notifyChanged, MinPrepublish: minPrepublish(cfg)}); err != nil {
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
		RatePerSecond: cfg.Limits.RatePerSecond, Burst: cfg.Limits.Burst, Leeway: *cfg.JWT.Leeway,
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

// run serves until ctx ends or a server fails. Keeping the daemon up to date (key refreshes, version
// transitions, health checks, reloads) calls the token, so it runs in a goroutine of its own (maintain):
// a token that stops answering must not keep a stop from happening, nor health from saying so.
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

	quit, maintained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(maintained)
		d.maintain(quit, refresh, hup)
	}()
	watch := time.NewTicker(healthInterval)
	defer watch.Stop()
	var err error
	for ctx.Err() == nil && err == nil {
		select {
		case <-ctx.Done():
		case err = <-errc:
		case <-watch.C:
			d.watchMaintenance()
		}
	}
	close(quit)
	if err != nil {
		d.log.Error("signerd stopping after a listener failed", "err", err)
	} else {
		d.log.Info("signerd stopping: no new requests; waiting for those under way", "timeout", stopTimeout)
	}
	d.stop(maintained)
	return err
}

// maintenanceWait bounds how long a stop waits for the maintenance task under way, which normally
// takes milliseconds: one that takes longer is inside a token that does not answer.
const maintenanceWait = 2 * time.Second

// hungTask is how long a maintenance task may run before health says NOT_SERVING: the token is not
// answering (a network HSM gone quiet, another process holding the token's lock).
const hungTask = maxBusyChecks * healthInterval

// maintain refreshes the keys, carries out version transitions on time, checks the token's health and
// reloads on hup, one task at a time, until quit is closed.
func (d *daemon) maintain(quit <-chan struct{}, refresh time.Duration, hup <-chan os.Signal) {
	refreshT := time.NewTicker(refresh)
	defer refreshT.Stop()
	// transition fires when the next version changes state, so that activation and expiry happen on
	// time rather than at the next refresh tick.
	transition := time.NewTimer(time.Hour)
	defer transition.Stop()
	d.scheduleTransition(transition)
	healthT := time.NewTicker(healthInterval)
	defer healthT.Stop()
	task := func(f func()) {
		d.taskSince.Store(time.Now().UnixNano())
		defer d.taskSince.Store(0)
		f()
	}
	for {
		// A stop comes first, even when other cases are ready too (select picks among those at random).
		select {
		case <-quit:
			return
		default:
		}
		select {
		case <-quit:
			return
		case <-refreshT.C:
			task(func() { d.refresh(transition) })
		case <-transition.C:
			task(func() { d.refresh(transition) })
		case <-d.changed:
			d.scheduleTransition(transition)
		case <-healthT.C:
			task(d.checkToken)
		case <-hup:
			task(func() {
				d.reload()
				d.scheduleTransition(transition)
			})
		}
	}
}

// watchMaintenance reports NOT_SERVING while a maintenance task has been inside the token for longer
// than hungTask; the task's own health check sets it right once the token answers again.
func (d *daemon) watchMaintenance() {
	since := d.taskSince.Load()
	if since == 0 || time.Since(time.Unix(0, since)) < hungTask {
		return
	}
	if d.healthy.Load() {
		d.log.Error("the token has not answered a key refresh or health check", "for", time.Since(time.Unix(0, since)).Round(time.Second))
	}
	d.setHealth(false)
}

// stop drains the servers: health NOT_SERVING, then both listeners stop gracefully within one
// stopTimeout (then hard), so that the whole stop stays inside systemd's TimeoutStopSec. It then waits
// for the auto_rotate round and the maintenance goroutine (closed maintained when it ends) to end; one
// that does not is inside the token, which is then left unclosed, as with requests stuck in it.
func (d *daemon) stop(maintained <-chan struct{}) {
	d.stopHealth()
	d.cancelRotation() // no new key after the one being generated, if any
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	// SignStreams end once they have answered what they read; GracefulStop would wait for them.
	d.srv.Drain()
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
	select {
	case <-maintained:
	case <-time.After(maintenanceWait):
		d.log.Error("key refresh or token check still inside the token; stopping without it")
		d.release(false)
		return
	}
	d.close()
	d.log.Info("signerd stopped")
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
