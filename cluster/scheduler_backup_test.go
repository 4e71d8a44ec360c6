package cluster

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

func backupState() *fsm.State {
	s := replState("a", "b")
	s.BackupPolicies, s.BackupRuns, s.Backups = map[string]*fsm.BackupPolicy{}, map[string]*fsm.Backup{}, map[string]*fsm.Backup{}
	for _, n := range []string{"a1", "a2"} {
		s.Agents[n] = &fsm.Agent{Node: n, Region: "a", Status: fsm.AgentAlive, Capabilities: []string{fsm.TaskTypeBackup}}
	}
	return s
}

// TestBackupScheduleAndPlacement: a region with a database and a backup
// agent is due a full backup at once (region b, without a backup agent,
// is not: nothing could take it); the run becomes a backup task placed on
// an agent of the region; when that agent fails the task moves to its
// peer; and only a final result of the current assignment is recorded.
func TestBackupScheduleAndPlacement(t *testing.T) {
	s := backupState()
	now := time.Now().UnixNano()
	due := BackupsDue(s, now)
	if len(due) != 1 || due[0].Region != "a" || due[0].Type != fsm.BackupFull || due[0].Reason != fsm.BackupReasonSchedule {
		t.Fatalf("due: %+v, want one full backup of a", due)
	}
	s.BackupRuns["a"] = &fsm.Backup{ID: "a-7", Region: "a", Type: fsm.BackupFull, Status: fsm.BackupPending}
	if due := BackupsDue(s, now); len(due) != 0 {
		t.Fatalf("due while a backup of a runs: %+v", due)
	}
	plan := ComputePlan(s)
	var created *fsm.TaskSpec
	for i := range plan.Create {
		if plan.Create[i].Type == fsm.TaskTypeBackup {
			created = &plan.Create[i]
		}
	}
	if created == nil || created.ID != "backup/a" || created.Agent == "" {
		t.Fatalf("plan: %+v, want backup/a placed on an agent of a", plan)
	}
	var spec fsm.BackupSpec
	if err := json.Unmarshal(created.Spec, &spec); err != nil || spec.Backup != "a-7" || spec.Stanza != "a" || spec.Retention != 2 {
		t.Fatalf("spec: %+v %v", spec, err)
	}
	first := created.Agent
	s.Tasks["backup/a"] = &fsm.Task{ID: "backup/a", Type: fsm.TaskTypeBackup, Region: "a", Spec: created.Spec, Agent: first, Generation: 10, Status: fsm.TaskRunning}
	dead := *s.Agents[first]
	dead.Status = fsm.AgentFailed
	s.Agents[first] = &dead
	plan = ComputePlan(s)
	if plan == nil || len(plan.Assign) != 1 || plan.Assign[0].Task != "backup/a" || plan.Assign[0].Agent == first || plan.Assign[0].Agent == "" {
		t.Fatalf("after %s failed: %+v, want backup/a moved to its peer", first, plan)
	}
	// A progress report is not final; a final one is recorded with the
	// task's generation and agent.
	res, _ := json.Marshal(fsm.BackupProgress{Backup: "a-7", Phase: "backup"})
	s.Tasks["backup/a"] = &fsm.Task{ID: "backup/a", Type: fsm.TaskTypeBackup, Region: "a", Agent: "a2", Generation: 12, Status: fsm.TaskRunning, Result: res}
	if r := BackupRecords(s); len(r) != 0 {
		t.Fatalf("records of a running backup: %+v", r)
	}
	res, _ = json.Marshal(fsm.BackupProgress{Backup: "a-7", Done: true, Result: &fsm.BackupResult{Label: "L", Verified: true}})
	s.Tasks["backup/a"] = &fsm.Task{ID: "backup/a", Type: fsm.TaskTypeBackup, Region: "a", Agent: "a2", Generation: 12, Status: fsm.TaskSucceeded, Result: res}
	r := BackupRecords(s)
	if len(r) != 1 || r[0].Generation != 12 || r[0].Agent != "a2" || r[0].Failed || r[0].Result.Label != "L" {
		t.Fatalf("records: %+v", r)
	}
}
