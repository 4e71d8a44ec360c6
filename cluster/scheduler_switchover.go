package cluster

import (
	"encoding/json"
	"slices"

	"github.com/atomcloud/atomfed/fsm"
)

// desiredSwitchoverTasks adds the database steps of every running
// switchover, derived from its phase (fsm/switchover_tasks.go):
//
//   - fencing: tenant-fence at the old home;
//   - catching_up: tenant-catchup at the target and at every other mirror,
//     up to the fenced LSN (their subscribers keep running);
//   - promoting: tenant-promote at the target, tenant-detach at every
//     other mirror (their subscribers are gone: switchoverDropsSubscriber);
//   - rolling_back: tenant-fence with ensure absent at the old home.
//
// Committed and done switchovers have no steps: the replication tasks of
// the new placement follow the new home (switchoverSubscriberSpec). Each
// step carries the tenant's placement (its epoch before the commit), so
// that an agent never runs a step of an ended epoch.
func desiredSwitchoverTasks(s *fsm.State, out map[string]fsm.TaskSpec) {
	for _, w := range s.Switchovers {
		t := s.Tenants[w.Tenant]
		if !w.InFlight() || t == nil || t.CreateIndex != w.TenantCreated {
			continue
		}
		created, epoch := fsm.TenantTaskEpoch(t)
		add := func(typ, region string, spec any) {
			b, _ := json.Marshal(spec)
			id := fsm.SwitchoverTaskID(typ, w.Tenant, region)
			out[id] = fsm.TaskSpec{ID: id, Type: typ, Region: region, Spec: b}
		}
		switch w.Phase {
		case fsm.PhaseFencing, fsm.PhaseRollingBack:
			ensure := fsm.EnsurePresent
			if w.Phase == fsm.PhaseRollingBack {
				ensure = fsm.EnsureAbsent
			}
			add(fsm.TaskTypeTenantFence, w.From, fsm.FenceSpec{
				Ensure: ensure, Tenant: w.Tenant, Region: w.From, Tables: t.Tables, NewHome: w.To, NewEpoch: w.NewEpoch,
				Switchover: w.ID, TenantCreated: created, Epoch: epoch,
			})
		case fsm.PhaseCatchingUp:
			for _, m := range append([]string{w.To}, w.Others...) {
				add(fsm.TaskTypeTenantCatchUp, m, fsm.CatchUpSpec{
					Tenant: w.Tenant, Region: m, Subscription: fsm.TenantSubscription(w.Tenant, m), Source: w.From,
					SourceDB: endpoint(s, w.From), Target: w.FencedLSN, Switchover: w.ID, TenantCreated: created, Epoch: epoch,
				})
			}
		case fsm.PhasePromoting:
			// A failover's old home is presumed lost: the promotion does
			// not try to reach it (its slot is left to it), and makes no
			// hand-off slot (HandOff is empty).
			src := endpoint(s, w.From)
			if w.Kind == fsm.FailoverKind {
				src = nil
			}
			add(fsm.TaskTypeTenantPromote, w.To, fsm.PromoteSpec{
				Tenant: w.Tenant, Region: w.To, Subscription: fsm.TenantSubscription(w.Tenant, w.To), Source: w.From,
				SourceDB: src, Publication: fsm.TenantPublication(w.Tenant), Tables: t.Tables, PII: w.PII,
				HandOff: w.HandOff(), Switchover: w.ID, TenantCreated: created, Epoch: epoch,
			})
			for _, m := range w.Others {
				add(fsm.TaskTypeTenantDetach, m, fsm.DetachSpec{
					Tenant: w.Tenant, Region: m, Subscription: fsm.TenantSubscription(w.Tenant, m), Switchover: w.ID,
					TenantCreated: created, Epoch: epoch,
				})
			}
		}
	}
}

// switchoverDropsSubscriber reports whether the tenant-subscriber task of
// incarnation created (the tenant's create index; 0 when a task's spec
// does not say) of tenant in region must go outright, not be kept to be
// torn down: its mirror was promoted (the target), or is being detached
// (another mirror, while promoting). A teardown would delete the rows
// there, and the subscription is the step's to detach. The switchover of
// an earlier incarnation of the tenant (deleted and created again with
// the same id) drops nothing of the new one: its mirrors subscribe as
// usual.
func switchoverDropsSubscriber(s *fsm.State, tenant string, created uint64, region string) bool {
	w := s.Switchovers[tenant]
	if w == nil || !w.Promoted() || (created != 0 && created != w.TenantCreated) {
		return false
	}
	return region == w.To || w.Phase == fsm.PhasePromoting && slices.Contains(w.Others, region)
}

// switchoverSubscriberSpec marks the subscriber of mirror m of tenant t
// after a switchover: the old home mirrors the new home as a former home
// (it keeps its rows and PII, and subscribes from the slot the promotion
// made), the other mirrors hand off to the new home from their slots.
// Either mark is set at the commit and kept as long as the task lives with
// the same source (so a task re-planned for another reason, or the next
// switchover's fencing, keeps it: a former home's subscriber without it
// would clear the PII it holds); a mirror added later, or added again
// after it was removed, is an ordinary mirror.
func switchoverSubscriberSpec(s *fsm.State, t *fsm.Tenant, m string, spec *fsm.SubscriberSpec) {
	if cur := s.Tasks[fsm.TenantSubscriberTaskID(t.ID, m)]; cur != nil {
		var kept fsm.SubscriberSpec
		if json.Unmarshal(cur.Spec, &kept) == nil && kept.Ensure == fsm.EnsurePresent && kept.Source == t.HomeRegion {
			spec.FormerHome, spec.HandOff, spec.Resync = kept.FormerHome, kept.HandOff, kept.Resync
		}
	}
	w := s.Switchovers[t.ID]
	if failoverSubscriberSpec(s, t, w, m, spec) {
		return
	}
	if w == nil || w.Phase != fsm.PhaseCommitted || w.To != t.HomeRegion || w.TenantCreated != t.CreateIndex {
		return
	}
	switch {
	case m == w.From || slices.Contains(w.FormerHomes, m):
		spec.FormerHome = true // former-home rules win over hand-off ones
	case slices.Contains(w.Others, m):
		spec.HandOff = true
	}
}

// droppedBySwitchover reports whether a tenant-subscriber task no longer
// wanted is the subscriber a switchover detached (or is detaching), which
// goes without a teardown: the promoted target's, or another mirror's
// while the promotion runs.
func droppedBySwitchover(s *fsm.State, t *fsm.Task) bool {
	var spec fsm.SubscriberSpec
	if json.Unmarshal(t.Spec, &spec) != nil || spec.Tenant == "" {
		return false
	}
	return switchoverDropsSubscriber(s, spec.Tenant, spec.TenantCreated, t.Region)
}
