package main

import (
	"fmt"
	"time"

	"github.com/signerd/signerd/audit"
)

func (d *daemon) notifyChanged() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// Audit ops of the changes the daemon makes by itself: a version destroyed after its grace, a key
// rotated because its rotation period passed (auto_rotate).
const (
	opDestroyExpired = "destroy_expired"
	opRotateDue      = "rotate_due"
)

// refresh re-reads the keys from the token, rotates those due (with auto_rotate), destroys versions
// past their grace (unless their key keeps them, or the audit trail is failing), and schedules the next
// transition.
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
		d.log.Error("key refresh failed", "err", err)
	}
	if d.started.AutoRotate {
		d.startRotation()
	}
	// Destroying key material is audited, as rotating is: while the trail cannot be written (a full
	// disk), expired versions wait, harmless, for a refresh that can record it.
	if rotating || d.audit.Err() != nil {
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
