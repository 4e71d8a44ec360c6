package cluster_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestRestartKeepsState stops every node, starts them again on the same
// data dirs, and checks that each holds exactly the state it had (regions,
// tenants, audit head and index) and that the cluster takes new writes.
// Snapshots are taken every few entries so that a restart restores a
// snapshot and replays the log after it.
func TestRestartKeepsState(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *cluster.Config) {
		cfg.SnapshotThreshold = 4
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.TrailingLogs = 2
	}})
	l := c.WaitLeader()
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		putRegion(t, l, region(r))
	}
	for _, x := range []string{"acme", "globex", "initech", "umbrella"} {
		putTenant(t, c.Followers()[0], tenant(x, "us-east", "eu-west"))
	}
	putTenant(t, l, tenant("acme", "ap-south"))
	ctx := testcluster.Ctx(t, 30*time.Second)
	if err := l.Client.DeleteTenant(ctx, "initech", nil); err != nil {
		t.Fatalf("delete tenant: %v", err)
	}
	// Each region gets a probe task from the leader's scheduler, later:
	// wait for it so that the state compared is final.
	c.Settle()
	l = c.WaitLeader()
	want := mustView(t, l, "linearizable")
	for _, n := range c.Running() {
		waitView(t, n, want) // every node has applied everything
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, n := range c.Running() {
			snaps, _ := filepath.Glob(filepath.Join(n.Dir, "raft", "snapshots", "*", "state.bin"))
			if len(snaps) == 0 {
				return fmt.Errorf("%s has taken no snapshot yet", n.ID)
			}
		}
		return nil
	})

	nodes := c.Running()
	for _, n := range nodes {
		c.Stop(n)
	}
	l = restartAll(t, c, nodes, want)

	putTenant(t, c.Followers()[0], tenant("after-restart", "eu-west"))
	got := mustView(t, l, "linearizable")
	if len(got.Tenants) != len(want.Tenants)+1 || got.Index <= want.Index || got.Head == want.Head {
		t.Fatalf("write after restart: state %v, before %v", got, want)
	}
	if _, _, err := l.Client.Tenant(ctx, "after-restart", &client.QueryOptions{}); err != nil {
		t.Fatalf("read the new tenant: %v", err)
	}
}
