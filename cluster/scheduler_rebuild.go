package cluster

import (
	"encoding/json"

	"github.com/atomcloud/atomfed/fsm"
)

// desiredRebuildTasks adds one region-rebuild task per region with a
// rebuild asked for and not done (fsm.State.Rebuilds): rebuild/<region>,
// on one agent of the region that manages its PostgreSQL (the
// region-rebuild capability). The task goes when the leader records its
// result (RebuildRecord); a failed agent's rebuild moves to a peer with a
// new generation, and only the current generation's result counts.
func desiredRebuildTasks(s *fsm.State, out map[string]fsm.TaskSpec) {
	for _, r := range s.SortedRebuilds() {
		if !r.Active() || s.Regions[r.Region] == nil {
			continue
		}
		repo := s.BackupPolicyOf(r.Region).Repository
		if b := s.Backups[r.Backup]; b != nil && b.BackupResult != nil {
			repo = fsm.BackupRepo{Kind: b.Repo.Kind, Path: b.Repo.Path} // where that backup is
		}
		spec, _ := json.Marshal(fsm.RebuildSpec{Rebuild: r.ID, Region: r.Region, Stanza: r.Region, Backup: r.Backup, Label: r.Label,
			BackupStop: r.BackupStop, BytesTotal: r.BytesTotal, TargetTime: r.TargetTime, Force: r.Force, Repository: repo})
		id := fsm.RebuildTaskID(r.Region)
		out[id] = fsm.TaskSpec{ID: id, Type: fsm.TaskTypeRebuild, Region: r.Region, Spec: spec}
	}
}

// RebuildRecords returns the rebuild records the state's rebuild tasks
// ask for: each task whose current assignment reported its final result.
func RebuildRecords(s *fsm.State) []fsm.RebuildRecord {
	var out []fsm.RebuildRecord
	for _, r := range s.SortedRebuilds() {
		if !r.Active() {
			continue
		}
		t := s.Tasks[fsm.RebuildTaskID(r.Region)]
		if t == nil || t.Agent == "" || len(t.Result) == 0 || (t.Status != fsm.TaskSucceeded && t.Status != fsm.TaskFailing) {
			continue
		}
		var p fsm.RebuildProgress
		if json.Unmarshal(t.Result, &p) != nil || !p.Done || p.Result == nil || p.Rebuild != r.ID {
			continue
		}
		out = append(out, fsm.RebuildRecord{Rebuild: r.ID, Region: r.Region, Generation: t.Generation, Agent: t.Agent,
			Failed: t.Status != fsm.TaskSucceeded, Result: *p.Result})
	}
	return out
}
