package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// Backups (G.1.6): each region's policy, the catalog, and backups asked
// for by an operator. The leader asks for scheduled ones itself.

func backupIndex(s *view) uint64 {
	return maxIndex(s.TableIndex(fsm.TableBackups), s.TableIndex(fsm.TableBackupPolicies), s.TableIndex(fsm.TableTasks), s.TableIndex(fsm.TableRegions))
}

// getBackupPolicy answers GET /v1/regions/{name}/backup-policy: the
// stored policy, else the default one (default: true).
func (a *API) getBackupPolicy(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := maxIndex(s.TableIndex(fsm.TableBackupPolicies), s.TableIndex(fsm.TableRegions))
		if s.Regions[region] == nil {
			return nil, idx, notFound("region_not_found", "region "+quote(region)+" is not registered")
		}
		return s.BackupPolicyOf(region), idx, nil
	})
}

// putBackupPolicy stores a region's backup policy.
func (a *API) putBackupPolicy(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	var in fsm.BackupPolicy
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	if in.Region == "" {
		in.Region = region
	} else if in.Region != region {
		writeError(w, badRequest("name_mismatch", "the body names region "+quote(in.Region)+" but the path names "+quote(region)))
		return
	}
	in.Default, in.CreateIndex, in.ModifyIndex = false, 0, 0
	if err := fsm.ValidateBackupPolicy(&in); err != nil {
		writeError(w, err)
		return
	}
	a.write(w, r, body, fsm.BackupPolicySetType, fsm.BackupPolicySet{Policy: in, At: a.stamp()}, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

// runBackup answers POST /v1/regions/{name}/backups: a backup now.
func (a *API) runBackup(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	var in wire.BackupRunRequest
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
	if in.Type == "" {
		in.Type = fsm.BackupFull
	}
	if in.Type != fsm.BackupFull && in.Type != fsm.BackupIncr {
		writeError(w, badRequest("invalid_backup_type", "backup type "+quote(in.Type)+" must be full or incr"))
		return
	}
	cmd := fsm.BackupRequest{Region: region, Type: in.Type, Reason: fsm.BackupReasonManual, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.write(w, r, body, fsm.BackupRequestType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusAccepted, res.Value)
	})
}

// listBackups answers GET /v1/backups[?region=R].
func (a *API) listBackups(w http.ResponseWriter, r *http.Request) {
	region := r.URL.Query().Get("region")
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := backupIndex(s)
		if region != "" && s.Regions[region] == nil && len(s.BackupsOf(region)) == 0 {
			return nil, idx, notFound("region_not_found", "region "+quote(region)+" is not registered and has no backups")
		}
		out := wire.BackupList{Backups: s.BackupsOf(region), Running: []wire.BackupStatus{}, Regions: []fsm.BackupHealth{}}
		if out.Backups == nil {
			out.Backups = []*fsm.Backup{}
		}
		for _, run := range s.SortedBackupRuns() {
			if region == "" || run.Region == region {
				out.Running = append(out.Running, backupStatus(s.State, run))
			}
		}
		now := a.stamp()
		for _, reg := range s.SortedRegions() {
			if region == "" || reg.Name == region {
				out.Regions = append(out.Regions, s.BackupHealthOf(reg.Name, now))
			}
		}
		return out, idx, nil
	})
}

// getBackup answers GET /v1/backups/{id}: a running backup's status with
// its progress, or a catalog entry.
func (a *API) getBackup(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := backupIndex(s)
		for _, run := range s.BackupRuns {
			if run.ID == id {
				return backupStatus(s.State, run), idx, nil
			}
		}
		if b := s.Backups[id]; b != nil {
			return wire.BackupStatus{Backup: b}, idx, nil
		}
		return nil, idx, notFound("backup_not_found", "backup "+quote(id)+" is neither running nor in the catalog (GET /v1/backups lists them)")
	})
}

// backupStatus is a run with its task's progress.
func backupStatus(s *fsm.State, run *fsm.Backup) wire.BackupStatus {
	st := wire.BackupStatus{Backup: run}
	t := s.Tasks[fsm.BackupTaskID(run.Region)]
	if t == nil || t.Agent == "" {
		return st
	}
	c := *run
	c.Status = fsm.BackupRunning
	st.Backup, st.Agent, st.Generation, st.TaskError = &c, t.Agent, t.Generation, t.Error
	var p fsm.BackupProgress
	if len(t.Result) > 0 && json.Unmarshal(t.Result, &p) == nil && p.Backup == run.ID {
		st.Progress = &p
	}
	return st
}

// runDrill answers POST /v1/regions/{name}/drills: a restore drill of the
// region's newest verified backup now.
func (a *API) runDrill(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	cmd := fsm.DrillRequest{Region: region, Reason: fsm.BackupReasonManual, RequestedBy: identityOf(r).Accessor, At: a.stamp()}
	a.write(w, r, nil, fsm.DrillRequestType, cmd, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusAccepted, res.Value)
	})
}

// listDrills answers GET /v1/regions/{name}/drills.
func (a *API) listDrills(w http.ResponseWriter, r *http.Request) {
	region := mux.Vars(r)["name"]
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := backupIndex(s)
		ds := s.DrillsOf(region)
		if s.Regions[region] == nil && len(ds) == 0 {
			return nil, idx, notFound("region_not_found", "region "+quote(region)+" is not registered and has no drills")
		}
		out := wire.DrillList{Drills: ds}
		if out.Drills == nil {
			out.Drills = []*fsm.Drill{}
		}
		if run := s.DrillRuns[region]; run != nil {
			st := wire.DrillStatus{Drill: run}
			if t := s.Tasks[fsm.DrillTaskID(region)]; t != nil && t.Agent != "" {
				c := *run
				c.Status = fsm.DrillRunning
				st.Drill, st.Agent, st.Generation, st.TaskError = &c, t.Agent, t.Generation, t.Error
				var p fsm.DrillProgress
				if len(t.Result) > 0 && json.Unmarshal(t.Result, &p) == nil && p.Drill == run.ID {
					st.Progress = &p
				}
			}
			out.Running = &st
		}
		return out, idx, nil
	})
}
