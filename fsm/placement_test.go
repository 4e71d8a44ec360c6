package fsm

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestTenantEpoch: a tenant created under RulesTrustBound has epoch 1;
// every change of home bumps it in the same entry and nothing else does;
// a tenant of older rules keeps epoch 0 (before epochs) until its home
// changes; the epoch survives a snapshot and cannot be written.
func TestTenantEpoch(t *testing.T) {
	h := newHarness(t)
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion(r), At: 1})
	}
	epoch := func(id string) (e uint64) {
		h.f.Read(func(s *State) { e = s.Tenants[id].Epoch })
		return e
	}
	put := func(tn Tenant, rules int) *ApplyResult {
		t.Helper()
		return h.mustApply(TenantUpsertType, TenantUpsert{Tenant: tn, At: 2, Rules: rules})
	}
	res := put(Tenant{ID: "acme", HomeRegion: "us-east", Epoch: 9}, RulesTrustBound)
	if got := res.Value.(*Tenant).Epoch; got != 1 || epoch("acme") != 1 {
		t.Fatalf("a new tenant has epoch %d (stored %d), want 1 whatever the write says", got, epoch("acme"))
	}
	put(Tenant{ID: "acme", HomeRegion: "us-east", Labels: map[string]string{"a": "b"}, Epoch: 5}, RulesTrustBound)
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"tables":[{"name":"orders"}]}`), At: 3, Rules: RulesTrustBound})
	if e := epoch("acme"); e != 1 {
		t.Fatalf("writes that keep the home moved the epoch to %d", e)
	}
	moved := put(Tenant{ID: "acme", HomeRegion: "eu-west", Tables: []TenantTable{{Name: "orders"}}}, RulesTrustBound)
	if e := epoch("acme"); e != 2 || moved.Value.(*Tenant).Epoch != 2 {
		t.Fatalf("a change of home left the epoch at %d, want 2 in the same entry", e)
	}
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"home_region":"ap-south"}`), At: 4, Rules: RulesTrustBound})
	if e := epoch("acme"); e != 3 {
		t.Fatalf("a patched change of home left the epoch at %d, want 3", e)
	}
	if res := h.apply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"epoch":7}`), At: 5, Rules: RulesTrustBound}); res.Err == nil || codeOf(res.Err) != "read_only_field" {
		t.Fatalf("a patch of the epoch: %+v, want read_only_field", res)
	}

	// Older rules: no epoch, and a change of home applies as it did.
	put(Tenant{ID: "old", HomeRegion: "us-east", Mirrors: []string{"eu-west"}}, 0)
	put(Tenant{ID: "old", HomeRegion: "ap-south", Mirrors: []string{"eu-west"}}, RulesApprovalBound)
	if e := epoch("old"); e != 0 {
		t.Fatalf("a tenant of older rules has epoch %d, want 0", e)
	}
	put(Tenant{ID: "old", HomeRegion: "ap-south"}, RulesTrustBound)
	put(Tenant{ID: "old", HomeRegion: "us-east"}, RulesTrustBound)
	if e := epoch("old"); e != 1 {
		t.Fatalf("a tenant from before epochs moved home: epoch %d, want 1", e)
	}

	// Replayed, and restored from a snapshot, the epochs are the same.
	replay := newHarness(t)
	for _, l := range h.log {
		replay.f.Apply(l)
	}
	restored := New(nil, nil)
	if err := restored.Restore(ioNopCloser{bytes.NewReader(snapshotBytes(t, h.f))}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*FSM{replay.f, restored} {
		f.Read(func(s *State) {
			if s.Tenants["acme"].Epoch != 3 || s.Tenants["old"].Epoch != 1 {
				t.Fatalf("replayed or restored epochs: acme %d, old %d; want 3 and 1", s.Tenants["acme"].Epoch, s.Tenants["old"].Epoch)
			}
		})
	}
}

// TestHomeChangeOfAReplicatedTenantIsRefused: under RulesTrustBound a
// change of home_region for a tenant with mirrors and tables (mirrors
// removed by the same write included), or whose removed mirrors are still
// being torn down, is refused with a message that names the switchover and changes
// nothing; under older rules it applies as it always did.
func TestHomeChangeOfAReplicatedTenantIsRefused(t *testing.T) {
	h := newHarness(t)
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion(r), At: 1})
	}
	tables := []TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: tables}, At: 2, Rules: RulesTrustBound})
	before := stateWithoutAudit(t, h.f)
	for name, c := range map[string]struct {
		typ  MessageType
		body any
	}{
		"onto its mirror":                  {TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "eu-west", Mirrors: []string{"us-east"}, Tables: tables}, At: 3, Rules: RulesTrustBound}},
		"elsewhere, keeping the mirror":    {TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "ap-south", Mirrors: []string{"eu-west"}, Tables: tables}, At: 3, Rules: RulesTrustBound}},
		"removing the mirrors in the same": {TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "eu-west", Tables: tables}, At: 3, Rules: RulesTrustBound}},
		"by patch":                         {TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"home_region":"eu-west","mirrors":null}`), At: 3, Rules: RulesTrustBound}},
	} {
		res := h.apply(c.typ, c.body)
		if res == nil || codeOf(res.Err) != CodeHomeChangeNeedsSwitchover {
			t.Fatalf("%s: %+v, want %s", name, res, CodeHomeChangeNeedsSwitchover)
		}
		for _, want := range []string{"lose its data", "atomfed tenant switchover acme --to", "POST /v1/tenants/acme/switchover", "keep home_region us-east", "Removing the mirrors first does not move the data"} {
			if !strings.Contains(res.Err.Error(), want) {
				t.Fatalf("%s: the refusal %q does not say %q", name, res.Err, want)
			}
		}
		if got := stateWithoutAudit(t, h.f); got != before {
			t.Fatalf("%s: a refused write changed the state", name)
		}
	}

	// The mirror removed, its subscription still being torn down: refused.
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east", Tables: tables}, At: 4, Rules: RulesTrustBound})
	h.f.mu.Lock()
	h.f.state.Tasks[TenantSubscriberTaskID("acme", "eu-west")] = &Task{ID: TenantSubscriberTaskID("acme", "eu-west"), Type: TaskTypeTenantSubscriber, Region: "eu-west"}
	h.f.mu.Unlock()
	res := h.apply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "eu-west", Tables: tables}, At: 5, Rules: RulesTrustBound})
	if res == nil || codeOf(res.Err) != CodeHomeChangeNeedsSwitchover || !strings.Contains(res.Err.Error(), "still being torn down") {
		t.Fatalf("a home change during a mirror's teardown: %+v", res)
	}
	h.f.mu.Lock()
	delete(h.f.state.Tasks, TenantSubscriberTaskID("acme", "eu-west"))
	h.f.mu.Unlock()
	if res := h.apply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "eu-west", Tables: tables}, At: 6, Rules: RulesTrustBound}); res.Err != nil {
		t.Fatalf("a tenant without mirrors may change its home: %v", res.Err)
	}

	// A tenant with mirrors but no tables has nothing replicated: it moves.
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "bare", HomeRegion: "us-east", Mirrors: []string{"eu-west"}}, At: 7, Rules: RulesTrustBound})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "bare", HomeRegion: "ap-south", Mirrors: []string{"eu-west"}}, At: 7, Rules: RulesTrustBound})

	// Older rules: the entry applies as it did when it was logged.
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "legacy", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: tables}, At: 7})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "legacy", HomeRegion: "eu-west", Mirrors: []string{"us-east"}, Tables: tables}, At: 8, Rules: RulesApprovalBound})
}
