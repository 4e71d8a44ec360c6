package recovery_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/recovery"
)

// sharedDir returns a temporary directory the postgres user can reach
// (PostgreSQL's archive_command runs pgBackRest as that user).
func sharedDir(t *testing.T, name string) string {
	t.Helper()
	d, err := os.MkdirTemp("", "atomfed-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func needPgBackRest(t *testing.T) {
	t.Helper()
	if _, err := recovery.FindPgBackRest(""); err != nil {
		t.Fatalf("this test needs pgBackRest: %v (.ci/run installs it)", err)
	}
}

// statuses collects what an executor reports.
type statuses struct {
	mu  sync.Mutex
	all []structs.TaskStatus
}

func (s *statuses) report(st structs.TaskStatus) {
	s.mu.Lock()
	s.all = append(s.all, st)
	s.mu.Unlock()
}

func (s *statuses) last(t *testing.T) (structs.TaskStatus, *fsm.BackupProgress) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.all) == 0 {
		t.Fatal("the executor reported nothing")
	}
	st := s.all[len(s.all)-1]
	b, _ := json.Marshal(st.Result)
	var p fsm.BackupProgress
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return st, &p
}

func backupTask(t *testing.T, id, typ string) *fsm.Task {
	spec, _ := json.Marshal(fsm.BackupSpec{Backup: id, Region: "us-east", Type: typ, Stanza: "us-east", Retention: 1})
	return &fsm.Task{ID: fsm.BackupTaskID("us-east"), Type: fsm.TaskTypeBackup, Region: "us-east", Spec: spec, Generation: 1}
}

// TestBackupFullIncrementalVerifyAndRetention drives the executor against
// a real PostgreSQL and pgBackRest: the first backup sets archive_command
// (with a reload, no restart), creates the stanza, proves archiving with
// pgbackrest check, takes a full backup and verifies it; an incremental
// one follows from it; a second full one with retention 1 expires the
// first chain. Results carry label, size, WAL and LSN range; the DSN's
// password appears in no report.
func TestBackupFullIncrementalVerifyAndRetention(t *testing.T) {
	t.Parallel() // mostly waiting: for PostgreSQL, pgBackRest, SeaweedFS
	needPgBackRest(t)
	pg := pgtest.New(t, pglocal.Options{Name: "bk"})
	dir := sharedDir(t, "bk")
	x, err := recovery.NewExecutor(recovery.Config{DSN: pg.DSN(pglocal.Database), Dir: filepath.Join(dir, "work"),
		Repo: recovery.Repository{Kind: fsm.RepoPosix, Path: filepath.Join(dir, "repo")}, ProgressInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE t AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	run := func(id, typ string) *fsm.BackupResult {
		t.Helper()
		var s statuses
		if err := x.Run(ctx, backupTask(t, id, typ), s.report); err != nil {
			t.Fatal(err)
		}
		st, p := s.last(t)
		for _, each := range s.all {
			b, _ := json.Marshal(each)
			if strings.Contains(string(b), pg.Password) {
				t.Fatalf("a report carries the database password: %s", b)
			}
		}
		if st.Status != fsm.TaskSucceeded || !p.Done || p.Result == nil {
			t.Fatalf("backup %s: %+v %+v", id, st, p.Result)
		}
		r := p.Result
		if !r.Verified || r.VerifyError != "" || r.Label == "" || r.Size <= 0 || r.WALStart == "" || r.WALStop == "" || r.LSNStart == "" {
			t.Fatalf("backup %s result: %+v", id, r)
		}
		return r
	}
	full := run("us-east-1", fsm.BackupFull)
	if !strings.HasSuffix(full.Label, "F") || !strings.Contains(full.Archiving, "set by this agent") {
		t.Fatalf("first full backup: label %s, archiving %q", full.Label, full.Archiving)
	}
	var cmd string
	if err := conn.QueryRow(ctx, `SELECT current_setting('archive_command')`).Scan(&cmd); err != nil || !strings.Contains(cmd, "archive-push") {
		t.Fatalf("archive_command after the first backup: %q %v", cmd, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO t SELECT g, 'y' FROM generate_series(20001, 21000) g`); err != nil {
		t.Fatal(err)
	}
	incr := run("us-east-2", fsm.BackupIncr)
	if !strings.HasSuffix(incr.Label, "I") || incr.Prior != full.Label || strings.Contains(incr.Archiving, "set by this agent") {
		t.Fatalf("incremental backup: %+v (full %s)", incr, full.Label)
	}
	full2 := run("us-east-3", fsm.BackupFull)
	if len(full2.InRepo) != 1 || full2.InRepo[0] != full2.Label {
		t.Fatalf("with retention 1 the repository holds %v after the second full backup %s", full2.InRepo, full2.Label)
	}

	// Rows written after the backup: the drill marks a restore point on
	// the source, replays the archived WAL up to it, and the restored
	// table equals the source at that point exactly (the rows written
	// after the backup included); it leaves neither a server nor a
	// scratch directory behind.
	if _, err := conn.Exec(ctx, `INSERT INTO t SELECT g, 'after the backup' FROM generate_series(21001, 21500) g`); err != nil {
		t.Fatal(err)
	}
	var want fsm.DrillTable
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY public.t t`).Scan(&want.Rows, &want.Checksum); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(fsm.DrillSpec{Drill: "us-east-d4", Region: "us-east", Stanza: "us-east", Backup: "us-east-3", Label: full2.Label})
	var ds statuses
	if err := recovery.NewDrillExecutor(x).Run(ctx, &fsm.Task{ID: fsm.DrillTaskID("us-east"), Type: fsm.TaskTypeDrill, Spec: spec}, ds.report); err != nil {
		t.Fatal(err)
	}
	ds.mu.Lock()
	b, _ := json.Marshal(ds.all[len(ds.all)-1].Result)
	status := ds.all[len(ds.all)-1].Status
	ds.mu.Unlock()
	var dp fsm.DrillProgress
	if err := json.Unmarshal(b, &dp); err != nil || status != fsm.TaskSucceeded || !dp.Done || dp.Result.Verdict != fsm.DrillPassed {
		t.Fatalf("drill: %s %s", status, b)
	}
	var got *fsm.DrillTable
	for i, tb := range dp.Result.Tables {
		if tb.Database == pglocal.Database && tb.Name == "public.t" {
			got = &dp.Result.Tables[i]
		}
	}
	if got == nil || got.Rows != 21500 || got.Rows != want.Rows || got.Checksum != want.Checksum {
		t.Fatalf("drill read %+v of public.t, the source has %+v", got, want)
	}
	if dp.Result.TablesCompared != 1 || dp.Result.RestorePoint != "atomfed-us-east-d4" || dp.Result.RestoreLSN == "" {
		t.Fatalf("drill compared %d tables at %q (%s), want public.t at atomfed-us-east-d4", dp.Result.TablesCompared, dp.Result.RestorePoint, dp.Result.RestoreLSN)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "work", "drill-*"))
	if len(left) != 0 {
		t.Fatalf("the drill left %v behind", left)
	}
	t.Logf("drill: restore %d ms, start %d ms, whole %d ms, %d tables", dp.Result.RestoreMS, dp.Result.StartMS, dp.Result.DurationMS, dp.Result.TablesRead)

	// A file of the full backup corrupted in the repository: the next
	// backup's verify finds it, and that backup is reported unverified.
	files, _ := filepath.Glob(filepath.Join(dir, "repo", "backup", "us-east", full2.Label, "pg_data", "base", "*", "*"))
	var victim string
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.Size() > 1024 && (victim == "" || st.Size() > mustSize(victim)) {
			victim = f
		}
	}
	if victim == "" {
		t.Fatalf("no data file of %s in the repository", full2.Label)
	}
	f, err := os.OpenFile(victim, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("corrupted by the test"), 100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var cs statuses
	if err := x.Run(ctx, backupTask(t, "us-east-5", fsm.BackupIncr), cs.report); err != nil {
		t.Fatal(err)
	}
	st, p := cs.last(t)
	if st.Status != fsm.TaskSucceeded || p.Result == nil || p.Result.Verified || p.Result.VerifyError == "" {
		t.Fatalf("backup after a corruption of %s: %+v %+v, want taken but not verified", victim, st, p.Result)
	}
	t.Logf("verify after the corruption: %s", p.Result.VerifyError)
}

func mustSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// TestBackupFailsClearly: a policy that asks for S3 on an agent without
// it, and a PostgreSQL with archive_mode off, each fail the backup with a
// message that says what to fix, reported as the task's final result.
func TestBackupFailsClearly(t *testing.T) {
	t.Parallel() // mostly waiting: for PostgreSQL, pgBackRest, SeaweedFS
	needPgBackRest(t)
	pg := pgtest.New(t, pglocal.Options{Name: "noarch", Settings: map[string]string{"archive_mode": "off"}})
	dir := sharedDir(t, "noarch")
	x, err := recovery.NewExecutor(recovery.Config{DSN: pg.DSN(pglocal.Database), Dir: filepath.Join(dir, "work"),
		Repo: recovery.Repository{Kind: fsm.RepoPosix, Path: filepath.Join(dir, "repo")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name, want, phase string
		task              *fsm.Task
	}{
		{"archive_mode off", "archive_mode = on", "configure", backupTask(t, "us-east-1", fsm.BackupFull)},
		{"s3 without S3_ENDPOINT", "set S3_ENDPOINT", "configure", func() *fsm.Task {
			spec, _ := json.Marshal(fsm.BackupSpec{Backup: "us-east-2", Region: "us-east", Type: fsm.BackupFull, Stanza: "us-east", Retention: 1,
				Repository: fsm.BackupRepo{Kind: fsm.RepoS3}})
			return &fsm.Task{ID: "backup/us-east", Type: fsm.TaskTypeBackup, Spec: spec}
		}()},
	} {
		var s statuses
		if err := x.Run(ctx, tc.task, s.report); err != nil {
			t.Fatal(err)
		}
		st, p := s.last(t)
		if st.Status != fsm.TaskFailing || !p.Done || p.Result == nil || !strings.Contains(p.Result.Error, tc.want) || p.Result.Phase != tc.phase {
			t.Errorf("%s: %+v %+v, want a final failure in %s saying %q", tc.name, st, p.Result, tc.phase, tc.want)
		}
	}
}

// reports is every report as JSON, to look for secrets in.
func reports(s *statuses) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(s.all)
	return string(b)
}
