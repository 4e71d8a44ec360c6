package fsm

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// regionOpsRoundTrips applies each region operations command once (for
// TestCommandRoundTrip).
func regionOpsRoundTrips(t *testing.T, h *harness, check func(MessageType, any, func(*State, *ApplyResult))) {
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("ro-a"), At: 50})
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("ro-b"), At: 50})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "rot", HomeRegion: "ro-a", Mirrors: []string{"ro-b"},
		Tables: []TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}, At: 51, Rules: RulesTrustBound})
	check(RegionMaintenanceType, RegionMaintenanceSet{Region: "ro-a", Maintenance: true, Drain: DrainStart, RequestedBy: "op1", At: 52}, func(s *State, res *ApplyResult) {
		o := s.RegionOps["ro-a"]
		if o == nil || !o.Maintenance || o.Drain == nil || o.Drain.ID != res.Index || o.Drain.State != DrainRunning || len(o.Drain.Tenants) != 1 {
			t.Fatalf("region ops after drain start: %+v", o)
		}
	})
	id := h.index
	check(RegionDrainAdvanceType, RegionDrainAdvance{Region: "ro-a", ID: id, Tenant: "rot", Action: DrainActStart, To: "ro-b", At: 53}, func(s *State, res *ApplyResult) {
		d := s.RegionOps["ro-a"].Drain
		w := s.Switchovers["rot"]
		if d.Current != "rot" || d.Tenants[0].State != DrainTenantSwitching || w == nil || w.ID != res.Index || w.RequestedBy != "drain:ro-a" {
			t.Fatalf("drain after start: %+v, switchover %+v", d, w)
		}
	})
	h.mustApply(SwitchoverAbortType, SwitchoverAbort{Tenant: "rot", At: 54})
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "rot", ID: h.index - 1, From: PhaseRollingBack, To: PhaseAborted, At: 55})
	h.mustApply(RegionDrainAdvanceType, RegionDrainAdvance{Region: "ro-a", ID: id, Tenant: "rot", Action: DrainActFailed, Reason: "rolled back", At: 56})
	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "ro-a", Maintenance: false, At: 57})
	h.mustApply(TenantDeleteType, TenantDelete{ID: "rot", At: 58})
}

// regionOpsFixture: us-east (home of acme and globex, mirrored to eu-west;
// solo without mirror), eu-west, ap-south.
func regionOpsFixture(t *testing.T) *harness {
	h := newHarness(t)
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion(r), At: 1})
	}
	for _, id := range []string{"acme", "globex"} {
		h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: id, HomeRegion: "us-east", Mirrors: []string{"eu-west"},
			Tables: []TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}, At: 2, Rules: RulesTrustBound})
	}
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "solo", HomeRegion: "us-east", Tables: []TenantTable{{Name: "orders"}}}, At: 2, Rules: RulesTrustBound})
	return h
}

// TestMaintenanceRefusesNewPlacementsOnly: with us-east in maintenance, a
// tenant write that adds us-east as home or mirror is refused 409
// region_in_maintenance and changes nothing; writes to tenants already
// there go on; off lets placements in again; off is refused while a drain
// runs; unknown regions and bad drains are refused.
func TestMaintenanceRefusesNewPlacementsOnly(t *testing.T) {
	h := regionOpsFixture(t)
	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Maintenance: true, RequestedBy: "op1", At: 3})
	if h.f.state.Audit[len(h.f.state.Audit)-1].Note != "region us-east maintenance on by op1" {
		t.Fatalf("audit note: %+v", h.f.state.Audit[len(h.f.state.Audit)-1])
	}
	before := stateWithoutAudit(t, h.f)
	for name, c := range map[string]struct {
		typ  MessageType
		body any
		code string
	}{
		"new tenant at home there": {TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "new", HomeRegion: "us-east"}, At: 4, Rules: RulesTrustBound}, CodeRegionInMaintenance},
		"mirror added there":       {TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "x2", HomeRegion: "eu-west", Mirrors: []string{"us-east"}}, At: 4, Rules: RulesTrustBound}, CodeRegionInMaintenance},
		"unknown region":           {RegionMaintenanceType, RegionMaintenanceSet{Region: "mars", Maintenance: true, At: 4}, "region_not_found"},
		"bad drain":                {RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Drain: "later", At: 4}, "invalid_drain"},
		"stop without drain":       {RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Drain: DrainStop, At: 4}, CodeNoDrain},
		"advance without drain":    {RegionDrainAdvanceType, RegionDrainAdvance{Region: "us-east", ID: 1, Tenant: "acme", Action: DrainActStart, To: "eu-west", At: 4}, "drain_changed"},
	} {
		res := h.apply(c.typ, c.body)
		if res == nil || codeOf(res.Err) != c.code {
			t.Fatalf("%s: %+v, want %s", name, res, c.code)
		}
		if got := stateWithoutAudit(t, h.f); got != before {
			t.Fatalf("%s: a refused write changed the state", name)
		}
	}
	res := h.apply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "new", HomeRegion: "us-east"}, At: 4, Rules: RulesTrustBound})
	if !strings.Contains(res.Err.Error(), "atomfed region maintenance us-east off") {
		t.Fatalf("message does not say what to do: %v", res.Err)
	}
	// Tenants already there may change.
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"labels":{"a":"b"}}`), At: 5, Rules: RulesTrustBound})
	// Before the rules, the old behaviour: no refusal.
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "old", HomeRegion: "us-east"}, At: 5})
	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Maintenance: false, At: 6})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "new", HomeRegion: "us-east"}, At: 7, Rules: RulesTrustBound})
	h.mustApply(TenantDeleteType, TenantDelete{ID: "new", At: 7})
	h.mustApply(TenantDeleteType, TenantDelete{ID: "old", At: 7})

	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Maintenance: true, Drain: DrainStart, At: 8})
	for name, body := range map[string]RegionMaintenanceSet{
		"off while draining": {Region: "us-east", Maintenance: false, At: 9},
		"second drain":       {Region: "us-east", Maintenance: true, Drain: DrainStart, At: 9},
	} {
		if res := h.apply(RegionMaintenanceType, body); codeOf(res.Err) != CodeDrainInProgress {
			t.Fatalf("%s: %+v, want %s", name, res, CodeDrainInProgress)
		}
	}
	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Maintenance: true, Drain: DrainStop, Reason: "test", RequestedBy: "op2", At: 10})
	if d := h.f.state.RegionOps["us-east"].Drain; d.State != DrainStopped || !strings.Contains(d.Reason, "op2: test") {
		t.Fatalf("stopped drain: %+v", d)
	}
	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Maintenance: false, At: 11})
}

// TestDrainMovesTenantsOneByOne drives a drain of us-east by hand as the
// leader would: a tenant without a mirror is failed at once ("cannot move:
// no mirror"); a start applies the switchover in the same entry; an
// advance for the wrong tenant or a second start is refused; a start
// whose switchover is refused (the target in maintenance) records the
// failure instead; the drain ends partial; the snapshot carries it and
// refuses a bad one; a drain of a region without tenants ends at once.
func TestDrainMovesTenantsOneByOne(t *testing.T) {
	h := regionOpsFixture(t)
	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "us-east", Maintenance: true, Drain: DrainStart, RequestedBy: "op1", At: 3})
	id := h.index
	d := h.f.state.RegionOps["us-east"].Drain
	if len(d.Tenants) != 3 || d.Tenants[2].Tenant != "solo" || d.Tenants[2].State != DrainTenantFailed || d.Tenants[2].Reason != NoMirrorReason || d.Remaining() != 2 {
		t.Fatalf("drain at start: %+v", d)
	}
	h.mustApply(RegionDrainAdvanceType, RegionDrainAdvance{Region: "us-east", ID: id, Tenant: "acme", Action: DrainActStart, To: "eu-west", At: 4})
	if w := h.f.state.Switchovers["acme"]; w == nil || w.Phase != PhaseFencing || w.ID != h.index || w.RequestedBy != "drain:us-east" {
		t.Fatalf("switchover of acme: %+v", w)
	}
	for name, a := range map[string]RegionDrainAdvance{
		"second start":    {Region: "us-east", ID: id, Tenant: "globex", Action: DrainActStart, To: "eu-west", At: 5},
		"moved too early": {Region: "us-east", ID: id, Tenant: "globex", Action: DrainActMoved, At: 5},
		"wrong drain":     {Region: "us-east", ID: id + 100, Tenant: "acme", Action: DrainActMoved, At: 5},
		"not in drain":    {Region: "us-east", ID: id, Tenant: "nobody", Action: DrainActFailed, At: 5},
		"bad action":      {Region: "us-east", ID: id, Tenant: "acme", Action: "later", At: 5},
	} {
		if res := h.apply(RegionDrainAdvanceType, a); res.Err == nil {
			t.Fatalf("%s: applied", name)
		}
	}
	h.mustApply(RegionDrainAdvanceType, RegionDrainAdvance{Region: "us-east", ID: id, Tenant: "acme", Action: DrainActMoved, Reason: "home eu-west", At: 6})
	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "eu-west", Maintenance: true, At: 7})
	h.mustApply(RegionDrainAdvanceType, RegionDrainAdvance{Region: "us-east", ID: id, Tenant: "globex", Action: DrainActStart, To: "eu-west", At: 8})
	d = h.f.state.RegionOps["us-east"].Drain
	if g := d.Tenants[1]; g.State != DrainTenantFailed || !strings.Contains(g.Reason, "in maintenance") || h.f.state.Switchovers["globex"] != nil {
		t.Fatalf("globex onto a region in maintenance: %+v", g)
	}
	if d.State != DrainPartial || d.EndedAt != 8 || d.Count(DrainTenantMoved) != 1 {
		t.Fatalf("drain at its end: %+v", d)
	}
	if note := h.f.state.Audit[len(h.f.state.Audit)-1].Note; !strings.Contains(note, "drain ended partial: 1 moved, 2 could not move of 3") {
		t.Fatalf("audit note: %q", note)
	}

	good := snapshotBytes(t, h.f)
	s, err := ReadSnapshot(bytes.NewReader(good))
	if err != nil || s.RegionOps["us-east"].Drain.State != DrainPartial || !s.RegionOps["eu-west"].Maintenance {
		t.Fatalf("restored: %v", err)
	}
	for name, bad := range map[string][2]string{
		"unknown state":  {`"state":"partial"`, `"state":"sideways"`},
		"bad tenant":     {`"tenant":"solo"`, `"tenant":"Solo Co"`},
		"misfiled drain": {`"region":"us-east","state"`, `"region":"eu-west","state"`},
	} {
		b := bytes.Replace(good, []byte(bad[0]), []byte(bad[1]), 1)
		if bytes.Equal(b, good) {
			t.Fatalf("%s: %s not in the snapshot", name, bad[0])
		}
		if _, err := ReadSnapshot(bytes.NewReader(b)); err == nil || !strings.Contains(err.Error(), "drain") {
			t.Fatalf("%s: restored: %v", name, err)
		}
	}

	h.mustApply(RegionMaintenanceType, RegionMaintenanceSet{Region: "ap-south", Maintenance: true, Drain: DrainStart, At: 9})
	if d := h.f.state.RegionOps["ap-south"].Drain; d.State != DrainDone || len(d.Tenants) != 0 || d.EndedAt != 9 {
		t.Fatalf("drain of an empty region: %+v", d)
	}
}

// TestResidencyRegion: set to the home at creation, kept through a
// switchover (the tenant is then away) and by writes that leave it out;
// changed only to the home of the write; pii_while_away keep_local is
// audited as a residency exception and may not change while away; the
// guard a promotion applies follows it.
func TestResidencyRegion(t *testing.T) {
	h := regionOpsFixture(t)
	acme := h.f.state.Tenants["acme"]
	if acme.ResidencyRegion != "us-east" || acme.PIIPolicy() != PIIWhileAwayNullOnly || acme.Away() {
		t.Fatalf("acme at creation: %+v", acme)
	}
	if g := PIIGuardAt(acme, "eu-west"); g == nil || g.ResidencyRegion != "us-east" || g.Policy != PIIWhileAwayNullOnly {
		t.Fatalf("guard at eu-west: %+v", g)
	}
	if PIIGuardAt(acme, "us-east") != nil {
		t.Fatal("a guard at the residency region")
	}
	for name, c := range map[string]struct {
		body any
		code string
	}{
		"resident where not at home": {TenantPatch{ID: "acme", Patch: json.RawMessage(`{"residency_region":"eu-west"}`), At: 3, Rules: RulesTrustBound}, CodeResidencyNotHome},
		"created resident elsewhere": {TenantUpsert{Tenant: Tenant{ID: "n", HomeRegion: "us-east", ResidencyRegion: "eu-west"}, At: 3, Rules: RulesTrustBound}, CodeResidencyNotHome},
		"bad policy":                 {TenantPatch{ID: "acme", Patch: json.RawMessage(`{"pii_while_away":"anywhere"}`), At: 3, Rules: RulesTrustBound}, CodeInvalidPIIWhileAway},
	} {
		typ := TenantPatchType
		if _, ok := c.body.(TenantUpsert); ok {
			typ = TenantUpsertType
		}
		if res := h.apply(typ, c.body); codeOf(res.Err) != c.code {
			t.Fatalf("%s: %+v, want %s", name, res, c.code)
		}
	}
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"pii_while_away":"keep_local"}`), At: 4, Rules: RulesTrustBound})
	if note := h.f.state.Audit[len(h.f.state.Audit)-1].Note; !strings.Contains(note, "residency exception: tenant acme (residency region us-east)") {
		t.Fatalf("audit note: %q", note)
	}
	if PIIGuardAt(h.f.state.Tenants["acme"], "eu-west") != nil {
		t.Fatal("a guard with keep_local")
	}
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"pii_while_away":"null_only"}`), At: 5, Rules: RulesTrustBound})
	if note := h.f.state.Audit[len(h.f.state.Audit)-1].Note; !strings.Contains(note, "withdrawn") || h.f.state.Tenants["acme"].PIIWhileAway != "" {
		t.Fatalf("withdrawal: %q %+v", note, h.f.state.Tenants["acme"])
	}
	// A switchover keeps the residency: acme is away.
	h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 6})
	w := h.f.state.Switchovers["acme"]
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: w.ID, From: PhaseFencing, To: PhaseCatchingUp, FencedLSN: "0/1", At: 7})
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: w.ID, From: PhaseCatchingUp, To: PhasePromoting, At: 8})
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: w.ID, From: PhasePromoting, To: PhaseCommitted, Slots: map[string]string{"us-east": "0/2"}, At: 9})
	acme = h.f.state.Tenants["acme"]
	if acme.HomeRegion != "eu-west" || acme.ResidencyRegion != "us-east" || !acme.Away() {
		t.Fatalf("acme after the switchover: %+v", acme)
	}
	if res := h.apply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"pii_while_away":"keep_local"}`), At: 10, Rules: RulesTrustBound}); codeOf(res.Err) != CodeTenantAway {
		t.Fatalf("keep_local while away: %+v", res)
	}
	// A write that leaves residency out keeps it; one naming the home
	// makes the temporary home the residency region.
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"labels":{"x":"y"}}`), At: 11, Rules: RulesTrustBound})
	if h.f.state.Tenants["acme"].ResidencyRegion != "us-east" {
		t.Fatal("a patch without residency_region changed it")
	}
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"residency_region":"eu-west"}`), At: 12, Rules: RulesTrustBound})
	if h.f.state.Tenants["acme"].Away() {
		t.Fatal("acme still away after its residency moved to its home")
	}
	// A tenant without tables moves its residency with its home.
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "bare", HomeRegion: "ap-south"}, At: 13, Rules: RulesTrustBound})
	h.mustApply(TenantPatchType, TenantPatch{ID: "bare", Patch: json.RawMessage(`{"home_region":"eu-west"}`), At: 14, Rules: RulesTrustBound})
	if b := h.f.state.Tenants["bare"]; b.ResidencyRegion != "eu-west" {
		t.Fatalf("bare after its move: %+v", b)
	}
	// Before the rules the fields are not stored.
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "old", HomeRegion: "us-east", PIIWhileAway: PIIWhileAwayKeepLocal}, At: 15})
	if o := h.f.state.Tenants["old"]; o.ResidencyRegion != "" || o.PIIWhileAway != "" || o.Residency() != "us-east" {
		t.Fatalf("old-rules tenant: %+v", o)
	}
}
