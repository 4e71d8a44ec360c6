package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestNonVoter adds a non-voter: it joins the configuration as a
// non-voter, replicates the state (its stale reads see writes, including
// one it forwarded), and does not count towards quorum: with it and one
// voter down, the two remaining voters still commit.
func TestNonVoter(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	putRegion(t, l, region("home"))
	nv := c.AddServer(func(cfg *cluster.Config) { cfg.NonVoter = true })

	testutil.Eventually(t, 20*time.Second, func() error {
		p := peer(t, c, nv.ID)
		if p == nil || p.Voter || p.Suffrage != "Nonvoter" {
			return fmt.Errorf("%s in the configuration: %+v, want a non-voter", nv.ID, p)
		}
		return nil
	})
	if v := voters(t, c); len(v) != 3 {
		t.Fatalf("voters %v, want the 3 original servers", v)
	}
	putTenant(t, l, tenant("from-leader", "home"))
	putTenant(t, nv, tenant("via-nonvoter", "home")) // forwarded to the leader
	want := mustView(t, l, "linearizable")
	waitView(t, nv, want)
	if nv.Server.IsLeader() || nv.Server.State() != "Follower" {
		t.Fatalf("non-voter %s is %s", nv.ID, nv.Server.State())
	}

	c.Stop(nv)
	c.Stop(c.Followers()[0])
	l = c.WaitLeader()
	putTenant(t, l, tenant("after-nonvoter-down", "home"))
	got := mustView(t, l, "linearizable")
	if len(got.Tenants) != len(want.Tenants)+1 {
		t.Fatalf("with 2 of 3 voters up the write did not land: %v", got)
	}
}
