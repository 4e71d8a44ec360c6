package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestLeaderCrash crashes the leader while a client keeps writing through
// a follower: a new leader is established, writes succeed again, and every
// write that was acknowledged is still there, read linearizably from every
// node.
func TestLeaderCrash(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	old := c.WaitLeader()
	via := c.Followers()[0]
	putRegion(t, old, region("home"))

	var mu sync.Mutex
	acked := map[string]uint64{} // tenant id -> modify index
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			id := fmt.Sprintf("t%d", i)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			got, err := via.Client.PutTenant(wctx, tenant(id, "home"), nil)
			cancel()
			if err == nil {
				mu.Lock()
				acked[id] = got.ModifyIndex
				mu.Unlock()
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitCount(t, count, 10)

	c.Stop(old)
	leader := c.WaitLeader()
	if leader == old {
		t.Fatalf("crashed leader %s is still leader", old.ID)
	}
	before := count()
	waitCount(t, count, before+10) // writes go through the new leader
	stop()
	wg.Wait()

	putTenant(t, leader, tenant("after", "home"))
	for _, n := range c.Running() {
		got := mustView(t, n, "linearizable")
		have := map[string]*fsm.Tenant{}
		for _, x := range got.Tenants {
			have[x.ID] = x
		}
		for id, idx := range acked {
			if x := have[id]; x == nil || x.ModifyIndex != idx {
				t.Errorf("%s: acknowledged write %s (modify_index %d) reads back as %+v", n.ID, id, idx, x)
			}
		}
		if have["after"] == nil {
			t.Errorf("%s: the write after failover is missing", n.ID)
		}
	}
	t.Logf("%d writes acknowledged across the failover", len(acked))
}

// waitCount waits until count() reaches n; a stalled writer fails the test.
func waitCount(t *testing.T, count func() int, n int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := count(); got < n {
			return fmt.Errorf("%d of %d writes acknowledged", got, n)
		}
		return nil
	})
}
