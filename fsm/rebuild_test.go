package fsm

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// rebuildRoundTrips exercises the rebuild commands after backupRoundTrips
// recorded the verified backup id (Stop 0) and agent bk1 is alive.
func rebuildRoundTrips(t *testing.T, check func(MessageType, any, func(*State, *ApplyResult)), id string) {
	var rb string
	check(RebuildRequestType, RebuildRequest{Region: "us-east", RequestedBy: "acc1", At: 80}, func(s *State, res *ApplyResult) {
		r := s.Rebuilds["us-east"]
		if r == nil || r.Status != RebuildPending || r.Backup != id || r.Label != "20261208-000000F" || r.BytesTotal != 100 ||
			r.ID != "us-east-r"+itoa(res.Index) || s.TableIndex(TableRebuilds) != res.Index {
			t.Fatalf("rebuild after request: %+v", r)
		}
		rb = r.ID
	})
	var gen uint64
	check(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: RebuildTaskID("us-east"), Type: TaskTypeRebuild, Region: "us-east", Agent: "bk1"}}, At: 81},
		func(s *State, res *ApplyResult) { gen = res.Index })
	check(RebuildRecordType, RebuildRecord{Rebuild: rb, Region: "us-east", Generation: gen, Agent: "bk1", At: 82,
		Result: RebuildResult{Phase: RebuildPhaseDone, DataDir: "/srv/pg", Bytes: 100, Files: 9, Timeline: 2}},
		func(s *State, res *ApplyResult) {
			r := s.Rebuilds["us-east"]
			if r == nil || r.Status != RebuildDone || r.Agent != "bk1" || r.RebuildResult == nil || r.Timeline != 2 {
				t.Fatalf("rebuild after record: %+v", r)
			}
		})
	check(TaskPlanType, TaskPlan{Delete: []string{RebuildTaskID("us-east")}, At: 83}, func(*State, *ApplyResult) {})
}

// TestRebuildRequestRefusals: an unknown region, a region without a
// verified backup, a target time in the future or before every backup,
// a second rebuild while one runs, and a stale record are each refused
// with their code, and change nothing.
func TestRebuildRequestRefusals(t *testing.T) {
	h := agentHarness(t)
	now := int64(1_000_000) * int64(time.Second)
	expect := func(what string, typ MessageType, cmd any, code string) {
		t.Helper()
		if res := h.apply(typ, cmd); codeOf(res.Err) != code {
			t.Fatalf("%s: %v, want %s", what, res.Err, code)
		}
	}
	expect("unknown region", RebuildRequestType, RebuildRequest{Region: "mars", At: now}, "region_not_found")
	expect("no verified backup", RebuildRequestType, RebuildRequest{Region: "us-east", At: now}, CodeNoVerifiedBackup)
	h.f.Read(func(s *State) {
		if len(s.Rebuilds) != 0 {
			t.Fatalf("refused requests left rebuilds: %+v", s.Rebuilds)
		}
	})
	// Two verified backups, ending at now-100 s and now-50 s, and an
	// unverified one.
	h.f.mu.Lock()
	for i, stop := range []int64{now/1e9 - 100, now/1e9 - 50, now/1e9 - 10} {
		id := "us-east-" + itoa(uint64(i+1))
		h.f.state.Backups[id] = &Backup{ID: id, Region: "us-east", Type: BackupFull, Status: BackupSucceeded, CreateIndex: uint64(i + 1),
			BackupResult: &BackupResult{Label: "L" + itoa(uint64(i+1)), Stop: stop, Verified: i < 2}}
	}
	h.f.mu.Unlock()
	expect("a target in the future", RebuildRequestType, RebuildRequest{Region: "us-east", TargetTime: now + int64(time.Minute), At: now}, CodeInvalidTargetTime)
	expect("a target before every backup", RebuildRequestType, RebuildRequest{Region: "us-east", TargetTime: now - 200*int64(time.Second), At: now}, CodeInvalidTargetTime)
	expect("a target before the named backup's end", RebuildRequestType, RebuildRequest{Region: "us-east", Backup: "us-east-2", TargetTime: now - 70*int64(time.Second), At: now}, CodeInvalidTargetTime)
	expect("an unverified backup", RebuildRequestType, RebuildRequest{Region: "us-east", Backup: "us-east-3", At: now}, CodeNoVerifiedBackup)
	expect("an unknown backup", RebuildRequestType, RebuildRequest{Region: "us-east", Backup: "us-east-9", At: now}, "backup_not_found")
	h.f.Read(func(s *State) {
		if len(s.Rebuilds) != 0 {
			t.Fatalf("refused requests left rebuilds: %+v", s.Rebuilds)
		}
	})
	// A point between the two verified backups restores the older one;
	// no point, the newest verified one.
	res := h.apply(RebuildRequestType, RebuildRequest{Region: "us-east", TargetTime: now - 70*int64(time.Second), At: now})
	if res.Err != nil || res.Value.(*Rebuild).Backup != "us-east-1" {
		t.Fatalf("PITR between the backups: %+v %v", res.Value, res.Err)
	}
	expect("a concurrent rebuild", RebuildRequestType, RebuildRequest{Region: "us-east", At: now}, CodeRebuildInProgress)
	first := res.Value.(*Rebuild)
	expect("a record of no task", RebuildRecordType, RebuildRecord{Rebuild: first.ID, Region: "us-east", Generation: 1, Agent: "a1", At: now}, CodeRebuildStale)
	expect("a record of another rebuild", RebuildRecordType, RebuildRecord{Rebuild: "us-east-r1", Region: "us-east", Generation: 1, Agent: "a1", At: now}, CodeRebuildStale)
	h.f.Read(func(s *State) {
		if r := s.Rebuilds["us-east"]; r == nil || r.ID != first.ID || r.Status != RebuildPending {
			t.Fatalf("after the refusals: %+v", r)
		}
	})
}

// TestRebuildSnapshotRoundTrip: a snapshot carries each region's newest
// rebuild, and one with an invalid rebuild is refused.
func TestRebuildSnapshotRoundTrip(t *testing.T) {
	s := newState()
	s.Rebuilds["r"] = &Rebuild{ID: "r-r9", Region: "r", Backup: "r-1", Label: "L", Status: RebuildDone, TargetTime: 5,
		RebuildResult: &RebuildResult{Phase: RebuildPhaseDone, Timeline: 3}}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, s); err != nil {
		t.Fatal(err)
	}
	back, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if r := back.Rebuilds["r"]; r == nil || r.ID != "r-r9" || r.TargetTime != 5 || r.RebuildResult == nil || r.Timeline != 3 {
		t.Fatalf("rebuild after a snapshot round trip: %+v", back.Rebuilds)
	}
	for _, bad := range []string{
		strings.Replace(buf.String(), `"status":"done"`, `"status":"great"`, 1),
		strings.Replace(buf.String(), `"id":"r-r9"`, `"id":"x-r9"`, 1),
	} {
		if _, err := ReadSnapshot(strings.NewReader(bad)); err == nil {
			t.Fatalf("a snapshot with an invalid rebuild was restored: %s", bad)
		}
	}
}
