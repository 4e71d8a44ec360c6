package cluster

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// Scheduling bounds, documented in docs/operations.md: a failed agent's tasks
// are placed on a peer as soon as the leader commits the failure that Serf
// detected, and the peer starts them when its blocking query returns.
const (
	schedulerDebounce = 20 * time.Millisecond
	schedulerResync   = 5 * time.Second
	probeInterval     = 5 * time.Second
	probeTimeout      = 2 * time.Second
)

// desiredTasks derives the tasks the federation should be running from its
// state: one probe of each region's endpoint, run from inside the region,
// the replication tasks (scheduler_replication.go), the steps of
// switchovers (scheduler_switchover.go) and one metrics task per region
// (scheduler_metrics.go). Later task types (backups) are added here.
func desiredTasks(s *fsm.State) map[string]fsm.TaskSpec {
	out := map[string]fsm.TaskSpec{}
	for _, r := range s.SortedRegions() {
		spec, _ := json.Marshal(fsm.ProbeSpec{Target: healthURL(r.URL), IntervalMS: int(probeInterval / time.Millisecond), TimeoutMS: int(probeTimeout / time.Millisecond)})
		id := fsm.ProbeTaskID(r.Name)
		out[id] = fsm.TaskSpec{ID: id, Type: fsm.TaskTypeProbe, Region: r.Name, Spec: spec}
	}
	desiredReplicationTasks(s, out)
	desiredSwitchoverTasks(s, out)
	desiredMetricsTasks(s, out)
	desiredBackupTasks(s, out)
	desiredDrillTasks(s, out)
	desiredRebuildTasks(s, out)
	return out
}

func healthURL(base string) string {
	if len(base) > 0 && base[len(base)-1] == '/' {
		base = base[:len(base)-1]
	}
	return base + "/health"
}

// ComputePlan compares the desired tasks with the state and returns the plan
// that closes the gap, or nil when there is none. It is a pure function of
// the state: creations (placed at once where possible), spec changes
// (delete and re-create), deletions, and moves of tasks whose agent is no
// longer alive to the least loaded alive peer in the same region.
func ComputePlan(s *fsm.State) *fsm.TaskPlan {
	desired := desiredTasks(s)
	plan := &fsm.TaskPlan{}
	load := map[string]int{}
	for _, t := range s.Tasks {
		if t.Agent != "" {
			load[t.Agent]++
		}
	}
	for _, t := range s.SortedTasks() {
		d, want := desired[t.ID]
		if !want || d.Type != t.Type || d.Region != t.Region || !jsonEqual(d.Spec, t.Spec) {
			plan.Delete = append(plan.Delete, t.ID)
			if t.Agent != "" {
				load[t.Agent]--
			}
		}
	}
	deleted := map[string]bool{}
	for _, id := range plan.Delete {
		deleted[id] = true
	}
	ids := make([]string, 0, len(desired))
	for id := range desired {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if s.Tasks[id] != nil && !deleted[id] {
			continue
		}
		d := desired[id]
		d.Agent = pickAgent(s, d.Type, d.Region, load)
		if d.Agent != "" {
			load[d.Agent]++
		}
		plan.Create = append(plan.Create, d)
	}
	for _, t := range s.SortedTasks() {
		if deleted[t.ID] || placementOK(s, t) {
			continue
		}
		if t.Agent != "" {
			load[t.Agent]--
		}
		agent := pickAgent(s, t.Type, t.Region, load)
		if agent == "" && t.Agent == "" {
			continue // still nowhere to put it
		}
		if agent != "" {
			load[agent]++
		}
		plan.Assign = append(plan.Assign, fsm.Assignment{Task: t.ID, Agent: agent, Generation: t.Generation})
	}
	if len(plan.Create)+len(plan.Assign)+len(plan.Delete) == 0 {
		return nil
	}
	return plan
}

// placementOK reports whether a task sits on an alive agent that can run it.
func placementOK(s *fsm.State, t *fsm.Task) bool {
	if t.Agent == "" {
		return false
	}
	a := s.Agents[t.Agent]
	return a != nil && a.Status == fsm.AgentAlive && a.Region == t.Region && a.HasCapability(t.Type)
}

// pickAgent returns the least loaded alive agent of region that runs typ and
// has room, ties broken by name, or "" when there is none.
func pickAgent(s *fsm.State, typ, region string, load map[string]int) string {
	best, bestLoad := "", 0
	for _, a := range s.SortedAgents() {
		if a.Region != region || a.Status != fsm.AgentAlive || !a.HasCapability(typ) {
			continue
		}
		l := load[a.Node]
		if a.Capacity > 0 && l >= a.Capacity {
			continue
		}
		if best == "" || l < bestLoad {
			best, bestLoad = a.Node, l
		}
	}
	return best
}

func jsonEqual(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// schedulerRoutine is the leader routine that keeps the task assignments in
// line with the desired state: it recomputes a plan whenever the state
// changes (debounced) and at least every schedulerResync.
func (s *Server) schedulerRoutine(ctx context.Context) error {
	resync := time.NewTicker(schedulerResync)
	defer resync.Stop()
	for {
		watch := s.fsm.WatchCh()
		var plan *fsm.TaskPlan
		var refence bool
		s.fsm.Read(func(st *fsm.State) {
			if refence = st.RefencePending; !refence {
				plan = ComputePlan(st)
			}
		})
		if refence {
			// A user's snapshot was restored: its tasks carry generations
			// agents have already passed. Raise them all before placing
			// anything (fencing tokens only grow).
			if err := s.applyQuiet(ctx, fsm.TasksRefenceType, fsm.TasksRefence{At: time.Now().UnixNano(), Reason: "snapshot restored"}); err != nil {
				s.logger.Warn("scheduler: tasks not refenced after a restore; retrying", "error", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			} else {
				s.logger.Info("scheduler: every task has a new generation after a snapshot restore")
			}
			continue
		}
		if plan != nil {
			plan.At = time.Now().UnixNano()
			res, err := s.Apply(ctx, fsm.TaskPlanType, plan)
			switch {
			case err != nil:
				s.logger.Warn("scheduler: plan not applied", "error", err)
			case res.Err != nil:
				s.logger.Debug("scheduler: plan refused; recomputing", "reason", res.Err)
			default:
				s.metrics.observePlan(plan)
				s.logger.Info("scheduler: plan applied", "index", res.Index, "created", len(plan.Create),
					"assigned", len(plan.Assign), "deleted", len(plan.Delete))
			}
			if err == nil && res.Err == nil {
				continue // applied: look again at once
			}
			// Refused or failed: wait for the state to move, or retry soon.
			select {
			case <-ctx.Done():
				return nil
			case <-watch:
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(schedulerDebounce):
			}
		case <-resync.C:
		}
	}
}
