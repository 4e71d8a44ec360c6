package cluster_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

func region(name string) *fsm.Region {
	return &fsm.Region{Name: name, URL: "https://" + name + ".example.com", Tier: fsm.TierStaging}
}

func tenant(id, home string, mirrors ...string) *fsm.Tenant {
	return &fsm.Tenant{ID: id, HomeRegion: home, Mirrors: mirrors}
}

// retryable reports whether err is an answer the API documents as safe to
// retry because nothing was applied: no leader right now, or raft busy.
func retryable(err error) bool {
	return client.IsCode(err, "no_leader") || client.IsCode(err, "busy")
}

// retry runs op until it succeeds or fails with a non-retryable error, for
// writes and reads that may meet a leader election.
func retry(t *testing.T, what string, op func() error) {
	t.Helper()
	var last error
	err := testutil.Poll(15*time.Second, func() error {
		last = op()
		if last != nil && retryable(last) {
			return last
		}
		return nil
	})
	if err == nil {
		err = last
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func putRegion(t *testing.T, n *testcluster.Node, r *fsm.Region) *fsm.Region {
	t.Helper()
	var out *fsm.Region
	retry(t, "register region "+r.Name+" on "+n.ID, func() (err error) {
		out, err = n.RegionClient(r.Name).RegisterRegion(testcluster.Ctx(t, 20*time.Second), r, nil)
		return err
	})
	return out
}

func putTenant(t *testing.T, n *testcluster.Node, x *fsm.Tenant) *fsm.Tenant {
	t.Helper()
	var out *fsm.Tenant
	retry(t, "put tenant "+x.ID+" on "+n.ID, func() (err error) {
		out, err = n.Client.PutTenant(testcluster.Ctx(t, 20*time.Second), x, nil)
		return err
	})
	return out
}

// view is a node's answer about the whole state.
type view struct {
	Regions []*fsm.Region
	Tenants []*fsm.Tenant
	Head    string
	Index   uint64
}

func (v view) String() string {
	return fmt.Sprintf("index=%d head=%.12s regions=%d tenants=%d", v.Index, v.Head, len(v.Regions), len(v.Tenants))
}

// readView reads regions, tenants and the audit head from n.
func readView(ctx context.Context, n *testcluster.Node, consistency string) (view, error) {
	q := &client.QueryOptions{Consistency: consistency}
	var v view
	var err error
	if v.Regions, _, err = n.Client.Regions(ctx, q); err != nil {
		return v, fmt.Errorf("%s: regions: %w", n.ID, err)
	}
	if v.Tenants, _, err = n.Client.Tenants(ctx, "", q); err != nil {
		return v, fmt.Errorf("%s: tenants: %w", n.ID, err)
	}
	a, err := n.Client.Audit(ctx, q)
	if err != nil {
		return v, fmt.Errorf("%s: audit: %w", n.ID, err)
	}
	v.Head, v.Index = a.Head, a.Index
	return v, nil
}

// mustView is readView that retries retryable errors and fails the test
// on any other.
func mustView(t *testing.T, n *testcluster.Node, consistency string) view {
	t.Helper()
	var v view
	retry(t, "read state", func() (err error) {
		v, err = readView(testcluster.Ctx(t, 20*time.Second), n, consistency)
		return err
	})
	return v
}

// waitView waits until n's own (stale) view of the state equals want.
func waitView(t *testing.T, n *testcluster.Node, want view) {
	t.Helper()
	testutil.Eventually(t, 15*time.Second, func() error {
		got, err := readView(testcluster.Ctx(t, 20*time.Second), n, "stale")
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("%s holds %v, want %v", n.ID, got, want)
		}
		return nil
	})
}

// peer returns id's entry in the leader's raft configuration, or nil.
func peer(t *testing.T, c *testcluster.Cluster, id string) *structs.Peer {
	t.Helper()
	peers, _, err := c.WaitLeader().Server.Configuration()
	if err != nil {
		t.Fatalf("raft configuration: %v", err)
	}
	for i := range peers {
		if peers[i].ID == id {
			return &peers[i]
		}
	}
	return nil
}

// voters returns the ids of the voters in the leader's configuration.
func voters(t *testing.T, c *testcluster.Cluster) []string {
	t.Helper()
	peers, _, err := c.WaitLeader().Server.Configuration()
	if err != nil {
		t.Fatalf("raft configuration: %v", err)
	}
	var out []string
	for _, p := range peers {
		if p.Voter {
			out = append(out, p.ID)
		}
	}
	return out
}

// other returns a running node that is not n.
func other(c *testcluster.Cluster, n *testcluster.Node) *testcluster.Node {
	for _, o := range c.Running() {
		if o != n {
			return o
		}
	}
	return nil
}

// restartAll starts the stopped nodes again on their data dirs, checks that
// the leader and then every one of them hold want, and returns the leader.
func restartAll(t *testing.T, c *testcluster.Cluster, nodes []*testcluster.Node, want view) *testcluster.Node {
	t.Helper()
	for _, n := range nodes {
		c.Restart(n)
	}
	l := c.WaitLeader()
	if got := mustView(t, l, "linearizable"); got.String() != want.String() {
		t.Fatalf("after the restart the leader holds %v, want %v", got, want)
	}
	for _, n := range nodes {
		waitView(t, n, want)
	}
	return l
}
