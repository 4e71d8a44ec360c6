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

// TestDivergenceRecordsFollowTheOldHomesReport: the leader records an old
// home's quarantined row counts once its resync subscriber reports them
// reconciled, names the failover, and proposes nothing while the FSM
// holds those counts (resolved or not), for a subscriber that is no
// resync, or for a tenant created again. The metric shows open records'
// totals, 0 once resolved, nothing for a deleted tenant.
func TestDivergenceRecordsFollowTheOldHomesReport(t *testing.T) {
	s := replState("a", "b")
	s.Switchovers = map[string]*fsm.Switchover{"acme": {ID: 40, Tenant: "acme", Kind: fsm.FailoverKind, From: "a", To: "b", TenantCreated: 5, FromEpoch: 1, NewEpoch: 2}}
	s.Divergences = map[string]*fsm.Divergence{}
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "b", Mirrors: []string{"a"}, Epoch: 2, CreateIndex: 5, Tables: []fsm.TenantTable{{Name: "orders"}}}
	spec := fsm.SubscriberSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant, Tenant: "acme", Source: "b", Region: "a",
		Subscription: fsm.TenantSubscription("acme", "a"), Publication: fsm.TenantPublication("acme"), TenantCreated: 5, Epoch: 2, FormerHome: true, Resync: true}
	id := fsm.TenantSubscriberTaskID("acme", "a")
	put := func(spec fsm.SubscriberSpec, r *fsm.ResyncStatus) {
		sb, _ := json.Marshal(spec)
		rb, _ := json.Marshal(fsm.SubscriberResult{State: fsm.ReplStreaming, Resync: r})
		s.Tasks[id] = &fsm.Task{ID: id, Type: fsm.TaskTypeTenantSubscriber, Region: "a", Spec: sb, Status: fsm.TaskRunning, Result: rb}
	}
	expect := func(what string, n int) []fsm.DivergenceRecord {
		t.Helper()
		got := DivergenceRecords(s)
		if len(got) != n {
			t.Fatalf("%s: %d records %+v, want %d", what, len(got), got, n)
		}
		return got
	}
	put(spec, &fsm.ResyncStatus{Phase: fsm.ResyncQuarantine, Epoch: 2})
	expect("while quarantining", 0)
	keys := []fsm.DivergentKey{{Table: "public.orders", Key: `{"id": 1}`, Reason: fsm.ReasonMissingAtNewHome}}
	counts := &fsm.ResyncStatus{Phase: fsm.ResyncStreaming, Epoch: 2, Divergent: map[string]int64{"public.orders": 4}, DivergentTotal: 4, Missing: 3, Reconciled: 9, ReconciledAt: 77, Keys: keys}
	put(spec, counts)
	rec := expect("reconciled", 1)[0]
	want := fsm.DivergenceRecord{Tenant: "acme", TenantCreated: 5, Region: "a", Epoch: 2, Failover: 40, Tables: map[string]int64{"public.orders": 4}, Missing: 3, RowsReconciled: 9, Keys: keys, FoundAt: 77}
	if !reflect.DeepEqual(rec, want) {
		t.Fatalf("record %+v, want %+v", rec, want)
	}
	s.Divergences["acme/a"] = &fsm.Divergence{Tenant: "acme", TenantCreated: 5, Region: "a", Epoch: 2, Tables: map[string]int64{"public.orders": 4}, Total: 4, Missing: 3, RowsReconciled: 9, Keys: keys}
	expect("recorded", 0)
	s.Divergences["acme/a"].ResolvedAt, s.Divergences["acme/a"].ResolvedBy = 90, "op"
	expect("resolved", 0)
	counts2 := *counts
	counts2.Divergent, counts2.DivergentTotal = map[string]int64{"public.orders": 5}, 5
	put(spec, &counts2)
	expect("new counts", 1)
	plain := spec
	plain.Resync = false
	put(plain, &counts2)
	expect("no resync", 0)
	old := spec
	old.TenantCreated = 4
	put(old, &counts2)
	expect("an earlier tenant's", 0)
	put(spec, &fsm.ResyncStatus{Phase: fsm.ResyncStreaming, Epoch: 2, ReconciledAt: 77})
	expect("nothing divergent", 0)

	s.Divergences["gone/a"] = &fsm.Divergence{Tenant: "gone", TenantCreated: 1, Region: "a", Tables: map[string]int64{"t": 2}, Total: 2}
	s.Divergences["acme/b"] = &fsm.Divergence{Tenant: "acme", TenantCreated: 5, Region: "b", Tables: map[string]int64{"t": 6}, Total: 6}
	var got []string
	for _, m := range divergenceMetrics(s) {
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
	if w := []string{"region=a,tenant=acme 0", "region=b,tenant=acme 6"}; !reflect.DeepEqual(got, w) {
		t.Fatalf("metrics %v, want %v", got, w)
	}
}
