package cluster

import (
	"encoding/json"
	"sort"

	"github.com/atomcloud/atomfed/fsm"
)

// desiredReplicationTasks adds the replication tasks the state asks for:
//
//   - per tenant with tables: a tenant-publisher on its home
//     (tenant-pub/<tenant>/<home>) and a tenant-subscriber per mirror
//     (tenant-sub/<tenant>/<mirror>);
//   - per region that homes sync tenants: one sync-standby (sync/<region>);
//   - per writer region of global tables: a global-publisher
//     (global-pub/<writer>) and a global-subscriber in every other
//     registered region (global-sub/<writer>/<region>).
//
// Every task of a tenant carries the tenant's placement epoch
// (fsm.TaskEpoch), with which agents refuse tasks of an ended epoch. A
// switchover changes the subscribers (scheduler_switchover.go): those it
// detaches go without a teardown, and after its commit the old home
// subscribes as a former home and the other mirrors hand off.
//
// A replication task that is no longer wanted is kept with its spec turned
// to ensure "absent" (and its tenant's current epoch, if the tenant still
// exists) until its executor reports success, so that its
// publication, subscription or slot is torn down, not abandoned. Only when
// its region is no longer registered is there nothing left to clean.
func desiredReplicationTasks(s *fsm.State, out map[string]fsm.TaskSpec) {
	present := map[string]bool{}
	add := func(id, typ, region string, spec any) {
		b, _ := json.Marshal(spec)
		out[id] = fsm.TaskSpec{ID: id, Type: typ, Region: region, Spec: b}
		present[id] = true
	}
	syncTenants := map[string][]fsm.SyncTenant{}
	// Only tenants with tables have replication tasks; the state keeps them
	// apart, since this runs on every change of the state. Map order is
	// fine: every task is keyed by id, and each region's sync tenants are
	// sorted below.
	for _, t := range s.ReplicatedTenants() {
		subs := make([]string, 0, len(t.Mirrors))
		for _, m := range t.Mirrors {
			subs = append(subs, fsm.TenantSubscription(t.ID, m))
		}
		created, epoch := fsm.TenantTaskEpoch(t)
		add(fsm.TenantPublisherTaskID(t.ID, t.HomeRegion), fsm.TaskTypeTenantPublisher, t.HomeRegion, fsm.PublisherSpec{
			Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant, Tenant: t.ID, Region: t.HomeRegion,
			Publication: fsm.TenantPublication(t.ID), Tables: t.Tables, Subscriptions: subs, SlotPrefix: fsm.TenantSlotPrefix(t.ID),
			TenantCreated: created, Epoch: epoch,
		})
		for _, m := range t.Mirrors {
			if switchoverDropsSubscriber(s, t.ID, t.CreateIndex, m) {
				continue
			}
			spec := fsm.SubscriberSpec{
				Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant, Tenant: t.ID, Source: t.HomeRegion, SourceDB: endpoint(s, t.HomeRegion),
				Region: m, Publication: fsm.TenantPublication(t.ID), Subscription: fsm.TenantSubscription(t.ID, m),
				Tables: t.Tables, Sync: t.IsSync(), TenantCreated: created, Epoch: epoch,
			}
			switchoverSubscriberSpec(s, t, m, &spec)
			add(fsm.TenantSubscriberTaskID(t.ID, m), fsm.TaskTypeTenantSubscriber, m, spec)
		}
		if t.IsSync() && len(subs) > 0 {
			st := fsm.SyncTenant{Tenant: t.ID, Standbys: subs, Fallback: t.Fallback(), DegradeAfterMS: t.DegradeAfterMS()}
			if r := s.SyncStates[t.ID]; r != nil {
				st.Recorded = r.State
			}
			syncTenants[t.HomeRegion] = append(syncTenants[t.HomeRegion], st)
		}
	}
	for region, ts := range syncTenants {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Tenant < ts[j].Tenant })
		add(fsm.SyncStandbyTaskID(region), fsm.TaskTypeSyncStandby, region, fsm.SyncStandbySpec{Ensure: fsm.EnsurePresent, Region: region, Tenants: ts})
	}
	desiredGlobalTasks(s, add)
	for _, t := range s.SortedTasks() {
		if !fsm.IsReplicationTask(t.Type) || present[t.ID] || s.Regions[t.Region] == nil {
			continue
		}
		if t.Type == fsm.TaskTypeTenantSubscriber && droppedBySwitchover(s, t) {
			continue // detached by the switchover's step, never torn down
		}
		spec, wasAbsent := fsm.AbsentSpec(t.Spec)
		if wasAbsent && t.Status == fsm.TaskSucceeded {
			continue // torn down: the task goes
		}
		spec = s.RestampEpoch(spec)
		out[t.ID] = fsm.TaskSpec{ID: t.ID, Type: t.Type, Region: t.Region, Spec: spec}
	}
}

func desiredGlobalTasks(s *fsm.State, add func(id, typ, region string, spec any)) {
	byWriter := map[string][]fsm.TenantTable{}
	var writers []string
	for _, g := range s.SortedGlobalTables() {
		if byWriter[g.WriterRegion] == nil {
			writers = append(writers, g.WriterRegion)
		}
		byWriter[g.WriterRegion] = append(byWriter[g.WriterRegion], fsm.TenantTable{Name: g.Name})
	}
	for _, w := range writers {
		var subs []string
		for _, r := range s.SortedRegions() {
			if r.Name != w {
				subs = append(subs, fsm.GlobalSubscription(w, r.Name))
			}
		}
		add(fsm.GlobalPublisherTaskID(w), fsm.TaskTypeGlobalPublisher, w, fsm.PublisherSpec{
			Ensure: fsm.EnsurePresent, Kind: fsm.KindGlobal, Region: w, Publication: fsm.GlobalPublication(w),
			Tables: byWriter[w], Subscriptions: subs, SlotPrefix: fsm.GlobalSlotPrefix(w),
		})
		for _, r := range s.SortedRegions() {
			if r.Name == w {
				continue
			}
			add(fsm.GlobalSubscriberTaskID(w, r.Name), fsm.TaskTypeGlobalSubscriber, r.Name, fsm.SubscriberSpec{
				Ensure: fsm.EnsurePresent, Kind: fsm.KindGlobal, Source: w, SourceDB: endpoint(s, w), Region: r.Name,
				Publication: fsm.GlobalPublication(w), Subscription: fsm.GlobalSubscription(w, r.Name), Tables: byWriter[w],
			})
		}
	}
}

func endpoint(s *fsm.State, region string) *fsm.DatabaseEndpoint {
	if d := s.Databases[region]; d != nil {
		ep := d.Endpoint
		return &ep
	}
	return nil
}
