package cluster

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// SyncStateChanges returns the commands that record what the homes'
// sync-standby controllers report: a sync tenant that went sync (first
// time, or back from a degrade) or degraded. Each becomes an audit entry,
// so every degrade of a sync tenant to async is on the chain. It is a pure
// function of the state.
func SyncStateChanges(s *fsm.State) []fsm.TenantSyncStateSet {
	// Only the home controllers' tasks carry sync states: walk those, not
	// every tenant (this runs on every change of the state).
	var out []fsm.TenantSyncStateSet
	for _, task := range s.Tasks {
		if task.Type != fsm.TaskTypeSyncStandby || len(task.Result) == 0 || task.Status == fsm.TaskPending {
			continue
		}
		var res fsm.SyncStandbyResult
		if json.Unmarshal(task.Result, &res) != nil {
			continue
		}
		for _, st := range res.Tenants {
			t := s.Tenants[st.Tenant]
			if t == nil || !t.IsSync() || task.ID != fsm.SyncStandbyTaskID(t.HomeRegion) ||
				(st.State != fsm.SyncStateSync && st.State != fsm.SyncStateDegraded) {
				continue
			}
			if st.State == fsm.SyncStateDegraded && t.Fallback() != fsm.SyncFallbackDegrade {
				continue // the FSM would refuse it; the controller never does it
			}
			recorded := s.SyncStates[t.ID]
			if recorded != nil && recorded.State == st.State {
				continue
			}
			out = append(out, fsm.TenantSyncStateSet{Tenant: t.ID, State: st.State, Reason: st.Reason, Since: st.Since})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out
}

// syncAuditRoutine is the leader routine that commits the sync state
// changes the home controllers report.
func (s *Server) syncAuditRoutine(ctx context.Context) error {
	var seenTasks, seenTenants uint64
	for {
		watch := s.fsm.WatchCh()
		var changes []fsm.TenantSyncStateSet
		s.fsm.Read(func(st *fsm.State) {
			tasks, tenants := st.TableIndex(fsm.TableTasks), st.TableIndex(fsm.TableTenants)
			if tasks == seenTasks && tenants == seenTenants {
				return // nothing a sync state depends on moved
			}
			seenTasks, seenTenants = tasks, tenants
			changes = SyncStateChanges(st)
		})
		failed := false
		for _, c := range changes {
			c.At = time.Now().UnixNano()
			res, err := s.Apply(ctx, fsm.TenantSyncStateType, c)
			switch {
			case err != nil:
				s.logger.Warn("sync state not recorded", "tenant", c.Tenant, "error", err)
				failed = true
			case res.Err != nil:
				s.logger.Debug("sync state refused", "tenant", c.Tenant, "reason", res.Err)
				failed = true
			default:
				s.logger.Info("tenant sync state recorded", "tenant", c.Tenant, "state", c.State, "reason", c.Reason, "index", res.Index)
			}
		}
		var retry <-chan time.Time
		if failed {
			retry = time.After(time.Second)
			seenTasks, seenTenants = 0, 0 // look again on retry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
			if failed {
				select {
				case <-ctx.Done():
					return nil
				case <-retry:
				}
			}
		case <-retry:
		}
	}
}
