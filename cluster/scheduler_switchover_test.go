package cluster

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/atomcloud/atomfed/fsm"
)

// switchoverState is tenant acme at home in a, mirrored to b and c, with
// its replication tasks in place (streaming) and a switchover onto b at
// phase.
func switchoverState(t *testing.T, phase string) (*fsm.State, *fsm.Switchover) {
	t.Helper()
	s := replState("a", "b", "c")
	s.Switchovers = map[string]*fsm.Switchover{}
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "a", Mirrors: []string{"b", "c"}, Epoch: 1, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	materialise(s, desiredOf(s), fsm.TaskRunning)
	w := &fsm.Switchover{ID: 40, Tenant: "acme", Kind: fsm.SwitchoverKind, From: "a", To: "b", Others: []string{"c"},
		TenantCreated: 5, FromEpoch: 1, NewEpoch: 2, Phase: phase, TimeoutMS: 1000, StartedAt: 1e9, FencedLSN: "0/100",
		PII: []fsm.PIIColumnType{{Table: "public.orders", Column: "email", Type: "text", TypMod: -1}}}
	s.Switchovers["acme"] = w
	return s, w
}

// report makes a step's task report status with result.
func report(s *fsm.State, d map[string]fsm.TaskSpec, id, status string, result any) {
	ts, ok := d[id]
	if !ok {
		panic("no desired task " + id)
	}
	b, _ := json.Marshal(result)
	s.Tasks[id] = &fsm.Task{ID: id, Type: ts.Type, Region: ts.Region, Spec: ts.Spec, Agent: "agent-" + ts.Region, Status: status, Result: b}
}

func specOf[T any](t *testing.T, d map[string]fsm.TaskSpec, id string) T {
	t.Helper()
	var v T
	ts, ok := d[id]
	if !ok {
		t.Fatalf("no task %s among %v", id, keys(d))
	}
	if err := json.Unmarshal(ts.Spec, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func keys(d map[string]fsm.TaskSpec) []string {
	var out []string
	for k := range d {
		out = append(out, k)
	}
	return out
}

func advanceTo(t *testing.T, s *fsm.State, now int64) *fsm.SwitchoverAdvance {
	t.Helper()
	a := SwitchoverAdvances(s, now)
	switch len(a) {
	case 0:
		return nil
	case 1:
		return &a[0]
	}
	t.Fatalf("%d advances for one switchover", len(a))
	return nil
}

func TestSwitchoverFencesThenRollsBackAfterItsDeadline(t *testing.T) {
	s, w := switchoverState(t, fsm.PhaseFencing)
	d := desiredOf(s)
	fence := specOf[fsm.FenceSpec](t, d, "tenant-fence/acme/a")
	if fence.Ensure != fsm.EnsurePresent || fence.NewHome != "b" || fence.NewEpoch != 2 || fence.Switchover != 40 || fence.Epoch != 1 || fence.TenantCreated != 5 || len(fence.Tables) != 1 {
		t.Fatalf("fence spec: %+v", fence)
	}
	if _, ok := d["tenant-sub/acme/b"]; !ok {
		t.Fatal("the target's subscriber must keep running while fencing")
	}
	if a := advanceTo(t, s, w.StartedAt+1); a != nil {
		t.Fatalf("advanced before the fence reported: %+v", a)
	}
	// A fence of another attempt does not count.
	other := fence
	other.Switchover = 39
	b, _ := json.Marshal(other)
	s.Tasks["tenant-fence/acme/a"] = &fsm.Task{ID: "tenant-fence/acme/a", Type: fsm.TaskTypeTenantFence, Region: "a", Spec: b, Agent: "x",
		Status: fsm.TaskSucceeded, Result: json.RawMessage(`{"state":"fenced","fenced_lsn":"0/AA"}`)}
	if a := advanceTo(t, s, w.StartedAt+1); a != nil {
		t.Fatalf("advanced on another attempt's fence: %+v", a)
	}
	if a := advanceTo(t, s, w.Deadline()+1); a == nil || a.To != fsm.PhaseRollingBack || !strings.Contains(a.Detail, "timed out after 1000 ms fencing a") {
		t.Fatalf("past the deadline: %+v", a)
	}
	report(s, d, "tenant-fence/acme/a", fsm.TaskSucceeded, fsm.FenceResult{State: fsm.StepFenced, FencedLSN: "0/16B3748", PII: w.PII})
	a := advanceTo(t, s, w.StartedAt+1)
	if a == nil || a.To != fsm.PhaseCatchingUp || a.From != fsm.PhaseFencing || a.ID != 40 || a.FencedLSN != "0/16B3748" || !reflect.DeepEqual(a.PII, w.PII) {
		t.Fatalf("after the fence: %+v", a)
	}

	// Rolling back lifts the fence, then ends.
	w.Phase = fsm.PhaseRollingBack
	d = desiredOf(s)
	if f := specOf[fsm.FenceSpec](t, d, "tenant-fence/acme/a"); f.Ensure != fsm.EnsureAbsent {
		t.Fatalf("rollback fence spec: %+v", f)
	}
	if a := advanceTo(t, s, 0); a != nil {
		t.Fatalf("the fence of the forward phase counted for the rollback: %+v", a)
	}
	report(s, d, "tenant-fence/acme/a", fsm.TaskSucceeded, fsm.FenceResult{State: fsm.StepUnfenced})
	if a := advanceTo(t, s, 0); a == nil || a.To != fsm.PhaseAborted {
		t.Fatalf("after the unfence: %+v", a)
	}
}

func TestSwitchoverWaitsForEveryMirrorToCatchUp(t *testing.T) {
	s, w := switchoverState(t, fsm.PhaseCatchingUp)
	d := desiredOf(s)
	for _, m := range []string{"b", "c"} {
		cu := specOf[fsm.CatchUpSpec](t, d, "tenant-catchup/acme/"+m)
		if cu.Target != "0/100" || cu.Source != "a" || cu.SourceDB == nil || cu.SourceDB.Host != "db.a" || cu.Subscription != fsm.TenantSubscription("acme", m) || cu.Epoch != 1 {
			t.Fatalf("catch-up spec at %s: %+v", m, cu)
		}
		if _, ok := d["tenant-sub/acme/"+m]; !ok {
			t.Fatalf("the subscriber at %s must keep running while it catches up", m)
		}
	}
	if _, ok := d["tenant-fence/acme/a"]; ok {
		t.Fatal("the fence step is still planned after it reported")
	}
	report(s, d, "tenant-catchup/acme/b", fsm.TaskSucceeded, fsm.CatchUpResult{State: fsm.StepCaughtUp, Target: "0/100", Applied: "0/100"})
	report(s, d, "tenant-catchup/acme/c", fsm.TaskRunning, fsm.CatchUpResult{State: fsm.StepBehind, Target: "0/100", Applied: "0/80", BytesBehind: 128})
	if a := advanceTo(t, s, w.StartedAt+1); a != nil {
		t.Fatalf("promoted while c is behind: %+v", a)
	}
	a := advanceTo(t, s, w.Deadline()+1)
	if a == nil || a.To != fsm.PhaseRollingBack || !strings.Contains(a.Detail, "c (behind, applied 0/80, 128 bytes behind)") {
		t.Fatalf("past the deadline with c behind: %+v", a)
	}
	report(s, d, "tenant-catchup/acme/c", fsm.TaskSucceeded, fsm.CatchUpResult{State: fsm.StepCaughtUp, Target: "0/100", Applied: "0/100"})
	if a := advanceTo(t, s, w.Deadline()+1); a == nil || a.To != fsm.PhasePromoting {
		t.Fatalf("every mirror caught up: %+v", a)
	}
}

func TestSwitchoverPromotesWithoutTearingDownTheMirrors(t *testing.T) {
	s, _ := switchoverState(t, fsm.PhasePromoting)
	d := desiredOf(s)
	p := specOf[fsm.PromoteSpec](t, d, "tenant-promote/acme/b")
	if p.Source != "a" || p.Publication != fsm.TenantPublication("acme") || !reflect.DeepEqual(p.HandOff, []string{"a", "c"}) || len(p.PII) != 1 || p.Epoch != 1 {
		t.Fatalf("promote spec: %+v", p)
	}
	if det := specOf[fsm.DetachSpec](t, d, "tenant-detach/acme/c"); det.Subscription != fsm.TenantSubscription("acme", "c") {
		t.Fatalf("detach spec: %+v", det)
	}
	// The subscribers of b and c go outright: no ensure-absent teardown,
	// which would delete their rows.
	for _, id := range []string{"tenant-sub/acme/b", "tenant-sub/acme/c"} {
		if _, ok := d[id]; ok {
			t.Fatalf("%s is still planned while promoting (spec %s)", id, d[id].Spec)
		}
	}
	if _, ok := d["tenant-pub/acme/a"]; !ok {
		t.Fatal("the old home's publisher must stay until the commit")
	}
	if _, ok := d["tenant-fence/acme/a"]; ok {
		t.Fatal("the old home's fence step is still planned while promoting")
	}
	report(s, d, "tenant-promote/acme/b", fsm.TaskSucceeded, fsm.PromoteResult{State: fsm.StepPromoted, Slots: map[string]string{"a": "0/200", "c": "0/201"}})
	if a := advanceTo(t, s, 0); a != nil {
		t.Fatalf("committed before c detached: %+v", a)
	}
	report(s, d, "tenant-detach/acme/c", fsm.TaskSucceeded, fsm.DetachResult{State: fsm.StepDetached})
	a := advanceTo(t, s, 0)
	if a == nil || a.To != fsm.PhaseCommitted || a.Slots["c"] != "0/201" {
		t.Fatalf("promoted and detached: %+v", a)
	}
}

func TestAfterTheCommitTheOldHomeMirrorsTheNewOne(t *testing.T) {
	s, w := switchoverState(t, fsm.PhaseCommitted)
	// What the promoting phase left: b's and c's subscribers gone.
	delete(s.Tasks, "tenant-sub/acme/b")
	delete(s.Tasks, "tenant-sub/acme/c")
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "b", Mirrors: []string{"a", "c"}, Epoch: 2, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	// A stale subscriber task of b (as if the promoting plan had not
	// removed it) must not be kept for a teardown either.
	s.Tasks["tenant-sub/acme/b"] = &fsm.Task{ID: "tenant-sub/acme/b", Type: fsm.TaskTypeTenantSubscriber, Region: "b",
		Spec: json.RawMessage(`{"ensure":"present","kind":"tenant","tenant":"acme","source":"a","region":"b"}`)}
	d := desiredOf(s)
	if _, ok := d["tenant-sub/acme/b"]; ok {
		t.Fatal("the promoted mirror's old subscriber is kept (its teardown would purge the new home)")
	}
	pub := specOf[fsm.PublisherSpec](t, d, "tenant-pub/acme/b")
	if pub.Ensure != fsm.EnsurePresent || pub.Epoch != 2 || !reflect.DeepEqual(pub.Subscriptions, []string{fsm.TenantSubscription("acme", "a"), fsm.TenantSubscription("acme", "c")}) {
		t.Fatalf("new home's publisher: %+v", pub)
	}
	if old := specOf[fsm.PublisherSpec](t, d, "tenant-pub/acme/a"); old.Ensure != fsm.EnsureAbsent || old.Epoch != 2 {
		t.Fatalf("old home's publisher must be torn down at the new epoch: %+v", old)
	}
	former := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/a")
	if !former.FormerHome || former.HandOff || former.Source != "b" || former.Epoch != 2 {
		t.Fatalf("old home's subscriber: %+v", former)
	}
	if c := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/c"); !c.HandOff || c.FormerHome || c.Source != "b" {
		t.Fatalf("other mirror's subscriber: %+v", c)
	}
	materialise(s, d, fsm.TaskRunning)
	if a := advanceTo(t, s, 0); a != nil {
		t.Fatalf("done before the hand-off subscribers stream: %+v", a)
	}
	report(s, d, "tenant-sub/acme/a", fsm.TaskRunning, fsm.SubscriberResult{State: fsm.ReplStreaming})
	if a := advanceTo(t, s, 0); a != nil {
		t.Fatalf("done before c streams: %+v", a)
	}
	report(s, d, "tenant-sub/acme/c", fsm.TaskRunning, fsm.SubscriberResult{State: fsm.ReplStreaming})
	if a := advanceTo(t, s, 0); a == nil || a.To != fsm.PhaseDone {
		t.Fatalf("every hand-off subscriber streams: %+v", a)
	}

	// Done: the marks stay with the tasks, also through the next
	// switchover (fail-back to a) until its own commit.
	w.Phase = fsm.PhaseDone
	d2 := desiredOf(s)
	if !reflect.DeepEqual(d2["tenant-sub/acme/a"].Spec, d["tenant-sub/acme/a"].Spec) || !reflect.DeepEqual(d2["tenant-sub/acme/c"].Spec, d["tenant-sub/acme/c"].Spec) {
		t.Fatal("the subscribers' specs changed when the switchover ended")
	}
	s.Switchovers["acme"] = &fsm.Switchover{ID: 90, Tenant: "acme", Kind: fsm.SwitchoverKind, From: "b", To: "a", Others: []string{"c"},
		TenantCreated: 5, FromEpoch: 2, NewEpoch: 3, Phase: fsm.PhaseFencing, TimeoutMS: 1000}
	if f := specOf[fsm.SubscriberSpec](t, desiredOf(s), "tenant-sub/acme/a"); !f.FormerHome {
		t.Fatal("the former home lost its mark during the fail-back's fencing: its subscriber would clear its PII")
	}
	// A mirror removed and added again is an ordinary mirror.
	delete(s.Tasks, "tenant-sub/acme/c")
	if c := specOf[fsm.SubscriberSpec](t, desiredOf(s), "tenant-sub/acme/c"); c.HandOff || c.FormerHome {
		t.Fatalf("a re-added mirror: %+v", c)
	}
}

// TestASwitchoverOfAnEarlierIncarnationDropsNothing: acme switched over
// from a to b, was deleted, and is created again at home in a with b as
// its mirror: b subscribes as an ordinary mirror (the old switchover's
// record must not take its subscriber away), and a stale subscriber task
// of the old incarnation is still dropped without a teardown.
func TestASwitchoverOfAnEarlierIncarnationDropsNothing(t *testing.T) {
	s, w := switchoverState(t, fsm.PhaseDone)
	w.EndedAt, w.Outcome = 2e9, fsm.PhaseDone
	for id := range s.Tasks {
		delete(s.Tasks, id)
	}
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "a", Mirrors: []string{"b"}, Epoch: 1, CreateIndex: 77,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	d := desiredOf(s)
	sub := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/b")
	if sub.Source != "a" || sub.TenantCreated != 77 || sub.HandOff || sub.FormerHome {
		t.Fatalf("the new incarnation's mirror: %+v", sub)
	}
	old := &fsm.Task{ID: "tenant-sub/acme/b", Type: fsm.TaskTypeTenantSubscriber, Region: "b",
		Spec: json.RawMessage(`{"ensure":"present","kind":"tenant","tenant":"acme","source":"a","region":"b","tenant_created":5,"epoch":1}`)}
	if !droppedBySwitchover(s, old) {
		t.Fatal("the old incarnation's promoted subscriber would be torn down (purging the rows there)")
	}
}

// TestAFormerHomeStaysOneThroughTheNextSwitchover: after a -> b, a holds
// the PII of the rows written while it was the home; a later b -> c
// switchover makes a follow c as a former home again (never as a plain
// hand-off mirror, whose subscriber would clear that PII), and b as the
// new former home.
func TestAFormerHomeStaysOneThroughTheNextSwitchover(t *testing.T) {
	s := replState("a", "b", "c")
	s.Switchovers = map[string]*fsm.Switchover{}
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "c", Mirrors: []string{"a", "b"}, Epoch: 3, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	s.Switchovers["acme"] = &fsm.Switchover{ID: 70, Tenant: "acme", Kind: fsm.SwitchoverKind, From: "b", To: "c", Others: []string{"a"},
		FormerHomes: []string{"a"}, TenantCreated: 5, FromEpoch: 2, NewEpoch: 3, Phase: fsm.PhaseCommitted}
	d := desiredOf(s)
	for _, m := range []string{"a", "b"} {
		if sub := specOf[fsm.SubscriberSpec](t, d, "tenant-sub/acme/"+m); !sub.FormerHome || sub.Source != "c" {
			t.Fatalf("%s's subscriber after b -> c: %+v", m, sub)
		}
	}
	// An ordinary other mirror hands off.
	s.Switchovers["acme"].FormerHomes = nil
	if sub := specOf[fsm.SubscriberSpec](t, desiredOf(s), "tenant-sub/acme/a"); sub.FormerHome || !sub.HandOff {
		t.Fatalf("an ordinary other mirror: %+v", sub)
	}
}

// TestSwitchoverMetrics: a running switchover is a phase gauge, an ended
// one its duration by outcome.
func TestSwitchoverMetrics(t *testing.T) {
	s, w := switchoverState(t, fsm.PhaseCatchingUp)
	s.Switchovers["globex"] = &fsm.Switchover{Tenant: "globex", Phase: fsm.PhaseDone, Outcome: fsm.PhaseDone, StartedAt: 1e9, EndedAt: 2.5e9}
	var got []string
	for _, m := range switchoverMetrics(s) {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		var labels []string
		for _, l := range d.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		got = append(got, fmt.Sprintf("%s %v", strings.Join(labels, ","), d.GetGauge().GetValue()))
	}
	want := []string{"phase=" + w.Phase + ",tenant=acme 1", "outcome=done,tenant=globex 1.5"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
}
