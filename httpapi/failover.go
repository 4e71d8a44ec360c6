package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/structs"
)

// startFailover answers POST /v1/tenants/{id}/failover.
func (a *API) startFailover(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	var in wire.FailoverRequest
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	cmd := fsm.FailoverStart{Targets: []fsm.FailoverTarget{{Tenant: id, To: in.To}}, Force: in.Force, MaxLagMS: in.MaxLagMS,
		Reason: in.Reason, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.failover(w, r, body, cmd, nil)
}

// startRegionFailover answers POST /v1/regions/{name}/failover: every
// tenant homed in the region fails over to its best mirror, under one
// approval. Tenants without tables or mirrors are listed as skipped.
func (a *API) startRegionFailover(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	var in wire.FailoverRequest
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	if in.To != "" {
		writeError(w, badRequest("to_not_allowed", "a region failover sends each tenant to its own best mirror: leave out to, or fail tenants over one by one with POST /v1/tenants/{id}/failover"))
		return
	}
	if !a.consistent(w, r, body) {
		return
	}
	cmd := fsm.FailoverStart{Region: name, Force: in.Force, MaxLagMS: in.MaxLagMS, Reason: in.Reason, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	var skipped []wire.FailoverSkipped
	var check error
	a.c.FSM().Read(func(s *fsm.State) {
		switch {
		case !fsm.ValidRegionName(name):
			check = badRequest("invalid_region", "region "+quote(name)+" must be a region name (a DNS label)")
			return
		case s.Regions[name] == nil:
			check = notFound("region_not_found", "region "+quote(name)+" is not registered")
			return
		}
		for _, t := range s.SortedTenants() {
			switch {
			case t.HomeRegion != name:
			case len(t.Tables) == 0 || len(t.Mirrors) == 0:
				skipped = append(skipped, wire.FailoverSkipped{Tenant: t.ID, Reason: "not replicated (no tables or no mirror): nothing to fail over to"})
			default:
				cmd.Targets = append(cmd.Targets, fsm.FailoverTarget{Tenant: t.ID})
			}
		}
	})
	if check == nil && len(cmd.Targets) == 0 {
		check = &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: "no_tenants", Message: fmt.Sprintf("no replicated tenant is homed in region %s: nothing to fail over", name)}
	}
	if check != nil {
		writeError(w, check)
		return
	}
	a.failover(w, r, body, cmd, skipped)
}

// consistent makes sure this server's state is at least as new as the
// request, or forwards the request to the leader (false: answered).
func (a *API) consistent(w http.ResponseWriter, r *http.Request, body []byte) bool {
	if err := a.c.ConsistentRead(r.Context()); err != nil {
		if (errors.Is(err, structs.ErrNotLeader) || errors.Is(err, structs.ErrFollowerBehind)) && r.Header.Get(HeaderForwarded) == "" {
			a.forward(w, r, body, true)
			return false
		}
		writeError(w, err)
		return false
	}
	return true
}

// failover checks cmd on this server's state (the approval checks it at
// creation, the FSM again once approved) and submits it: 202 with the
// approval when the policy gates failovers (the default: 2 approvals),
// 202 with the failovers started otherwise.
func (a *API) failover(w http.ResponseWriter, r *http.Request, body []byte, cmd fsm.FailoverStart, skipped []wire.FailoverSkipped) {
	if len(cmd.Targets) == 1 && cmd.Region == "" && !a.consistent(w, r, body) {
		return
	}
	var check error
	a.c.FSM().Read(func(s *fsm.State) { _, check = fsm.FailoverStartCheck(s, &cmd) })
	if check != nil {
		writeError(w, check)
		return
	}
	action := func(s *fsm.State) (string, string) {
		plans, err := fsm.FailoverStartCheck(s, &cmd)
		if err != nil {
			return fsm.ActionFailover, "fail over: " + err.Error()
		}
		return fsm.ActionFailover, fsm.FailoverSummary(plans, &cmd)
	}
	a.writeGated(w, r, body, fsm.FailoverStartType, cmd, action, nil, cmd.At, func(res *fsm.ApplyResult) {
		out := wire.FailoverStarted{Failovers: []wire.SwitchoverStatus{}, Skipped: skipped}
		a.c.FSM().Read(func(s *fsm.State) {
			for _, sw := range res.Value.(*fsm.FailoverStarted).Failovers {
				st, _ := switchoverStatus(s, sw)
				out.Failovers = append(out.Failovers, st)
			}
		})
		writeJSON(w, http.StatusAccepted, out)
	})
}

// getFailover answers GET /v1/tenants/{id}/failover (blocking on ?index=).
func (a *API) getFailover(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	now := a.stamp()
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := maxIndex(s.TableIndex(fsm.TableSwitchovers), s.TableIndex(fsm.TableTenants), s.TableIndex(fsm.TableAgents),
			s.TableIndex(fsm.TableTasks), s.TableIndex(fsm.TableFailovers))
		t := s.Tenants[id]
		if t == nil {
			return nil, idx, notFound("tenant_not_found", "tenant "+quote(id)+" does not exist")
		}
		v := wire.FailoverView{Tenant: id, Home: t.HomeRegion, HomeHealth: s.RegionHealth(t.HomeRegion).Status,
			Policy: fsm.FailoverPolicy{Mode: t.FailoverMode()}, History: []*fsm.FailoverRecord{}}
		if t.Failover != nil {
			v.Policy.RPOBudgetMS = t.Failover.RPOBudgetMS
		}
		if best, ok := s.BestFailoverMirror(t); ok {
			okDrill, drill := s.DrillPrecondition(best.Region, now)
			risk := &fsm.FailoverRisk{LagMS: best.LagMS, ReportedAt: best.ReportedAt, AppliedLSN: best.AppliedLSN,
				Sync: t.SyncMode == fsm.SyncModeSync, Drill: drill, DrillOK: okDrill}
			v.Candidate = &wire.FailoverCandidate{Region: best.Region, State: best.State, LagMS: best.LagMS, ReportedAt: best.ReportedAt,
				AppliedLSN: best.AppliedLSN, Risk: risk, DataAtRisk: risk.String()}
		}
		if t.FailoverMode() == fsm.FailoverAuto {
			d := fsm.AutoFailoverDecision(s.State, t, now, a.failoverDetectMS())
			v.Auto = &d
			v.Hold = s.FailoverHolds[id]
		}
		if sw := s.Switchover(id); sw != nil && sw.Kind == fsm.FailoverKind {
			st, sidx := switchoverStatus(s.State, sw)
			v.Last, idx = &st, maxIndex(idx, sidx)
		}
		for _, h := range s.FailoverHistory {
			if h.Tenant == id {
				v.History = append(v.History, h)
			}
		}
		return v, idx, nil
	})
}

// listFailovers answers GET /v1/failovers: the kept history.
func (a *API) listFailovers(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return wire.FailoverHistory{Failovers: append([]*fsm.FailoverRecord{}, slices.Clone(s.FailoverHistory)...)}, s.TableIndex(fsm.TableFailovers), nil
	})
}

// failoverDetectMS is the server's detection window of the automatic
// failover policy (the leader's, when the servers agree on their flags).
func (a *API) failoverDetectMS() int64 {
	if d, ok := a.c.(interface{ FailoverDetectMS() int64 }); ok {
		return d.FailoverDetectMS()
	}
	return fsm.DefaultFailoverDetectMS
}
