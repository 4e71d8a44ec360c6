package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// Rebuilds of a lost region (G.1.6): an operator asks for one, an agent
// of the region restores its PostgreSQL from a verified backup; the
// status object follows it with blocking queries.

func rebuildIndex(s *view) uint64 {
	return maxIndex(s.TableIndex(fsm.TableRebuilds), s.TableIndex(fsm.TableTasks), s.TableIndex(fsm.TableRegions))
}

// runRebuild answers POST /v1/regions/{name}/rebuild.
func (a *API) runRebuild(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	var in wire.RebuildRunRequest
	body, err := readBody(w, r, MaxBodyBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(body) > 0 {
		if err := decodeStrict(body, &in); err != nil {
			writeError(w, err)
			return
		}
	}
	cmd := fsm.RebuildRequest{Region: region, Backup: in.Backup, Force: in.Force, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	if in.ToTime != "" {
		tt, err := time.Parse(time.RFC3339Nano, in.ToTime)
		if err != nil {
			writeError(w, badRequest(fsm.CodeInvalidTargetTime, "to_time "+quote(in.ToTime)+" is not an RFC 3339 time (e.g. 2026-12-08T03:04:05.123Z)"))
			return
		}
		if cmd.TargetTime = tt.UnixNano(); cmd.TargetTime <= 0 {
			writeError(w, badRequest(fsm.CodeInvalidTargetTime, "to_time "+quote(in.ToTime)+" is before 1970"))
			return
		}
	}
	a.write(w, r, body, fsm.RebuildRequestType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusAccepted, res.Value)
	})
}

// getRebuild answers GET /v1/regions/{name}/rebuild.
func (a *API) getRebuild(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := rebuildIndex(s)
		rb := s.Rebuilds[region]
		if rb == nil {
			if s.Regions[region] == nil {
				return nil, idx, notFound("region_not_found", "region "+quote(region)+" is not registered")
			}
			return nil, idx, notFound("rebuild_not_found", "region "+quote(region)+" has not been rebuilt (atomfed dr rebuild --region "+region+")")
		}
		return rebuildStatus(s.State, rb), idx, nil
	})
}

// rebuildStatus is a rebuild with its phase and its task's progress.
func rebuildStatus(s *fsm.State, rb *fsm.Rebuild) wire.RebuildStatus {
	st := wire.RebuildStatus{Rebuild: rb, Phase: rb.Status}
	switch rb.Status {
	case fsm.RebuildDone:
		st.Phase = fsm.RebuildPhaseDone
	case fsm.RebuildFailed:
		st.Phase = fsm.RebuildPhaseFailed
	}
	t := s.Tasks[fsm.RebuildTaskID(rb.Region)]
	if !rb.Active() || t == nil || t.Agent == "" {
		st.Agent = rb.Agent // the one whose result was recorded
		return st
	}
	st.Agent, st.Generation, st.TaskError = t.Agent, t.Generation, t.Error
	var p fsm.RebuildProgress
	if len(t.Result) > 0 && json.Unmarshal(t.Result, &p) == nil && p.Rebuild == rb.ID {
		st.Progress = &p
		st.Phase = p.Phase
	}
	return st
}
