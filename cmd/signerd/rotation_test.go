package main

import "testing"

// TestNoRotationOnceStopping: once a stop has cancelled the auto_rotate rounds, a refresh still under way
// in the maintenance goroutine starts no new one (it would generate keys and audit them after the
// audit trail is closed); before, a round starts when its conditions are looked at.
func TestNoRotationOnceStopping(t *testing.T) {
	d := &daemon{}
	d.cancelRotation()
	d.startRotation() // reaches for the audit trail and the keys (nil here) unless it stops first
	if d.rotating() {
		t.Error("a rotation round started after the stop")
	}
}
