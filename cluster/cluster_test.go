package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testcluster"
	"github.com/atomcloud/atomfed/internal/testutil"
)

func region(name string) *fsm.Region {
	return &fsm.Region{Name: name, URL: "https://" + name + ".example.com", Tier: fsm.TierStaging}
}

func TestElectionAndForwarding(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	ctx := testcluster.Ctx(t, 30*time.Second)
	f := c.Followers()[0]
	if _, err := f.Client.RegisterRegion(ctx, region("us-east"), nil); err != nil {
		t.Fatalf("register through follower: %v", err)
	}
	ten := &fsm.Tenant{ID: "acme", HomeRegion: "us-east"}
	put, err := f.Client.PutTenant(ctx, ten, nil)
	if err != nil {
		t.Fatalf("put tenant through follower: %v", err)
	}
	for _, n := range c.Running() {
		got, meta, err := n.Client.Tenant(ctx, "acme", &client.QueryOptions{Consistency: "linearizable"})
		if err != nil {
			t.Fatalf("%s: linearizable read: %v", n.ID, err)
		}
		if got.ModifyIndex != put.ModifyIndex || meta.Index < put.ModifyIndex {
			t.Fatalf("%s: read modify_index %d (index %d), wrote %d", n.ID, got.ModifyIndex, meta.Index, put.ModifyIndex)
		}
	}
	_ = context.Background
	testutil.Eventually(t, 5*time.Second, func() error { return nil })
}
