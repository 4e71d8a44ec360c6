package fsm

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// An unplanned failover moves a tenant's home onto one of its mirrors when
// the home region is presumed lost: no fence (the old home cannot be
// reached), no catch-up (it has nothing more to send). The record is a
// Switchover of kind FailoverKind that starts at promoting: the target is
// promoted (with the PII column types its old home's publisher last
// reported), the other mirrors detach, then the commit makes the target
// the home with the next epoch; the old home and every former home among
// the other mirrors follow it with former_home + resync (their subscriber
// fences, quarantines and reconciles once their agent is back), the other
// mirrors re-sync from the new home as ordinary mirrors (purge and copy:
// they may be ahead of or behind the new home).
//
// What may be lost is the tenant's transactions the old home committed
// after the target's applied position (its subscription's replication
// origin): the start records the target's last report of it (and its
// lag), the commit the exact position the promotion read before it
// detached. A sync tenant loses none when the target is the mirror with
// the highest applied position: a sync commit is acknowledged only once a
// mirror has it, and a mirror applies the home's commits in commit order,
// so the mirror with the highest applied position has every commit any
// mirror has, hence every acknowledged one (FailoverStartCheck refuses
// another target).
//
// A failover needs the "failover" approval (ActionFailover) unless the
// leader's automatic policy starts it (FailoverAutoStart, leader-only).

// Codes of failover refusals.
const (
	CodeHomeIsUp        = "home_is_up"
	CodeNoMirror        = "no_mirror"
	CodeTargetDown      = "target_down"
	CodeNotMostAdvanced = "not_most_advanced"
	CodeMirrorNotReady  = "mirror_not_ready"
	CodeMirrorLagging   = "mirror_lagging"
	CodeNotAuto         = "not_auto"
	CodeDrillNotPassed  = "drill_not_passed"
)

// MaxFailoverTenants bounds the tenants of one FailoverStart (a region
// failover).
const MaxFailoverTenants = 200

// MaxFailoverHistory bounds the finished failovers the state keeps.
const MaxFailoverHistory = 100

// TableFailovers is the table of the finished failovers' history.
const TableFailovers = "failovers"

// FailoverTarget is one tenant a FailoverStart fails over, and where to
// ("" picks the best mirror: BestFailoverMirror).
type FailoverTarget struct {
	Tenant string `json:"tenant"`
	To     string `json:"to,omitempty"`
}

// FailoverStart fails one tenant, or every tenant of a region (Region
// set), over to a mirror (an operator's request, applied once approved).
type FailoverStart struct {
	Targets []FailoverTarget `json:"targets"`
	// Region: a region failover; every target's home must be it.
	Region string `json:"region,omitempty"`
	// Force fails over although the home region looks up (a drill).
	Force bool `json:"force,omitempty"`
	// MaxLagMS refuses a target whose last reported lag is larger.
	MaxLagMS    *int64 `json:"max_lag_ms,omitempty"`
	Reason      string `json:"reason,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

// FailoverAutoStart is the leader's automatic failover of a tenant whose policy
// is "auto", once it saw the home region down for the detection window
// and the target within the policy (leader-only).
type FailoverAutoStart struct {
	Tenant string `json:"tenant"`
	To     string `json:"to"`
	// DownSinceMS is how long the leader saw the home region down.
	DownForMS int64  `json:"down_for_ms"`
	At        int64  `json:"at"`
	Detail    string `json:"detail,omitempty"`
}

// FailoverStarted is what a FailoverStart or FailoverAutoStart returns: the
// switchover record of each tenant.
type FailoverStarted struct {
	Failovers []*Switchover `json:"failovers"`
}

// FailoverRisk is the data at risk of a failover as its target last
// reported it when the failover started.
type FailoverRisk struct {
	// LagMS is the target's last reported lag (ms); ReportedAt when it
	// reported it (agent clock, unix ns; 0: never).
	LagMS      int64 `json:"lag_ms"`
	ReportedAt int64 `json:"reported_at,omitempty"`
	// AppliedLSN is the old home's position the target had applied then
	// ("" when it did not report one).
	AppliedLSN string `json:"applied_lsn,omitempty"`
	// Sync: a sync tenant onto its most advanced mirror (no acknowledged
	// commit at risk).
	Sync bool `json:"sync,omitempty"`
	// Drill is the target region's restore drill precondition.
	Drill string `json:"drill"`
	// DrillOK: the target region's last drill passed within its policy
	// window (a simulated region, without a database, counts as not ok).
	DrillOK bool `json:"drill_ok"`
}

// String says the data at risk for people.
func (r *FailoverRisk) String() string {
	if r == nil {
		return "unknown"
	}
	if r.Sync {
		return "none: sync tenant, onto its most advanced mirror (applied up to " + orUnknownLSN(r.AppliedLSN) + ")"
	}
	if r.ReportedAt == 0 {
		return "unknown: the mirror never reported its lag"
	}
	return fmt.Sprintf("up to %d ms of writes since LSN %s", r.LagMS, orUnknownLSN(r.AppliedLSN))
}

// FailoverRecord is one finished failover in the history (P7 evidence).
type FailoverRecord struct {
	ID     uint64 `json:"id"`
	Tenant string `json:"tenant"`
	From   string `json:"from"`
	To     string `json:"to"`
	Mode   string `json:"mode"`
	Forced bool   `json:"forced,omitempty"`
	// StartedAt when it started, CommittedAt when the new home took the
	// tenant (leader clock, unix ns); RTOMS the time between.
	StartedAt   int64 `json:"started_at"`
	CommittedAt int64 `json:"committed_at"`
	EndedAt     int64 `json:"ended_at"`
	RTOMS       int64 `json:"rto_ms"`
	// RPOLagMS is the target's last reported lag at the start; AppliedLSN
	// what it had applied when promoted.
	RPOLagMS   int64  `json:"rpo_lag_ms"`
	AppliedLSN string `json:"applied_lsn,omitempty"`
	Sync       bool   `json:"sync,omitempty"`
	Index      uint64 `json:"index"`
}

// MirrorReport is what a tenant's mirror last reported, for a failover.
type MirrorReport struct {
	Region     string
	Reported   bool
	State      string
	LagMS      int64
	ReportedAt int64
	AppliedLSN string
	applied    uint64
}

// MirrorReportOf reads mirror m's last subscriber report of tenant t.
func (s *State) MirrorReportOf(t *Tenant, m string) MirrorReport {
	r := MirrorReport{Region: m}
	task := s.Tasks[TenantSubscriberTaskID(t.ID, m)]
	var res SubscriberResult
	if task == nil || len(task.Result) == 0 || json.Unmarshal(task.Result, &res) != nil {
		return r
	}
	r.Reported, r.State, r.LagMS, r.ReportedAt, r.AppliedLSN = true, res.State, int64(res.LagSeconds*1000), res.At, res.AppliedLSN
	r.applied, _ = ParseLSN(res.AppliedLSN)
	return r
}

// ParseLSN reads "16/B374D848" as a number.
func ParseLSN(s string) (uint64, bool) {
	if !validLSN(s) {
		return 0, false
	}
	hi, lo, _ := strings.Cut(s, "/")
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	return h<<32 | l, true
}

// failoverCandidates are the mirrors of t a failover may go to: their
// region is not down and their subscriber reported with every table
// copied (streaming, or down since the home went), best first: for a sync
// tenant the highest applied position, otherwise the lowest lag, then the
// highest applied position, then the name.
func (s *State) failoverCandidates(t *Tenant) []MirrorReport {
	var out []MirrorReport
	for _, m := range t.Mirrors {
		r := s.MirrorReportOf(t, m)
		if !r.Reported || (r.State != ReplStreaming && r.State != ReplDown) || s.RegionHealth(m).Status == HealthDown {
			continue
		}
		out = append(out, r)
	}
	sync := t.SyncMode == SyncModeSync
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if sync && a.applied != b.applied {
			return a.applied > b.applied
		}
		if a.LagMS != b.LagMS {
			return a.LagMS < b.LagMS
		}
		if a.applied != b.applied {
			return a.applied > b.applied
		}
		return a.Region < b.Region
	})
	return out
}

// BestFailoverMirror returns the mirror a failover of t would pick.
func (s *State) BestFailoverMirror(t *Tenant) (MirrorReport, bool) {
	c := s.failoverCandidates(t)
	if len(c) == 0 {
		return MirrorReport{}, false
	}
	return c[0], true
}

// DrillPrecondition says whether region's last restore drill passed within
// its policy window (issue 18: the failover precondition), and how it
// reads for people.
func (s *State) DrillPrecondition(region string, now int64) (bool, string) {
	h := s.BackupHealthOf(region, now)
	switch {
	case s.Databases[region] == nil:
		return false, "region " + region + " has no database reported (simulated): no restore drill can pass there"
	case h.LastPassedDrill == nil:
		return false, "region " + region + " has no passed restore drill"
	case h.DrillStale:
		return false, fmt.Sprintf("region %s's last passed restore drill (%s) is older than its policy window", region, time.Unix(0, h.LastPassedDrill.At).UTC().Format(time.RFC3339))
	}
	return true, fmt.Sprintf("region %s's last restore drill passed at %s, within its policy window", region, time.Unix(0, h.LastPassedDrill.At).UTC().Format(time.RFC3339))
}

// FailoverPlan is one tenant's failover as FailoverStartCheck planned it.
type FailoverPlan struct {
	Tenant *Tenant
	To     string
	Risk   FailoverRisk
}

// FailoverStartCheck checks a failover request against s and plans each
// tenant's target: the API runs it before asking for approval, the
// approval at creation, the FSM again at apply (so an approval whose
// preconditions no longer hold fails with the reason). now is the
// request's time (the drill window).
func FailoverStartCheck(s *State, cmd *FailoverStart) ([]FailoverPlan, error) {
	switch {
	case len(cmd.Targets) == 0:
		return nil, invalidf("missing_tenant", "name the tenant to fail over")
	case len(cmd.Targets) > MaxFailoverTenants:
		return nil, invalidf("too_many_tenants", "a failover names at most %d tenants, got %d", MaxFailoverTenants, len(cmd.Targets))
	case len(cmd.Reason) > 512:
		return nil, invalidf("invalid_reason", "reason is longer than 512 bytes")
	case cmd.MaxLagMS != nil && (*cmd.MaxLagMS < 0 || *cmd.MaxLagMS > MaxRPOBudgetMS):
		return nil, invalidf("invalid_max_lag", "max_lag_ms %d must be between 0 and %d", *cmd.MaxLagMS, MaxRPOBudgetMS)
	}
	if cmd.Region != "" {
		if !ValidRegionName(cmd.Region) {
			return nil, invalidf("invalid_region", "region %q must be a region name (a DNS label)", cmd.Region)
		}
		if s.Regions[cmd.Region] == nil {
			return nil, notFoundf("region_not_found", "region %q is not registered", cmd.Region)
		}
	}
	seen := map[string]bool{}
	for _, tg := range cmd.Targets {
		if seen[tg.Tenant] {
			return nil, invalidf("duplicate_tenant", "tenant %s is named twice", tg.Tenant)
		}
		seen[tg.Tenant] = true
	}
	var plans []FailoverPlan
	for _, tg := range cmd.Targets {
		p, err := failoverTargetCheck(s, cmd, tg)
		if err != nil {
			return nil, err
		}
		plans = append(plans, p)
	}
	return plans, nil
}

func failoverTargetCheck(s *State, cmd *FailoverStart, tg FailoverTarget) (FailoverPlan, error) {
	t := s.Tenants[tg.Tenant]
	switch {
	case !ValidTenantID(tg.Tenant):
		return FailoverPlan{}, invalidf("invalid_tenant", "tenant %q is not a tenant id", tg.Tenant)
	case t == nil:
		return FailoverPlan{}, notFoundf("tenant_not_found", "tenant %q does not exist", tg.Tenant)
	case cmd.Region != "" && t.HomeRegion != cmd.Region:
		return FailoverPlan{}, preconditionf("tenant_changed", "tenant %s is homed in %s now, not %s", t.ID, t.HomeRegion, cmd.Region)
	case tg.To != "" && !ValidRegionName(tg.To):
		return FailoverPlan{}, invalidf("invalid_region", "to %q must be a region name (a DNS label)", tg.To)
	case tg.To != "" && s.Regions[tg.To] == nil:
		return FailoverPlan{}, invalidf("unknown_region", "region %q is not registered: fail tenant %s over to one of its mirrors (%s)", tg.To, t.ID, mirrorList(t))
	case tg.To == t.HomeRegion:
		return FailoverPlan{}, invalidf(CodeSwitchoverNoop, "region %s is already the home of tenant %s: nothing to fail over", tg.To, t.ID)
	case tg.To != "" && !slices.Contains(t.Mirrors, tg.To):
		return FailoverPlan{}, preconditionf(CodeNotAMirror, "region %s does not mirror tenant %s (its mirrors: %s): a failover moves the home onto one of its mirrors", tg.To, t.ID, mirrorList(t))
	case len(t.Tables) == 0:
		return FailoverPlan{}, preconditionf(CodeNotReplicated, "tenant %s has no tables, so nothing of it is replicated: change its home_region with PATCH /v1/tenants/%s instead", t.ID, t.ID)
	case len(t.Mirrors) == 0:
		return FailoverPlan{}, preconditionf(CodeNoMirror, "tenant %s has no mirror to fail over to", t.ID)
	}
	if w := s.Switchovers[t.ID]; w != nil && w.InFlight() {
		return FailoverPlan{}, preconditionf(CodeSwitchoverInProgress, "tenant %s is already moving from %s to %s (%s, phase %s, started at index %d): wait for it to end (`atomfed tenant switchover-status %s`)%s",
			t.ID, w.From, w.To, w.Kind, w.Phase, w.ID, t.ID, abortHint(w))
	}
	if h := s.RegionHealth(t.HomeRegion); h.Status != HealthDown && !cmd.Force {
		return FailoverPlan{}, preconditionf(CodeHomeIsUp, "tenant %s's home region %s is not down (%s, %d of %d agents alive): move the tenant without loss with a planned switchover (`atomfed tenant switchover %s --to <mirror>`), or give force (--force) to fail over anyway, e.g. for a failover drill",
			t.ID, t.HomeRegion, h.Status, h.AgentsAlive, h.AgentsTotal, t.ID)
	}
	cands := s.failoverCandidates(t)
	var best *MirrorReport
	if len(cands) > 0 {
		best = &cands[0]
	}
	var target MirrorReport
	if tg.To == "" {
		if best == nil {
			return FailoverPlan{}, preconditionf(CodeMirrorNotReady, "no mirror of tenant %s (%s) can take it: none is up with every table copied (see GET /v1/tenants/%s/replication)", t.ID, mirrorList(t), t.ID)
		}
		target = *best
	} else {
		target = s.MirrorReportOf(t, tg.To)
		switch {
		case s.RegionHealth(tg.To).Status == HealthDown:
			return FailoverPlan{}, preconditionf(CodeTargetDown, "region %s is down too (no agent alive): fail tenant %s over to another mirror", tg.To, t.ID)
		case !target.Reported:
			return FailoverPlan{}, preconditionf(CodeMirrorNotReady, "region %s never reported its subscription of tenant %s: it may not hold the tenant's rows", tg.To, t.ID)
		case target.State != ReplStreaming && target.State != ReplDown:
			return FailoverPlan{}, preconditionf(CodeMirrorNotReady, "region %s's subscription of tenant %s is %s, not streaming: it may not hold every row (see GET /v1/tenants/%s/replication)", tg.To, t.ID, target.State, t.ID)
		}
	}
	if cmd.MaxLagMS != nil && target.LagMS > *cmd.MaxLagMS {
		return FailoverPlan{}, preconditionf(CodeMirrorLagging, "region %s's last reported lag for tenant %s is %d ms, over max_lag_ms %d: pick a mirror closer behind or give a larger max_lag_ms", target.Region, t.ID, target.LagMS, *cmd.MaxLagMS)
	}
	sync := t.SyncMode == SyncModeSync
	if sync && best != nil && target.applied < best.applied {
		return FailoverPlan{}, preconditionf(CodeNotMostAdvanced, "tenant %s is a sync tenant: region %s applied its home up to LSN %s, behind region %s at LSN %s, so commits acknowledged to the application would be lost; fail over to %s (or leave out to)",
			t.ID, target.Region, orUnknownLSN(target.AppliedLSN), best.Region, orUnknownLSN(best.AppliedLSN), best.Region)
	}
	ok, drill := s.DrillPrecondition(target.Region, cmd.At)
	return FailoverPlan{Tenant: t, To: target.Region, Risk: FailoverRisk{LagMS: target.LagMS, ReportedAt: target.ReportedAt, AppliedLSN: target.AppliedLSN,
		Sync: sync, Drill: drill, DrillOK: ok}}, nil
}

// FailoverSummary is what an approval of cmd shows: per tenant, the
// target, its last reported lag and when, the data at risk and the drill
// precondition.
func FailoverSummary(plans []FailoverPlan, cmd *FailoverStart) string {
	var b strings.Builder
	if cmd.Region != "" {
		fmt.Fprintf(&b, "fail over every tenant homed in %s (%d)", cmd.Region, len(plans))
	} else {
		b.WriteString("fail over")
	}
	if cmd.Force {
		b.WriteString(" [forced: the home is not down]")
	}
	for i, p := range plans {
		if i > 0 || cmd.Region != "" {
			b.WriteString(";")
		}
		reported := "never"
		if p.Risk.ReportedAt != 0 {
			reported = time.Unix(0, p.Risk.ReportedAt).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(&b, " tenant %s %s -> %s: last reported lag %d ms at %s; data at risk: %s; drill: %s",
			p.Tenant.ID, p.Tenant.HomeRegion, p.To, p.Risk.LagMS, reported, p.Risk.String(), p.Risk.Drill)
	}
	out := b.String()
	if len(out) > maxApprovalSummary {
		out = out[:maxApprovalSummary-3] + "..."
	}
	return out
}

func applyFailoverStart(s *State, e *Entry) (any, error) {
	cmd := body[FailoverStart](e)
	plans, err := FailoverStartCheck(s, cmd)
	if err != nil {
		return nil, err
	}
	if err := requireApproval(s, e, ActionFailover); err != nil {
		return nil, err
	}
	// Approved: the failover starts with the vote that approved it.
	at := cmd.At
	if e.approval != nil && len(e.approval.Votes) > 0 {
		at = max(at, e.approval.Votes[len(e.approval.Votes)-1].At)
	}
	out := &FailoverStarted{}
	for _, p := range plans {
		out.Failovers = append(out.Failovers, startFailover(s, e, p, FailoverManual, cmd.Force, at, cmd.RequestedBy, cmd.Reason))
	}
	return out, nil
}

func applyFailoverAuto(s *State, e *Entry) (any, error) {
	cmd := body[FailoverAutoStart](e)
	t := s.Tenants[cmd.Tenant]
	switch {
	case t == nil:
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist", cmd.Tenant)
	case t.FailoverMode() != FailoverAuto:
		return nil, preconditionf(CodeNotAuto, "tenant %s's failover policy is %s, not auto", t.ID, t.FailoverMode())
	case cmd.To == "":
		return nil, invalidf("missing_to", "an automatic failover names its target")
	case len(cmd.Detail) > 1024:
		return nil, invalidf("invalid_detail", "detail is longer than 1024 bytes")
	}
	budget := t.Failover.RPOBudgetMS
	start := &FailoverStart{Targets: []FailoverTarget{{Tenant: t.ID, To: cmd.To}}, MaxLagMS: &budget, At: cmd.At}
	plans, err := FailoverStartCheck(s, start)
	if err != nil {
		return nil, err
	}
	if !plans[0].Risk.DrillOK {
		return nil, preconditionf(CodeDrillNotPassed, "no automatic failover of tenant %s onto %s: %s", t.ID, cmd.To, plans[0].Risk.Drill)
	}
	w := startFailover(s, e, plans[0], FailoverAuto, false, cmd.At, "leader (automatic policy)",
		fmt.Sprintf("home %s down for %d ms", t.HomeRegion, cmd.DownForMS))
	return &FailoverStarted{Failovers: []*Switchover{w}}, nil
}

// startFailover records tenant p.Tenant's failover, at promoting.
func startFailover(s *State, e *Entry, p FailoverPlan, mode string, forced bool, at int64, by, reason string) *Switchover {
	t := p.Tenant
	var others, former []string
	for _, m := range t.Mirrors {
		if m == p.To {
			continue
		}
		others = append(others, m)
		if isFormerHomeSubscriber(s.Tasks[TenantSubscriberTaskID(t.ID, m)]) {
			former = append(former, m)
		}
	}
	risk := p.Risk
	detail := fmt.Sprintf("failover (%s%s): %s presumed lost, not fenced; promoting %s; data at risk: %s; drill: %s", mode, forcedNote(forced), t.HomeRegion, p.To, risk.String(), risk.Drill)
	if reason != "" {
		detail += "; reason: " + reason
	}
	if len(detail) > 1024 {
		detail = detail[:1021] + "..."
	}
	w := &Switchover{
		ID: e.Index, Tenant: t.ID, Kind: FailoverKind, From: t.HomeRegion, To: p.To, Others: others, FormerHomes: former,
		TenantCreated: t.CreateIndex, FromEpoch: t.Epoch, NewEpoch: t.Epoch + 1, Phase: PhasePromoting,
		PII:         lastReportedPII(s, t, p.To),
		Steps:       []SwitchoverStep{{Phase: PhasePromoting, At: at, Index: e.Index, Detail: detail}},
		RequestedBy: by, TimeoutMS: DefaultSwitchoverTimeoutMS, StartedAt: at, UpdatedAt: at, ModifyIndex: e.Index,
		Mode: mode, Forced: forced, Risk: &risk,
	}
	s.Switchovers[t.ID] = w
	s.touch(TableSwitchovers, e.Index)
	note := fmt.Sprintf("failover of tenant %s from %s to %s started (%s%s, epoch %d -> %d); data at risk: %s", t.ID, w.From, w.To, mode, forcedNote(forced), w.FromEpoch, w.NewEpoch, risk.String())
	if s.auditNote != "" {
		note = s.auditNote + "; " + note
	}
	s.auditNote = note
	return w
}

// lastReportedPII are the PII column types of the tenant's home as last
// reported: by the target mirror, which reads them at the home with its
// lag (SubscriberResult.SourcePII; its report outlives the home's agent),
// else by the home's publisher (PublisherResult.PII; cleared once the
// task moves off a failed agent). The promotion adds the PII columns the
// mirror lacks with them, since the lost home cannot be read.
func lastReportedPII(s *State, t *Tenant, to string) []PIIColumnType {
	var sub SubscriberResult
	if task := s.Tasks[TenantSubscriberTaskID(t.ID, to)]; task != nil && len(task.Result) > 0 && json.Unmarshal(task.Result, &sub) == nil && len(sub.SourcePII) > 0 {
		return sub.SourcePII
	}
	var pub PublisherResult
	if task := s.Tasks[TenantPublisherTaskID(t.ID, t.HomeRegion)]; task != nil && len(task.Result) > 0 && json.Unmarshal(task.Result, &pub) == nil {
		return pub.PII
	}
	return nil
}

// recordFailover adds an ended failover to the bounded history.
func recordFailover(s *State, e *Entry, w *Switchover) {
	r := &FailoverRecord{ID: w.ID, Tenant: w.Tenant, From: w.From, To: w.To, Mode: w.Mode, Forced: w.Forced,
		StartedAt: w.StartedAt, EndedAt: w.EndedAt, AppliedLSN: w.AppliedLSN, Index: e.Index}
	for _, st := range w.Steps {
		if st.Phase == PhaseCommitted {
			r.CommittedAt = st.At
		}
	}
	if r.CommittedAt > r.StartedAt {
		r.RTOMS = (r.CommittedAt - r.StartedAt) / 1e6
	}
	if w.Risk != nil {
		r.RPOLagMS, r.Sync = w.Risk.LagMS, w.Risk.Sync
		if w.Risk.Sync {
			r.RPOLagMS = 0
		}
	}
	h := append(slices.Clone(s.FailoverHistory), r)
	if len(h) > MaxFailoverHistory {
		h = h[len(h)-MaxFailoverHistory:]
	}
	s.FailoverHistory = h
	s.touch(TableFailovers, e.Index)
}

func forcedNote(forced bool) string {
	if forced {
		return ", forced"
	}
	return ""
}

func orUnknownLSN(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func validateFailoverRecord(r *FailoverRecord) error {
	switch {
	case r == nil:
		return fmt.Errorf("snapshot holds a null failover record")
	case r.ID == 0 || !ValidTenantID(r.Tenant) || !ValidRegionName(r.From) || !ValidRegionName(r.To) || r.From == r.To:
		return fmt.Errorf("failover record of %q: bad id, tenant or regions", r.Tenant)
	case r.Mode != FailoverManual && r.Mode != FailoverAuto:
		return fmt.Errorf("failover record of %s: unknown mode %q", r.Tenant, r.Mode)
	case r.RTOMS < 0 || r.RPOLagMS < 0 || (r.AppliedLSN != "" && !validLSN(r.AppliedLSN)):
		return fmt.Errorf("failover record of %s: bad RTO, RPO or LSN", r.Tenant)
	}
	return nil
}

// readFailoverSnapshot restores the failover history of a snapshot.
func readFailoverSnapshot(doc *snapshotDoc, s *State) error {
	if len(doc.FailoverHistory) > MaxFailoverHistory {
		return fmt.Errorf("snapshot holds %d failover records, more than %d", len(doc.FailoverHistory), MaxFailoverHistory)
	}
	for _, r := range doc.FailoverHistory {
		if err := validateFailoverRecord(r); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
	}
	s.FailoverHistory = doc.FailoverHistory
	return nil
}
