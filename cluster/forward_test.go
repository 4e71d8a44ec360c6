package cluster_test

import (
	"errors"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestForwardApply commits commands from a follower through the leader
// over the forwarding RPC: the result comes back with its index, a
// business rejection keeps its kind, and a command stamped by a clock far
// off the leader's is refused without being applied.
func TestForwardApply(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	ctx := testcluster.Ctx(t, 20*time.Second)

	c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
	tenant := func(id string) fsm.TenantUpsert {
		return fsm.TenantUpsert{Tenant: fsm.Tenant{ID: id, HomeRegion: "home"}, At: time.Now().UnixNano()}
	}
	has := func(id string) bool {
		var ok bool
		l.Server.FSM().Read(func(s *fsm.State) { _, ok = s.Tenants[id] })
		return ok
	}
	mustForward := func(t *testing.T, typ fsm.MessageType, cmd any, stamp time.Time) (*structs.ForwardResult, error) {
		t.Helper()
		return f.Server.ForwardApply(ctx, typ, cmd, stamp.UnixNano())
	}

	t.Run("applied", func(t *testing.T) {
		res, err := mustForward(t, fsm.TenantUpsertType, tenant("fwd"), time.Now())
		if err != nil || res.Err != nil {
			t.Fatalf("forwarded region upsert: %v %v", err, res)
		}
		if res.Index == 0 {
			t.Fatal("forwarded apply answered index 0")
		}
		if err := l.Server.FSM().WaitApplied(ctx, res.Index); err != nil {
			t.Fatal(err)
		}
		if !has("fwd") {
			t.Fatal("the leader does not have the forwarded tenant")
		}
	})

	t.Run("rejected", func(t *testing.T) {
		zero := uint64(0)
		cmd := tenant("fwd")
		cmd.CAS = &zero
		res, err := mustForward(t, fsm.TenantUpsertType, cmd, time.Now())
		if err != nil {
			t.Fatalf("forwarded create-only upsert of an existing tenant: %v", err)
		}
		if !errors.Is(res.Err, fsm.ErrConflict) {
			t.Fatalf("create-only upsert of an existing tenant answered %v, want a conflict", res.Err)
		}
	})

	t.Run("clock skew", func(t *testing.T) {
		before := l.Server.FSM().AppliedIndex()
		_, err := mustForward(t, fsm.TenantUpsertType, tenant("skewed"), time.Now().Add(-time.Minute))
		if !errors.Is(err, cluster.ErrBusy) {
			t.Fatalf("a command stamped a minute ago answered %v, want a busy refusal naming the skew", err)
		}
		c.Settle()
		if has("skewed") {
			t.Fatalf("a refused command was applied (applied index %d → %d)", before, l.Server.FSM().AppliedIndex())
		}
	})
}
