// Package testutil is the bottom of atomfed's chain of test harnesses: the
// helpers every harness and test shares. Poll, PollContext, PollEvery and
// Eventually wait for a condition instead of sleeping; FreePort and
// PickPort hand out ports below the kernel's ephemeral range; TB is the
// part of testing.TB the harnesses take, and RunTB provides one outside
// `go test`. It imports neither package testing nor any other atomfed
// package, so that testcluster and procs above it, and the tools built on
// them (cmd/atomfed-bench, cmd/atomfed-chaos), do not link testing through it.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Forever is a timeout that never passes: polling with it ends only when
// the condition holds, the condition aborts, or the context ends.
const Forever time.Duration = math.MaxInt64

// Eventually calls fn until it returns nil or timeout passes, then fails the
// test with fn's last error. It polls every 10 ms at first, backing off to
// 100 ms.
func Eventually(t TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Poll(timeout, fn); err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, err)
	}
}

// Poll calls fn until it returns nil or timeout passes, and returns fn's
// last error. It polls every 10 ms at first, backing off to 100 ms.
func Poll(timeout time.Duration, fn func() error) error {
	return PollContext(context.Background(), timeout, fn)
}

// PollContext is Poll that also stops when ctx ends; it then returns
// ctx's error wrapped together with fn's last one.
func PollContext(ctx context.Context, timeout time.Duration, fn func() error) error {
	return poll(ctx, timeout, 0, fn)
}

// PollEvery is PollContext with a fixed interval between calls instead of
// the back-off: for harness loops whose interval is the resolution of what
// they time (how long a server takes to catch up, a cluster to be whole
// again), so that a measurement does not change with the poller.
func PollEvery(ctx context.Context, timeout, interval time.Duration, fn func() error) error {
	if interval <= 0 {
		panic("testutil: PollEvery needs a positive interval")
	}
	return poll(ctx, timeout, interval, fn)
}

// poll calls fn at least once. interval 0 backs off from 10 ms to 100 ms.
func poll(ctx context.Context, timeout, interval time.Duration, fn func() error) error {
	start := time.Now()
	wait := interval
	if wait == 0 {
		wait = 10 * time.Millisecond
	}
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var a *abortError
		if errors.As(err, &a) {
			return a.err
		}
		// Elapsed time, not a deadline: start.Add(Forever) would overflow.
		if time.Since(start) >= timeout {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-t.C:
		}
		if interval == 0 && wait < 100*time.Millisecond {
			wait *= 2
		}
	}
}

// Abort wraps err so that the pollers return it (unwrapped) at once
// instead of calling fn again: for a condition that can no longer hold,
// such as a server that exited while the harness waits for it to lead.
// Abort(nil) is nil.
func Abort(err error) error {
	if err == nil {
		return nil
	}
	return &abortError{err: err}
}

type abortError struct{ err error }

func (e *abortError) Error() string { return e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }
