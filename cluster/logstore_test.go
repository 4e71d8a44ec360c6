package cluster_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/internal/raftlog"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestLogStoreMovesFromBolt: a cluster whose raft log is in raft.db (data
// dirs of earlier builds, or --raft-log-store=boltdb) restarts on segment
// files with its state and log intact, raft.db keeps no entries, and the
// way back is refused with a message that says what to do.
func TestLogStoreMovesFromBolt(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *cluster.Config) {
		cfg.LogStore = cluster.LogStoreBolt
	}})
	l := c.WaitLeader()
	putRegion(t, l, region("us-east"))
	for _, x := range []string{"acme", "globex", "initech"} {
		putTenant(t, c.Followers()[0], tenant(x, "us-east"))
	}
	c.Settle()
	l = c.WaitLeader()
	want := mustView(t, l, "linearizable")
	for _, n := range c.Running() {
		waitView(t, n, want)
		if _, ok := n.Server.LogStore().(*raftboltdb.BoltStore); !ok {
			t.Fatalf("%s log store is %T, want bolt", n.ID, n.Server.LogStore())
		}
	}
	nodes := c.Running()
	lastBolt := map[string]uint64{}
	for _, n := range nodes {
		last, _ := n.Server.LogStore().LastIndex()
		lastBolt[n.ID] = last
		c.Stop(n)
		c.Reconfigure(n, func(cfg *cluster.Config) { cfg.LogStore = cluster.LogStoreSegment })
	}
	restartAll(t, c, nodes, want)
	for _, n := range nodes {
		if _, ok := n.Server.LogStore().(*raftlog.Store); !ok {
			t.Fatalf("%s log store is %T, want segments", n.ID, n.Server.LogStore())
		}
		if last, _ := n.Server.LogStore().LastIndex(); last < lastBolt[n.ID] {
			t.Fatalf("%s log ends at %d after the move, was %d", n.ID, last, lastBolt[n.ID])
		}
	}
	putTenant(t, c.Followers()[0], tenant("after-move", "us-east"))
	// The store's metrics: appends were synced and timed, nothing failed.
	reg := nodes[1].Reg
	syncs, failed := metricValue(t, reg, "atomfed_raft_log_fsync_duration_seconds"), metricValue(t, reg, "atomfed_raft_log_failed")
	segs, bytes := metricValue(t, reg, "atomfed_raft_log_segments"), metricValue(t, reg, "atomfed_raft_log_bytes")
	if syncs < 1 || failed != 0 || segs != 1 || bytes <= 0 {
		t.Fatalf("log store metrics: syncs %v, failed %v, segments %v, bytes %v", syncs, failed, segs, bytes)
	}

	n := nodes[0]
	c.Stop(n)
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(n.Dir, "raft", "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := bolt.LastIndex(); last != 0 {
		t.Fatalf("raft.db still holds log entries up to %d", last)
	}
	if term, err := bolt.GetUint64([]byte("CurrentTerm")); err != nil || term == 0 {
		t.Fatalf("raft.db lost the current term: %d %v", term, err)
	}
	bolt.Close()
	if _, err := os.Stat(filepath.Join(n.Dir, "raft", "log.migrating")); !os.IsNotExist(err) {
		t.Fatalf("log.migrating left behind: %v", err)
	}

	cfg := cluster.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.DataDir = n.ID, "r1", n.Dir
	cfg.RaftBindAddr, cfg.SerfBindAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.LogStore = cluster.LogStoreBolt
	if s, err := cluster.New(cfg); err == nil || !strings.Contains(err.Error(), "--raft-log-store=segment") {
		if s != nil {
			s.Shutdown()
		}
		t.Fatalf("opening a segment log as boltdb: %v, want a refusal naming --raft-log-store=segment", err)
	}
	c.Restart(n)
	waitView(t, n, mustView(t, c.WaitLeader(), "linearizable"))
}
