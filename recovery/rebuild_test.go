package recovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/recovery"
)

// rebuildRig is a region PostgreSQL with a verified full backup, and the
// executors of the agent that manages it.
type rebuildRig struct {
	pg     *pglocal.Cluster
	x      *recovery.Executor
	rb     *recovery.RebuildExecutor
	label  string
	stop   int64
	size   int64
	backup string
}

func newRebuildRig(t *testing.T, name string, setup func(ctx context.Context, conn *pgx.Conn)) *rebuildRig {
	t.Helper()
	needPgBackRest(t)
	pg := pgtest.New(t, pglocal.Options{Name: name})
	dir := sharedDir(t, name)
	x, err := recovery.NewExecutor(recovery.Config{DSN: pg.DSN(pglocal.Database), Dir: filepath.Join(dir, "work"),
		Repo: recovery.Repository{Kind: fsm.RepoPosix, Path: filepath.Join(dir, "repo")}, ProgressInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := recovery.NewRebuildExecutor(x, recovery.Managed{DataDir: pg.DataDir, BinDir: pg.BinDir})
	if err != nil {
		t.Fatal(err)
	}
	// pglocal stops the rebuilt server (pg_ctl) when it removes the cluster.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	setup(ctx, conn)
	var s statuses
	if err := x.Run(ctx, backupTask(t, name+"-1", fsm.BackupFull), s.report); err != nil {
		t.Fatal(err)
	}
	st, p := s.last(t)
	if st.Status != fsm.TaskSucceeded || p.Result == nil || !p.Result.Verified {
		t.Fatalf("backup: %+v %+v", st, p.Result)
	}
	return &rebuildRig{pg: pg, x: x, rb: rb, label: p.Result.Label, stop: p.Result.Stop, size: p.Result.Size, backup: name + "-1"}
}

// rebuild runs one rebuild task and returns every progress it reported
// and the last status.
func (r *rebuildRig) rebuild(ctx context.Context, t *testing.T, id string, target int64, force bool) (string, []fsm.RebuildProgress) {
	t.Helper()
	spec, _ := json.Marshal(fsm.RebuildSpec{Rebuild: id, Region: "us-east", Stanza: "us-east", Backup: r.backup, Label: r.label,
		BackupStop: r.stop, BytesTotal: r.size, TargetTime: target, Force: force})
	var s statuses
	if err := r.rb.Run(ctx, &fsm.Task{ID: fsm.RebuildTaskID("us-east"), Type: fsm.TaskTypeRebuild, Spec: spec, Generation: 1}, s.report); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []fsm.RebuildProgress
	for _, st := range s.all {
		b, _ := json.Marshal(st.Result)
		var p fsm.RebuildProgress
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		all = append(all, p)
	}
	if strings.Contains(reports(&statuses{all: s.all}), r.pg.Password) {
		t.Fatal("a rebuild report carries the database password")
	}
	return s.all[len(s.all)-1].Status, all
}

// archiveNow switches WAL and waits until the segment holding every
// commit so far is archived.
func archiveNow(ctx context.Context, t *testing.T, conn *pgx.Conn) {
	t.Helper()
	var wal string
	if err := conn.QueryRow(ctx, `SELECT pg_walfile_name(pg_current_wal_lsn())`).Scan(&wal); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		var last string
		if err := conn.QueryRow(ctx, `SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver`).Scan(&last); err != nil {
			t.Fatal(err)
		}
		if len(last) == 24 && last[:8] == wal[:8] && last >= wal {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL %s not archived within 30 s (last %s)", wal, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func finalResult(t *testing.T, all []fsm.RebuildProgress) *fsm.RebuildResult {
	t.Helper()
	p := all[len(all)-1]
	if !p.Done || p.Result == nil {
		t.Fatalf("the last report is not final: %+v", p)
	}
	return p.Result
}

// TestRebuildToTheEndOfTheArchive: a running server's data directory is
// refused; the server is lost (killed), its data directory is refused
// while not empty, then wiped; a rebuild interrupted while it restores is
// reported failed, never done; a rerun restores the backup, replays the
// archived WAL to its end, starts the server and points archiving at
// this agent: every row committed before the last archived WAL is back.
// The test reports the RPO.
func TestRebuildToTheEndOfTheArchive(t *testing.T) {
	t.Parallel() // mostly waiting: for PostgreSQL and pgBackRest
	r := newRebuildRig(t, "rbend", func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, tenant text, at timestamptz DEFAULT clock_timestamp(), pad text);
			INSERT INTO t (id, tenant, pad) SELECT g, 'acme', repeat('x', 200) FROM generate_series(1, 20000) g`); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := r.pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	// Rows after the backup, archived; then rows that never reach the
	// archive (lost with the server).
	if _, err := conn.Exec(ctx, `INSERT INTO t (id, tenant) SELECT g, 'acme' FROM generate_series(20001, 21000) g`); err != nil {
		t.Fatal(err)
	}
	archiveNow(ctx, t, conn)
	if _, err := conn.Exec(ctx, `INSERT INTO t (id, tenant) VALUES (99999, 'acme')`); err != nil {
		t.Fatal(err)
	}

	status, all := r.rebuild(ctx, t, "us-east-r1", 0, false)
	if res := finalResult(t, all); status != fsm.TaskFailing || !strings.Contains(res.Error, "stop it first") || res.Phase != fsm.RebuildPhaseConfigure {
		t.Fatalf("rebuild onto a running server: %s %+v", status, res)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 21001 {
		t.Fatalf("the running server after a refused rebuild: %d rows, %v", n, err)
	}
	conn.Close(context.Background())

	if err := r.pg.Kill(); err != nil {
		t.Fatal(err)
	}
	wiped := time.Now()
	status, all = r.rebuild(ctx, t, "us-east-r2", 0, false)
	if res := finalResult(t, all); status != fsm.TaskFailing || !strings.Contains(res.Error, "not empty") {
		t.Fatalf("rebuild onto a non-empty data directory: %s %+v", status, res)
	}
	if _, err := os.Stat(filepath.Join(r.pg.DataDir, "PG_VERSION")); err != nil {
		t.Fatalf("a refused rebuild touched the data directory: %v", err)
	}
	if err := os.RemoveAll(r.pg.DataDir); err != nil {
		t.Fatal(err)
	}

	// Interrupted as soon as it restores.
	ictx, icancel := context.WithCancel(ctx)
	spec, _ := json.Marshal(fsm.RebuildSpec{Rebuild: "us-east-r3", Region: "us-east", Stanza: "us-east", Backup: r.backup, Label: r.label, BytesTotal: r.size})
	var is statuses
	err = r.rb.Run(ictx, &fsm.Task{ID: fsm.RebuildTaskID("us-east"), Type: fsm.TaskTypeRebuild, Spec: spec}, func(st structs.TaskStatus) {
		is.report(st)
		b, _ := json.Marshal(st.Result)
		if strings.Contains(string(b), `"phase":"restoring"`) {
			icancel()
		}
	})
	icancel()
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range is.all {
		if st.Status == fsm.TaskSucceeded {
			t.Fatalf("an interrupted rebuild reported success: %+v", is.all)
		}
	}
	if last := is.all[len(is.all)-1]; last.Status != fsm.TaskFailing || !strings.Contains(last.Error, "interrupted") {
		t.Fatalf("an interrupted rebuild's last report: %+v", last)
	}
	marker := filepath.Join(filepath.Dir(r.pg.DataDir), ".data.atomfed-rebuild-us-east")
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("an interrupted rebuild left no marker of its partial restore: %v", err)
	}

	// The rerun empties the partial restore and succeeds.
	status, all = r.rebuild(ctx, t, "us-east-r4", 0, false)
	res := finalResult(t, all)
	if status != fsm.TaskSucceeded || res.Phase != fsm.RebuildPhaseDone || res.Error != "" || res.Timeline < 2 || res.Files == 0 || res.Bytes != r.size ||
		all[len(all)-1].FilesTotal != res.Files {
		t.Fatalf("rebuild: %s %+v", status, res)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the marker of a partial restore is left after a rebuild succeeded: %v", err)
	}
	phases := map[string]bool{}
	var sawProgress bool
	for _, p := range all {
		phases[p.Phase] = true
		sawProgress = sawProgress || (p.Phase == fsm.RebuildPhaseRestoring && p.Files > 0 && p.Percent > 0)
	}
	for _, ph := range []string{fsm.RebuildPhaseRestoring, fsm.RebuildPhaseStarting, fsm.RebuildPhaseRecovering, fsm.RebuildPhaseResuming, fsm.RebuildPhaseDone} {
		if !phases[ph] {
			t.Errorf("phase %s was never reported: %v", ph, phases)
		}
	}
	if !sawProgress {
		t.Errorf("no restore progress (files, percent) was reported: %+v", all)
	}

	conn, err = r.pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var maxID int
	var last time.Time
	if err := conn.QueryRow(ctx, `SELECT count(*), max(id) FILTER (WHERE id < 99999), max(at) FROM t WHERE id < 99999`).Scan(&n, &maxID, &last); err != nil {
		t.Fatal(err)
	}
	if n != 21000 || maxID != 21000 {
		t.Fatalf("rebuilt: %d rows up to id %d, want the 21000 committed before the last archived WAL", n, maxID)
	}
	var cmd string
	if err := conn.QueryRow(ctx, `SELECT current_setting('archive_command')`).Scan(&cmd); err != nil || !strings.Contains(cmd, "archive-push") {
		t.Fatalf("archive_command after the rebuild: %q %v", cmd, err)
	}
	// The rebuilt server archives again (its new timeline).
	archiveNow(ctx, t, conn)
	t.Logf("RPO %.2f s (last row back committed at %s, data directory wiped at %s); restore %d ms, recovery %d ms, whole %d ms, %d files, timeline %d",
		wiped.Sub(last).Seconds(), last.Format(time.RFC3339Nano), wiped.Format(time.RFC3339Nano), res.RestoreMS, res.RecoveryMS, res.DurationMS, res.Files, res.Timeline)
}

// TestRebuildToAPointInTime: rows of a tenant deleted by mistake come
// back with a rebuild to just before the DELETE; the rows written after
// it do not. A point after the end of the archive is refused before the
// data directory is touched.
func TestRebuildToAPointInTime(t *testing.T) {
	t.Parallel() // mostly waiting: for PostgreSQL and pgBackRest
	r := newRebuildRig(t, "rbpitr", func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, tenant text);
			INSERT INTO t SELECT g, CASE WHEN g % 2 = 0 THEN 'acme' ELSE 'globex' END FROM generate_series(1, 1000) g`); err != nil {
			t.Fatal(err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := r.pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO t SELECT g, 'acme' FROM generate_series(1001, 1100) g`); err != nil {
		t.Fatal(err)
	}
	var before time.Time
	if err := conn.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM t WHERE tenant = 'acme'`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO t VALUES (5000, 'globex')`); err != nil {
		t.Fatal(err)
	}
	archiveNow(ctx, t, conn)
	conn.Close(context.Background())

	status, all := r.rebuild(ctx, t, "us-east-r1", time.Now().Add(time.Hour).UnixNano(), true)
	if res := finalResult(t, all); status != fsm.TaskFailing || !strings.Contains(res.Error, "after the end of the archived WAL") {
		t.Fatalf("a point after the archive's end: %s %+v", status, res)
	}
	if !r.pg.Running() {
		t.Fatal("the refused rebuild stopped the server")
	}
	if err := r.pg.Kill(); err != nil {
		t.Fatal(err)
	}
	// force: the lost server's files are still there.
	status, all = r.rebuild(ctx, t, "us-east-r2", before.UnixNano(), true)
	if res := finalResult(t, all); status != fsm.TaskSucceeded {
		t.Fatalf("rebuild to %s: %s %+v", before, status, res)
	}
	conn, err = r.pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var acme, after int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE tenant = 'acme'), count(*) FILTER (WHERE id = 5000) FROM t`).Scan(&acme, &after); err != nil {
		t.Fatal(err)
	}
	if acme != 600 || after != 0 {
		t.Fatalf("rebuilt to just before the DELETE: %d acme rows (want 600), %d rows written after it (want 0)", acme, after)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("out of time")
	}
}
