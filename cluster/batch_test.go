package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestGroupCommit writes concurrently through the leader and a follower:
// writes of different tenants share batch entries, every write is applied
// exactly once with its own result, and two writes of the same tenant are
// never in one entry, so a tenant's modify index grows with every write.
func TestGroupCommit(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
	speaks(t, c, node.ProtocolVersion, node.ProtocolVersion)

	const writers, perWriter, tenants = 32, 20, 8
	type ack struct {
		tenant string
		index  uint64
		label  string
	}
	var mu sync.Mutex
	var acks []ack
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := []*testcluster.Node{l, f}[w%2]
			for i := 0; i < perWriter; i++ {
				id := fmt.Sprintf("t%d", (w+i)%tenants)
				label := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				got, err := n.Client.PutTenant(ctx, &fsm.Tenant{ID: id, HomeRegion: "home", Labels: map[string]string{"by": label}}, nil)
				cancel()
				if err != nil {
					t.Errorf("write %s via %s: %v", label, n.ID, err)
					return
				}
				if got.Labels["by"] != label {
					t.Errorf("write %s answered another write's tenant: %v", label, got.Labels)
				}
				mu.Lock()
				acks = append(acks, ack{id, got.ModifyIndex, label})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Distinct indexes per tenant: no two writes of one tenant shared an
	// entry.
	seen := map[string]map[uint64]string{}
	var last uint64
	for _, a := range acks {
		if seen[a.tenant] == nil {
			seen[a.tenant] = map[uint64]string{}
		}
		if other, dup := seen[a.tenant][a.index]; dup {
			t.Fatalf("writes %s and %s of tenant %s both got modify index %d", other, a.label, a.tenant, a.index)
		}
		seen[a.tenant][a.index] = a.label
		last = max(last, a.index)
	}
	// The log holds batch entries, and counts every write exactly once.
	l = c.WaitLeader()
	batches, cmds, singles := 0, 0, 0
	for i := uint64(1); i <= last; i++ {
		var e raft.Log
		if l.Server.LogStore().GetLog(i, &e) != nil || e.Type != raft.LogCommand {
			continue
		}
		switch fsm.MessageType(e.Data[0]) {
		case fsm.BatchType:
			batches++
			n, err := fsm.BatchLen(e.Data)
			if err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			cmds += n
		case fsm.TenantUpsertType:
			cmds++
			singles++
		}
	}
	if batches == 0 {
		t.Errorf("%d concurrent writers produced no batch entry", writers)
	}
	if cmds != writers*perWriter {
		t.Errorf("the log holds %d tenant writes, %d were acknowledged", cmds, writers*perWriter)
	}
	t.Logf("%d writes: %d in %d batch entries, %d on their own", cmds, cmds-singles, batches, singles)
}
