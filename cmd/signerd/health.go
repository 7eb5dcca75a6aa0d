package main

import (
	"errors"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/signerd/signerd/hsm"
)

// healthInterval is how often the token is pinged for the health service.
const healthInterval = 5 * time.Second

// maxBusyChecks is how many health checks in a row may find the token without a free session before
// the daemon reports NOT_SERVING (about 15 s at healthInterval).
const maxBusyChecks = 3

// setHealth tells the health service, /readyz and the signerd_token_up metric whether the daemon can
// sign.
func (d *daemon) setHealth(ok bool) {
	d.healthMu.Lock()
	defer d.healthMu.Unlock()
	if ok && d.stopped {
		return // a health check that ran on into the stop does not undo it
	}
	d.healthy.Store(ok)
	st := healthpb.HealthCheckResponse_SERVING
	if !ok {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	d.health.SetServingStatus("", st)
	d.health.SetServingStatus("signer.v1.Signer", st)
}

// stopHealth says NOT_SERVING for good: the daemon is stopping.
func (d *daemon) stopHealth() {
	d.healthMu.Lock()
	d.stopped = true
	d.healthMu.Unlock()
	d.setHealth(false)
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
