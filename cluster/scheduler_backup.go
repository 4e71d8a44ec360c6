package cluster

import (
	"encoding/json"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// backupRetryAfter is how long the leader waits after a failed backup of
// a region before the schedule asks for the next one.
const backupRetryAfter = time.Minute

// drillRetryAfter is how long the leader waits after a failed restore
// drill before the schedule asks for the next one.
const drillRetryAfter = 10 * time.Minute

// desiredBackupTasks adds one backup task per region with a backup asked
// for (fsm.State.BackupRuns): backup/<region>, on one agent of the region
// that can run it. The task goes when the leader records its result in
// the catalog (BackupRecord removes the run); a failed agent's backup
// moves to a peer like any task, with a new generation, and only the
// result of the current generation is recorded.
func desiredBackupTasks(s *fsm.State, out map[string]fsm.TaskSpec) {
	for _, run := range s.SortedBackupRuns() {
		if s.Regions[run.Region] == nil {
			continue
		}
		p := s.BackupPolicyOf(run.Region)
		spec, _ := json.Marshal(fsm.BackupSpec{Backup: run.ID, Region: run.Region, Type: run.Type, Stanza: run.Region,
			Retention: p.RetentionFull, Repository: p.Repository})
		id := fsm.BackupTaskID(run.Region)
		out[id] = fsm.TaskSpec{ID: id, Type: fsm.TaskTypeBackup, Region: run.Region, Spec: spec}
	}
}

// desiredDrillTasks adds one restore-drill task per region with a drill
// asked for (fsm.State.DrillRuns): drill/<region>, placed like a backup.
func desiredDrillTasks(s *fsm.State, out map[string]fsm.TaskSpec) {
	for _, run := range s.SortedDrillRuns() {
		if s.Regions[run.Region] == nil {
			continue
		}
		p := s.BackupPolicyOf(run.Region)
		repo := p.Repository
		if b := s.Backups[run.Backup]; b != nil && b.BackupResult != nil {
			repo = fsm.BackupRepo{Kind: b.Repo.Kind, Path: b.Repo.Path} // where that backup is
		}
		spec, _ := json.Marshal(fsm.DrillSpec{Drill: run.ID, Region: run.Region, Stanza: run.Region, Backup: run.Backup, Label: run.Label, Repository: repo})
		id := fsm.DrillTaskID(run.Region)
		out[id] = fsm.TaskSpec{ID: id, Type: fsm.TaskTypeDrill, Region: run.Region, Spec: spec}
	}
}

// DrillsDue returns the scheduled drills the state is due at now: one per
// registered region with an alive agent able to run it whose policy says
// a drill is due (fsm.State.DrillDue).
func DrillsDue(s *fsm.State, now int64) []fsm.DrillRequest {
	var out []fsm.DrillRequest
	for _, r := range s.SortedRegions() {
		if s.Databases[r.Name] == nil || !hasAgentFor(s, r.Name, fsm.TaskTypeDrill) {
			continue
		}
		if s.DrillDue(r.Name, now, drillRetryAfter) {
			out = append(out, fsm.DrillRequest{Region: r.Name, Reason: fsm.BackupReasonSchedule})
		}
	}
	return out
}

// DrillRecords returns the drill records the state's drill tasks ask for.
func DrillRecords(s *fsm.State) []fsm.DrillRecord {
	var out []fsm.DrillRecord
	for _, run := range s.SortedDrillRuns() {
		t := s.Tasks[fsm.DrillTaskID(run.Region)]
		if t == nil || t.Agent == "" || len(t.Result) == 0 || (t.Status != fsm.TaskSucceeded && t.Status != fsm.TaskFailing) {
			continue
		}
		var p fsm.DrillProgress
		if json.Unmarshal(t.Result, &p) != nil || !p.Done || p.Result == nil || p.Drill != run.ID {
			continue
		}
		out = append(out, fsm.DrillRecord{Drill: run.ID, Region: run.Region, Generation: t.Generation, Agent: t.Agent, Result: *p.Result})
	}
	return out
}

// BackupsDue returns the scheduled backups the state is due at now (unix
// ns): one per registered region that has a database and an alive agent
// able to back it up, whose policy says a backup is due.
func BackupsDue(s *fsm.State, now int64) []fsm.BackupRequest {
	var out []fsm.BackupRequest
	for _, r := range s.SortedRegions() {
		if s.Databases[r.Name] == nil || !hasAgentFor(s, r.Name, fsm.TaskTypeBackup) {
			continue // nothing could take it: a simulated region
		}
		if typ := s.BackupDue(r.Name, now, backupRetryAfter); typ != "" {
			out = append(out, fsm.BackupRequest{Region: r.Name, Type: typ, Reason: fsm.BackupReasonSchedule})
		}
	}
	return out
}

func hasAgentFor(s *fsm.State, region, typ string) bool {
	for _, a := range s.Agents {
		if a.Region == region && a.Status == fsm.AgentAlive && a.HasCapability(typ) {
			return true
		}
	}
	return false
}

// BackupRecords returns the catalog records the state's backup tasks ask
// for: each task whose current assignment reported its final result.
func BackupRecords(s *fsm.State) []fsm.BackupRecord {
	var out []fsm.BackupRecord
	for _, run := range s.SortedBackupRuns() {
		t := s.Tasks[fsm.BackupTaskID(run.Region)]
		if t == nil || t.Agent == "" || len(t.Result) == 0 || (t.Status != fsm.TaskSucceeded && t.Status != fsm.TaskFailing) {
			continue
		}
		var p fsm.BackupProgress
		if json.Unmarshal(t.Result, &p) != nil || !p.Done || p.Result == nil || p.Backup != run.ID {
			continue
		}
		out = append(out, fsm.BackupRecord{Backup: run.ID, Region: run.Region, Generation: t.Generation, Agent: t.Agent,
			Failed: t.Status != fsm.TaskSucceeded, Result: *p.Result})
	}
	return out
}
