package cluster_test

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"

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
	// Forwarded for an operator: the leader checks the caller itself.
	ctx := structs.WithCaller(testcluster.Ctx(t, 20*time.Second), testcluster.Token)

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

// TestLeaderRefusesForwardedBytesItCannotDecode: a follower (a misbehaving
// server) that forwards bytes which are not a command the FSM applies gets
// invalid_command from the leader, and nothing reaches the log: every
// server keeps running and applies the next good write.
func TestLeaderRefusesForwardedBytesItCannotDecode(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	ctx := testcluster.Ctx(t, 30*time.Second)
	c.RegisterRegion(&fsm.Region{Name: "home", URL: "https://home.example:8443", Tier: fsm.TierStaging})
	tenant, _ := fsm.Encode(fsm.TenantUpsertType, fsm.TenantUpsert{Tenant: fsm.Tenant{ID: "x", HomeRegion: "home"}})
	before := l.Server.FSM().AppliedIndex()
	for name, data := range map[string][]byte{
		"unknown type":  {79, fsm.CodecJSON, '{', '}'},
		"bad body":      append([]byte{byte(fsm.TenantUpsertType), fsm.CodecJSON}, "{not json"...),
		"unknown codec": append([]byte{byte(fsm.TenantUpsertType), 9}, "{}"...),
		"a batch":       fsm.EncodeBatch([][]byte{tenant}),
		"too short":     {byte(fsm.TenantDeleteType)},
	} {
		_, err := f.Server.ForwardRawData(ctx, data)
		var fe *fsm.Error
		if !errors.As(err, &fe) || fe.Code != "invalid_command" {
			t.Errorf("%s: %v, want invalid_command", name, err)
		}
	}
	after, err := f.Client.PutTenant(ctx, &fsm.Tenant{ID: "after", HomeRegion: "home"}, nil)
	if err != nil {
		t.Fatalf("a good write after the refused ones: %v", err)
	}
	for _, n := range c.Running() {
		if err := n.Server.FSM().WaitApplied(ctx, after.ModifyIndex); err != nil {
			t.Fatalf("%s did not apply the good write: %v", n.ID, err)
		}
		var cmds int
		var idx uint64
		for i := before + 1; i <= n.Server.FSM().AppliedIndex(); i++ {
			var lg raft.Log
			if n.Server.LogStore().GetLog(i, &lg) != nil || lg.Type != raft.LogCommand {
				continue
			}
			if _, _, err := fsm.DecodeCommand(lg.Data); err != nil && fsm.MessageType(lg.Data[0]) != fsm.BatchType {
				t.Fatalf("%s logged an undecodable command at %d: %v", n.ID, i, err)
			}
			cmds++
			idx = i
		}
		if cmds == 0 || idx == 0 {
			t.Fatalf("%s applied nothing after the refused commands", n.ID)
		}
	}
}
