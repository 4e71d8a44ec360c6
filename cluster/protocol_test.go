package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestRollingUpgradeProtocol runs a cluster in the middle of an upgrade:
// one server still speaks protocol 1 (JSON commands, no forwarding RPC)
// and leads. Writes through every server succeed, every command is written
// as JSON, and followers reach the old leader over HTTP. Once that server
// is upgraded, commands are written as MessagePack again.
func TestRollingUpgradeProtocol(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *cluster.Config) {
		if i == 0 {
			cfg.Protocol = 1
		}
	}})
	old := c.Nodes[0]
	c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
	leadBy(t, c, old)

	codecs := func(n *testcluster.Node, from, to uint64) map[byte]int {
		out := map[byte]int{}
		for i := from; i <= to; i++ {
			var l raft.Log
			if err := n.Server.LogStore().GetLog(i, &l); err != nil || l.Type != raft.LogCommand {
				continue
			}
			out[l.Data[1]]++
		}
		return out
	}
	writeAll := func(round string) (first, last uint64) {
		for _, n := range c.Nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			got, err := n.Client.PutTenant(ctx, &fsm.Tenant{ID: fmt.Sprintf("%s-%s", round, n.ID), HomeRegion: "home"}, nil)
			cancel()
			if err != nil {
				t.Fatalf("%s: write via %s: %v", round, n.ID, err)
			}
			if first == 0 {
				first = got.ModifyIndex
			}
			last = got.ModifyIndex
		}
		return first, last
	}

	// Every server must have seen the old server's tag before it encodes.
	speaks(t, c, 1, 1)
	before := map[string]float64{}
	for _, n := range c.Nodes {
		before[n.ID] = forwarded(t, n)
	}
	first, last := writeAll("mixed")
	if got := codecs(old, first, last); got[fsm.CodecMsgpack] != 0 || got[fsm.CodecJSON] < len(c.Nodes) {
		t.Fatalf("with a protocol-1 server in the cluster the log holds %v (codec: count), want only JSON", got)
	}
	// The followers reached the old leader over HTTP, not the RPC.
	for _, n := range c.Nodes[1:] {
		if forwarded(t, n) <= before[n.ID] {
			t.Errorf("%s did not proxy its write to the protocol-1 leader over HTTP", n.ID)
		}
	}

	// Upgrade the old server.
	c.Stop(old)
	c.Reconfigure(old, func(cfg *cluster.Config) { cfg.Protocol = 0 })
	c.Restart(old)
	c.WaitLeader()
	testutil.Eventually(t, 10*time.Second, func() error {
		for _, n := range c.Running() {
			if n.Server.FSM().AppliedIndex() < last {
				return fmt.Errorf("%s has not caught up", n.ID)
			}
		}
		return nil
	})
	speaks(t, c, node.ProtocolVersion, node.ProtocolVersion)
	first, last = writeAll("upgraded")
	l := c.WaitLeader()
	if got := codecs(l, first, last); got[fsm.CodecJSON] != 0 || got[fsm.CodecMsgpack] < len(c.Nodes) {
		t.Fatalf("after the upgrade the log holds %v (codec: count), want only MessagePack", got)
	}
}

// leadBy transfers leadership to n.
func leadBy(t *testing.T, c *testcluster.Cluster, n *testcluster.Node) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		l := c.WaitLeader()
		if l == n {
			return nil
		}
		if err := l.Server.Raft().LeadershipTransferToServer(raft.ServerID(n.ID), raft.ServerAddress(n.Server.RaftAddr())).Error(); err != nil {
			return fmt.Errorf("transfer to %s: %v", n.ID, err)
		}
		return fmt.Errorf("leadership moving to %s", n.ID)
	})
}

// speaks waits until every running server sees the cluster speaking
// protocol version min with a leader of version leader.
func speaks(t *testing.T, c *testcluster.Cluster, min, leader int) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, n := range c.Running() {
			if m, l := n.Server.Protocols(); m != min || l != leader {
				return fmt.Errorf("%s sees protocol %d, leader %d; want %d, %d", n.ID, m, l, min, leader)
			}
		}
		return nil
	})
}

// forwarded returns how many requests n proxied to the leader over HTTP.
func forwarded(t *testing.T, n *testcluster.Node) float64 {
	t.Helper()
	mfs, err := n.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == "atomfed_http_forwarded_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestNewCommandsWaitForTheUpgrade: while one server still speaks protocol
// 2, no server logs a command of protocol 3 (a tenant PATCH), which that
// server could not apply: the write is refused with 409
// upgrade_in_progress and nothing is logged. Once every server speaks 3,
// the same PATCH applies.
func TestNewCommandsWaitForTheUpgrade(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(i int, cfg *cluster.Config) {
		if i == 0 {
			cfg.Protocol = 2
		}
	}})
	old := c.Nodes[0]
	c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
	ctx := testcluster.Ctx(t, time.Minute)
	if _, err := c.WaitLeader().Client.PutTenant(ctx, &fsm.Tenant{ID: "acme", HomeRegion: "home"}, nil); err != nil {
		t.Fatal(err)
	}
	patch := map[string]any{"labels": map[string]any{"tier": "gold"}}
	for _, n := range c.Running() {
		testutil.Eventually(t, 10*time.Second, func() error {
			if m, _ := n.Server.Protocols(); m != 2 {
				return fmt.Errorf("%s sees protocol %d, want the old server's 2", n.ID, m)
			}
			return nil
		})
		_, err := n.Client.PatchTenant(ctx, "acme", patch, nil)
		if client.StatusOf(err) != http.StatusConflict || !client.IsCode(err, "upgrade_in_progress") {
			t.Fatalf("PATCH via %s during the upgrade: %v, want 409 upgrade_in_progress", n.ID, err)
		}
	}
	if tn, _, err := c.WaitLeader().Client.Tenant(ctx, "acme", nil); err != nil || tn.Labels["tier"] != "" {
		t.Fatalf("the refused PATCH changed acme: %+v %v", tn, err)
	}
	c.Stop(old)
	c.Reconfigure(old, func(cfg *cluster.Config) { cfg.Protocol = 0 })
	c.Restart(old)
	speaks(t, c, node.ProtocolVersion, node.ProtocolVersion)
	tn, err := c.WaitLeader().Client.PatchTenant(ctx, "acme", patch, nil)
	if err != nil || tn.Labels["tier"] != "gold" {
		t.Fatalf("PATCH after the upgrade: %+v %v", tn, err)
	}
}
