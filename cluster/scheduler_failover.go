package cluster

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/atomcloud/atomfed/fsm"
)

// failoverSubscriberSpec marks the subscribers of tenant t after its
// failover w committed, and reports whether w is such a failover (true:
// the switchover rules do not apply). The failover reached the old home
// without fencing it, so the old home, and every former home among the
// other mirrors, follow the new home with former_home + resync: before
// subscribing, their executor fences the tenant there, quarantines its
// divergent rows and reconciles them with the new home (it runs once the
// region's agent is back). The other mirrors are ordinary mirrors of the
// new home: they purge and copy the tenant again (they may be ahead of or
// behind the new home, so no hand-off). The marks hold from the commit on
// for as long as the tenant keeps the failover's epoch, whether the
// failover is committed or done, and later through the kept marks.
func failoverSubscriberSpec(s *fsm.State, t *fsm.Tenant, w *fsm.Switchover, m string, spec *fsm.SubscriberSpec) bool {
	if w == nil || w.Kind != fsm.FailoverKind || (w.Phase != fsm.PhaseCommitted && w.Phase != fsm.PhaseDone) ||
		w.To != t.HomeRegion || w.TenantCreated != t.CreateIndex || t.Epoch != w.NewEpoch {
		return false
	}
	spec.HandOff = false
	if m == w.From || slices.Contains(w.FormerHomes, m) {
		spec.FormerHome, spec.Resync = true, true
	}
	return true
}

// failoverDone ends a committed failover once the new placement's
// subscribers are planned: the old home's (and every former home's) with
// former_home + resync, the others' from the new home. Nothing waits for
// the old home to come back: its subscriber runs when it does.
func failoverDone(s *fsm.State, t *fsm.Tenant, w *fsm.Switchover) (fsm.SwitchoverAdvance, bool) {
	for _, m := range t.Mirrors {
		task := s.Tasks[fsm.TenantSubscriberTaskID(t.ID, m)]
		var spec fsm.SubscriberSpec
		if task == nil || json.Unmarshal(task.Spec, &spec) != nil || spec.Source != t.HomeRegion || spec.Epoch != t.Epoch {
			return fsm.SwitchoverAdvance{}, false
		}
		if (m == w.From || slices.Contains(w.FormerHomes, m)) && !(spec.FormerHome && spec.Resync) {
			return fsm.SwitchoverAdvance{}, false
		}
	}
	return fsm.SwitchoverAdvance{To: fsm.PhaseDone, Detail: fmt.Sprintf("%s takes the tenant's writes; %s re-syncs as a former home once it is back, the other mirrors copy from %s",
		w.To, w.From, w.To)}, true
}
