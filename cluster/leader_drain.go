package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// drainTick is how often the leader looks at running drains even when
// nothing changed.
const drainTick = time.Second

// DrainMaxLagMS is the largest last reported lag of a mirror a drain moves
// a tenant onto, the switchover API's default max_lag_ms: a mirror further
// behind would hold the tenant's writes fenced while it catches up.
const DrainMaxLagMS = 10000

// DrainAdvances returns the next step of every running region drain, at
// most one each: record how the current tenant's switchover ended (moved
// once it committed, failed when it aborted), or, with none running, start
// the next pending tenant's switchover onto its best mirror (BestMirror),
// or record why it cannot move or that it left the region. A tenant whose
// placement is held by another switchover is waited for. It is a pure
// function of the state; the FSM applies each advance only while the
// drain and the tenant are where it names.
func DrainAdvances(s *fsm.State) []fsm.RegionDrainAdvance {
	var out []fsm.RegionDrainAdvance
	for _, d := range s.RunningDrains() {
		if a, ok := drainAdvance(s, d); ok {
			a.Region, a.ID = d.Region, d.ID
			out = append(out, a)
		}
	}
	return out
}

func drainAdvance(s *fsm.State, d *fsm.Drain) (fsm.RegionDrainAdvance, bool) {
	if d.Current != "" {
		for _, dt := range d.Tenants {
			if dt.Tenant == d.Current {
				return currentAdvance(s, d, dt)
			}
		}
		return fsm.RegionDrainAdvance{}, false
	}
	for _, dt := range d.Tenants {
		if dt.State != fsm.DrainTenantPending {
			continue
		}
		a := fsm.RegionDrainAdvance{Tenant: dt.Tenant}
		t := s.Tenants[dt.Tenant]
		switch {
		case t == nil:
			a.Action, a.Reason = fsm.DrainActGone, "deleted"
		case t.HomeRegion != d.Region:
			a.Action, a.Reason = fsm.DrainActGone, "no longer homed in "+d.Region+" (home "+t.HomeRegion+")"
		case s.SwitchoverInFlight(t.ID) != nil:
			return fsm.RegionDrainAdvance{}, false // another switchover holds it: wait
		default:
			to, why := BestMirror(s, t)
			if to == "" {
				a.Action, a.Reason = fsm.DrainActFailed, why
			} else {
				a.Action, a.To = fsm.DrainActStart, to
			}
		}
		return a, true
	}
	return fsm.RegionDrainAdvance{}, false
}

// currentAdvance is how the current tenant's switchover ended, if it did.
func currentAdvance(s *fsm.State, d *fsm.Drain, dt fsm.DrainTenant) (fsm.RegionDrainAdvance, bool) {
	a := fsm.RegionDrainAdvance{Tenant: dt.Tenant}
	t, w := s.Tenants[dt.Tenant], s.Switchovers[dt.Tenant]
	switch {
	case w != nil && w.ID == dt.Switchover && (w.Phase == fsm.PhaseCommitted || w.Phase == fsm.PhaseDone):
		a.Action, a.Reason = fsm.DrainActMoved, "home "+w.To+" since index "+committedIndex(w)
	case w != nil && w.ID == dt.Switchover && w.Phase == fsm.PhaseAborted:
		a.Action, a.Reason = fsm.DrainActFailed, "switchover to "+w.To+" rolled back: "+w.Error
	case w != nil && w.ID == dt.Switchover:
		return a, false // still running
	case t == nil:
		a.Action, a.Reason = fsm.DrainActGone, "deleted during its switchover"
	case t.HomeRegion != d.Region:
		a.Action, a.Reason = fsm.DrainActMoved, "home "+t.HomeRegion
	default:
		a.Action, a.Reason = fsm.DrainActFailed, "its switchover record was replaced"
	}
	return a, true
}

func committedIndex(w *fsm.Switchover) string {
	for _, st := range w.Steps {
		if st.Phase == fsm.PhaseCommitted {
			return fmt.Sprint(st.Index)
		}
	}
	return "?"
}

// BestMirror returns the mirror a drain switches t onto: of its mirrors
// that are not in maintenance, whose region is not down and whose
// subscriber streams from the home (or stopped a moment ago with its
// tables copied, as the switchover's own check accepts) with a reported
// lag within DrainMaxLagMS, the one with the lowest lag (then by name).
// With none, it returns "" and why, naming each mirror's reason.
func BestMirror(s *fsm.State, t *fsm.Tenant) (string, string) {
	if len(t.Mirrors) == 0 {
		return "", fsm.NoMirrorReason
	}
	type cand struct {
		region string
		lag    float64
	}
	var ok []cand
	var why []string
	for _, m := range t.Mirrors {
		res, reason := mirrorReady(s, t, m)
		if reason != "" {
			why = append(why, m+": "+reason)
			continue
		}
		ok = append(ok, cand{m, res.LagSeconds})
	}
	if len(ok) == 0 {
		return "", "cannot move: no mirror is ready (" + strings.Join(why, "; ") + ")"
	}
	sort.Slice(ok, func(i, j int) bool {
		if ok[i].lag != ok[j].lag {
			return ok[i].lag < ok[j].lag
		}
		return ok[i].region < ok[j].region
	})
	return ok[0].region, ""
}

// mirrorReady returns mirror m's last report of tenant t, or why a drain
// may not move t there.
func mirrorReady(s *fsm.State, t *fsm.Tenant, m string) (fsm.SubscriberResult, string) {
	var res fsm.SubscriberResult
	if s.InMaintenance(m) {
		return res, "in maintenance"
	}
	if h := s.RegionHealth(m); h.Status == fsm.HealthDown {
		return res, "region is down (" + h.Reason + ")"
	}
	task := s.Tasks[fsm.TenantSubscriberTaskID(t.ID, m)]
	var spec fsm.SubscriberSpec
	if task == nil || task.Agent == "" || len(task.Result) == 0 || json.Unmarshal(task.Result, &res) != nil ||
		json.Unmarshal(task.Spec, &spec) != nil || spec.Source != t.HomeRegion {
		return res, "no report of its subscription yet"
	}
	if res.State != fsm.ReplStreaming && res.State != fsm.ReplDown {
		return res, "subscription is " + res.State + ", not streaming"
	}
	if lag := int64(res.LagSeconds * 1000); lag > DrainMaxLagMS {
		return res, fmt.Sprintf("last reported lag %d ms, over the drain's budget of %d ms", lag, DrainMaxLagMS)
	}
	return res, ""
}

// drainRoutine is the leader routine that moves region drains on
// (DrainAdvances); the switchovers it starts are moved on by the
// switchover routine. A new leader continues from the FSM.
func (s *Server) drainRoutine(ctx context.Context) error {
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	for {
		watch := s.fsm.WatchCh()
		var advances []fsm.RegionDrainAdvance
		s.fsm.Read(func(st *fsm.State) { advances = DrainAdvances(st) })
		applied := len(advances) > 0
		for _, a := range advances {
			a.At = time.Now().UnixNano()
			res, err := s.Apply(ctx, fsm.RegionDrainAdvanceType, a)
			switch {
			case err != nil:
				s.logger.Warn("drain: advance not applied", "region", a.Region, "tenant", a.Tenant, "action", a.Action, "error", err)
				applied = false
			case res.Err != nil:
				s.logger.Warn("drain: advance refused", "region", a.Region, "tenant", a.Tenant, "action", a.Action, "reason", res.Err)
				applied = false
			default:
				s.logger.Info("drain: step", "region", a.Region, "tenant", a.Tenant, "action", a.Action, "to", a.To, "reason", a.Reason, "index", res.Index)
			}
		}
		if applied {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-tick.C:
		}
	}
}
