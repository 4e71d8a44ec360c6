package fsm

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// failoverFixture: acme (async) and syn (sync) homed in us-east, mirrored
// to eu-west and ap-south; one agent per region, alive; each mirror's
// subscriber reported (lag, applied LSN). Two approvers; the default
// policy gates failover with 2 approvals.
type failoverFixture struct {
	*trustHarness
	gens map[string]uint64
}

func newFailoverFixture(t *testing.T) *failoverFixture {
	h := &failoverFixture{trustHarness: newTrustHarness(t), gens: map[string]uint64{}}
	for _, r := range []string{"us-east", "eu-west", "ap-south", "sa-east"} {
		h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion(r), At: h.tick()})
	}
	for _, a := range []struct{ node, region string }{{"a-us", "us-east"}, {"a-eu", "eu-west"}, {"a-ap", "ap-south"}} {
		ag := testAgent(a.node, a.region, AgentAlive)
		ag.Capabilities, ag.Capacity = []string{TaskTypeTenantSubscriber, TaskTypeTenantPublisher}, 50
		h.mustApply(AgentUpsertType, AgentUpsert{Agent: ag, At: h.tick()})
		h.ensureAgentMember(a.node, h.at)
	}
	tables := []TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"ap-south", "eu-west"}, Tables: tables}, At: h.tick(), Rules: RulesTrustBound})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "syn", HomeRegion: "us-east", Mirrors: []string{"ap-south", "eu-west"}, Tables: tables, SyncMode: SyncModeSync}, At: h.tick(), Rules: RulesTrustBound})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "auto", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: tables,
		Failover: &FailoverPolicy{Mode: FailoverAuto, RPOBudgetMS: 1000}}, At: h.tick(), Rules: RulesTrustBound})
	// eu-west: 200 ms behind, applied 0/3000; ap-south: 50 ms, 0/2000.
	h.report("acme", "eu-west", "a-eu", ReplStreaming, 0.2, "0/3000")
	h.report("acme", "ap-south", "a-ap", ReplStreaming, 0.05, "0/2000")
	h.report("syn", "eu-west", "a-eu", ReplStreaming, 0.2, "0/3000")
	h.report("syn", "ap-south", "a-ap", ReplStreaming, 0.05, "0/2000")
	h.report("auto", "eu-west", "a-eu", ReplStreaming, 0.5, "0/3000")
	pub := TenantPublisherTaskID("acme", "us-east")
	h.plan(pub, TaskTypeTenantPublisher, "us-east", "a-us")
	res, _ := json.Marshal(PublisherResult{State: ReplReady, PII: []PIIColumnType{{Table: "public.orders", Column: "email", Type: "text", TypMod: -1}}, At: h.at})
	h.mustApply(AgentReportType, AgentReport{Node: "a-us", At: h.tick(), Tasks: []TaskReport{{ID: pub, Generation: h.gens[pub], Status: TaskRunning, Result: res}}})
	for _, a := range []string{"alice", "bob"} {
		if r := h.registerMember(a, MemberApprover, "op"); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return h
}

func (h *failoverFixture) plan(id, typ, region, agent string) {
	if h.gens[id] == 0 {
		h.mustApply(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: id, Type: typ, Region: region, Spec: json.RawMessage(`{}`), Agent: agent}}, At: h.tick()})
		h.f.Read(func(s *State) { h.gens[id] = s.Tasks[id].Generation })
	}
}

func (h *failoverFixture) report(tenant, region, agent, state string, lag float64, lsn string) {
	id := TenantSubscriberTaskID(tenant, region)
	h.plan(id, TaskTypeTenantSubscriber, region, agent)
	res, _ := json.Marshal(SubscriberResult{State: state, LagSeconds: lag, AppliedLSN: lsn, At: h.at})
	h.mustApply(AgentReportType, AgentReport{Node: agent, At: h.tick(), Tasks: []TaskReport{{ID: id, Generation: h.gens[id], Status: TaskRunning, Result: res}}})
}

func (h *failoverFixture) homeDown() {
	ag := testAgent("a-us", "us-east", AgentFailed)
	ag.Capabilities, ag.Capacity = []string{TaskTypeTenantSubscriber, TaskTypeTenantPublisher}, 50
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: ag, At: h.tick()})
}

func TestFailoverRefusalsChangeNothing(t *testing.T) {
	h := newFailoverFixture(t)
	lag := int64(100)
	start := func(tenant, to string) FailoverStart {
		return FailoverStart{Targets: []FailoverTarget{{Tenant: tenant, To: to}}, RequestedBy: "op", At: h.tick()}
	}
	cases := []struct {
		name string
		cmd  func() FailoverStart
		code string
		says string
	}{
		{"home is up", func() FailoverStart { return start("acme", "eu-west") }, CodeHomeIsUp, "planned switchover"},
		{"unknown tenant", func() FailoverStart { return start("nobody", "eu-west") }, "tenant_not_found", "nobody"},
		{"unknown region", func() FailoverStart { c := start("acme", "mars"); c.Force = true; return c }, "unknown_region", "mars"},
		{"not a mirror", func() FailoverStart { c := start("acme", "sa-east"); c.Force = true; return c }, CodeNotAMirror, "does not mirror"},
		{"the home", func() FailoverStart { c := start("acme", "us-east"); c.Force = true; return c }, CodeSwitchoverNoop, "already the home"},
		{"lagging", func() FailoverStart { c := start("acme", "eu-west"); c.Force = true; c.MaxLagMS = &lag; return c }, CodeMirrorLagging, "200 ms"},
		{"sync behind", func() FailoverStart { c := start("syn", "ap-south"); c.Force = true; return c }, CodeNotMostAdvanced, "0/2000, behind region eu-west at LSN 0/3000"},
		{"no target named", func() FailoverStart { return FailoverStart{RequestedBy: "op", At: h.tick()} }, "missing_tenant", "name the tenant"},
		{"unknown region failover", func() FailoverStart { c := start("acme", ""); c.Region = "mars"; return c }, "region_not_found", "mars"},
		{"twice", func() FailoverStart {
			c := start("acme", "eu-west")
			c.Targets = append(c.Targets, c.Targets[0])
			return c
		}, "duplicate_tenant", "twice"},
	}
	before := stateWithoutAudit(t, h.f)
	for _, c := range cases {
		cmd := c.cmd()
		res := h.apply(FailoverStartType, cmd)
		if res == nil || codeOf(res.Err) != c.code || !strings.Contains(res.Err.Error(), c.says) {
			t.Fatalf("%s: %+v, want %s saying %q", c.name, res, c.code, c.says)
		}
		// The approval is refused at creation for the same reason.
		if _, err := h.approve("appr-"+strings.ReplaceAll(c.name, " ", "-"), ActionFailover, FailoverStartType, cmd); codeOf(err) != c.code {
			t.Fatalf("%s: approval creation gave %v, want %s", c.name, err, c.code)
		}
	}
	if after := stateWithoutAudit(t, h.f); after != before {
		t.Fatal("a refused failover changed the state")
	}
	// Without approval a valid failover is refused: it needs 2 votes.
	h.homeDown()
	if res := h.apply(FailoverStartType, start("acme", "eu-west")); codeOf(res.Err) != "approval_required" {
		t.Fatalf("unapproved failover: %+v", res)
	}
	// The leader's automatic one is refused for a manual tenant, and when
	// the target's drill did not pass (this region has no database).
	if res := h.apply(FailoverAutoType, FailoverAutoStart{Tenant: "acme", To: "eu-west", At: h.tick()}); codeOf(res.Err) != CodeNotAuto {
		t.Fatalf("auto failover of a manual tenant: %+v", res)
	}
	if res := h.apply(FailoverAutoType, FailoverAutoStart{Tenant: "auto", To: "eu-west", At: h.tick()}); codeOf(res.Err) != CodeDrillNotPassed || !strings.Contains(res.Err.Error(), "simulated") {
		t.Fatalf("auto failover without a drill: %+v", res)
	}
}

func TestApprovedFailoverPromotesCommitsAndRecordsHistory(t *testing.T) {
	h := newFailoverFixture(t)
	h.homeDown()
	cmd := FailoverStart{Targets: []FailoverTarget{{Tenant: "acme"}}, RequestedBy: "op", At: h.tick()}
	var plans []FailoverPlan
	h.f.Read(func(s *State) {
		var err error
		if plans, err = FailoverStartCheck(s, &cmd); err != nil {
			t.Fatal(err)
		}
	})
	// Best mirror: the lowest lag (ap-south, 50 ms).
	sum := FailoverSummary(plans, &cmd)
	for _, want := range []string{"tenant acme us-east -> ap-south", "last reported lag 50 ms", "up to 50 ms of writes since LSN 0/2000", "drill: region ap-south has no database"} {
		if !strings.Contains(sum, want) {
			t.Fatalf("summary %q lacks %q", sum, want)
		}
	}
	a, err := h.approve("appr-fo-1", ActionFailover, FailoverStartType, cmd, "alice")
	if err != nil || a.Status != ApprovalPending {
		t.Fatalf("after one vote: %+v %v", a, err)
	}
	at := h.tick()
	a = h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-fo-1", Auth: h.voteAuth("bob", "appr-fo-1", at), At: at, Rules: RulesTrustBound}).Value.(*Approval)
	if a.Status != ApprovalApplied {
		t.Fatalf("approved failover: %+v", a)
	}
	var w Switchover
	h.f.Read(func(s *State) { w = *s.Switchovers["acme"] })
	if w.Kind != FailoverKind || w.Phase != PhasePromoting || w.To != "ap-south" || w.From != "us-east" || w.NewEpoch != 2 ||
		w.Risk == nil || w.Risk.LagMS != 50 || w.Risk.AppliedLSN != "0/2000" || w.StartedAt != at || len(w.PII) != 1 || w.Mode != FailoverManual {
		t.Fatalf("failover record: %+v risk %+v", w, w.Risk)
	}
	if len(w.HandOff()) != 0 {
		t.Fatalf("a failover hands off to %v", w.HandOff())
	}
	// A second failover while it runs is refused; so is a switchover.
	h.homeDown()
	if res := h.apply(FailoverStartType, FailoverStart{Targets: []FailoverTarget{{Tenant: "acme"}}, Force: true, At: h.tick()}); codeOf(res.Err) != CodeSwitchoverInProgress {
		t.Fatalf("second failover: %+v", res)
	}
	if res := h.apply(SwitchoverAbortType, SwitchoverAbort{Tenant: "acme", At: h.tick()}); codeOf(res.Err) != CodeNotAbortable {
		t.Fatalf("abort of a failover: %+v", res)
	}
	// Commit: no hand-off slot needed; the applied LSN is recorded.
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: w.ID, From: PhasePromoting, To: PhaseCommitted, AppliedLSN: "0/2100", At: at + 2e9})
	h.f.Read(func(s *State) {
		tn := s.Tenants["acme"]
		if tn.HomeRegion != "ap-south" || tn.Epoch != 2 || strings.Join(tn.Mirrors, ",") != "eu-west,us-east" {
			t.Fatalf("tenant after the commit: %+v", tn)
		}
		if !strings.Contains(s.Audit[len(s.Audit)-1].Note, "failed over") {
			t.Fatalf("audit: %+v", s.Audit[len(s.Audit)-1])
		}
	})
	h.mustApply(SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: w.ID, From: PhaseCommitted, To: PhaseDone, At: at + 3e9})
	h.f.Read(func(s *State) {
		if len(s.FailoverHistory) != 1 {
			t.Fatalf("history: %+v", s.FailoverHistory)
		}
		r := s.FailoverHistory[0]
		if r.Tenant != "acme" || r.RTOMS != 2000 || r.RPOLagMS != 50 || r.AppliedLSN != "0/2100" || r.To != "ap-south" {
			t.Fatalf("history record: %+v", r)
		}
	})
	// The snapshot carries it and a replay of the log gives the same state.
	assertSnapshotRoundTrip(t, h.harness)
}

func TestApprovalOfAFailoverFailsWhenItsPreconditionsNoLongerHold(t *testing.T) {
	h := newFailoverFixture(t)
	h.homeDown()
	cmd := FailoverStart{Targets: []FailoverTarget{{Tenant: "acme", To: "eu-west"}}, RequestedBy: "op", At: h.tick()}
	if _, err := h.approve("appr-fo-2", ActionFailover, FailoverStartType, cmd, "alice"); err != nil {
		t.Fatal(err)
	}
	// The home's agent is back before the second vote.
	ag := testAgent("a-us", "us-east", AgentAlive)
	ag.Capabilities, ag.Capacity = []string{TaskTypeTenantSubscriber, TaskTypeTenantPublisher}, 50
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: ag, At: h.tick()})
	at := h.tick()
	a := h.mustApply(ApprovalVoteType, ApprovalVote{ID: "appr-fo-2", Auth: h.voteAuth("bob", "appr-fo-2", at), At: at, Rules: RulesTrustBound}).Value.(*Approval)
	if a.Status != ApprovalFailed || !strings.Contains(a.Result, "is not down") {
		t.Fatalf("approval: %s %q", a.Status, a.Result)
	}
	h.f.Read(func(s *State) {
		if s.Switchovers["acme"] != nil || s.Tenants["acme"].HomeRegion != "us-east" {
			t.Fatal("a failed approval started a failover")
		}
	})
}

func TestSyncTenantFailsOverToItsMostAdvancedMirror(t *testing.T) {
	h := newFailoverFixture(t)
	h.homeDown()
	h.f.Read(func(s *State) {
		plans, err := FailoverStartCheck(s, &FailoverStart{Targets: []FailoverTarget{{Tenant: "syn"}}})
		if err != nil || plans[0].To != "eu-west" || !plans[0].Risk.Sync || !strings.HasPrefix(plans[0].Risk.String(), "none: sync tenant") {
			t.Fatalf("sync plan: %+v %v", plans, err)
		}
		// A region failover plans every tenant homed there.
		plans, err = FailoverStartCheck(s, &FailoverStart{Region: "us-east", Targets: []FailoverTarget{{Tenant: "acme"}, {Tenant: "syn"}}})
		if err != nil || len(plans) != 2 || plans[0].To != "ap-south" || plans[1].To != "eu-west" {
			t.Fatalf("region plan: %+v %v", plans, err)
		}
	})
}

func TestSnapshotRefusesABadFailoverRecord(t *testing.T) {
	good := FailoverRecord{ID: 3, Tenant: "acme", From: "us-east", To: "eu-west", Mode: FailoverManual, RTOMS: 10}
	if err := validateFailoverRecord(&good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []FailoverRecord{
		{ID: 0, Tenant: "acme", From: "us-east", To: "eu-west", Mode: FailoverManual},
		{ID: 3, Tenant: "acme", From: "us-east", To: "us-east", Mode: FailoverManual},
		{ID: 3, Tenant: "acme", From: "us-east", To: "eu-west", Mode: "maybe"},
		{ID: 3, Tenant: "acme", From: "us-east", To: "eu-west", Mode: FailoverAuto, RTOMS: -1},
		{ID: 3, Tenant: "acme", From: "us-east", To: "eu-west", Mode: FailoverAuto, AppliedLSN: "zz"},
	} {
		if validateFailoverRecord(&bad) == nil {
			t.Fatalf("accepted %+v", bad)
		}
	}
}

// assertSnapshotRoundTrip: the snapshot restores (its failovers and
// history included) and replaying h's log gives the same state.
func assertSnapshotRoundTrip(t *testing.T, h *harness) {
	t.Helper()
	snap := snapshotBytes(t, h.f)
	s, err := ReadSnapshot(bytes.NewReader(snap))
	if err != nil || len(s.FailoverHistory) == 0 {
		t.Fatalf("restored: %v", err)
	}
	other := newHarness(t)
	for _, l := range h.log {
		other.f.Apply(l)
	}
	if !bytes.Equal(snapshotBytes(t, other.f), snap) {
		t.Fatal("replaying the log gives another state")
	}
}

// failoverRoundTrips: a forced failover and a refused automatic one;
// called from TestCommandRoundTrip under a policy that gates nothing.
func failoverRoundTrips(t *testing.T, h *harness, check func(MessageType, any, func(*State, *ApplyResult))) {
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("fo-a"), At: 60})
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("fo-b"), At: 60})
	ag := testAgent("fo-agent", "fo-b", AgentAlive)
	ag.Capabilities = []string{TaskTypeTenantSubscriber}
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: ag, At: 61})
	h.ensureAgentMember("fo-agent", 61)
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "fot", HomeRegion: "fo-a", Mirrors: []string{"fo-b"}, Tables: []TenantTable{{Name: "orders"}},
		Failover: &FailoverPolicy{Mode: FailoverAuto, RPOBudgetMS: 5000}}, At: 62, Rules: RulesTrustBound})
	id := TenantSubscriberTaskID("fot", "fo-b")
	h.mustApply(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: id, Type: TaskTypeTenantSubscriber, Region: "fo-b", Spec: json.RawMessage(`{}`), Agent: "fo-agent"}}, At: 63})
	var gen uint64
	h.f.Read(func(s *State) { gen = s.Tasks[id].Generation })
	res, _ := json.Marshal(SubscriberResult{State: ReplDown, LagSeconds: 1.5, AppliedLSN: "0/AB", At: 63})
	h.mustApply(AgentReportType, AgentReport{Node: "fo-agent", At: 64, Tasks: []TaskReport{{ID: id, Generation: gen, Status: TaskRunning, Result: res}}})
	check(FailoverAutoType, FailoverAutoStart{Tenant: "fot", To: "fo-b", DownForMS: 3000, At: 65}, nil)
	check(FailoverHoldType, FailoverHold{Tenant: "fot", Wait: AutoWaitOverBudget, Reason: "lag 1500 ms over 1000 ms", At: 65}, func(s *State, res *ApplyResult) {
		if h := s.FailoverHolds["fot"]; h == nil || h.Wait != AutoWaitOverBudget || h.Index != res.Index || !strings.Contains(s.Audit[len(s.Audit)-1].Note, "waits (over_rpo_budget)") {
			t.Fatalf("hold: %+v", h)
		}
	})
	check(FailoverStartType, FailoverStart{Targets: []FailoverTarget{{Tenant: "fot"}}, Force: true, RequestedBy: "op1", At: 66}, func(s *State, res *ApplyResult) {
		w := s.Switchovers["fot"]
		if w == nil || w.Kind != FailoverKind || w.Phase != PhasePromoting || w.To != "fo-b" || !w.Forced || w.Risk.LagMS != 1500 || w.Risk.AppliedLSN != "0/AB" {
			t.Fatalf("failover after start: %+v", w)
		}
	})
}

// The automatic policy's holds: recorded once per reason (an audit note
// each), cleared once the tenant no longer waits, refused when nothing
// changes; the snapshot carries them.
func TestFailoverHoldsAreRecordedOncePerReason(t *testing.T) {
	h := newFailoverFixture(t)
	var decisions []AutoDecision
	var ch []FailoverHold
	h.homeDown()
	h.f.Read(func(s *State) {
		decisions = AutoFailoverDecisions(s, h.at, DefaultFailoverDetectMS)
		ch = FailoverHoldChanges(s, decisions)
	})
	if len(decisions) != 1 || len(ch) != 1 || ch[0].Tenant != "auto" || ch[0].Wait != AutoWaitDetecting {
		t.Fatalf("decisions %+v, changes %+v", decisions, ch)
	}
	h.mustApply(FailoverHoldType, FailoverHold{Tenant: "auto", Wait: ch[0].Wait, Reason: ch[0].Reason, At: h.tick()})
	if res := h.apply(FailoverHoldType, FailoverHold{Tenant: "auto", Wait: AutoWaitDetecting, At: h.tick()}); codeOf(res.Err) != "hold_unchanged" {
		t.Fatalf("same hold twice: %+v", res)
	}
	if res := h.apply(FailoverHoldType, FailoverHold{Tenant: "auto", Wait: "bored", At: h.tick()}); codeOf(res.Err) != "invalid_wait" {
		t.Fatalf("unknown wait: %+v", res)
	}
	h.f.Read(func(s *State) {
		if ch := FailoverHoldChanges(s, decisions); len(ch) != 0 {
			t.Fatalf("recorded hold changes again: %+v", ch)
		}
		snap := snapshotBytes(t, h.f)
		r, err := ReadSnapshot(bytes.NewReader(snap))
		if err != nil || r.FailoverHolds["auto"] == nil || r.FailoverHolds["auto"].Wait != AutoWaitDetecting {
			t.Fatalf("restored holds: %+v %v", r, err)
		}
		// The home is back: the hold is cleared.
		ch := FailoverHoldChanges(s, []AutoDecision{{Tenant: "auto", Wait: AutoWaitHomeUp}})
		if len(ch) != 1 || ch[0].Wait != "" {
			t.Fatalf("clearing: %+v", ch)
		}
	})
	h.mustApply(FailoverHoldType, FailoverHold{Tenant: "auto", At: h.tick()})
	if res := h.apply(FailoverHoldType, FailoverHold{Tenant: "auto", At: h.tick()}); codeOf(res.Err) != "no_hold" {
		t.Fatalf("clearing twice: %+v", res)
	}
}
