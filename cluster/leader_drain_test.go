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

// drainState is region a draining with tenants acme (mirrors b, c),
// globex (mirror b) and solo (no mirror, failed at the start), their
// subscribers streaming with the given lags (seconds) per tenant and
// mirror.
func drainState(t *testing.T, lag map[string]float64) (*fsm.State, *fsm.Drain) {
	t.Helper()
	s := replState("a", "b", "c")
	s.Switchovers, s.RegionOps = map[string]*fsm.Switchover{}, map[string]*fsm.RegionOps{}
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "a", Mirrors: []string{"b", "c"}, Epoch: 1, CreateIndex: 5,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	s.Tenants["globex"] = &fsm.Tenant{ID: "globex", HomeRegion: "a", Mirrors: []string{"b"}, Epoch: 1, CreateIndex: 6,
		Tables: []fsm.TenantTable{{Name: "orders"}}}
	s.Tenants["solo"] = &fsm.Tenant{ID: "solo", HomeRegion: "a", Epoch: 1, CreateIndex: 7, Tables: []fsm.TenantTable{{Name: "orders"}}}
	materialise(s, desiredOf(s), fsm.TaskRunning)
	for key, l := range lag {
		tenant, m, _ := strings.Cut(key, "/")
		task := s.Tasks[fsm.TenantSubscriberTaskID(tenant, m)]
		b, _ := json.Marshal(fsm.SubscriberResult{State: fsm.ReplStreaming, LagSeconds: l})
		task.Agent, task.Result = "agent-"+m, b
	}
	d := &fsm.Drain{ID: 50, Region: "a", State: fsm.DrainRunning, Tenants: []fsm.DrainTenant{
		{Tenant: "acme", State: fsm.DrainTenantPending}, {Tenant: "globex", State: fsm.DrainTenantPending},
		{Tenant: "solo", State: fsm.DrainTenantFailed, Reason: fsm.NoMirrorReason}}}
	s.RegionOps["a"] = &fsm.RegionOps{Region: "a", Maintenance: true, Drain: d}
	return s, d
}

func oneAdvance(t *testing.T, s *fsm.State) *fsm.RegionDrainAdvance {
	t.Helper()
	a := DrainAdvances(s)
	switch len(a) {
	case 0:
		return nil
	case 1:
		return &a[0]
	}
	t.Fatalf("%d advances for one drain: %+v", len(a), a)
	return nil
}

// TestDrainPicksTheBestMirrorAndGoesOneByOne: the first pending tenant
// goes onto its mirror with the lowest reported lag; a mirror in
// maintenance or in a region that is down is skipped, and with none left
// the tenant fails with each mirror's reason; the drain waits while the
// current switchover runs (and while another switchover holds the next
// tenant); a committed switchover is "moved", an aborted one "failed" with
// its error; a deleted tenant or one homed elsewhere now is "gone".
func TestDrainPicksTheBestMirrorAndGoesOneByOne(t *testing.T) {
	s, d := drainState(t, map[string]float64{"acme/b": 2.5, "acme/c": 0.1, "globex/b": 0.2})
	if a := oneAdvance(t, s); a == nil || a.Region != "a" || a.ID != 50 || a.Tenant != "acme" || a.Action != fsm.DrainActStart || a.To != "c" {
		t.Fatalf("first step: %+v, want acme onto c (the lowest lag)", a)
	}
	s.RegionOps["c"] = &fsm.RegionOps{Region: "c", Maintenance: true}
	if a := oneAdvance(t, s); a == nil || a.To != "b" {
		t.Fatalf("with c in maintenance: %+v, want b", a)
	}
	s.Agents["n-b"] = &fsm.Agent{Node: "n-b", Region: "b", Status: fsm.AgentFailed}
	a := oneAdvance(t, s)
	if a == nil || a.Action != fsm.DrainActFailed || !strings.Contains(a.Reason, "b: region is down") || !strings.Contains(a.Reason, "c: in maintenance") {
		t.Fatalf("no mirror left: %+v", a)
	}
	delete(s.Agents, "n-b")
	delete(s.RegionOps, "c")

	// acme's switchover runs: the drain waits.
	d.Current, d.Tenants[0].State, d.Tenants[0].To, d.Tenants[0].Switchover = "acme", fsm.DrainTenantSwitching, "c", 60
	w := &fsm.Switchover{ID: 60, Tenant: "acme", From: "a", To: "c", Phase: fsm.PhaseCatchingUp}
	s.Switchovers["acme"] = w
	if a := oneAdvance(t, s); a != nil {
		t.Fatalf("while acme switches: %+v", a)
	}
	w.Phase, w.Steps = fsm.PhaseCommitted, []fsm.SwitchoverStep{{Phase: fsm.PhaseCommitted, Index: 70}}
	if a := oneAdvance(t, s); a == nil || a.Tenant != "acme" || a.Action != fsm.DrainActMoved || a.Reason != "home c since index 70" {
		t.Fatalf("after acme's commit: %+v", a)
	}
	w.Phase, w.Error = fsm.PhaseAborted, "timed out"
	if a := oneAdvance(t, s); a == nil || a.Action != fsm.DrainActFailed || !strings.Contains(a.Reason, "rolled back: timed out") {
		t.Fatalf("after acme's abort: %+v", a)
	}
	d.Current, d.Tenants[0].State = "", fsm.DrainTenantMoved

	// globex is held by a switchover of its own: wait.
	s.Switchovers["globex"] = &fsm.Switchover{ID: 80, Tenant: "globex", From: "a", To: "b", Phase: fsm.PhaseFencing}
	if a := oneAdvance(t, s); a != nil {
		t.Fatalf("while globex is held by another switchover: %+v", a)
	}
	delete(s.Switchovers, "globex")
	s.Tenants["globex"] = &fsm.Tenant{ID: "globex", HomeRegion: "b", Mirrors: []string{"a"}}
	if a := oneAdvance(t, s); a == nil || a.Action != fsm.DrainActGone || !strings.Contains(a.Reason, "no longer homed in a (home b)") {
		t.Fatalf("globex homed elsewhere: %+v", a)
	}
	delete(s.Tenants, "globex")
	if a := oneAdvance(t, s); a == nil || a.Action != fsm.DrainActGone || a.Reason != "deleted" {
		t.Fatalf("globex deleted: %+v", a)
	}
	d.Tenants[1].State = fsm.DrainTenantGone
	if a := oneAdvance(t, s); a != nil {
		t.Fatalf("nothing pending: %+v", a)
	}
	d.State = fsm.DrainPartial
	if len(s.RunningDrains()) != 0 {
		t.Fatal("an ended drain still runs")
	}
}

// TestDrainWaitsForAMirrorReport: a mirror whose subscriber has not
// reported, lags over the budget, or does not stream, is not a target.
func TestDrainWaitsForAMirrorReport(t *testing.T) {
	s, _ := drainState(t, map[string]float64{"globex/b": 0})
	a := oneAdvance(t, s)
	if a == nil || a.Tenant != "acme" || a.Action != fsm.DrainActFailed || !strings.Contains(a.Reason, "no report of its subscription yet") {
		t.Fatalf("acme without reports: %+v", a)
	}
	b, _ := json.Marshal(fsm.SubscriberResult{State: fsm.ReplStreaming, LagSeconds: 12})
	task := s.Tasks[fsm.TenantSubscriberTaskID("acme", "b")]
	task.Agent, task.Result = "agent-b", b
	if a := oneAdvance(t, s); a == nil || !strings.Contains(a.Reason, "b: last reported lag 12000 ms, over the drain's budget of 10000 ms") {
		t.Fatalf("acme with b lagging: %+v", a)
	}
	b, _ = json.Marshal(fsm.SubscriberResult{State: fsm.ReplSyncing})
	task = s.Tasks[fsm.TenantSubscriberTaskID("acme", "c")]
	task.Agent, task.Result = "agent-c", b
	if a := oneAdvance(t, s); a == nil || !strings.Contains(a.Reason, "c: subscription is "+fsm.ReplSyncing) {
		t.Fatalf("acme with c copying: %+v", a)
	}
}

// TestPromotionAtATemporaryHomeIsGuarded: the promote spec carries the PII
// guard when the target is not the tenant's residency region and its
// policy is null_only; none with keep_local or at the residency region.
func TestPromotionAtATemporaryHomeIsGuarded(t *testing.T) {
	s, _ := switchoverState(t, fsm.PhasePromoting)
	s.Tenants["acme"].ResidencyRegion = "a"
	p := specOf[fsm.PromoteSpec](t, desiredOf(s), "tenant-promote/acme/b")
	if p.PIIGuard == nil || p.PIIGuard.ResidencyRegion != "a" || p.PIIGuard.Policy != fsm.PIIWhileAwayNullOnly {
		t.Fatalf("guard at b: %+v", p.PIIGuard)
	}
	s.Tenants["acme"].PIIWhileAway = fsm.PIIWhileAwayKeepLocal
	if p := specOf[fsm.PromoteSpec](t, desiredOf(s), "tenant-promote/acme/b"); p.PIIGuard != nil {
		t.Fatalf("guard with keep_local: %+v", p.PIIGuard)
	}
	s.Tenants["acme"].PIIWhileAway, s.Tenants["acme"].ResidencyRegion = "", "b"
	if p := specOf[fsm.PromoteSpec](t, desiredOf(s), "tenant-promote/acme/b"); p.PIIGuard != nil {
		t.Fatalf("guard at the residency region: %+v", p.PIIGuard)
	}
}

// TestRegionOpsMetrics: a maintenance gauge per region (the operator's
// flag or the region's own status), and the remaining tenants of a running
// drain.
func TestRegionOpsMetrics(t *testing.T) {
	s, _ := drainState(t, nil)
	s.Regions["b"].Status = fsm.RegionMaintenance // registered so by the region itself
	var got []string
	for _, m := range regionOpsMetrics(s) {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		name := "atomfed_region_maintenance"
		if strings.Contains(m.Desc().String(), "atomfed_region_drain_remaining") {
			name = "atomfed_region_drain_remaining"
		}
		got = append(got, fmt.Sprintf("%s{%s} %v", name, d.GetLabel()[0].GetValue(), d.GetGauge().GetValue()))
	}
	want := []string{"atomfed_region_maintenance{a} 1", "atomfed_region_drain_remaining{a} 2", "atomfed_region_maintenance{b} 1", "atomfed_region_maintenance{c} 0"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metrics %v, want %v", got, want)
	}
}
