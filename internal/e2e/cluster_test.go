package e2e_test

import (
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// TestThreeProcessesFormACluster: three `atomfed server` processes started
// with --bootstrap-expect 3 and each other's Serf addresses elect one
// leader, agree on a three-voter Raft configuration, and a tenant written
// through a follower is visible to a linearizable read on every node right
// after the write is acknowledged.
func TestThreeProcessesFormACluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	leader := waitLeader(t, c)

	peers, err := leader.Client.RaftConfiguration(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	voters := map[string]bool{}
	for _, p := range peers {
		if p.Voter {
			voters[p.ID] = true
		}
	}
	for _, s := range c.Servers {
		if !voters[s.ID()] {
			t.Errorf("%s is not a voter of the raft configuration %+v", s.ID(), peers)
		}
	}
	if len(peers) != 3 {
		t.Fatalf("raft configuration has %d servers, want 3: %+v", len(peers), peers)
	}

	follower := c.Others(leader)[0]
	registerRegion(t, c, follower, "us-east")
	want := &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Labels: map[string]string{"plan": "gold"}}
	put, err := follower.Client.PutTenant(ctx(t, 10*time.Second), want, nil)
	if err != nil {
		t.Fatalf("PUT tenant via follower %s: %v", follower.ID(), err)
	}
	if put.ModifyIndex == 0 {
		t.Fatalf("PUT answered modify_index 0: %+v", put)
	}
	// No polling: a linearizable read that starts after the write was
	// acknowledged must see it, whichever node it is sent to.
	for _, s := range c.Servers {
		got, meta, err := s.Client.Tenant(ctx(t, 10*time.Second), "acme", &client.QueryOptions{Consistency: "linearizable"})
		if err != nil {
			t.Fatalf("linearizable GET via %s: %v", s.ID(), err)
		}
		if got.ModifyIndex != put.ModifyIndex || got.Labels["plan"] != "gold" || got.HomeRegion != "us-east" {
			t.Errorf("linearizable GET via %s = %+v, want the write at index %d", s.ID(), got, put.ModifyIndex)
		}
		if meta.ServedBy != s.ID() && meta.ServedBy != leader.ID() {
			// A linearizable read is served by the server asked (a
			// follower after a read-index round with the leader), or by
			// the leader when the follower has not learnt of the commit.
			t.Errorf("linearizable GET via %s was served by %q", s.ID(), meta.ServedBy)
		}
		if meta.Index < put.ModifyIndex {
			t.Errorf("linearizable GET via %s reflects index %d, before the write at %d", s.ID(), meta.Index, put.ModifyIndex)
		}
	}
}

func describe(s *procs.ServerProc, err error) string {
	if err != nil {
		return err.Error()
	}
	return s.ID()
}
