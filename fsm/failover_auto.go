package fsm

import (
	"fmt"
	"slices"
	"time"
)

// The automatic failover policy (Tenant.Failover mode "auto"), decided by
// the leader, which holds a quorum of the servers: a leader cut off from
// the quorum loses its leadership and decides nothing, so a region is
// only ever declared down by a majority's view. AutoFailoverDecision is a
// pure function of the state (agent status, as the leader reconciles it
// from Serf, with the time it changed; the mirrors' reports; the drills),
// so every server answers GET /v1/tenants/{id}/failover with the same
// reason the leader acts on.

// DefaultFailoverDetectMS is how long the home region must be seen down
// (every agent failed in Serf) before an automatic failover starts.
const DefaultFailoverDetectMS = 2000

// Reasons an automatic failover waits (the blocked metric's reason label).
const (
	AutoWaitNotAuto    = "not_auto"
	AutoWaitHomeUp     = "home_up"
	AutoWaitDetecting  = "detecting"
	AutoWaitNoMirror   = "no_mirror_ready"
	AutoWaitOverBudget = "over_rpo_budget"
	AutoWaitDrill      = "drill_not_passed"
	AutoWaitInFlight   = "switchover_in_progress"
	AutoWaitRefused    = "refused"
)

// AutoDecision is what the automatic policy decides for one tenant.
type AutoDecision struct {
	Tenant string `json:"tenant"`
	// Start: fail over to To now. Otherwise Wait says why not (a reason
	// code) and Reason in words.
	Start     bool   `json:"start"`
	To        string `json:"to,omitempty"`
	Wait      string `json:"wait,omitempty"`
	Reason    string `json:"reason"`
	DownForMS int64  `json:"down_for_ms,omitempty"`
}

// RegionDownSince returns when region went down as the state says (the
// latest status change of its agents, all failed or left), or 0 while it
// is not down.
func (s *State) RegionDownSince(region string) int64 {
	if s.RegionHealth(region).Status != HealthDown {
		return 0
	}
	var since int64
	for _, a := range s.Agents {
		if a.Region == region && a.StatusSince > since {
			since = a.StatusSince
		}
	}
	if since == 0 {
		since = 1 // down, time unknown: counts as long ago
	}
	return since
}

// AutoFailoverDecision decides the automatic failover of tenant t at now
// (leader clock, unix ns) with the detection window detectMS.
func AutoFailoverDecision(s *State, t *Tenant, now, detectMS int64) AutoDecision {
	d := AutoDecision{Tenant: t.ID}
	wait := func(code, format string, a ...any) AutoDecision {
		d.Wait, d.Reason = code, fmt.Sprintf(format, a...)
		return d
	}
	if t.FailoverMode() != FailoverAuto {
		return wait(AutoWaitNotAuto, "tenant %s's failover policy is manual: a failover needs the failover approval", t.ID)
	}
	if w := s.Switchovers[t.ID]; w != nil && w.InFlight() {
		return wait(AutoWaitInFlight, "tenant %s is moving from %s to %s (%s, %s)", t.ID, w.From, w.To, w.Kind, w.Phase)
	}
	since := s.RegionDownSince(t.HomeRegion)
	if since == 0 {
		h := s.RegionHealth(t.HomeRegion)
		return wait(AutoWaitHomeUp, "home region %s is %s (%d of %d agents alive)", t.HomeRegion, h.Status, h.AgentsAlive, h.AgentsTotal)
	}
	d.DownForMS = max(0, (now-since)/int64(time.Millisecond))
	if d.DownForMS < detectMS {
		return wait(AutoWaitDetecting, "home region %s down for %d ms, less than the detection window of %d ms", t.HomeRegion, d.DownForMS, detectMS)
	}
	best, ok := s.BestFailoverMirror(t)
	if !ok {
		return wait(AutoWaitNoMirror, "home region %s is down, but no mirror of tenant %s (%s) is up with every table copied", t.HomeRegion, t.ID, mirrorList(t))
	}
	if best.LagMS > t.Failover.RPOBudgetMS {
		return wait(AutoWaitOverBudget, "home region %s is down, but the best mirror %s last reported a lag of %d ms, over the RPO budget of %d ms: fail over with approval (`atomfed tenant failover %s`)",
			t.HomeRegion, best.Region, best.LagMS, t.Failover.RPOBudgetMS, t.ID)
	}
	if ok, drill := s.DrillPrecondition(best.Region, now); !ok {
		return wait(AutoWaitDrill, "home region %s is down, but %s: fail over with approval (`atomfed tenant failover %s`)", t.HomeRegion, drill, t.ID)
	}
	_, err := FailoverStartCheck(s, &FailoverStart{Targets: []FailoverTarget{{Tenant: t.ID, To: best.Region}}, MaxLagMS: &t.Failover.RPOBudgetMS, At: now})
	if err != nil {
		return wait(AutoWaitRefused, "%v", err)
	}
	d.Start, d.To = true, best.Region
	d.Reason = fmt.Sprintf("home region %s down for %d ms; %s last reported a lag of %d ms (budget %d ms)", t.HomeRegion, d.DownForMS, best.Region, best.LagMS, t.Failover.RPOBudgetMS)
	return d
}

// AutoFailoverDecisions decides for every tenant with an automatic
// policy, ordered by tenant.
func AutoFailoverDecisions(s *State, now, detectMS int64) []AutoDecision {
	var out []AutoDecision
	for _, t := range s.SortedTenants() {
		if t.FailoverMode() == FailoverAuto {
			out = append(out, AutoFailoverDecision(s, t, now, detectMS))
		}
	}
	return out
}

// FailoverHold records that a tenant's automatic failover waits, and why
// (the leader issues it once per change of reason, and with an empty Wait
// once the tenant no longer waits): the audit chain says it once, not on
// every look.
type FailoverHold struct {
	Tenant string `json:"tenant"`
	// Wait is the reason code (AutoWait*), "" to clear the hold.
	Wait   string `json:"wait,omitempty"`
	Reason string `json:"reason,omitempty"`
	At     int64  `json:"at"`
}

// FailoverHoldState is a tenant's recorded hold.
type FailoverHoldState struct {
	Tenant string `json:"tenant"`
	Wait   string `json:"wait"`
	Reason string `json:"reason"`
	Since  int64  `json:"since"`
	Index  uint64 `json:"index"`
}

var autoWaitCodes = map[string]bool{AutoWaitDetecting: true, AutoWaitNoMirror: true, AutoWaitOverBudget: true,
	AutoWaitDrill: true, AutoWaitInFlight: true, AutoWaitRefused: true}

func applyFailoverHold(s *State, e *Entry) (any, error) {
	cmd := body[FailoverHold](e)
	cur := s.FailoverHolds[cmd.Tenant]
	switch {
	case !ValidTenantID(cmd.Tenant):
		return nil, invalidf("invalid_tenant", "tenant %q is not a tenant id", cmd.Tenant)
	case cmd.Wait != "" && !autoWaitCodes[cmd.Wait]:
		return nil, invalidf("invalid_wait", "wait %q is not a reason an automatic failover waits for", cmd.Wait)
	case len(cmd.Reason) > 1024:
		return nil, invalidf("invalid_reason", "reason is longer than 1024 bytes")
	case cmd.Wait == "" && cur == nil:
		return nil, preconditionf("no_hold", "tenant %s's automatic failover does not wait", cmd.Tenant)
	case cmd.Wait != "" && cur != nil && cur.Wait == cmd.Wait:
		return nil, preconditionf("hold_unchanged", "tenant %s's automatic failover already waits for %s", cmd.Tenant, cmd.Wait)
	case cmd.Wait != "" && s.Tenants[cmd.Tenant] == nil:
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist", cmd.Tenant)
	}
	holds := make(map[string]*FailoverHoldState, len(s.FailoverHolds)+1)
	for k, v := range s.FailoverHolds {
		holds[k] = v
	}
	var out *FailoverHoldState
	if cmd.Wait == "" {
		delete(holds, cmd.Tenant)
		s.auditNote = fmt.Sprintf("automatic failover of tenant %s no longer waits", cmd.Tenant)
	} else {
		out = &FailoverHoldState{Tenant: cmd.Tenant, Wait: cmd.Wait, Reason: cmd.Reason, Since: cmd.At, Index: e.Index}
		holds[cmd.Tenant] = out
		s.auditNote = fmt.Sprintf("automatic failover of tenant %s waits (%s): %s", cmd.Tenant, cmd.Wait, cmd.Reason)
		if len(s.auditNote) > 1024 {
			s.auditNote = s.auditNote[:1021] + "..."
		}
	}
	s.FailoverHolds = holds
	s.touch(TableFailovers, e.Index)
	return out, nil
}

// FailoverHoldChanges returns the holds the leader records now from the
// decisions: a new or changed reason of a tenant whose home is down, and
// the clearing of a hold whose tenant no longer waits.
func FailoverHoldChanges(s *State, decisions []AutoDecision) []FailoverHold {
	var out []FailoverHold
	seen := map[string]bool{}
	for _, d := range decisions {
		seen[d.Tenant] = true
		cur := s.FailoverHolds[d.Tenant]
		waiting := !d.Start && autoWaitCodes[d.Wait]
		switch {
		case waiting && (cur == nil || cur.Wait != d.Wait):
			out = append(out, FailoverHold{Tenant: d.Tenant, Wait: d.Wait, Reason: d.Reason})
		case !waiting && cur != nil:
			out = append(out, FailoverHold{Tenant: d.Tenant})
		}
	}
	for _, t := range sortedKeys(s.FailoverHolds) {
		if !seen[t] {
			out = append(out, FailoverHold{Tenant: t})
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// readFailoverHoldSnapshot restores the holds of a snapshot.
func readFailoverHoldSnapshot(doc *snapshotDoc, s *State) error {
	for _, h := range doc.FailoverHolds {
		if h == nil || !ValidTenantID(h.Tenant) || !autoWaitCodes[h.Wait] || s.FailoverHolds[h.Tenant] != nil {
			return fmt.Errorf("snapshot: bad or duplicate failover hold %+v", h)
		}
		s.FailoverHolds[h.Tenant] = h
	}
	return nil
}

// SortedFailoverHolds returns the holds ordered by tenant.
func (s *State) SortedFailoverHolds() []*FailoverHoldState {
	var out []*FailoverHoldState
	for _, k := range sortedKeys(s.FailoverHolds) {
		out = append(out, s.FailoverHolds[k])
	}
	return out
}
