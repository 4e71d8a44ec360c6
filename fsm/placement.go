package fsm

import (
	"sort"
	"strings"
)

// A tenant's placement over time: its epoch, and the guard on a change of
// its home. Moving a replicated tenant's home needs a switchover (fence
// the old home, wait for the mirror, promote it); until atomfed has one,
// a plain change of home_region would lose the tenant's data, so it is
// refused.

// CodeHomeChangeNeedsSwitchover is the code of the refusal of a plain
// change of home_region for a replicated tenant.
const CodeHomeChangeNeedsSwitchover = "home_change_needs_switchover"

// nextEpoch is the epoch of a tenant written as t with home newHome over
// old (nil when it is created), under rules: 1 at creation, one more on a
// change of home, else old's. Under rules before RulesTrustBound the
// epoch is what it was (0 for a new tenant): those servers have none.
func nextEpoch(old *Tenant, newHome string, rules int) uint64 {
	switch {
	case old == nil && rules >= RulesTrustBound:
		return 1
	case old == nil:
		return 0
	case rules >= RulesTrustBound && old.HomeRegion != newHome:
		return old.Epoch + 1
	}
	return old.Epoch
}

// HomeChangeCheck refuses a change of old's home to newHome while the
// tenant is replicated: while it has mirrors (those the same write would
// remove included: their teardown is what deletes the copies), or while
// the subscriptions of mirrors removed earlier are still being torn down.
// A tenant that is created, or keeps its home, passes. The API runs it
// before logging a write; the FSM again at apply (RulesTrustBound).
func HomeChangeCheck(s *State, old *Tenant, newHome string) error {
	if old == nil || old.HomeRegion == newHome {
		return nil
	}
	id, home := old.ID, old.HomeRegion
	then := "Removing the mirrors first does not move the data either: a removed mirror deletes its copy of the tenant's rows, " +
		"and a change of home copies no rows to the new home (they stay in " + home + "'s database). " +
		"Until the switchover exists, keep home_region " + home + ", or move the rows yourself after removing the mirrors."
	if len(old.Mirrors) > 0 {
		return preconditionf(CodeHomeChangeNeedsSwitchover,
			"tenant %s is replicated from its home %s to %s: changing home_region to %s would lose its data "+
				"(the mirrors' tables hold no PII columns, so the new home cannot publish them, and the teardown of the old mirrors deletes their copies). "+
				"Moving a replicated tenant needs a switchover, which fences the old home and promotes a caught-up mirror: "+
				"`atomfed tenant switchover %s --to %s` (POST /v1/tenants/%s/switchover), which this release does not have yet. %s",
			id, home, strings.Join(old.Mirrors, ", "), newHome, id, newHome, id, then)
	}
	if gone := tearingDown(s, id); len(gone) > 0 {
		return preconditionf(CodeHomeChangeNeedsSwitchover,
			"tenant %s's removed mirrors (%s) are still being torn down: change home_region only once GET /v1/tenants/%s/replication lists no mirror. "+
				"A replicated tenant moves with a switchover (`atomfed tenant switchover %s --to %s`, POST /v1/tenants/%s/switchover), which this release does not have yet. %s",
			id, strings.Join(gone, ", "), id, id, newHome, id, then)
	}
	return nil
}

// tearingDown returns the mirror regions whose subscriber task of tenant
// id is still in the state (kept, ensure absent, until its teardown is
// done).
func tearingDown(s *State, id string) []string {
	prefix := TenantSubscriberTaskID(id, "")
	var out []string
	for tid, t := range s.Tasks {
		if t.Type == TaskTypeTenantSubscriber && strings.HasPrefix(tid, prefix) {
			out = append(out, strings.TrimPrefix(tid, prefix))
		}
	}
	sort.Strings(out)
	return out
}
