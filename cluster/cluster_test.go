package cluster_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestElection checks that a new cluster ends with exactly one established
// leader that every node agrees on, in raft, over HTTP and in /health.
func TestElection(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	testutil.Eventually(t, 15*time.Second, func() error {
		l := c.WaitLeader()
		leaders, terms := 0, map[string]bool{}
		for _, n := range c.Running() {
			if n.Server.IsLeader() {
				leaders++
			}
			if want := map[bool]string{true: "Leader", false: "Follower"}[n == l]; n.Server.State() != want {
				return fmt.Errorf("%s is %s, want %s", n.ID, n.Server.State(), want)
			}
			terms[n.Server.Stats()["term"]] = true
			ctx := testcluster.Ctx(t, 5*time.Second)
			info, err := n.Client.Leader(ctx)
			if err != nil {
				return fmt.Errorf("%s: /v1/status/leader: %w", n.ID, err)
			}
			if info.ID != l.ID || info.HTTP != l.URL || info.Address != l.Server.RaftAddr() {
				return fmt.Errorf("%s names leader %+v, want %s at %s", n.ID, info, l.ID, l.URL)
			}
			h, err := n.Client.Health(ctx)
			if err != nil {
				return fmt.Errorf("%s: /health: %w", n.ID, err)
			}
			if h.Status != "ok" || !h.KnownLeader || h.Leader != l.ID || h.Node != n.ID {
				return fmt.Errorf("%s: /health %+v, want leader %s", n.ID, h, l.ID)
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d established leaders", leaders)
		}
		if len(terms) != 1 {
			return fmt.Errorf("nodes disagree on the term: %v", terms)
		}
		if v := voters(t, c); len(v) != 3 {
			return fmt.Errorf("voters %v, want 3", v)
		}
		if p := peer(t, c, l.ID); p == nil || !p.Leader {
			return errors.New("the configuration does not mark the leader")
		}
		return nil
	})
}

// TestNoPipelinedReplication guards the transport setting that keeps raft
// off its pipelined replication path, which can deadlock a follower's
// replication and raft.Shutdown (hashicorp/raft#612). Raft logs
// "pipelining replication" whenever it enters that path.
func TestNoPipelinedReplication(t *testing.T) {
	logs := &testcluster.LogBuffer{}
	c := testcluster.New(t, testcluster.Options{LogOutput: logs, LogLevel: "info"})
	l := c.WaitLeader()
	putRegion(t, l, region("home"))
	for i := 0; i < 20; i++ {
		putTenant(t, c.Followers()[i%2], tenant(fmt.Sprintf("t%d", i), "home"))
	}
	want := mustView(t, l, "linearizable")
	for _, n := range c.Running() {
		waitView(t, n, want)
	}
	if lines := logs.Lines("pipelining replication"); len(lines) > 0 {
		t.Fatalf("raft replicates through its pipeline: %q", lines[0])
	}
}
