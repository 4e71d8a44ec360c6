package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// switchoverTick is how often the leader looks at running switchovers even
// when nothing changed: a deadline passes without a state change.
const switchoverTick = 500 * time.Millisecond

// SwitchoverAdvances returns the phase changes the running switchovers are
// ready for, given their steps' reports in s and the leader's clock now
// (unix ns): the fence reported its LSN (catching_up), every mirror caught
// up (promoting), the promotion (which also lifts a fence an earlier
// switchover left at the target) and the detaches done (committed), the
// hand-off subscribers streaming (done), the fence lifted (aborted), or
// the deadline of fencing and catching up passed (rolling_back). It is a
// pure function of the state; the FSM applies each advance only if the
// switchover is still in the phase it names.
func SwitchoverAdvances(s *fsm.State, now int64) []fsm.SwitchoverAdvance {
	var out []fsm.SwitchoverAdvance
	for _, w := range s.SortedSwitchovers() {
		if !w.Active() {
			continue
		}
		if a, ok := switchoverAdvance(s, w, now); ok {
			a.Tenant, a.ID, a.From = w.Tenant, w.ID, w.Phase
			out = append(out, a)
		}
	}
	return out
}

func switchoverAdvance(s *fsm.State, w *fsm.Switchover, now int64) (fsm.SwitchoverAdvance, bool) {
	t := s.Tenants[w.Tenant]
	if t == nil || t.CreateIndex != w.TenantCreated {
		switch w.Phase {
		case fsm.PhaseCommitted:
			return fsm.SwitchoverAdvance{To: fsm.PhaseDone, Detail: "the tenant was deleted after the commit"}, true
		case fsm.PhaseFencing, fsm.PhaseCatchingUp:
			return fsm.SwitchoverAdvance{To: fsm.PhaseRollingBack, Detail: "the tenant is gone"}, true
		case fsm.PhaseRollingBack:
			return fsm.SwitchoverAdvance{To: fsm.PhaseAborted, Detail: "the tenant is gone"}, true
		}
		return fsm.SwitchoverAdvance{}, false
	}
	switch w.Phase {
	case fsm.PhaseFencing:
		var res fsm.FenceResult
		if stepDone(s, w, fsm.TaskTypeTenantFence, w.From, fsm.StepFenced, &res) && res.FencedLSN != "" {
			return fsm.SwitchoverAdvance{To: fsm.PhaseCatchingUp, FencedLSN: res.FencedLSN, PII: res.PII,
				Detail: fmt.Sprintf("%s fenced at LSN %s; waiting for %s to apply up to it", w.From, res.FencedLSN, strings.Join(catchUpRegions(w), ", "))}, true
		}
	case fsm.PhaseCatchingUp:
		var behind []string
		for _, m := range catchUpRegions(w) {
			var res fsm.CatchUpResult
			if !stepDone(s, w, fsm.TaskTypeTenantCatchUp, m, fsm.StepCaughtUp, &res) {
				behind = append(behind, m+" ("+stepProgress(s, w, fsm.TaskTypeTenantCatchUp, m)+")")
			}
		}
		if len(behind) == 0 {
			return fsm.SwitchoverAdvance{To: fsm.PhasePromoting, Detail: fmt.Sprintf("every mirror applied up to %s; promoting %s", w.FencedLSN, w.To)}, true
		}
		if now > w.Deadline() {
			return fsm.SwitchoverAdvance{To: fsm.PhaseRollingBack, Detail: fmt.Sprintf("timed out after %d ms waiting for %s to catch up to %s: %s",
				w.TimeoutMS, strings.Join(catchUpRegions(w), ", "), w.FencedLSN, strings.Join(behind, "; "))}, true
		}
		return fsm.SwitchoverAdvance{}, false
	case fsm.PhasePromoting:
		var res fsm.PromoteResult
		if !stepDone(s, w, fsm.TaskTypeTenantPromote, w.To, fsm.StepPromoted, &res) {
			return fsm.SwitchoverAdvance{}, false
		}
		for _, m := range w.Others {
			var d fsm.DetachResult
			if !stepDone(s, w, fsm.TaskTypeTenantDetach, m, fsm.StepDetached, &d) {
				return fsm.SwitchoverAdvance{}, false
			}
		}
		for _, r := range w.HandOff() {
			if res.Slots[r] == "" {
				return fsm.SwitchoverAdvance{}, false
			}
		}
		if w.Kind == fsm.FailoverKind {
			return fsm.SwitchoverAdvance{To: fsm.PhaseCommitted, AppliedLSN: res.AppliedLSN,
				Detail: fmt.Sprintf("%s promoted (it had applied %s's WAL up to %s); %s is the home from epoch %d", w.To, w.From, orDash(res.AppliedLSN), w.To, w.NewEpoch)}, true
		}
		return fsm.SwitchoverAdvance{To: fsm.PhaseCommitted, Slots: res.Slots,
			Detail: fmt.Sprintf("%s promoted; hand-off slots for %s; %s is the home from epoch %d", w.To, strings.Join(w.HandOff(), ", "), w.To, w.NewEpoch)}, true
	case fsm.PhaseCommitted:
		if w.Kind == fsm.FailoverKind {
			return failoverDone(s, t, w)
		}
		for _, m := range t.Mirrors {
			if m != w.From && !slices.Contains(w.Others, m) {
				continue // a mirror added since: not part of the hand-off
			}
			if !subscriberStreaming(s, t, m) {
				return fsm.SwitchoverAdvance{}, false
			}
		}
		return fsm.SwitchoverAdvance{To: fsm.PhaseDone, Detail: fmt.Sprintf("%s mirrors %s; every mirror streams from the new home", w.From, w.To)}, true
	case fsm.PhaseRollingBack:
		var res fsm.FenceResult
		if stepDone(s, w, fsm.TaskTypeTenantFence, w.From, fsm.StepUnfenced, &res) {
			return fsm.SwitchoverAdvance{To: fsm.PhaseAborted, Detail: "the fence at " + w.From + " is lifted; " + w.From + " takes the tenant's writes again"}, true
		}
		return fsm.SwitchoverAdvance{}, false
	}
	if w.Phase == fsm.PhaseFencing && now > w.Deadline() {
		return fsm.SwitchoverAdvance{To: fsm.PhaseRollingBack, Detail: fmt.Sprintf("timed out after %d ms fencing %s (%s)",
			w.TimeoutMS, w.From, stepProgress(s, w, fsm.TaskTypeTenantFence, w.From))}, true
	}
	return fsm.SwitchoverAdvance{}, false
}

// catchUpRegions are the mirrors that must apply everything up to the
// fence: the target and the others.
func catchUpRegions(w *fsm.Switchover) []string { return append([]string{w.To}, w.Others...) }

// stepTask returns the task of one step of switchover w, if it is this
// switchover's (a task of an earlier attempt, or of the other ensure of
// the fence, is not).
func stepTask(s *fsm.State, w *fsm.Switchover, typ, region string) *fsm.Task {
	t := s.Tasks[fsm.SwitchoverTaskID(typ, w.Tenant, region)]
	if t == nil {
		return nil
	}
	var spec struct {
		Switchover uint64 `json:"switchover"`
		Ensure     string `json:"ensure"`
	}
	if json.Unmarshal(t.Spec, &spec) != nil || spec.Switchover != w.ID {
		return nil
	}
	if typ == fsm.TaskTypeTenantFence && spec.Ensure != fenceEnsure(w) {
		return nil
	}
	return t
}

// fenceEnsure is what the fence step of w does in w's phase: fence the
// old home while fencing, lift that fence while rolling back.
func fenceEnsure(w *fsm.Switchover) string {
	if w.Phase == fsm.PhaseRollingBack {
		return fsm.EnsureAbsent
	}
	return fsm.EnsurePresent
}

// stepDone reports whether the step succeeded with the state want, and
// decodes its result into res.
func stepDone(s *fsm.State, w *fsm.Switchover, typ, region, want string, res any) bool {
	t := stepTask(s, w, typ, region)
	if t == nil || t.Status != fsm.TaskSucceeded || len(t.Result) == 0 || json.Unmarshal(t.Result, res) != nil {
		return false
	}
	var st struct {
		State string `json:"state"`
	}
	_ = json.Unmarshal(t.Result, &st)
	return st.State == want
}

// stepProgress describes where a step is, for messages.
func stepProgress(s *fsm.State, w *fsm.Switchover, typ, region string) string {
	t := stepTask(s, w, typ, region)
	switch {
	case t == nil:
		return "not planned yet"
	case t.Agent == "":
		return "no agent of " + region + " runs " + typ + " tasks"
	case t.Error != "":
		return t.Status + ": " + t.Error
	}
	var cu fsm.CatchUpResult
	if typ == fsm.TaskTypeTenantCatchUp && json.Unmarshal(t.Result, &cu) == nil && cu.State != "" {
		return fmt.Sprintf("%s, applied %s, %d bytes behind", cu.State, orDash(cu.Applied), cu.BytesBehind)
	}
	return t.Status
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// subscriberStreaming reports whether mirror m's subscriber of tenant t
// follows the tenant's current home and streams.
func subscriberStreaming(s *fsm.State, t *fsm.Tenant, m string) bool {
	task := s.Tasks[fsm.TenantSubscriberTaskID(t.ID, m)]
	if task == nil || task.Agent == "" || len(task.Result) == 0 {
		return false
	}
	var spec fsm.SubscriberSpec
	var res fsm.SubscriberResult
	if json.Unmarshal(task.Spec, &spec) != nil || spec.Source != t.HomeRegion || json.Unmarshal(task.Result, &res) != nil {
		return false
	}
	return res.State == fsm.ReplStreaming && task.Status == fsm.TaskRunning
}

// switchoverRoutine is the leader routine that moves switchovers through
// their phases as their steps report (SwitchoverAdvances). A new leader
// continues from the FSM: every step and phase is there.
func (s *Server) switchoverRoutine(ctx context.Context) error {
	tick := time.NewTicker(switchoverTick)
	defer tick.Stop()
	for {
		watch := s.fsm.WatchCh()
		var advances []fsm.SwitchoverAdvance
		s.fsm.Read(func(st *fsm.State) { advances = SwitchoverAdvances(st, time.Now().UnixNano()) })
		applied := len(advances) > 0
		for _, a := range advances {
			a.At = time.Now().UnixNano()
			res, err := s.Apply(ctx, fsm.SwitchoverAdvanceType, a)
			switch {
			case err != nil:
				s.logger.Warn("switchover: advance not applied", "tenant", a.Tenant, "to", a.To, "error", err)
				applied = false
			case res.Err != nil:
				s.logger.Warn("switchover: advance refused", "tenant", a.Tenant, "to", a.To, "reason", res.Err)
				applied = false
			default:
				s.logger.Info("switchover: phase", "tenant", a.Tenant, "from", a.From, "to", a.To, "index", res.Index, "detail", a.Detail)
			}
		}
		if applied {
			continue // look again at once: the next phase may be ready
		}
		// Refused or failed: wait for the state to move or the next tick
		// (which also brings the deadlines of fencing and catching up).
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-tick.C:
		}
	}
}
