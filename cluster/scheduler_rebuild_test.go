package cluster

import (
	"encoding/json"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// TestRebuildPlacementAndRecord: a pending rebuild becomes a
// region-rebuild task placed only on the agent of the region that manages
// its PostgreSQL (a backup-only agent cannot take it), with the backup's
// repository in its spec; a progress report is not recorded, a final one
// is, with the task's generation and agent; a recorded rebuild has no
// task.
func TestRebuildPlacementAndRecord(t *testing.T) {
	s := backupState()
	s.Rebuilds = map[string]*fsm.Rebuild{}
	s.Agents["a2"] = &fsm.Agent{Node: "a2", Region: "a", Status: fsm.AgentAlive, Capabilities: []string{fsm.TaskTypeBackup, fsm.TaskTypeRebuild}}
	s.Backups["a-3"] = &fsm.Backup{ID: "a-3", Region: "a", Type: fsm.BackupFull, Status: fsm.BackupSucceeded,
		BackupResult: &fsm.BackupResult{Label: "L", Verified: true, Repo: fsm.BackupRepo{Kind: fsm.RepoPosix, Path: "/srv/repo"}}}
	s.Rebuilds["a"] = &fsm.Rebuild{ID: "a-r9", Region: "a", Backup: "a-3", Label: "L", BackupStop: 100, BytesTotal: 50, TargetTime: 7, Status: fsm.RebuildPending}
	plan := ComputePlan(s)
	var created *fsm.TaskSpec
	for i := range plan.Create {
		if plan.Create[i].Type == fsm.TaskTypeRebuild {
			created = &plan.Create[i]
		}
	}
	if created == nil || created.ID != "rebuild/a" || created.Agent != "a2" {
		t.Fatalf("plan: %+v, want rebuild/a on a2 (the agent that manages a's PostgreSQL)", plan)
	}
	var spec fsm.RebuildSpec
	if err := json.Unmarshal(created.Spec, &spec); err != nil || spec.Rebuild != "a-r9" || spec.Label != "L" || spec.TargetTime != 7 ||
		spec.BackupStop != 100 || spec.BytesTotal != 50 || spec.Repository.Path != "/srv/repo" || spec.Stanza != "a" {
		t.Fatalf("spec: %+v %v", spec, err)
	}
	progress, _ := json.Marshal(fsm.RebuildProgress{Rebuild: "a-r9", Phase: fsm.RebuildPhaseRestoring, Files: 3})
	s.Tasks["rebuild/a"] = &fsm.Task{ID: "rebuild/a", Type: fsm.TaskTypeRebuild, Region: "a", Spec: created.Spec, Agent: "a2", Generation: 12,
		Status: fsm.TaskRunning, Result: progress}
	if r := RebuildRecords(s); len(r) != 0 {
		t.Fatalf("records from a progress report: %+v", r)
	}
	final, _ := json.Marshal(fsm.RebuildProgress{Rebuild: "a-r9", Phase: fsm.RebuildPhaseFailed, Done: true, Result: &fsm.RebuildResult{Phase: fsm.RebuildPhaseRestoring, Error: "boom"}})
	s.Tasks["rebuild/a"].Status, s.Tasks["rebuild/a"].Result = fsm.TaskFailing, final
	r := RebuildRecords(s)
	if len(r) != 1 || r[0].Rebuild != "a-r9" || r[0].Generation != 12 || r[0].Agent != "a2" || !r[0].Failed || r[0].Result.Error != "boom" {
		t.Fatalf("records from a final report: %+v", r)
	}
	s.Rebuilds["a"] = &fsm.Rebuild{ID: "a-r9", Region: "a", Status: fsm.RebuildFailed}
	if _, ok := desiredTasks(s)["rebuild/a"]; ok {
		t.Fatal("a recorded rebuild still has a task")
	}
}
