package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestLeaderLeave makes the leader leave gracefully: leadership moves to
// another server, the leaver is removed from the raft configuration and
// shows as left in Serf, and the cluster keeps its state and takes writes.
func TestLeaderLeave(t *testing.T) {
	logs := &testcluster.LogBuffer{}
	c := testcluster.New(t, testcluster.Options{LogOutput: logs, LogLevel: "info"})
	old := c.WaitLeader()
	putRegion(t, old, region("home"))
	putTenant(t, old, tenant("before", "home"))
	c.Settle() // the region's probe task is created asynchronously
	want := mustView(t, old, "linearizable")

	if l := c.WaitLeader(); l != old {
		old = l // leadership moved before the leave; the new leader leaves
	}
	c.Leave(old)
	l := c.WaitLeader()
	if l == old {
		t.Fatalf("%s left but is still leader", old.ID)
	}
	if len(logs.Lines(old.ID+".server", "leadership transferred")) == 0 {
		t.Fatalf("%s left without handing over leadership: %q", old.ID, logs.Lines(old.ID+"."))
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if p := peer(t, c, old.ID); p != nil {
			return fmt.Errorf("%s is still in the configuration: %+v", old.ID, p)
		}
		for _, n := range c.Running() {
			ms, err := n.Client.Members(testcluster.Ctx(t, 5*time.Second))
			if err != nil {
				return err
			}
			status := ""
			for _, m := range ms {
				if m.Name == old.ID {
					status = m.Status
				}
			}
			if status != "left" {
				return fmt.Errorf("%s sees %s as %q, want left", n.ID, old.ID, status)
			}
		}
		return nil
	})
	if v := voters(t, c); len(v) != 2 {
		t.Fatalf("voters %v, want the 2 remaining servers", v)
	}
	if got := mustView(t, l, "linearizable"); got.String() != want.String() {
		t.Fatalf("state after leave %v, want %v", got, want)
	}
	for _, n := range c.Running() {
		putTenant(t, n, tenant("after-"+n.ID, "home"))
	}
	if got := mustView(t, l, "linearizable"); len(got.Tenants) != len(want.Tenants)+2 {
		t.Fatalf("writes after the leave: %v", got)
	}
}
