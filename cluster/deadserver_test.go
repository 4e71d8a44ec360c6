package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestDeadServerCleanup crashes a follower: once Serf has reported it
// failed for DeadServerCleanupAfter the leader removes it from the raft
// configuration; restarted, it is added back as a voter and catches up.
func TestDeadServerCleanup(t *testing.T) {
	const after = time.Second
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *cluster.Config) {
		cfg.DeadServerCleanupAfter = after
	}})
	l := c.WaitLeader()
	putRegion(t, l, region("home"))
	dead := c.Followers()[0]

	c.Stop(dead)
	crashed := time.Now()
	testutil.Eventually(t, 20*time.Second, func() error {
		if p := peer(t, c, dead.ID); p != nil {
			return fmt.Errorf("%s is still in the configuration (%s, serf %s)", dead.ID, p.Suffrage, p.Status)
		}
		return nil
	})
	if took := time.Since(crashed); took < after {
		t.Fatalf("%s was removed %s after the crash, before DeadServerCleanupAfter (%s)", dead.ID, took, after)
	}
	if v := voters(t, c); len(v) != 2 {
		t.Fatalf("voters after cleanup: %v, want the 2 survivors", v)
	}
	putTenant(t, c.WaitLeader(), tenant("while-dead", "home"))

	c.Restart(dead)
	testutil.Eventually(t, 20*time.Second, func() error {
		if p := peer(t, c, dead.ID); p == nil || !p.Voter {
			return fmt.Errorf("%s is not a voter again: %+v", dead.ID, p)
		}
		return nil
	})
	want := mustView(t, c.WaitLeader(), "linearizable")
	waitView(t, dead, want)
	if v := voters(t, c); len(v) != 3 {
		t.Fatalf("voters after the restart: %v, want 3", v)
	}
}

// TestDeadServerCleanupKeepsMinQuorum checks that cleanup never shrinks
// the voters below MinQuorum: with MinQuorum 3 in a 3-voter cluster a
// crashed follower is seen as failed, the removal is refused every time it
// is considered, and the server stays a voter.
func TestDeadServerCleanupKeepsMinQuorum(t *testing.T) {
	const after = 300 * time.Millisecond
	logs := &testcluster.LogBuffer{}
	c := testcluster.New(t, testcluster.Options{LogOutput: logs, LogLevel: "info", Configure: func(_ int, cfg *cluster.Config) {
		cfg.DeadServerCleanupAfter = after
		cfg.MinQuorum = 3
	}})
	l := c.WaitLeader()
	putRegion(t, l, region("home"))
	dead := c.Followers()[0]

	c.Stop(dead)
	crashed := time.Now()
	testutil.Eventually(t, 20*time.Second, func() error {
		if removed := logs.Lines("removing server", "server="+dead.ID); len(removed) > 0 {
			t.Fatalf("the leader removed %s despite MinQuorum 3: %v", dead.ID, removed)
		}
		refused := logs.Lines("not removing failed server", "server="+dead.ID)
		if len(refused) < 3 {
			return fmt.Errorf("the leader refused to remove %s %d times so far", dead.ID, len(refused))
		}
		return nil
	})
	if time.Since(crashed) < after {
		t.Fatalf("cleanup considered %s before DeadServerCleanupAfter", dead.ID)
	}
	if p := peer(t, c, dead.ID); p == nil || !p.Voter {
		t.Fatalf("%s was removed despite MinQuorum 3: %+v", dead.ID, p)
	}
	if lines := logs.Lines("removing server", "server="+dead.ID); len(lines) > 0 {
		t.Fatalf("the leader removed %s: %v", dead.ID, lines)
	}
	putTenant(t, c.WaitLeader(), tenant("still-writable", "home"))
}
