package cluster

import (
	"encoding/json"
	"reflect"
	"sort"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

func replState(regions ...string) *fsm.State {
	s := &fsm.State{Regions: map[string]*fsm.Region{}, Tenants: map[string]*fsm.Tenant{}, Agents: map[string]*fsm.Agent{},
		Tasks: map[string]*fsm.Task{}, Databases: map[string]*fsm.RegionDatabase{}, SyncStates: map[string]*fsm.TenantSyncState{},
		GlobalTables: map[string]*fsm.GlobalTable{}, Indexes: map[string]uint64{}}
	for _, r := range regions {
		s.Regions[r] = &fsm.Region{Name: r}
		s.Databases[r] = &fsm.RegionDatabase{Region: r, Endpoint: fsm.DatabaseEndpoint{Host: "db." + r, Port: 5432, Database: "atomfed"}}
	}
	return s
}

func replTasks(d map[string]fsm.TaskSpec) []string {
	var ids []string
	for id, t := range d {
		if fsm.IsReplicationTask(t.Type) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func ensureOf(t *testing.T, spec json.RawMessage) string {
	t.Helper()
	var e struct {
		Ensure string `json:"ensure"`
	}
	if err := json.Unmarshal(spec, &e); err != nil {
		t.Fatal(err)
	}
	return e.Ensure
}

// materialise turns desired tasks into existing ones, as a plan would.
func materialise(s *fsm.State, d map[string]fsm.TaskSpec, status string) {
	for id, ts := range d {
		s.Tasks[id] = &fsm.Task{ID: id, Type: ts.Type, Region: ts.Region, Spec: ts.Spec, Status: status}
	}
}

func TestReplicationTasksFollowTenantSpec(t *testing.T) {
	s := replState("a", "b", "c")
	s.Tenants["acme"] = &fsm.Tenant{ID: "acme", HomeRegion: "a", Mirrors: []string{"b", "c"}, SyncMode: fsm.SyncModeSync, SyncDegradeAfterMS: 3000,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	s.Tenants["bare"] = &fsm.Tenant{ID: "bare", HomeRegion: "a", Mirrors: []string{"b"}} // no tables: nothing to replicate
	s.SyncStates["acme"] = &fsm.TenantSyncState{Tenant: "acme", State: fsm.SyncStateDegraded}
	d := desiredOf(s)
	want := []string{"sync/a", "tenant-pub/acme/a", "tenant-sub/acme/b", "tenant-sub/acme/c"}
	if got := replTasks(d); !reflect.DeepEqual(got, want) {
		t.Fatalf("replication tasks %v, want %v", got, want)
	}
	var pub fsm.PublisherSpec
	_ = json.Unmarshal(d["tenant-pub/acme/a"].Spec, &pub)
	if pub.Ensure != fsm.EnsurePresent || pub.Publication != fsm.TenantPublication("acme") || d["tenant-pub/acme/a"].Region != "a" ||
		!reflect.DeepEqual(pub.Subscriptions, []string{fsm.TenantSubscription("acme", "b"), fsm.TenantSubscription("acme", "c")}) ||
		pub.Tables[0].PIIColumns[0] != "email" || pub.SlotPrefix != fsm.TenantSlotPrefix("acme") {
		t.Fatalf("publisher spec: %+v", pub)
	}
	var sub fsm.SubscriberSpec
	_ = json.Unmarshal(d["tenant-sub/acme/c"].Spec, &sub)
	if sub.Source != "a" || sub.SourceDB == nil || sub.SourceDB.Host != "db.a" || sub.Region != "c" || !sub.Sync ||
		sub.Subscription != fsm.TenantSubscription("acme", "c") || d["tenant-sub/acme/c"].Region != "c" {
		t.Fatalf("subscriber spec: %+v", sub)
	}
	var sy fsm.SyncStandbySpec
	_ = json.Unmarshal(d["sync/a"].Spec, &sy)
	if len(sy.Tenants) != 1 || sy.Tenants[0].DegradeAfterMS != 3000 || sy.Tenants[0].Fallback != fsm.SyncFallbackDegrade ||
		sy.Tenants[0].Recorded != fsm.SyncStateDegraded || len(sy.Tenants[0].Standbys) != 2 {
		t.Fatalf("sync spec: %+v", sy)
	}
}

func TestRemovedReplicationTasksTearDownBeforeTheyGo(t *testing.T) {
	s := replState("a", "b", "c", "d")
	acme := &fsm.Tenant{ID: "acme", HomeRegion: "a", Mirrors: []string{"b", "c"}, Tables: []fsm.TenantTable{{Name: "orders"}}, Epoch: 1, CreateIndex: 5}
	s.Tenants["acme"] = acme
	materialise(s, desiredOf(s), fsm.TaskRunning)
	if e, ok := fsm.TaskEpochOf(s.Tasks["tenant-sub/acme/c"]); !ok || e != (fsm.TaskEpoch{Tenant: "acme", Created: 5, Epoch: 1}) {
		t.Fatalf("a tenant task carries placement %+v, want the tenant's epoch 1 of incarnation 5", e)
	}

	// Mirror c removed, home moved to d (the epoch moves with it).
	moved := *acme
	moved.HomeRegion, moved.Mirrors, moved.Epoch = "d", []string{"b"}, 2
	s.Tenants["acme"] = &moved
	d := desiredOf(s)
	for id, ts := range d {
		if e, ok := fsm.TaskEpochOf(&fsm.Task{Spec: ts.Spec}); ok && e != (fsm.TaskEpoch{Tenant: "acme", Created: 5, Epoch: 2}) {
			t.Fatalf("%s carries placement %+v, want epoch 2: a teardown is what the current epoch wants", id, e)
		}
	}
	for id, ensure := range map[string]string{
		"tenant-pub/acme/a": fsm.EnsureAbsent, "tenant-sub/acme/c": fsm.EnsureAbsent,
		"tenant-pub/acme/d": fsm.EnsurePresent, "tenant-sub/acme/b": fsm.EnsurePresent,
	} {
		ts, ok := d[id]
		if !ok {
			t.Fatalf("%s is not desired", id)
		}
		if got := ensureOf(t, ts.Spec); got != ensure {
			t.Fatalf("%s: ensure %q, want %q", id, got, ensure)
		}
	}
	if d["tenant-pub/acme/a"].Region != "a" {
		t.Fatal("the old home's publisher must tear down in the old home")
	}
	var sub fsm.SubscriberSpec
	_ = json.Unmarshal(d["tenant-sub/acme/c"].Spec, &sub)
	if sub.Tenant != "acme" || sub.Subscription != fsm.TenantSubscription("acme", "c") || len(sub.Tables) != 1 {
		t.Fatalf("the absent subscriber lost what it needs to tear down: %+v", sub)
	}

	// Absent tasks stay until they succeed, then go.
	materialise(s, d, fsm.TaskRunning)
	delete(s.Tenants, "acme")
	materialise(s, desiredOf(s), fsm.TaskRunning)
	if ids := replTasks(desiredOf(s)); len(ids) != 4 {
		t.Fatalf("running teardowns must stay desired: %v", ids)
	}
	for _, tk := range s.Tasks {
		tk.Status = fsm.TaskSucceeded
	}
	s.Tasks["tenant-sub/acme/b"].Status = fsm.TaskFailing
	if ids := replTasks(desiredOf(s)); !reflect.DeepEqual(ids, []string{"tenant-sub/acme/b"}) {
		t.Fatalf("after the other teardowns succeeded: %v", ids)
	}
	// A task whose region is gone has nothing left to clean.
	delete(s.Regions, "b")
	if ids := replTasks(desiredOf(s)); len(ids) != 0 {
		t.Fatalf("with its region gone: %v", ids)
	}
}

func TestGlobalTablesGoFromWriterToEveryRegion(t *testing.T) {
	s := replState("a", "b", "c")
	s.GlobalTables["fx"] = &fsm.GlobalTable{Name: "fx", WriterRegion: "a"}
	s.GlobalTables["ref.countries"] = &fsm.GlobalTable{Name: "ref.countries", WriterRegion: "a"}
	delete(s.Databases, "a")
	d := desiredOf(s)
	want := []string{"global-pub/a", "global-sub/a/b", "global-sub/a/c"}
	if got := replTasks(d); !reflect.DeepEqual(got, want) {
		t.Fatalf("tasks %v, want %v", got, want)
	}
	var pub fsm.PublisherSpec
	_ = json.Unmarshal(d["global-pub/a"].Spec, &pub)
	if pub.Kind != fsm.KindGlobal || len(pub.Tables) != 2 || len(pub.Subscriptions) != 2 {
		t.Fatalf("global publisher: %+v", pub)
	}
	var sub fsm.SubscriberSpec
	_ = json.Unmarshal(d["global-sub/a/b"].Spec, &sub)
	if sub.SourceDB != nil || sub.Kind != fsm.KindGlobal {
		t.Fatalf("a subscriber's source endpoint must stay unknown until the writer's agent reports it: %+v", sub)
	}
}

func TestSyncStateChangesRecordWhatHomesReport(t *testing.T) {
	s := replState("a", "b")
	s.Tenants["d"] = &fsm.Tenant{ID: "d", HomeRegion: "a", Mirrors: []string{"b"}, SyncMode: fsm.SyncModeSync, Tables: []fsm.TenantTable{{Name: "o"}}}
	s.Tenants["w"] = &fsm.Tenant{ID: "w", HomeRegion: "a", Mirrors: []string{"b"}, SyncMode: fsm.SyncModeSync, SyncFallback: fsm.SyncFallbackWait, Tables: []fsm.TenantTable{{Name: "o"}}}
	res, _ := json.Marshal(fsm.SyncStandbyResult{Tenants: []fsm.SyncTenantStatus{
		{Tenant: "d", State: fsm.SyncStateDegraded, Since: 7, Reason: "down"},
		{Tenant: "w", State: fsm.SyncStateDegraded}, // never from a real controller; must not be recorded
	}})
	s.Tasks["sync/a"] = &fsm.Task{ID: "sync/a", Type: fsm.TaskTypeSyncStandby, Region: "a", Status: fsm.TaskRunning, Result: res}
	got := SyncStateChanges(s)
	if len(got) != 1 || got[0].Tenant != "d" || got[0].State != fsm.SyncStateDegraded || got[0].Since != 7 || got[0].Reason != "down" {
		t.Fatalf("changes: %+v", got)
	}
	s.SyncStates["d"] = &fsm.TenantSyncState{Tenant: "d", State: fsm.SyncStateDegraded}
	if got := SyncStateChanges(s); len(got) != 0 {
		t.Fatalf("an already recorded state was recorded again: %+v", got)
	}
}

// desiredOf is desiredTasks on a state the test changed by hand.
func desiredOf(s *fsm.State) map[string]fsm.TaskSpec {
	s.Reindex()
	return desiredTasks(s)
}
