package fsm

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// switchoverRoundTrips applies each switchover command once (for
// TestCommandRoundTrip), on a tenant of its own that it deletes after.
func switchoverRoundTrips(t *testing.T, h *harness, check func(MessageType, any, func(*State, *ApplyResult))) {
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("sa-east"), At: 40})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "swt", HomeRegion: "us-east", Mirrors: []string{"sa-east"},
		Tables: []TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}, At: 41, Rules: RulesTrustBound})
	check(SwitchoverStartType, SwitchoverStart{Tenant: "swt", To: "sa-east", RequestedBy: "op1", At: 42}, func(s *State, res *ApplyResult) {
		w := s.Switchovers["swt"]
		if w == nil || w.ID != res.Index || w.Phase != PhaseFencing || w.From != "us-east" || w.To != "sa-east" || w.NewEpoch != 2 || w.TimeoutMS != DefaultSwitchoverTimeoutMS {
			t.Fatalf("switchover after start: %+v", w)
		}
	})
	id := h.index
	check(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "swt", ID: id, From: PhaseFencing, To: PhaseCatchingUp, FencedLSN: "0/16B3748", At: 43}, func(s *State, res *ApplyResult) {
		if w := s.Switchovers["swt"]; w.Phase != PhaseCatchingUp || w.FencedLSN != "0/16B3748" || len(w.Steps) != 2 || w.ModifyIndex != res.Index {
			t.Fatalf("switchover after advance: %+v", w)
		}
	})
	check(SwitchoverAbortType, SwitchoverAbort{Tenant: "swt", Reason: "test", RequestedBy: "op1", At: 44}, func(s *State, res *ApplyResult) {
		if w := s.Switchovers["swt"]; w.Phase != PhaseRollingBack || !strings.Contains(w.Error, "test") {
			t.Fatalf("switchover after abort: %+v", w)
		}
	})
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "swt", ID: id, From: PhaseRollingBack, To: PhaseAborted, At: 45})
	h.mustApply(TenantDeleteType, TenantDelete{ID: "swt", At: 46})
}

// switchoverFixture is a federation of three regions and tenant acme at
// home in us-east, mirrored to eu-west and ap-south.
func switchoverFixture(t *testing.T) *harness {
	h := newHarness(t)
	for _, r := range []string{"us-east", "eu-west", "ap-south", "sa-east"} {
		h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion(r), At: 1})
	}
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west", "ap-south"},
		Tables: []TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}, At: 2, Rules: RulesTrustBound})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "bare", HomeRegion: "us-east", Mirrors: []string{"eu-west"}}, At: 2, Rules: RulesTrustBound})
	return h
}

func TestSwitchoverStartRefusals(t *testing.T) {
	h := switchoverFixture(t)
	before := stateWithoutAudit(t, h.f)
	for _, c := range []struct {
		name string
		cmd  SwitchoverStart
		kind error
		code string
		says string
	}{
		{"unknown tenant", SwitchoverStart{Tenant: "nobody", To: "eu-west"}, ErrNotFound, "tenant_not_found", `"nobody" does not exist`},
		{"bad tenant id", SwitchoverStart{Tenant: "No Body", To: "eu-west"}, ErrInvalid, "invalid_tenant", "not a tenant id"},
		{"no target", SwitchoverStart{Tenant: "acme"}, ErrInvalid, "missing_to", "one of its mirrors"},
		{"bad region", SwitchoverStart{Tenant: "acme", To: "EU WEST"}, ErrInvalid, "invalid_region", "DNS label"},
		{"unknown region", SwitchoverStart{Tenant: "acme", To: "mars"}, ErrInvalid, "unknown_region", "ap-south, eu-west"},
		{"not a mirror", SwitchoverStart{Tenant: "acme", To: "sa-east"}, ErrFailedPrecondition, CodeNotAMirror, "does not mirror tenant acme"},
		{"the home", SwitchoverStart{Tenant: "acme", To: "us-east"}, ErrInvalid, CodeSwitchoverNoop, "already the home"},
		{"no tables", SwitchoverStart{Tenant: "bare", To: "eu-west"}, ErrFailedPrecondition, CodeNotReplicated, "PATCH /v1/tenants/bare"},
		{"timeout too short", SwitchoverStart{Tenant: "acme", To: "eu-west", TimeoutMS: 10}, ErrInvalid, "invalid_timeout", "between 1000"},
	} {
		res := h.apply(SwitchoverStartType, c.cmd)
		if res == nil || codeOf(res.Err) != c.code || !strings.Contains(res.Err.Error(), c.says) {
			t.Fatalf("%s: %+v, want %s saying %q", c.name, res, c.code, c.says)
		}
		if fe := res.Err.(*Error); fe.Kind != c.kind {
			t.Fatalf("%s: kind %v, want %v", c.name, fe.Kind, c.kind)
		}
		if got := stateWithoutAudit(t, h.f); got != before {
			t.Fatalf("%s: a refused start changed the state", c.name)
		}
	}
	h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 3})
	during := stateWithoutAudit(t, h.f)
	res := h.apply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "ap-south", At: 4})
	if codeOf(res.Err) != CodeSwitchoverInProgress || !strings.Contains(res.Err.Error(), "already switching over from us-east to eu-west") {
		t.Fatalf("a second switchover: %+v", res)
	}
	if stateWithoutAudit(t, h.f) != during {
		t.Fatal("a refused second switchover changed the state")
	}
}

func TestSwitchoverCommitsTheNewHomeAndEpochInOneEntry(t *testing.T) {
	h := switchoverFixture(t)
	start := h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", TimeoutMS: 5000, RequestedBy: "op", At: 10})
	id := start.Index
	adv := func(from, to string, mod func(*SwitchoverAdvance)) *ApplyResult {
		c := SwitchoverAdvance{Tenant: "acme", ID: id, From: from, To: to, At: 20}
		if mod != nil {
			mod(&c)
		}
		return h.apply(SwitchoverAdvanceType, c)
	}
	// The tenant's placement is held while the switchover is in flight,
	// under the rules that know switchovers; older rules replay as they
	// did.
	tables := []TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	held := stateWithoutAudit(t, h.f)
	for name, c := range map[string]struct {
		typ  MessageType
		body any
	}{
		"upsert": {TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: tables}, At: 11, Rules: RulesTrustBound}},
		"patch":  {TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"labels":{"a":"b"}}`), At: 11, Rules: RulesTrustBound}},
		"delete": {TenantDeleteType, TenantDelete{ID: "acme", At: 11}},
	} {
		res := h.apply(c.typ, c.body)
		if codeOf(res.Err) != CodeSwitchoverInProgress || !strings.Contains(res.Err.Error(), "switching over from us-east to eu-west (phase fencing)") {
			t.Fatalf("%s during a switchover: %+v", name, res)
		}
		if stateWithoutAudit(t, h.f) != held {
			t.Fatalf("a refused %s changed the state", name)
		}
	}
	// Refused advances: wrong id, wrong phase, a skipped phase, a bad LSN.
	for name, res := range map[string]*ApplyResult{
		"wrong id":     adv(PhaseFencing, PhaseCatchingUp, func(c *SwitchoverAdvance) { c.ID = 1; c.FencedLSN = "0/1" }),
		"wrong phase":  adv(PhaseCatchingUp, PhasePromoting, nil),
		"skip":         adv(PhaseFencing, PhaseCommitted, nil),
		"bad lsn":      adv(PhaseFencing, PhaseCatchingUp, func(c *SwitchoverAdvance) { c.FencedLSN = "0/xyz; drop" }),
		"missing lsn":  adv(PhaseFencing, PhaseCatchingUp, nil),
		"to unknown":   adv(PhaseFencing, "nowhere", nil),
		"done at once": adv(PhaseFencing, PhaseDone, nil),
	} {
		if res.Err == nil {
			t.Fatalf("advance %s applied", name)
		}
		if stateWithoutAudit(t, h.f) != held {
			t.Fatalf("a refused advance (%s) changed the state", name)
		}
	}
	pii := []PIIColumnType{{Table: "public.orders", Column: "email", Type: "text", TypMod: -1}}
	if res := adv(PhaseFencing, PhaseCatchingUp, func(c *SwitchoverAdvance) { c.FencedLSN = "0/16B3748"; c.PII = pii }); res.Err != nil {
		t.Fatal(res.Err)
	}
	// The same advance again (a late duplicate) changes nothing.
	again := stateWithoutAudit(t, h.f)
	if res := adv(PhaseFencing, PhaseCatchingUp, func(c *SwitchoverAdvance) { c.FencedLSN = "0/16B3750" }); codeOf(res.Err) != "switchover_changed" {
		t.Fatalf("a duplicate advance: %+v", res)
	}
	if stateWithoutAudit(t, h.f) != again {
		t.Fatal("a duplicate advance changed the state")
	}
	if res := adv(PhaseCatchingUp, PhasePromoting, nil); res.Err != nil {
		t.Fatal(res.Err)
	}
	// From the promotion on there is no way back.
	if res := h.apply(SwitchoverAbortType, SwitchoverAbort{Tenant: "acme", At: 21}); codeOf(res.Err) != CodeNotAbortable || !strings.Contains(res.Err.Error(), "only goes forward") {
		t.Fatalf("abort while promoting: %+v", res)
	}
	if res := adv(PhasePromoting, PhaseRollingBack, nil); res.Err == nil {
		t.Fatal("a promoting switchover rolled back")
	}
	// The commit needs a slot for every hand-off region.
	if res := adv(PhasePromoting, PhaseCommitted, func(c *SwitchoverAdvance) { c.Slots = map[string]string{"us-east": "0/2"} }); codeOf(res.Err) != "missing_slot" {
		t.Fatalf("a commit without ap-south's slot: %+v", res)
	}
	var before *Tenant
	h.f.Read(func(s *State) { before = s.Tenants["acme"] })
	res := adv(PhasePromoting, PhaseCommitted, func(c *SwitchoverAdvance) {
		c.Slots = map[string]string{"us-east": "0/2", "ap-south": "0/3"}
	})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	h.f.Read(func(s *State) {
		tn := s.Tenants["acme"]
		if tn.HomeRegion != "eu-west" || !slices.Equal(tn.Mirrors, []string{"ap-south", "us-east"}) || tn.Epoch != before.Epoch+1 || tn.ModifyIndex != res.Index {
			t.Fatalf("tenant after the commit: %+v", tn)
		}
		w := s.Switchovers["acme"]
		if w.Phase != PhaseCommitted || w.Slots["ap-south"] != "0/3" || w.ModifyIndex != res.Index || s.TableIndex(TableTenants) != res.Index {
			t.Fatalf("switchover after the commit: %+v", w)
		}
		a := s.Audit[len(s.Audit)-1]
		if a.Index != res.Index || !strings.Contains(a.Note, "fenced at LSN 0/16B3748") || !strings.Contains(a.Note, "home us-east -> eu-west") {
			t.Fatalf("the commit's audit entry: %+v", a)
		}
	})
	// Committed: the placement may change again, and so may a new
	// switchover start (below, after done; TestANewSwitchoverMayStartFromACommittedOne).
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"labels":{"a":"b"}}`), At: 23, Rules: RulesTrustBound})
	if res := adv(PhaseCommitted, PhaseDone, nil); res.Err != nil {
		t.Fatal(res.Err)
	}
	// Fail-back: a switchover back to the old home.
	back := h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "us-east", At: 30})
	h.f.Read(func(s *State) {
		w := s.Switchovers["acme"]
		if w.ID != back.Index || w.From != "eu-west" || !slices.Equal(w.Others, []string{"ap-south"}) || w.FromEpoch != before.Epoch+1 {
			t.Fatalf("fail-back: %+v", w)
		}
	})

	// Snapshots carry the switchover and replay gives the same state.
	snap := snapshotBytes(t, h.f)
	s, err := ReadSnapshot(bytes.NewReader(snap))
	if err != nil || s.Switchovers["acme"] == nil || s.Switchovers["acme"].ID != back.Index {
		t.Fatalf("restored switchover: %v", err)
	}
	other := newHarness(t)
	for _, l := range h.log {
		other.f.Apply(l)
	}
	if !bytes.Equal(snapshotBytes(t, other.f), snap) {
		t.Fatal("replaying the log gives another state")
	}
}

func TestSwitchoverRollsBackOnlyBeforeThePromotion(t *testing.T) {
	h := switchoverFixture(t)
	start := h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 10})
	var tenantBefore Tenant
	h.f.Read(func(s *State) { tenantBefore = *s.Tenants["acme"] })
	h.mustApply(SwitchoverAbortType, SwitchoverAbort{Tenant: "acme", Reason: "maintenance window over", RequestedBy: "op", At: 11})
	if res := h.apply(SwitchoverAbortType, SwitchoverAbort{Tenant: "acme", At: 12}); codeOf(res.Err) != CodeNotAbortable {
		t.Fatalf("a second abort: %+v", res)
	}
	// Rolling back still holds the tenant: the fence is not lifted yet.
	if res := h.apply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"labels":{"a":"b"}}`), Rules: RulesTrustBound}); codeOf(res.Err) != CodeSwitchoverInProgress {
		t.Fatalf("a patch while rolling back: %+v", res)
	}
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: start.Index, From: PhaseRollingBack, To: PhaseAborted, At: 13})
	h.f.Read(func(s *State) {
		w := s.Switchovers["acme"]
		if w.Outcome != PhaseAborted || w.EndedAt != 13 || !strings.Contains(w.Error, "maintenance window over") || w.Active() {
			t.Fatalf("aborted switchover: %+v", w)
		}
		if got := *s.Tenants["acme"]; got.HomeRegion != tenantBefore.HomeRegion || got.Epoch != tenantBefore.Epoch || got.ModifyIndex != tenantBefore.ModifyIndex {
			t.Fatalf("an aborted switchover changed the tenant: %+v", got)
		}
	})
	if res := h.apply(SwitchoverAbortType, SwitchoverAbort{Tenant: "acme", At: 14}); codeOf(res.Err) != CodeNoSwitchover {
		t.Fatalf("abort of an ended switchover: %+v", res)
	}
	// Older rules replay as before: the hold is not applied to them.
	h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 20})
	h.mustApply(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"labels":{"a":"b"}}`), Rules: RulesApprovalBound})
}

func TestSnapshotRefusesABadSwitchover(t *testing.T) {
	h := switchoverFixture(t)
	h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 10})
	good := snapshotBytes(t, h.f)
	if _, err := ReadSnapshot(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][2]string{
		"unknown phase": {`"phase":"fencing"`, `"phase":"sideways"`},
		"same regions":  {`"to":"eu-west"`, `"to":"us-east"`},
		"epoch gap":     {`"new_epoch":2`, `"new_epoch":5`},
	} {
		b := bytes.Replace(good, []byte(bad[0]), []byte(bad[1]), 1)
		if bytes.Equal(b, good) {
			t.Fatalf("%s: %s not in the snapshot", name, bad[0])
		}
		if _, err := ReadSnapshot(bytes.NewReader(b)); err == nil || !strings.Contains(err.Error(), "switchover") {
			t.Fatalf("%s: restored: %v", name, err)
		}
	}
}

// TestSwitchoverCarriesFormerHomes: a switchover records which of the
// other mirrors follow the home as former homes (their subscriber says
// so), so that they follow the next home as former homes too and keep the
// PII they hold; a mirror that is an ordinary one is not recorded.
func TestSwitchoverCarriesFormerHomes(t *testing.T) {
	h := switchoverFixture(t)
	h.f.mu.Lock()
	for _, m := range []string{"eu-west", "ap-south"} {
		spec, _ := json.Marshal(SubscriberSpec{Ensure: EnsurePresent, Kind: KindTenant, Tenant: "acme", Source: "us-east", Region: m, FormerHome: m == "ap-south"})
		h.f.state.Tasks[TenantSubscriberTaskID("acme", m)] = &Task{ID: TenantSubscriberTaskID("acme", m), Type: TaskTypeTenantSubscriber, Region: m, Spec: spec}
	}
	h.f.mu.Unlock()
	res := h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 10})
	if w := res.Value.(*Switchover); !slices.Equal(w.Others, []string{"ap-south"}) || !slices.Equal(w.FormerHomes, []string{"ap-south"}) {
		t.Fatalf("switchover: others %v, former homes %v", w.Others, w.FormerHomes)
	}
	good := snapshotBytes(t, h.f)
	bad := bytes.Replace(good, []byte(`"former_homes":["ap-south"]`), []byte(`"former_homes":["sa-east"]`), 1)
	if _, err := ReadSnapshot(bytes.NewReader(bad)); err == nil {
		t.Fatal("a snapshot whose former home is not one of the other mirrors was restored")
	}
}

// TestANewSwitchoverMayStartFromACommittedOne: a committed switchover whose
// hand-off subscribers do not stream yet (a region lost after the commit)
// does not keep the tenant from switching over again; the new one
// replaces it, and the old one's late advance changes nothing.
func TestANewSwitchoverMayStartFromACommittedOne(t *testing.T) {
	h := switchoverFixture(t)
	first := h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 10}).Index
	for _, c := range []SwitchoverAdvance{
		{From: PhaseFencing, To: PhaseCatchingUp, FencedLSN: "0/10"},
		{From: PhaseCatchingUp, To: PhasePromoting},
		{From: PhasePromoting, To: PhaseCommitted, Slots: map[string]string{"us-east": "0/20", "ap-south": "0/21"}},
	} {
		c.Tenant, c.ID, c.At = "acme", first, 11
		h.mustApply(SwitchoverAdvanceType, c)
	}
	next := h.mustApply(SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "ap-south", At: 12})
	h.f.Read(func(s *State) {
		w := s.Switchovers["acme"]
		if w.ID != next.Index || w.From != "eu-west" || w.FromEpoch != 2 || !slices.Equal(w.Others, []string{"us-east"}) {
			t.Fatalf("the next switchover: %+v", w)
		}
	})
	if res := h.apply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: first, From: PhaseCommitted, To: PhaseDone, At: 13}); codeOf(res.Err) != "switchover_changed" {
		t.Fatalf("the replaced switchover's late advance: %+v", res)
	}
}
