package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// Tenant epochs. Every task of a tenant carries the tenant's placement
// epoch (fsm.TaskEpoch): the leader bumps it with every change of the
// tenant's home. The agent remembers the newest placement it has seen per
// tenant, on disk, and never runs a task of an older one: an agent with a
// stale view (a lagging server's answer, a restart that replays old
// assignments) can never act as the home of an epoch that has ended. It
// reports such a task as failing with a stale_epoch result instead.

// staleLocked records the newest placement per tenant among want and
// returns, per task of an older placement, why it is stale; changed says
// whether the remembered placements moved (to be persisted).
func (a *Agent) staleLocked(want map[string]*fsm.Task) (map[string]string, bool) {
	changed := false
	for _, t := range want {
		e, ok := fsm.TaskEpochOf(t)
		if !ok {
			continue
		}
		if seen, ok := a.epochs[e.Tenant]; !ok || seen.Older(e) {
			a.epochs[e.Tenant] = e
			changed = true
		}
	}
	stale := map[string]string{}
	for id, t := range want {
		e, ok := fsm.TaskEpochOf(t)
		if !ok {
			continue
		}
		if seen := a.epochs[e.Tenant]; e.Older(seen) {
			stale[id] = fmt.Sprintf("stale_epoch: task %s is for %s, but this agent has seen epoch %d (incarnation %d) of the tenant: a task of an ended epoch is not run",
				id, e, seen.Epoch, seen.Created)
		}
	}
	return stale, changed
}

// startStaleLocked runs, in place of task t, a reporter that says once
// why t is not run and then waits to be stopped.
func (a *Agent) startStaleLocked(t *fsm.Task, why string) {
	ctx, cancel := context.WithCancel(a.ctx)
	r := &runningTask{task: t, cancel: cancel, done: make(chan struct{}), since: time.Now(), status: fsm.TaskAssigned, stale: true}
	a.running[t.ID] = r
	e, _ := fsm.TaskEpochOf(t)
	seen := a.epochs[e.Tenant]
	a.log.Warn("not running a task of an ended tenant epoch", "task", t.ID, "generation", t.Generation,
		"tenant", e.Tenant, "epoch", e.Epoch, "seen_epoch", seen.Epoch)
	a.metrics.staleEpoch.Inc()
	res := fsm.StaleEpochResult{State: fsm.ReplStaleEpoch, Tenant: e.Tenant, Epoch: e.Epoch, Seen: seen.Epoch,
		Issues: []fsm.ReplicationIssue{{Code: fsm.IssueStaleEpoch, Message: why, At: time.Now().UnixNano()}}}
	go func() {
		defer close(r.done)
		a.record(t, TaskStatus{Status: fsm.TaskFailing, Error: why, Result: res})
		<-ctx.Done()
	}()
}
