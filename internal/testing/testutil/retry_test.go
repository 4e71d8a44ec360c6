package testutil

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	err := Poll(5*time.Second, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, calls)
	}
}

func TestPollReturnsTheLastErrorAtTheTimeout(t *testing.T) {
	last := errors.New("still not")
	start := time.Now()
	err := Poll(50*time.Millisecond, func() error { return last })
	if err != last {
		t.Fatalf("Poll = %v, want %v", err, last)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 2*time.Second {
		t.Fatalf("Poll gave up after %s, want just after 50ms", d)
	}
}

func TestAbortStopsPollingAtOnce(t *testing.T) {
	gone := errors.New("the server exited")
	calls := 0
	err := Poll(time.Minute, func() error {
		calls++
		return Abort(gone)
	})
	if err != gone || calls != 1 {
		t.Fatalf("Poll = %v after %d calls, want the aborting error after 1", err, calls)
	}
	if Abort(nil) != nil {
		t.Fatal("Abort(nil) is not nil")
	}
}

func TestPollContextEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	last := errors.New("no leader")
	start := time.Now()
	err := PollContext(ctx, Forever, func() error { return last })
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, last) {
		t.Fatalf("PollContext = %v, want the context's error and the last one", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PollContext returned %s after its context ended", d)
	}
}

func TestPollEveryKeepsItsInterval(t *testing.T) {
	var at []time.Time
	_ = PollEvery(context.Background(), 200*time.Millisecond, 40*time.Millisecond, func() error {
		at = append(at, time.Now())
		return errors.New("never")
	})
	if len(at) < 3 {
		t.Fatalf("%d calls in 200ms at a 40ms interval", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 40*time.Millisecond {
			t.Fatalf("call %d came %s after the previous one, want at least 40ms", i, gap)
		}
	}
}

func TestAZeroTimeoutCallsOnce(t *testing.T) {
	calls := 0
	_ = PollEvery(context.Background(), 0, time.Millisecond, func() error {
		calls++
		return errors.New("no")
	})
	if calls != 1 {
		t.Fatalf("%d calls with a zero timeout, want 1", calls)
	}
}
