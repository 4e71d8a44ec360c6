// Package testutil holds small helpers shared by atomfed's tests: polling
// for a condition instead of sleeping, and free ports.
package testutil

import (
	"testing"
	"time"
)

// Eventually calls fn until it returns nil or timeout passes, then fails the
// test with fn's last error. It polls every 10 ms at first, backing off to
// 100 ms.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Poll(timeout, fn); err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, err)
	}
}

// Poll calls fn until it returns nil or timeout passes, and returns fn's
// last error.
func Poll(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		if wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}
