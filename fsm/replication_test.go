package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// replicationRoundTrips applies one command of every replication type and
// checks its effect. It leaves the state as it found it, apart from the
// region database, so the round-trip test can go on to delete us-east.
func replicationRoundTrips(t *testing.T, check func(MessageType, any, func(*State, *ApplyResult))) {
	ep := DatabaseEndpoint{Host: "10.0.0.7", Port: 5432, Database: "atomfed"}
	check(AgentUpsertType, AgentUpsert{Agent: testAgent("a1", "us-east", AgentAlive), At: 59}, func(*State, *ApplyResult) {})
	check(RegionDatabaseType, RegionDatabaseReport{Region: "us-east", Endpoint: ep, Node: "a1", At: 60}, func(s *State, res *ApplyResult) {
		d := s.Databases["us-east"]
		if d == nil || d.Endpoint != ep || d.ReportedBy != "a1" || d.UpdatedAt != 60 || d.ModifyIndex != res.Index || s.TableIndex(TableDatabases) != res.Index {
			t.Fatalf("region database after report: %+v", d)
		}
	})
	check(RegionUpsertType, RegionUpsert{Region: testRegion("eu-west"), At: 61}, func(*State, *ApplyResult) {})
	check(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "synco", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
		SyncMode: SyncModeSync, SyncDegradeAfterMS: 2000}, At: 62}, func(s *State, res *ApplyResult) {
		tn := s.Tenants["synco"]
		if !tn.IsSync() || tn.Fallback() != SyncFallbackDegrade || tn.DegradeAfterMS() != 2000 {
			t.Fatalf("sync tenant: %+v", tn)
		}
	})
	check(TenantSyncStateType, TenantSyncStateSet{Tenant: "synco", State: SyncStateDegraded, Reason: "every mirror down for 2s", Since: 5, At: 63}, func(s *State, res *ApplyResult) {
		st := s.SyncStates["synco"]
		if st == nil || st.State != SyncStateDegraded || st.Since != 5 || st.At != 63 || st.ModifyIndex != res.Index {
			t.Fatalf("sync state: %+v", st)
		}
		if a := s.Audit[len(s.Audit)-1]; a.Type != "tenant_sync_state" || a.Index != res.Index || a.At != 63 {
			t.Fatalf("the degrade is not the last audit entry: %+v", a)
		}
	})
	check(TenantDeleteType, TenantDelete{ID: "synco", At: 64}, func(s *State, res *ApplyResult) {
		if s.SyncStates["synco"] != nil {
			t.Fatal("a deleted tenant kept its sync state")
		}
	})
	check(GlobalTableUpsertType, GlobalTableUpsert{Table: GlobalTable{Name: "public.currencies", WriterRegion: "us-east"}, At: 65}, func(s *State, res *ApplyResult) {
		g := s.GlobalTables["public.currencies"]
		if g == nil || g.WriterRegion != "us-east" || g.CreateIndex != res.Index || g.CreatedAt != 65 || s.TableIndex(TableGlobalTables) != res.Index {
			t.Fatalf("global table after upsert: %+v", g)
		}
	})
	check(GlobalTableDeleteType, GlobalTableDelete{Name: "public.currencies", At: 66}, func(s *State, res *ApplyResult) {
		if s.GlobalTables["public.currencies"] != nil || res.Value.(*Deleted).Kind != "global_table" {
			t.Fatal("global table still there after delete")
		}
	})
	check(RegionDeleteType, RegionDelete{Name: "eu-west", At: 67}, func(*State, *ApplyResult) {})
	check(AgentDeleteType, AgentDelete{Node: "a1", At: 68}, func(*State, *ApplyResult) {})
}

func TestReplicationRejections(t *testing.T) {
	ep := DatabaseEndpoint{Host: "db.us-east", Port: 5432, Database: "atomfed"}
	cases := []struct {
		name string
		typ  MessageType
		body any
		kind error
		code string
	}{
		{"database host injection", RegionDatabaseType, RegionDatabaseReport{Region: "us-east", Node: "a1", Endpoint: DatabaseEndpoint{Host: "h password=x", Port: 5432, Database: "d"}}, ErrInvalid, "invalid_endpoint"},
		{"database bad port", RegionDatabaseType, RegionDatabaseReport{Region: "us-east", Node: "a1", Endpoint: DatabaseEndpoint{Host: "h", Port: 0, Database: "d"}}, ErrInvalid, "invalid_endpoint"},
		{"database bad name", RegionDatabaseType, RegionDatabaseReport{Region: "us-east", Node: "a1", Endpoint: DatabaseEndpoint{Host: "h", Port: 1, Database: "d'b"}}, ErrInvalid, "invalid_endpoint"},
		{"database bad region", RegionDatabaseType, RegionDatabaseReport{Region: "US", Node: "a1", Endpoint: ep}, ErrInvalid, "invalid_region_database"},
		{"sync state unknown tenant", TenantSyncStateType, TenantSyncStateSet{Tenant: "nobody", State: SyncStateDegraded}, ErrNotFound, "tenant_not_found"},
		{"sync state async tenant", TenantSyncStateType, TenantSyncStateSet{Tenant: "acme", State: SyncStateDegraded}, ErrFailedPrecondition, "not_sync"},
		{"sync state bad state", TenantSyncStateType, TenantSyncStateSet{Tenant: "waiter", State: "maybe"}, ErrInvalid, "invalid_sync_state"},
		{"degrade a wait tenant", TenantSyncStateType, TenantSyncStateSet{Tenant: "waiter", State: SyncStateDegraded}, ErrFailedPrecondition, "degrade_not_allowed"},
		{"global table bad name", GlobalTableUpsertType, GlobalTableUpsert{Table: GlobalTable{Name: "X;drop", WriterRegion: "us-east"}}, ErrInvalid, "invalid_table_name"},
		{"global table unknown writer", GlobalTableUpsertType, GlobalTableUpsert{Table: GlobalTable{Name: "fx", WriterRegion: "mars"}}, ErrInvalid, "unknown_region"},
		{"global table stale cas", GlobalTableUpsertType, GlobalTableUpsert{Table: GlobalTable{Name: "fx", WriterRegion: "us-east"}, CAS: cas(1)}, ErrConflict, "cas_conflict"},
		{"global table delete missing", GlobalTableDeleteType, GlobalTableDelete{Name: "nope"}, ErrNotFound, "global_table_not_found"},
		{"region delete writer in use", RegionDeleteType, RegionDelete{Name: "ap-south"}, ErrFailedPrecondition, "region_in_use"},
		{"tenant bad sync mode", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, SyncMode: "semi"}}, ErrInvalid, "invalid_sync_mode"},
		{"tenant sync without mirrors", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", SyncMode: SyncModeSync}}, ErrInvalid, "invalid_sync_mode"},
		{"tenant fallback in async", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", SyncFallback: SyncFallbackWait}}, ErrInvalid, "invalid_sync_fallback"},
		{"tenant bad fallback", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, SyncMode: SyncModeSync, SyncFallback: "panic"}}, ErrInvalid, "invalid_sync_fallback"},
		{"tenant degrade bound too short", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, SyncMode: SyncModeSync, SyncDegradeAfterMS: 10}}, ErrInvalid, "invalid_sync_degrade_after"},
		{"tenant degrade bound too long", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, SyncMode: SyncModeSync, SyncDegradeAfterMS: MaxSyncDegradeAfterMS + 1}}, ErrInvalid, "invalid_sync_degrade_after"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seed(h)
			h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("a1", "us-east", AgentAlive)})
			h.ensureAgentMember("a1", 0)
			h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("ap-south")})
			h.mustApply(GlobalTableUpsertType, GlobalTableUpsert{Table: GlobalTable{Name: "fx", WriterRegion: "ap-south"}})
			h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "waiter", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
				SyncMode: SyncModeSync, SyncFallback: SyncFallbackWait}})
			before := snapshotBytes(t, h.f)
			res := h.apply(tc.typ, tc.body)
			if res == nil || res.Err == nil {
				t.Fatalf("accepted: %+v", res)
			}
			var fe *Error
			if !errors.As(res.Err, &fe) || !errors.Is(res.Err, tc.kind) || fe.Code != tc.code {
				t.Fatalf("got %v (code %q), want kind %v code %q", res.Err, codeOf(res.Err), tc.kind, tc.code)
			}
			if after := snapshotBytes(t, h.f); !bytes.Equal(before, after) {
				t.Fatal("a rejected command changed the state")
			}
		})
	}
}

func TestTenantGoingAsyncDropsItsSyncState(t *testing.T) {
	h := newHarness(t)
	seed(h)
	tn := Tenant{ID: "s", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, SyncMode: SyncModeSync}
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: tn})
	h.mustApply(TenantSyncStateType, TenantSyncStateSet{Tenant: "s", State: SyncStateDegraded})
	tn.SyncMode = ""
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: tn})
	h.f.Read(func(s *State) {
		if s.SyncStates["s"] != nil {
			t.Fatal("an async tenant kept a recorded degrade")
		}
	})
}

// TestRegionDatabaseReportIsAnAgentsOwn: only an agent of the region,
// signing with its own key, records the region's database endpoint.
func TestRegionDatabaseReportIsAnAgentsOwn(t *testing.T) {
	const now = int64(1_000_000e9)
	h := newHarness(t)
	seed(h)
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("a1", "us-east", AgentAlive), At: now})
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("b1", "eu-west", AgentAlive), At: now})
	h.ensureAgentMember("a1", now)
	h.ensureAgentMember("b1", now)
	h.ensureAgentMember("ghost", now)
	ep := DatabaseEndpoint{Host: "db", Port: 5432, Database: "atomfed"}
	body := []byte(`{"node":"a1"}`)
	report := func(region, node string, auth *SignedAuth) RegionDatabaseReport {
		return RegionDatabaseReport{Region: region, Node: node, Endpoint: ep, At: now + 1e9, Auth: auth}
	}
	cases := []struct {
		name string
		cmd  RegionDatabaseReport
		kind error
		code string
	}{
		{"unsigned", report("us-east", "a1", &SignedAuth{KeyID: h.key("a1").KeyID, Body: body}), ErrForbidden, "unsigned"},
		{"signed by another agent", report("us-east", "a1", h.sign("b1", body, now+1e9)), ErrForbidden, "wrong_signer"},
		{"another region's database", report("us-east", "b1", h.sign("b1", body, now+1e9)), ErrForbidden, "wrong_region"},
		{"a member that is no agent of the federation", report("us-east", "ghost", h.sign("ghost", body, now+1e9)), ErrNotFound, "agent_not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotBytes(t, h.f)
			res := h.apply(RegionDatabaseType, tc.cmd)
			if res.Err == nil || codeOf(res.Err) != tc.code || !errors.Is(res.Err, tc.kind) {
				t.Fatalf("got %v (code %q), want %q", res.Err, codeOf(res.Err), tc.code)
			}
			if !bytes.Equal(before, snapshotBytes(t, h.f)) {
				t.Fatal("a refused report changed the state")
			}
		})
	}
	h.mustApply(RegionDatabaseType, report("us-east", "a1", h.sign("a1", body, now+1e9)))
	h.f.Read(func(s *State) {
		if d := s.Databases["us-east"]; d == nil || d.ReportedBy != "a1" || d.Endpoint != ep {
			t.Fatalf("the agent's own report was not recorded: %+v", d)
		}
	})
}

func TestReplicationObjectsSurviveSnapshot(t *testing.T) {
	h := newHarness(t)
	seed(h)
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("a1", "us-east", AgentAlive)})
	h.mustApply(RegionDatabaseType, RegionDatabaseReport{Region: "us-east", Node: "a1", Endpoint: DatabaseEndpoint{Host: "::1", Port: 5433, Database: "db"}, At: 1})
	h.mustApply(GlobalTableUpsertType, GlobalTableUpsert{Table: GlobalTable{Name: "ref.fx", WriterRegion: "eu-west"}, At: 2})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "s", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, SyncMode: SyncModeSync}})
	h.mustApply(TenantSyncStateType, TenantSyncStateSet{Tenant: "s", State: SyncStateSync, At: 3})
	b := snapshotBytes(t, h.f)
	s, err := ReadSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if s.Databases["us-east"].Endpoint.Port != 5433 || s.GlobalTables["ref.fx"].WriterRegion != "eu-west" || s.SyncStates["s"].State != SyncStateSync {
		t.Fatalf("replication objects lost in the snapshot: %+v %+v %+v", s.Databases, s.GlobalTables, s.SyncStates)
	}
	var again bytes.Buffer
	if err := WriteSnapshot(&again, s); err != nil || !bytes.Equal(again.Bytes(), b) {
		t.Fatal("snapshot with replication objects is not stable")
	}
	bad := strings.Replace(string(b), `"port":5433`, `"port":0`, 1)
	if _, err := ReadSnapshot(strings.NewReader(bad)); err == nil {
		t.Fatal("a snapshot with an invalid endpoint was accepted")
	}
}

var identRe63 = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func TestReplicationNamesAreIdentifiersAndDistinct(t *testing.T) {
	long := strings.Repeat("a", 63)
	tenants := []string{"acme", "a-b", "a_b", long, long[:62] + "b", "x"}
	regions := []string{"us-east", "eu-west", strings.Repeat("r", 63), strings.Repeat("r", 62) + "s", "r"}
	seen := map[string]string{}
	add := func(name, what string) {
		t.Helper()
		if !identRe63.MatchString(name) {
			t.Fatalf("%s: %q is not a plain identifier of at most 63 bytes", what, name)
		}
		if prev, dup := seen[name]; dup {
			t.Fatalf("%s and %s share the name %q", what, prev, name)
		}
		seen[name] = what
	}
	for _, tn := range tenants {
		add(TenantPublication(tn), "publication of "+tn)
		for _, r := range regions {
			sub := TenantSubscription(tn, r)
			add(sub, "subscription of "+tn+" in "+r)
			if !strings.HasPrefix(sub, TenantSlotPrefix(tn)) {
				t.Fatalf("%q does not start with the tenant's slot prefix", sub)
			}
		}
	}
	for _, w := range regions {
		add(GlobalPublication(w), "global publication of "+w)
		for _, r := range regions {
			if r != w {
				add(GlobalSubscription(w, r), "global subscription "+w+"->"+r)
			}
		}
	}
	for _, a := range tenants {
		for _, b := range tenants {
			if a != b && strings.HasPrefix(TenantSlotPrefix(a), TenantSlotPrefix(b)) {
				t.Fatalf("slot prefix of %q contains that of %q: teardown of one would drop the other's slots", a, b)
			}
		}
	}
}

func TestTenantReplicationViewFromReports(t *testing.T) {
	s := newState()
	s.Tenants["acme"] = &Tenant{ID: "acme", HomeRegion: "a", Mirrors: []string{"b", "c"}, Tables: []TenantTable{{Name: "orders"}}}
	s.Tenants["bare"] = &Tenant{ID: "bare", HomeRegion: "a"}
	task := func(id, typ, region, ensure string, result any) {
		spec, _ := json.Marshal(map[string]string{"ensure": ensure})
		res, _ := json.Marshal(result)
		s.Tasks[id] = &Task{ID: id, Type: typ, Region: region, Agent: region + "-a1", Status: TaskRunning, Spec: spec, Result: res}
	}
	task(TenantPublisherTaskID("acme", "a"), TaskTypeTenantPublisher, "a", EnsurePresent, PublisherResult{State: ReplReady, Publication: "p"})
	task(TenantSubscriberTaskID("acme", "b"), TaskTypeTenantSubscriber, "b", EnsurePresent, SubscriberResult{State: ReplStreaming, LagSeconds: 0.5, LagBytes: 10})
	task(TenantSubscriberTaskID("acme", "c"), TaskTypeTenantSubscriber, "c", EnsurePresent, SubscriberResult{State: ReplStreaming})
	task(TenantSubscriberTaskID("acme", "d"), TaskTypeTenantSubscriber, "d", EnsureAbsent, SubscriberResult{State: ReplWaiting})
	v, ok := s.TenantReplicationView("acme")
	if !ok || v.Status != ReplStatusOK || len(v.Mirrors) != 3 || v.Mirrors[0].LagSeconds != 0.5 || v.Mirrors[2].Ensure != EnsureAbsent {
		t.Fatalf("view: %+v", v)
	}
	task(TenantSubscriberTaskID("acme", "c"), TaskTypeTenantSubscriber, "c", EnsurePresent, SubscriberResult{State: ReplStreaming,
		Issues: []ReplicationIssue{{Code: IssueSchemaDrift, Message: "schema drift in orders"}}})
	v, _ = s.TenantReplicationView("acme")
	if v.Status != ReplStatusDegraded || v.Mirrors[1].LastError == nil || v.Mirrors[1].LastError.Code != IssueSchemaDrift {
		t.Fatalf("a mirror with an issue must degrade the tenant and show as its last error: %+v", v)
	}
	if v, ok := s.TenantReplicationView("bare"); !ok || v.Status != ReplStatusOK {
		t.Fatalf("a tenant without tables: %+v", v)
	}
	if _, ok := s.TenantReplicationView("nobody"); ok {
		t.Fatal("a view for a tenant that never existed")
	}
}

// TestPatchTenantMergeSemantics: RFC 7396 on a tenant: named fields
// replace, null removes, objects merge key by key; bad patches are refused
// with a code that says why.
func TestPatchTenantMergeSemantics(t *testing.T) {
	cur := &Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Labels: map[string]string{"a": "1", "b": "2"},
		SyncMode: SyncModeSync, CreateIndex: 3, ModifyIndex: 7}
	got, err := PatchTenant(cur, json.RawMessage(`{"labels":{"a":null,"c":"3"},"sync_mode":null,"mirrors":["ap-south","eu-west"],"create_index":99}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"ap-south", "eu-west"}, Labels: map[string]string{"b": "2", "c": "3"},
		CreateIndex: 3, ModifyIndex: 7}
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("patched tenant\n%+v\nwant\n%+v", *got, want)
	}
	for patch, code := range map[string]string{
		`[1]`:                    "bad_patch",
		`{"mirrorz":["x"]}`:      "bad_patch",
		`{"mirrors":"eu-west"}`:  "bad_patch",
		`{"id":"globex"}`:        "id_mismatch",
		`{"home_region":"Bad!"}`: "invalid_home_region",
		`{"home_region":null}`:   "invalid_home_region",
		`not json`:               "bad_patch",
	} {
		if _, err := PatchTenant(cur, json.RawMessage(patch)); codeOf(err) != code {
			t.Errorf("patch %s: %v, want %s", patch, err, code)
		}
	}
}
