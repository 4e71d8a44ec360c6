package cluster

import (
	"encoding/json"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// A failover promotes without reaching the old home, commits without
// hand-off slots, then marks the old home (and a former home among the
// others) former_home + resync and lets the plain mirrors copy afresh.
func TestFailoverPromotesWithoutTheOldHomeAndMarksItForResync(t *testing.T) {
	s, w := switchoverState(t, fsm.PhasePromoting)
	w.Kind, w.Mode, w.FencedLSN = fsm.FailoverKind, fsm.FailoverManual, ""
	d := desiredOf(s)
	p := specOf[fsm.PromoteSpec](t, d, "tenant-promote/acme/b")
	if p.SourceDB != nil || len(p.HandOff) != 0 || len(p.PII) != 1 || p.Epoch != 1 {
		t.Fatalf("promote spec of a failover: %+v", p)
	}
	if _, ok := d["tenant-detach/acme/c"]; !ok {
		t.Fatal("the other mirror is not detached")
	}
	if _, ok := d["tenant-fence/acme/a"]; ok {
		t.Fatal("a failover fences the lost home")
	}
	report(s, d, "tenant-promote/acme/b", fsm.TaskSucceeded, fsm.PromoteResult{State: fsm.StepPromoted, AppliedLSN: "0/AB"})
	if a := advanceTo(t, s, 0); a != nil {
		t.Fatalf("committed before the other mirror detached: %+v", a)
	}
	report(s, d, "tenant-detach/acme/c", fsm.TaskSucceeded, fsm.DetachResult{State: fsm.StepDetached})
	a := advanceTo(t, s, 0)
	if a == nil || a.To != fsm.PhaseCommitted || a.AppliedLSN != "0/AB" || len(a.Slots) != 0 {
		t.Fatalf("promoted and detached: %+v", a)
	}

	// Committed: b is the home at epoch 2.
	w.Phase = fsm.PhaseCommitted
	delete(s.Tasks, "tenant-sub/acme/b")
	delete(s.Tasks, "tenant-sub/acme/c")
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "b", Mirrors: []string{"a", "c"}, Epoch: 2, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	d = desiredOf(s)
	old := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/a")
	if !old.FormerHome || !old.Resync || old.HandOff || old.Source != "b" || old.Epoch != 2 {
		t.Fatalf("old home's subscriber: %+v", old)
	}
	if c := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/c"); c.HandOff || c.FormerHome || c.Resync || c.Source != "b" {
		t.Fatalf("plain mirror's subscriber: %+v", c)
	}
	if a := advanceTo(t, s, 0); a != nil {
		t.Fatalf("done before the new placement is planned: %+v", a)
	}
	materialise(s, d, fsm.TaskRunning)
	// Done at once: nothing waits for the lost home.
	if a := advanceTo(t, s, 0); a == nil || a.To != fsm.PhaseDone {
		t.Fatalf("planned: %+v", a)
	}
	// The marks stay after done (kept from the task).
	w.Phase = fsm.PhaseDone
	d = desiredOf(s)
	if old := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/a"); !old.FormerHome || !old.Resync {
		t.Fatalf("marks lost after done: %+v", old)
	}
}

func TestAFormerHomeAmongTheOthersResyncsAfterAFailover(t *testing.T) {
	s, w := switchoverState(t, fsm.PhaseCommitted)
	w.Kind, w.Mode, w.FormerHomes = fsm.FailoverKind, fsm.FailoverAuto, []string{"c"}
	delete(s.Tasks, "tenant-sub/acme/b")
	s.Tasks["tenant-sub/acme/c"].Spec = json.RawMessage(`{"ensure":"present","kind":"tenant","tenant":"acme","source":"a","region":"c","former_home":true}`)
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "b", Mirrors: []string{"a", "c"}, Epoch: 2, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	d := desiredOf(s)
	if c := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/c"); !c.FormerHome || !c.Resync || c.Source != "b" {
		t.Fatalf("former home among the others: %+v", c)
	}
}
