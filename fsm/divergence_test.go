package fsm

import (
	"bytes"
	"strings"
	"testing"
)

// divergenceRoundTrips applies a divergence record and its resolve once
// (for TestCommandRoundTrip), on a tenant of its own that it deletes after.
func divergenceRoundTrips(t *testing.T, h *harness, check func(MessageType, any, func(*State, *ApplyResult))) {
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "dvt", HomeRegion: "us-east", Tables: []TenantTable{{Name: "orders"}}}, At: 50, Rules: RulesTrustBound})
	var created uint64
	h.f.Read(func(s *State) { created = s.Tenants["dvt"].CreateIndex })
	check(DivergenceRecordType, DivergenceRecord{Tenant: "dvt", TenantCreated: created, Region: "eu-west", Epoch: 2,
		Tables: map[string]int64{"public.orders": 3}, Missing: 1, FoundAt: 51, At: 51}, func(s *State, res *ApplyResult) {
		d := s.Divergence("dvt", "eu-west")
		if d == nil || d.Total != 3 || d.ModifyIndex != res.Index || s.TableIndex(TableDivergence) != res.Index || !d.Open() {
			t.Fatalf("divergence after record: %+v", d)
		}
	})
	check(DivergenceRecordType, DivergenceRecord{Tenant: "dvt", Region: "eu-west", Resolve: true, RequestedBy: "op1", At: 52}, func(s *State, res *ApplyResult) {
		if d := s.Divergence("dvt", "eu-west"); d == nil || d.Open() || d.ResolvedBy != "op1" || d.ResolvedAt != 52 {
			t.Fatalf("divergence after resolve: %+v", d)
		}
	})
	h.mustApply(TenantDeleteType, TenantDelete{ID: "dvt", At: 53})
}

// TestDivergenceIsRecordedOncePerCountAndResolvedByAPerson: a record of an
// old home's quarantined rows is kept per tenant and region with an audit
// note that asks for the rows to be reconciled; the same counts again are
// refused (no audit entry); new counts of the same return update it and
// keep when it was found; a person marks it reconciled once; a later
// failover's record opens it again. Bad records and resolves change
// nothing. Snapshots carry the records and refuse bad ones; replay gives
// the same state.
func TestDivergenceIsRecordedOncePerCountAndResolvedByAPerson(t *testing.T) {
	h := switchoverFixture(t)
	var created uint64
	h.f.Read(func(s *State) { created = s.Tenants["acme"].CreateIndex })
	rec := DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east", Epoch: 2, Failover: 9,
		Tables: map[string]int64{"public.orders": 5, "public.items": 2}, Missing: 4, RowsReconciled: 11, FoundAt: 100, At: 100,
		Keys: []DivergentKey{{Table: "public.orders", Key: `{"id": 5, "tenant_id": "acme"}`, Reason: ReasonMissingAtNewHome}}}
	first := h.mustApply(DivergenceRecordType, rec)
	var note string
	h.f.Read(func(s *State) {
		d := s.Divergence("acme", "us-east")
		if d == nil || d.Total != 7 || d.Missing != 4 || d.RowsReconciled != 11 || d.CreateIndex != first.Index || d.Failover != 9 || len(d.Keys) != 1 {
			t.Fatalf("recorded divergence: %+v", d)
		}
		rs := s.RecentAudit()
		note = rs[len(rs)-1].Note
	})
	if !strings.Contains(note, "7 rows of tenant acme committed at us-east after the failover are in quarantine at us-east") || !strings.Contains(note, "reconcile them") {
		t.Fatalf("audit note: %q", note)
	}
	before := stateWithoutAudit(t, h.f)
	for name, c := range map[string]struct {
		cmd  DivergenceRecord
		code string
	}{
		"same counts":         {rec, CodeDivergenceUnchanged},
		"unknown tenant":      {DivergenceRecord{Tenant: "nope", Region: "us-east", Tables: map[string]int64{"t": 1}}, "tenant_not_found"},
		"older tenant":        {DivergenceRecord{Tenant: "acme", TenantCreated: created - 1, Region: "us-east", Tables: map[string]int64{"t": 1}}, "tenant_changed"},
		"bad region":          {DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "US EAST", Tables: map[string]int64{"t": 1}}, "invalid_region"},
		"no rows":             {DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east"}, "invalid_divergence"},
		"negative count":      {DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east", Tables: map[string]int64{"t": -1}}, "invalid_divergence"},
		"missing > total":     {DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east", Tables: map[string]int64{"t": 1}, Missing: 2}, "invalid_divergence"},
		"key of no table":     {DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east", Tables: map[string]int64{"t": 1}, Keys: []DivergentKey{{Table: "u", Key: "{}", Reason: ReasonMissingAtNewHome}}}, "invalid_divergence"},
		"key of no reason":    {DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east", Tables: map[string]int64{"t": 1}, Keys: []DivergentKey{{Table: "t", Key: "{}", Reason: "because"}}}, "invalid_divergence"},
		"more keys than rows": {DivergenceRecord{Tenant: "acme", TenantCreated: created, Region: "us-east", Tables: map[string]int64{"t": 1}, Keys: []DivergentKey{{Table: "t", Key: "{}", Reason: ReasonMissingAtNewHome}, {Table: "t", Key: "{}", Reason: ReasonMissingAtNewHome}}}, "invalid_divergence"},
		"resolve unknown":     {DivergenceRecord{Tenant: "acme", Region: "eu-west", Resolve: true}, CodeNoDivergence},
		"resolve long note":   {DivergenceRecord{Tenant: "acme", Region: "us-east", Resolve: true, Note: strings.Repeat("x", 600)}, "invalid_note"},
		"resolve no tenant":   {DivergenceRecord{Tenant: "nope", Region: "us-east", Resolve: true}, "tenant_not_found"},
	} {
		if res := h.apply(DivergenceRecordType, c.cmd); codeOf(res.Err) != c.code {
			t.Fatalf("%s: %+v, want code %s", name, res.Err, c.code)
		}
	}
	if after := stateWithoutAudit(t, h.f); after != before {
		t.Fatal("a refused divergence record changed the state")
	}
	// New counts of the same return (a resumed resync): found_at kept.
	rec2 := rec
	rec2.Tables, rec2.FoundAt, rec2.At = map[string]int64{"public.orders": 6, "public.items": 2}, 200, 200
	h.mustApply(DivergenceRecordType, rec2)
	h.mustApply(DivergenceRecordType, DivergenceRecord{Tenant: "acme", Region: "us-east", Resolve: true, Note: "merged by hand", RequestedBy: "op1", At: 201})
	if res := h.apply(DivergenceRecordType, DivergenceRecord{Tenant: "acme", Region: "us-east", Resolve: true, At: 202}); codeOf(res.Err) != "divergence_resolved" {
		t.Fatalf("a second resolve: %+v", res.Err)
	}
	h.f.Read(func(s *State) {
		d := s.Divergence("acme", "us-east")
		if d.Total != 8 || d.FoundAt != 100 || d.CreateIndex != first.Index || d.Open() || d.ResolvedNote != "merged by hand" {
			t.Fatalf("divergence after new counts and resolve: %+v", d)
		}
		rs := s.RecentAudit()
		if n := rs[len(rs)-1].Note; !strings.Contains(n, "op1 marked the 8 quarantined rows of tenant acme at us-east reconciled: merged by hand") {
			t.Fatalf("resolve audit note: %q", n)
		}
	})
	// The same counts once resolved are still the same: nothing reopens.
	if res := h.apply(DivergenceRecordType, rec2); codeOf(res.Err) != CodeDivergenceUnchanged {
		t.Fatalf("the resolved counts again: %+v", res.Err)
	}
	// A later failover (next epoch) opens a new record.
	rec3 := rec
	rec3.Epoch, rec3.Tables, rec3.Missing, rec3.FoundAt, rec3.At, rec3.Keys = 4, map[string]int64{"public.orders": 1}, 0, 300, 300, nil
	third := h.mustApply(DivergenceRecordType, rec3)
	h.f.Read(func(s *State) {
		if d := s.Divergence("acme", "us-east"); !d.Open() || d.Total != 1 || d.CreateIndex != third.Index || len(s.DivergenceOf("acme", created)) != 1 || len(s.DivergenceOf("acme", created+1)) != 0 {
			t.Fatalf("divergence of a later failover: %+v", d)
		}
	})

	snap := snapshotBytes(t, h.f)
	s, err := ReadSnapshot(bytes.NewReader(snap))
	if err != nil || s.Divergence("acme", "us-east") == nil || s.Divergence("acme", "us-east").Total != 1 {
		t.Fatalf("restored divergence: %v", err)
	}
	other := newHarness(t)
	for _, l := range h.log {
		other.f.Apply(l)
	}
	if !bytes.Equal(snapshotBytes(t, other.f), snap) {
		t.Fatal("replaying the log gives another state")
	}
	for name, bad := range map[string][2]string{
		"wrong total":   {`"total":1`, `"total":2`},
		"bad region":    {`"region":"us-east","epoch"`, `"region":"US","epoch"`},
		"zero in table": {`"tables":{"public.orders":1}`, `"tables":{"public.orders":0}`},
	} {
		b := bytes.Replace(snap, []byte(bad[0]), []byte(bad[1]), 1)
		if bytes.Equal(b, snap) {
			t.Fatalf("%s: the snapshot has no %s", name, bad[0])
		}
		if _, err := ReadSnapshot(bytes.NewReader(b)); err == nil || !strings.Contains(err.Error(), "divergence") {
			t.Fatalf("%s: a bad divergence record restored: %v", name, err)
		}
	}
}
