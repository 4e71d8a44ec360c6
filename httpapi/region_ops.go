package httpapi

import (
	"errors"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Region maintenance and drain (fsm/region_ops.go): PUT
// /v1/regions/{name}/maintenance turns maintenance on or off; POST
// /v1/regions/{name}/drain starts a drain (202), GET reads it (blocking on
// ?index=), DELETE stops it.

// regionOpsStatus is the API form of a region's operational state.
func regionOpsStatus(o *fsm.RegionOps) wire.RegionOpsStatus {
	st := wire.RegionOpsStatus{Region: o.Region, Maintenance: o.Maintenance, MaintenanceBy: o.MaintenanceBy, MaintenanceSince: o.MaintenanceSince, Drain: o.Drain}
	if d := o.Drain; d != nil {
		st.Total, st.Moved, st.Failed, st.Remaining, st.Active = len(d.Tenants), d.Count(fsm.DrainTenantMoved), d.Count(fsm.DrainTenantFailed), d.Remaining(), d.Running()
	}
	return st
}

func (a *API) setMaintenance(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	var in wire.MaintenanceRequest
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	if in.Maintenance == nil {
		writeError(w, badRequest("missing_maintenance", `give {"maintenance": true} to stop new placements in region `+name+`, or false to let them in again`))
		return
	}
	cmd := fsm.RegionMaintenanceSet{Region: name, Maintenance: *in.Maintenance, Reason: in.Reason, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.regionOpsWrite(w, r, body, cmd, http.StatusOK)
}

func (a *API) startDrain(w http.ResponseWriter, r *http.Request) {
	cmd := fsm.RegionMaintenanceSet{Region: mux.Vars(r)["name"], Maintenance: true, Drain: fsm.DrainStart, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.regionOpsWrite(w, r, nil, cmd, http.StatusAccepted)
}

func (a *API) stopDrain(w http.ResponseWriter, r *http.Request) {
	cmd := fsm.RegionMaintenanceSet{Region: mux.Vars(r)["name"], Maintenance: true, Drain: fsm.DrainStop, Reason: r.URL.Query().Get("reason"),
		RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.regionOpsWrite(w, r, nil, cmd, http.StatusOK)
}

// regionOpsWrite checks cmd on state at least as new as the request (a
// follower behind forwards it to the leader; the FSM checks it again at
// apply) and applies it.
func (a *API) regionOpsWrite(w http.ResponseWriter, r *http.Request, body []byte, cmd fsm.RegionMaintenanceSet, status int) {
	if err := a.c.ConsistentRead(r.Context()); err != nil {
		if (errors.Is(err, structs.ErrNotLeader) || errors.Is(err, structs.ErrFollowerBehind)) && r.Header.Get(HeaderForwarded) == "" {
			a.forward(w, r, body, true)
			return
		}
		writeError(w, err)
		return
	}
	var check error
	a.c.FSM().Read(func(s *fsm.State) { check = fsm.RegionMaintenanceCheck(s, &cmd) })
	if check != nil {
		writeError(w, check)
		return
	}
	a.write(w, r, body, fsm.RegionMaintenanceType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, status, regionOpsStatus(res.Value.(*fsm.RegionOps)))
	})
}

// getRegionOps answers GET /v1/regions/{name}/maintenance and
// /v1/regions/{name}/drain (404 no_drain there when the region never
// drained), blocking on ?index= until the region's operations change.
func (a *API) getRegionOps(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := mux.Vars(r)["name"]
		a.read(w, r, func(s *view) (any, uint64, error) {
			idx := maxIndex(s.TableIndex(fsm.TableRegionOps), s.TableIndex(fsm.TableRegions))
			if s.Regions[name] == nil {
				return nil, idx, notFound("region_not_found", "region "+quote(name)+" is not registered")
			}
			o := s.RegionOps[name]
			if o == nil {
				o = &fsm.RegionOps{Region: name}
			}
			if drain && o.Drain == nil {
				return nil, idx, notFound(fsm.CodeNoDrain, "region "+name+" has never been drained: start a drain with POST /v1/regions/"+name+"/drain")
			}
			st := regionOpsStatus(o)
			st.Maintenance = s.InMaintenance(name)
			return st, idx, nil
		})
	}
}
