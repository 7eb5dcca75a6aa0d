package main

import (
	"context"
	"fmt"
	"time"

	"github.com/signerd/signerd/audit"
)

// rotationRound is one auto_rotate round, running beside the run loop: generating key pairs can take
// seconds, during which health checks, reloads and a stop must not wait.
type rotationRound struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the round has ended; err is then its outcome
	err    error
}

// rotationBackoff holds auto_rotate back after a round that failed, so that a token in trouble is not
// asked again for key pairs and locks at every refresh.
const rotationBackoff = 5 * time.Minute

// rotating reports whether an auto_rotate round is under way.
func (d *daemon) rotating() bool {
	d.rotMu.Lock()
	defer d.rotMu.Unlock()
	return d.rotatingLocked()
}

func (d *daemon) rotatingLocked() bool {
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
	d.rotMu.Lock()
	defer d.rotMu.Unlock()
	if d.stopping || d.rotatingLocked() {
		return // none once the daemon stops; one round at a time
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

// cancelRotation cancels the auto_rotate round under way, if any (it stops before its next key), and
// starts no other: the daemon is stopping.
func (d *daemon) cancelRotation() {
	d.rotMu.Lock()
	defer d.rotMu.Unlock()
	d.stopping = true
	if d.rotation != nil {
		d.rotation.cancel()
	}
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
	d.rotMu.Lock()
	r := d.rotation
	d.rotMu.Unlock()
	if r == nil {
		return true
	}
	select {
	case <-r.done:
		return true
	case <-time.After(wait):
		return false
	}
}
