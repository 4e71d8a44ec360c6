package cluster

import (
	"encoding/json"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// backupRetryAfter is how long the leader waits after a failed backup of
// a region before the schedule asks for the next one.
const backupRetryAfter = time.Minute

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

// BackupsDue returns the scheduled backups the state is due at now (unix
// ns): one per registered region that has a database and an alive agent
// able to back it up, whose policy says a backup is due.
func BackupsDue(s *fsm.State, now int64) []fsm.BackupRequest {
	var out []fsm.BackupRequest
	for _, r := range s.SortedRegions() {
		if s.Databases[r.Name] == nil || !hasBackupAgent(s, r.Name) {
			continue // nothing could take it: a simulated region
		}
		if typ := s.BackupDue(r.Name, now, backupRetryAfter); typ != "" {
			out = append(out, fsm.BackupRequest{Region: r.Name, Type: typ, Reason: fsm.BackupReasonSchedule})
		}
	}
	return out
}

func hasBackupAgent(s *fsm.State, region string) bool {
	for _, a := range s.Agents {
		if a.Region == region && a.Status == fsm.AgentAlive && a.HasCapability(fsm.TaskTypeBackup) {
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
