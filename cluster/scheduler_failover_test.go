package cluster

import (
	"encoding/json"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

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

// The automatic policy starts a failover only once the home region was
// down for the detection window, onto a mirror within the RPO budget
// whose region passed a restore drill; otherwise it says why it waits.
func TestAutoFailoverWaitsForTheWindowTheBudgetAndTheDrill(t *testing.T) {
	s := replState("a", "b")
	s.Switchovers, s.Drills, s.BackupPolicies = map[string]*fsm.Switchover{}, map[string]*fsm.Drill{}, map[string]*fsm.BackupPolicy{}
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "a", Mirrors: []string{"b"}, Epoch: 1, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders"}}, Failover: &fsm.FailoverPolicy{Mode: fsm.FailoverAuto, RPOBudgetMS: 1000}}
	s.Agents["ag-a"] = &fsm.Agent{Node: "ag-a", Region: "a", Status: fsm.AgentAlive, StatusSince: 1e9}
	s.Agents["ag-b"] = &fsm.Agent{Node: "ag-b", Region: "b", Status: fsm.AgentAlive, StatusSince: 1e9}
	res, _ := json.Marshal(fsm.SubscriberResult{State: fsm.ReplStreaming, LagSeconds: 0.3, AppliedLSN: "0/10", At: 1e9})
	s.Tasks["tenant-sub/acme/b"] = &fsm.Task{ID: "tenant-sub/acme/b", Type: fsm.TaskTypeTenantSubscriber, Region: "b", Agent: "ag-b", Status: fsm.TaskRunning, Result: res}
	const now, window = int64(100e9), int64(2000)
	wait := func(want string) {
		t.Helper()
		d := fsm.AutoFailoverDecisions(s, now, window)
		if len(d) != 1 || d[0].Start || d[0].Wait != want || len(AutoFailovers(s, now, window)) != 0 {
			t.Fatalf("decision %+v, want wait %s", d, want)
		}
	}
	wait(fsm.AutoWaitHomeUp)
	s.Agents["ag-a"] = &fsm.Agent{Node: "ag-a", Region: "a", Status: fsm.AgentFailed, StatusSince: now - 1e9}
	wait(fsm.AutoWaitDetecting)
	s.Agents["ag-a"].StatusSince = now - 3e9
	wait(fsm.AutoWaitDrill) // b has no passed drill
	s.Drills["b-d1"] = &fsm.Drill{ID: "b-d1", Region: "b", Status: fsm.DrillPassed, RecordedAt: now - 60e9, CreateIndex: 9}
	s.Tenants["acme"].Failover.RPOBudgetMS = 100
	wait(fsm.AutoWaitOverBudget)
	s.Tenants["acme"].Failover.RPOBudgetMS = 1000
	got := AutoFailovers(s, now, window)
	if len(got) != 1 || got[0].Tenant != "acme" || got[0].To != "b" || got[0].DownForMS != 3000 {
		t.Fatalf("auto failovers: %+v", got)
	}
	// A manual tenant never fails over by itself.
	s.Tenants["acme"].Failover = nil
	if got := AutoFailovers(s, now, window); len(got) != 0 {
		t.Fatalf("manual tenant: %+v", got)
	}
}

func TestFailoverMetrics(t *testing.T) {
	s := replState("a", "b")
	s.Switchovers, s.Drills, s.BackupPolicies = map[string]*fsm.Switchover{}, map[string]*fsm.Drill{}, map[string]*fsm.BackupPolicy{}
	s.FailoverHistory = []*fsm.FailoverRecord{
		{ID: 1, Tenant: "acme", Mode: fsm.FailoverManual, RTOMS: 900, RPOLagMS: 100},
		{ID: 2, Tenant: "acme", Mode: fsm.FailoverAuto, RTOMS: 300, RPOLagMS: 40},
	}
	s.Tenants["robo"] = &fsm.Tenant{ID: "robo", HomeRegion: "a", Mirrors: []string{"b"}, Epoch: 1, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders"}}, Failover: &fsm.FailoverPolicy{Mode: fsm.FailoverAuto, RPOBudgetMS: 10}}
	s.Agents["ag-a"] = &fsm.Agent{Node: "ag-a", Region: "a", Status: fsm.AgentFailed, StatusSince: 1e9}
	s.Agents["ag-b"] = &fsm.Agent{Node: "ag-b", Region: "b", Status: fsm.AgentAlive, StatusSince: 1e9}
	res, _ := json.Marshal(fsm.SubscriberResult{State: fsm.ReplDown, LagSeconds: 5, At: 1e9})
	s.Tasks["tenant-sub/robo/b"] = &fsm.Task{ID: "tenant-sub/robo/b", Type: fsm.TaskTypeTenantSubscriber, Region: "b", Agent: "ag-b", Status: fsm.TaskRunning, Result: res}
	got := map[string]float64{}
	for _, m := range failoverMetrics(s, 100e9, 2000) {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		var labels []string
		for _, l := range d.GetLabel() {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		got[m.Desc().String()+" "+strings.Join(labels, ",")] = d.GetGauge().GetValue() + d.GetCounter().GetValue()
	}
	want := 0
	for k, v := range got {
		switch {
		case strings.Contains(k, "failover_total") && (strings.HasSuffix(k, "mode=manual,tenant=acme") || strings.HasSuffix(k, "mode=auto,tenant=acme")) && v == 1,
			strings.Contains(k, "last_rto") && strings.HasSuffix(k, "tenant=acme") && v == 0.3,
			strings.Contains(k, "last_rpo") && strings.HasSuffix(k, "tenant=acme") && v == 0.04,
			strings.Contains(k, "failover_blocked") && strings.HasSuffix(k, "reason=over_rpo_budget,tenant=robo") && v == 1:
			want++
		}
	}
	if want != 5 || len(got) != 5 {
		t.Fatalf("metrics %v", got)
	}
}
