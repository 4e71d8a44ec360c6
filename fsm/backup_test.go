package fsm

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// backupRoundTrips exercises the backup commands; called from
// TestCommandRoundTrip with us-east registered and no agent.
func backupRoundTrips(t *testing.T, check func(MessageType, any, func(*State, *ApplyResult))) {
	pol := BackupPolicy{Region: "us-east", FullEverySeconds: 3600, IncrEverySeconds: 60, RetentionFull: 2, MaxAgeSeconds: 600,
		Repository: BackupRepo{Kind: RepoPosix, Path: "/srv/backups"}}
	check(BackupPolicySetType, BackupPolicySet{Policy: pol, At: 70}, func(s *State, res *ApplyResult) {
		p := s.BackupPolicies["us-east"]
		if p == nil || p.ModifyIndex != res.Index || p.Default || s.BackupPolicyOf("us-east") != p || s.TableIndex(TableBackupPolicies) != res.Index {
			t.Fatalf("policy after set: %+v", p)
		}
	})
	var id string
	check(BackupRequestType, BackupRequest{Region: "us-east", Type: BackupFull, Reason: BackupReasonManual, RequestedBy: "acc1", At: 71}, func(s *State, res *ApplyResult) {
		b := s.BackupRuns["us-east"]
		if b == nil || b.Status != BackupPending || b.ID != "us-east-"+itoa(res.Index) || b.RequestedBy != "acc1" {
			t.Fatalf("run after request: %+v", b)
		}
		id = b.ID
	})
	a := testAgent("bk1", "us-east", AgentAlive)
	a.Capabilities = []string{TaskTypeBackup, TaskTypeDrill, TaskTypeRebuild}
	check(AgentUpsertType, AgentUpsert{Agent: a, At: 72}, func(*State, *ApplyResult) {})
	var gen uint64
	check(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: BackupTaskID("us-east"), Type: TaskTypeBackup, Region: "us-east", Agent: "bk1"}}, At: 73},
		func(s *State, res *ApplyResult) { gen = res.Index })
	check(BackupRecordType, BackupRecord{Backup: id, Region: "us-east", Generation: gen, Agent: "bk1", At: 74,
		Result: BackupResult{Label: "20261208-000000F", Size: 100, WALStart: "000000010000000000000002", WALStop: "000000010000000000000002", Verified: true, InRepo: []string{"20261208-000000F"}}},
		func(s *State, res *ApplyResult) {
			b := s.Backups[id]
			if b == nil || b.Status != BackupSucceeded || b.Label != "20261208-000000F" || !b.Verified || s.BackupRuns["us-east"] != nil || b.InRepo != nil {
				t.Fatalf("catalog after record: %+v", b)
			}
		})
	var drill string
	check(DrillRequestType, DrillRequest{Region: "us-east", Reason: BackupReasonManual, At: 75}, func(s *State, res *ApplyResult) {
		d := s.DrillRuns["us-east"]
		if d == nil || d.Backup != id || d.Label != "20261208-000000F" || d.Status != DrillPending {
			t.Fatalf("drill run after request: %+v", d)
		}
		drill = d.ID
	})
	check(TaskPlanType, TaskPlan{Delete: []string{BackupTaskID("us-east")}, Create: []TaskSpec{{ID: DrillTaskID("us-east"), Type: TaskTypeDrill, Region: "us-east", Agent: "bk1"}}, At: 76},
		func(s *State, res *ApplyResult) { gen = res.Index })
	check(DrillRecordType, DrillRecord{Drill: drill, Region: "us-east", Generation: gen, Agent: "bk1", At: 77,
		Result: DrillResult{Verdict: DrillPassed, TablesRead: 1, Tables: []DrillTable{{Database: "atomfed", Name: "public.t", Rows: 3, Checksum: "9"}}}},
		func(s *State, res *ApplyResult) {
			d := s.Drills[drill]
			if d == nil || d.Status != DrillPassed || s.DrillRuns["us-east"] != nil || s.Backups[id].Drill == nil || s.Backups[id].Drill.Verdict != DrillPassed {
				t.Fatalf("after the drill record: %+v, backup %+v", d, s.Backups[id])
			}
		})
	check(TaskPlanType, TaskPlan{Delete: []string{DrillTaskID("us-east")}, At: 78}, func(*State, *ApplyResult) {})
	rebuildRoundTrips(t, check, id)
	check(AgentDeleteType, AgentDelete{Node: "bk1", At: 79}, func(*State, *ApplyResult) {})
}

func itoa(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func TestBackupRecordIsFencedByGeneration(t *testing.T) {
	h := agentHarness(t)
	a := testAgent("a1", "us-east", AgentAlive)
	a.Capabilities = []string{TaskTypeBackup}
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: a, At: 2})
	a.Node = "a2"
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: a, At: 2})
	req := h.mustApply(BackupRequestType, BackupRequest{Region: "us-east", Type: BackupFull, Reason: BackupReasonSchedule, At: 3})
	id := req.Value.(*Backup).ID
	if res := h.apply(BackupRequestType, BackupRequest{Region: "us-east", Type: BackupIncr, Reason: BackupReasonManual, At: 3}); codeOf(res.Err) != CodeBackupInProgress {
		t.Fatalf("a second backup of a region while one runs: %+v, want %s", res.Err, CodeBackupInProgress)
	}
	first := h.mustApply(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: BackupTaskID("us-east"), Type: TaskTypeBackup, Region: "us-east", Agent: "a1"}}, At: 4})
	moved := h.mustApply(TaskPlanType, TaskPlan{Assign: []Assignment{{Task: BackupTaskID("us-east"), Agent: "a2", Generation: first.Index}}, At: 5})
	// The failed agent's late result is refused; the peer's counts.
	late := h.apply(BackupRecordType, BackupRecord{Backup: id, Region: "us-east", Generation: first.Index, Agent: "a1", Result: BackupResult{Label: "x"}, At: 6})
	if codeOf(late.Err) != CodeBackupStale {
		t.Fatalf("a result of the replaced assignment: %+v, want %s", late.Err, CodeBackupStale)
	}
	h.mustApply(BackupRecordType, BackupRecord{Backup: id, Region: "us-east", Generation: moved.Index, Agent: "a2", Result: BackupResult{Label: "y"}, At: 7})
	again := h.apply(BackupRecordType, BackupRecord{Backup: id, Region: "us-east", Generation: moved.Index, Agent: "a2", Result: BackupResult{Label: "z"}, At: 8})
	if codeOf(again.Err) != CodeBackupStale {
		t.Fatalf("a second record of one backup: %+v", again.Err)
	}
	h.f.Read(func(s *State) {
		if b := s.Backups[id]; b == nil || b.Label != "y" || b.Agent != "a2" {
			t.Fatalf("catalog: %+v", b)
		}
	})
}

func TestBackupPolicyValidation(t *testing.T) {
	good := BackupPolicy{Region: "us-east", FullEverySeconds: 3600, IncrEverySeconds: 60, RetentionFull: 1, MaxAgeSeconds: 120}
	if err := ValidateBackupPolicy(&good); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(p *BackupPolicy){
		"incr over full":     func(p *BackupPolicy) { p.IncrEverySeconds = 7200 },
		"too frequent":       func(p *BackupPolicy) { p.IncrEverySeconds = 1 },
		"no retention":       func(p *BackupPolicy) { p.RetentionFull = 0 },
		"max age under incr": func(p *BackupPolicy) { p.MaxAgeSeconds = 30 },
		"relative path":      func(p *BackupPolicy) { p.Repository.Path = "backups" },
		"unknown kind":       func(p *BackupPolicy) { p.Repository.Kind = "ftp" },
		"secret in policy":   func(p *BackupPolicy) { p.Repository.Bucket = "b" },
	} {
		p := good
		mut(&p)
		if err := ValidateBackupPolicy(&p); err == nil || codeOf(err) != "invalid_backup_policy" {
			t.Errorf("%s: %v, want invalid_backup_policy", name, err)
		}
	}
}

func TestBackupDueAndStaleness(t *testing.T) {
	s := newState()
	s.Regions["r"] = &Region{Name: "r"}
	now := int64(100 * time.Hour)
	if got := s.BackupDue("r", now, time.Minute); got != BackupFull {
		t.Fatalf("a region without backups is due %q, want full", got)
	}
	if h := s.BackupHealthOf("r", now); !h.Stale || !strings.Contains(h.Warning, "no verified backup") {
		t.Fatalf("health without backups: %+v", h)
	}
	s.Backups["r-1"] = &Backup{ID: "r-1", Region: "r", Type: BackupFull, Status: BackupSucceeded, RecordedAt: now - int64(2*time.Hour), CreateIndex: 1,
		BackupResult: &BackupResult{Verified: true}}
	if got := s.BackupDue("r", now, time.Minute); got != BackupIncr {
		t.Fatalf("two hours after a full backup (default: incr hourly): %q, want incr", got)
	}
	s.Backups["r-2"] = &Backup{ID: "r-2", Region: "r", Type: BackupIncr, Status: BackupFailed, RecordedAt: now - int64(10*time.Second), CreateIndex: 2,
		BackupResult: &BackupResult{Error: "boom"}}
	if got := s.BackupDue("r", now, time.Minute); got != "" {
		t.Fatalf("10 s after a failed attempt: %q, want nothing (retry after a minute)", got)
	}
	if h := s.BackupHealthOf("r", now); h.Stale || h.LastVerified.ID != "r-1" || h.AgeSeconds != 7200 {
		t.Fatalf("health with a verified backup 2 h old (max age 26 h): %+v", h)
	}
	if h := s.BackupHealthOf("r", now+int64(25*time.Hour)); !h.Stale || !strings.Contains(h.Warning, "r-1") {
		t.Fatalf("health 27 h after the backup: %+v", h)
	}
	s.BackupRuns["r"] = &Backup{ID: "r-3", Region: "r"}
	if got := s.BackupDue("r", now+int64(25*time.Hour), time.Minute); got != "" {
		t.Fatalf("while a backup runs: %q, want nothing", got)
	}
}

func TestBackupSnapshotRoundTrip(t *testing.T) {
	s := newState()
	s.BackupPolicies["r"] = &BackupPolicy{Region: "r", FullEverySeconds: 3600, IncrEverySeconds: 60, RetentionFull: 1, MaxAgeSeconds: 120}
	s.BackupRuns["r"] = &Backup{ID: "r-9", Region: "r", Type: BackupIncr, Status: BackupPending}
	s.Backups["r-1"] = &Backup{ID: "r-1", Region: "r", Type: BackupFull, Status: BackupSucceeded, BackupResult: &BackupResult{Label: "L", Verified: true}}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, s); err != nil {
		t.Fatal(err)
	}
	back, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if back.BackupPolicies["r"].RetentionFull != 1 || back.BackupRuns["r"].ID != "r-9" || back.Backups["r-1"].Label != "L" {
		t.Fatalf("backup state after a snapshot round trip: %+v %+v %+v", back.BackupPolicies, back.BackupRuns, back.Backups)
	}
	bad := strings.Replace(buf.String(), `"status":"succeeded"`, `"status":"great"`, 1)
	if _, err := ReadSnapshot(strings.NewReader(bad)); err == nil {
		t.Fatal("a snapshot with an invalid backup status was restored")
	}
}

func TestDrillDue(t *testing.T) {
	s := newState()
	s.Regions["r"] = &Region{Name: "r"}
	now := int64(100 * time.Hour)
	if s.DrillDue("r", now, time.Minute) {
		t.Fatal("a drill is due without a verified backup")
	}
	s.Backups["r-1"] = &Backup{ID: "r-1", Region: "r", Type: BackupFull, Status: BackupSucceeded, RecordedAt: now - int64(time.Hour), CreateIndex: 1,
		BackupResult: &BackupResult{Label: "L", Verified: true}}
	if !s.DrillDue("r", now, time.Minute) {
		t.Fatal("no drill is due with a verified backup and no drill")
	}
	s.Drills["r-d2"] = &Drill{ID: "r-d2", Region: "r", Status: DrillPassed, RecordedAt: now - int64(time.Hour), CreateIndex: 2}
	if s.DrillDue("r", now, time.Minute) {
		t.Fatal("a drill is due an hour after a passed one (default: daily)")
	}
	s.Drills["r-d3"] = &Drill{ID: "r-d3", Region: "r", Status: DrillFailed, RecordedAt: now - int64(2*time.Minute), CreateIndex: 3}
	if !s.DrillDue("r", now, time.Minute) {
		t.Fatal("no drill is due two minutes after a failed one (retry after a minute)")
	}
	s.BackupRuns["r"] = &Backup{ID: "r-4", Region: "r"}
	if s.DrillDue("r", now, time.Minute) {
		t.Fatal("a drill is due while a backup of the region runs")
	}
}

func TestDrillRequestNeedsAVerifiedBackup(t *testing.T) {
	h := agentHarness(t)
	if res := h.apply(DrillRequestType, DrillRequest{Region: "us-east", Reason: BackupReasonManual, At: 1}); codeOf(res.Err) != CodeNoVerifiedBackup {
		t.Fatalf("a drill without a verified backup: %+v, want %s", res.Err, CodeNoVerifiedBackup)
	}
	if res := h.apply(DrillRequestType, DrillRequest{Region: "mars", Reason: BackupReasonManual, At: 1}); codeOf(res.Err) != "region_not_found" {
		t.Fatalf("a drill of an unknown region: %+v", res.Err)
	}
	h.f.Read(func(s *State) {
		if len(s.DrillRuns) != 0 {
			t.Fatalf("refused drill requests left runs: %+v", s.DrillRuns)
		}
	})
}
