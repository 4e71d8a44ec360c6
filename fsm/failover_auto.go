package fsm

import (
	"fmt"
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
