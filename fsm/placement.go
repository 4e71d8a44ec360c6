package fsm

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// A tenant's placement over time: its epoch, and the guard on a change of
// its home. Moving a replicated tenant's home needs a switchover (fence
// the old home, wait for the mirror, promote it: switchover.go); a plain
// change of home_region would lose the tenant's data, so it is refused.

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

// HomeChangeCheck refuses a plain change of old's home to newHome (the
// switchover is the way to move such a tenant) while the
// tenant is replicated: while it has mirrors and tables (mirrors the same
// write would remove included: their teardown is what deletes the
// copies), or while the subscriptions of mirrors removed earlier are still
// being torn down. A tenant that is created, keeps its home, or has no
// tables (nothing of it is replicated) passes. The API runs it before
// logging a write; the FSM again at apply (RulesTrustBound).
func HomeChangeCheck(s *State, old *Tenant, newHome string) error {
	if old == nil || old.HomeRegion == newHome || !ValidRegionName(newHome) {
		return nil // an invalid home is refused as such
	}
	id, home := old.ID, old.HomeRegion
	then := "Removing the mirrors first does not move the data either: a removed mirror deletes its copy of the tenant's rows, " +
		"and a change of home copies no rows to the new home (they stay in " + home + "'s database). " +
		"So keep home_region " + home + " and switch over, or move the rows yourself after removing the mirrors."
	if len(old.Mirrors) > 0 && len(old.Tables) > 0 {
		return preconditionf(CodeHomeChangeNeedsSwitchover,
			"tenant %s is replicated from its home %s to %s: changing home_region to %s would lose its data "+
				"(the mirrors' tables hold no PII columns, so the new home cannot publish them, and the teardown of the old mirrors deletes their copies). "+
				"Moving a replicated tenant needs a switchover, which fences the old home and promotes a caught-up mirror: "+
				"`atomfed tenant switchover %s --to %s` (POST /v1/tenants/%s/switchover). %s",
			id, home, strings.Join(old.Mirrors, ", "), newHome, id, newHome, id, then)
	}
	if gone := tearingDown(s, id); len(gone) > 0 {
		return preconditionf(CodeHomeChangeNeedsSwitchover,
			"tenant %s's removed mirrors (%s) are still being torn down: change home_region only once GET /v1/tenants/%s/replication lists no mirror. "+
				"A replicated tenant moves with a switchover (`atomfed tenant switchover %s --to %s`, POST /v1/tenants/%s/switchover). %s",
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

// TaskEpoch is the placement of a tenant a task was planned for: the
// tenant, its incarnation (the index that created it, so that a tenant
// deleted and created again under the same id starts over) and its epoch.
// The leader writes it into the spec of every replication task of a tenant
// ("tenant", "tenant_created", "epoch"); specs of tenants from before
// epochs carry neither number, which reads as 0, 0: older than any epoch.
type TaskEpoch struct {
	Tenant  string `json:"tenant"`
	Created uint64 `json:"tenant_created,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
}

// TaskEpochOf returns the tenant placement a task's spec names; ok is
// false for a task that is not about one tenant.
func TaskEpochOf(t *Task) (e TaskEpoch, ok bool) {
	if json.Unmarshal(t.Spec, &e) != nil || e.Tenant == "" {
		return TaskEpoch{}, false
	}
	return e, true
}

// Older reports whether e is an older placement of its tenant than o: an
// older incarnation, or an older epoch of the same one.
func (e TaskEpoch) Older(o TaskEpoch) bool {
	if e.Created != o.Created {
		return e.Created < o.Created
	}
	return e.Epoch < o.Epoch
}

// String is the placement as messages name it.
func (e TaskEpoch) String() string {
	return fmt.Sprintf("tenant %s epoch %d (incarnation %d)", e.Tenant, e.Epoch, e.Created)
}

// epochOf is the task placement of tenant t now: nothing for a tenant from
// before epochs, so that its specs do not change when servers upgrade.
func epochOf(t *Tenant) (created, epoch uint64) {
	if t.Epoch == 0 {
		return 0, 0
	}
	return t.CreateIndex, t.Epoch
}

// TenantTaskEpoch returns the placement the specs of tenant t's tasks
// carry (tenant_created, epoch).
func TenantTaskEpoch(t *Tenant) (created, epoch uint64) { return epochOf(t) }

// RestampEpoch returns a kept task's spec (one being torn down) with the
// current placement of its tenant, if the tenant still exists: the
// teardown is what the current epoch wants, and an agent that has seen
// that epoch would refuse a task of an older one. A spec of no tenant, or
// of a deleted one, is returned as it is.
func (s *State) RestampEpoch(spec json.RawMessage) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(spec, &m) != nil || m == nil {
		return spec
	}
	id, _ := m["tenant"].(string)
	t := s.Tenants[id]
	if id == "" || t == nil {
		return spec
	}
	created, epoch := epochOf(t)
	delete(m, "tenant_created")
	delete(m, "epoch")
	if epoch > 0 {
		m["tenant_created"], m["epoch"] = created, epoch
	}
	b, _ := json.Marshal(m)
	return b
}

// StaleEpochResult is what an agent reports, in place of running it, for a
// task of a tenant placement older than one it has already seen: it never
// acts for an epoch that has ended. It reads as a replication result whose
// state is ReplStaleEpoch.
type StaleEpochResult struct {
	State  string             `json:"state"`
	Tenant string             `json:"tenant"`
	Epoch  uint64             `json:"epoch"`
	Seen   uint64             `json:"seen_epoch"`
	Issues []ReplicationIssue `json:"issues"`
}

// ReplStaleEpoch is the state of a task an agent did not run because its
// tenant's epoch has ended (StaleEpochResult); IssueStaleEpoch its issue.
const (
	ReplStaleEpoch  = "stale_epoch"
	IssueStaleEpoch = "stale_epoch"
)
