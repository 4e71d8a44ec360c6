package procs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// Metric returns the value of an unlabelled metric on the server's
// /metrics.
func (s *ServerProc) Metric(ctx context.Context, name string) (float64, error) {
	body, err := s.sec.get(ctx, s.URL+"/metrics", Token)
	if err != nil {
		return 0, err
	}
	return metricValue(string(body), name, s.URL)
}

// metricValue finds the unlabelled metric name in a /metrics body.
func metricValue(body, name, url string) (float64, error) {
	for _, line := range strings.Split(body, "\n") {
		var v float64
		if strings.HasPrefix(line, name+" ") {
			if _, err := fmt.Sscanf(line[len(name)+1:], "%g", &v); err == nil {
				return v, nil
			}
		}
	}
	return 0, fmt.Errorf("metric %s not on %s/metrics", name, url)
}

// Term returns the highest raft term the running servers report on
// /metrics (atomfed_raft_term): it moves when a leader is elected, so the
// bench tool counts elections during load with it.
func (c *Cluster) Term(ctx context.Context) (uint64, error) {
	var best uint64
	var last error
	for _, s := range c.Running() {
		t, err := s.Metric(ctx, "atomfed_raft_term")
		if err != nil {
			last = err
			continue
		}
		best = max(best, uint64(t))
	}
	if best == 0 {
		return 0, fmt.Errorf("no server reported its term: %v", last)
	}
	return best, nil
}

// WaitCaughtUp waits until s runs, knows the leader, and has applied
// everything the leader has (equal audit heads), or ctx ends. Writes
// should be paused. It polls every 20 ms: the bench tool times a restarted
// server's rejoin with it.
func (c *Cluster) WaitCaughtUp(ctx context.Context, s *ServerProc) error {
	err := testutil.PollEvery(ctx, testutil.Forever, 20*time.Millisecond, func() error {
		leader, err := c.Leader(ctx)
		if err != nil {
			return err
		}
		return sameHead(ctx, leader, s)
	})
	if err != nil {
		return fmt.Errorf("%s did not catch up: %w", s.ID(), err)
	}
	return nil
}

// sameHead reports why s has not caught up with leader, or nil.
func sameHead(ctx context.Context, leader, s *ServerProc) error {
	hl, err := leader.Health(ctx)
	if err != nil {
		return err
	}
	hs, err := s.Health(ctx)
	if err != nil {
		return err
	}
	if !hs.KnownLeader {
		return errors.New(s.ID() + " knows no leader")
	}
	if hs.AuditHead != hl.AuditHead {
		return fmt.Errorf("%s is at audit index %d, the leader %s at %d", s.ID(), hs.AuditIndex, leader.ID(), hl.AuditIndex)
	}
	return nil
}
