package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/recovery"
)

// TestRebuildALostRegion loses a region's PostgreSQL and rebuilds it with
// `atomfed dr rebuild`, on a three-server TLS federation with real agents,
// real PostgreSQL and real pgBackRest: tenant acme is at home in us-east
// and mirrored to eu-west; us-east is backed up (atomfed backup run);
// more rows are written and archived; then us-east's server is killed
// and its data directory wiped. The rebuild, through the CLI, shows its
// progress and result; every acme row committed before the last archived
// WAL is back (the test reports the RPO), and the mirror streams from the
// rebuilt home again: rows written there afterwards reach eu-west.
func TestRebuildALostRegion(t *testing.T) {
	if _, err := recovery.FindPgBackRest(""); err != nil {
		t.Fatalf("this test needs pgBackRest: %v", err)
	}
	start := time.Now()
	c := startCluster(t)
	leader := waitLeader(t, c)
	cx := ctx(t, 3*time.Minute)
	api := leader.Client
	pgs := pgtest.NewFederation(t, "us-east", "eu-west")
	shared, err := os.MkdirTemp("", "atomfed-e2e-rebuild-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o711); err != nil {
		t.Fatal(err)
	}
	dbs := map[string]*pgx.Conn{}
	for _, r := range []string{"us-east", "eu-west"} {
		registerRegion(t, c, leader, r)
		// Backups of this test's regions only when asked for.
		if _, err := api.PutBackupPolicy(cx, &fsm.BackupPolicy{Region: r, FullEverySeconds: 86400, IncrEverySeconds: 3600, RetentionFull: 2,
			MaxAgeSeconds: 90000, Disabled: true}); err != nil {
			t.Fatal(err)
		}
		conn, err := pgs[r].Connect(cx, pglocal.Database)
		if err != nil {
			t.Fatal(err)
		}
		dbs[r] = conn
		execPG(t, cx, conn, `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), email text, PRIMARY KEY (tenant_id, id))`)
		args := []string{"--replication-passfile", pgs[r].Passfile, "--replication-ca", pgs[r].RootCert, "--replication-interval", "500ms",
			"--backup-dir", filepath.Join(shared, r), "--backup-repo", filepath.Join(shared, "repo")}
		if r == "us-east" {
			// The agent manages us-east's PostgreSQL for a rebuild.
			args = append(args, "--pg-data", pgs[r].DataDir, "--pg-bin", pgs[r].BinDir)
		}
		a, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), t.TempDir(), r+"-a1", r, func() (int, error) { return testutil.FreePort(t), nil },
			c.SerfAddrs(), c.Sec, args...)
		if err != nil {
			t.Fatal(err)
		}
		a.Env = append(a.Env, "POSTGRES_DSN="+pgs[r].DSN(pglocal.Database))
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log of %s:\n%s", a.Node, a.LogTail(60))
			}
			a.Close()
		})
	}
	t.Cleanup(func() {
		for _, conn := range dbs {
			conn.Close(context.Background())
		}
	})
	home := dbs["us-east"]
	execPG(t, cx, home, `INSERT INTO orders (tenant_id, id, email) SELECT 'acme', g, 'c' || g || '@acme.example' FROM generate_series(1, 200) g`)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, r := range []string{"us-east", "eu-west"} {
			if _, err := api.RegionDatabase(cx, r, nil); err != nil {
				return err
			}
		}
		return nil
	})
	acme := &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	if _, err := api.PutTenant(cx, acme, nil); err != nil {
		t.Fatal(err)
	}
	mirrorHas := func(n int) error {
		var got int
		if err := dbs["eu-west"].QueryRow(cx, `SELECT count(*) FROM orders WHERE tenant_id = 'acme'`).Scan(&got); err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("eu-west has %d of acme's %d rows", got, n)
		}
		return nil
	}
	testutil.Eventually(t, 60*time.Second, func() error { return mirrorHas(200) })
	t.Logf("federation up, acme mirrored, after %s", time.Since(start).Round(time.Millisecond))

	cliEnv := newCLI(t, c).with("ATOMFED_ADDR=" + leader.URL)
	cliEnv.ok("backup", "run", "--region", "us-east", "--wait")
	// Rows after the backup, archived: they must come back from the WAL.
	execPG(t, cx, home, `INSERT INTO orders (tenant_id, id, email) SELECT 'acme', g, 'c' || g || '@acme.example' FROM generate_series(201, 300) g`)
	archiveWAL(t, cx, home)
	// Bad input changes nothing.
	out := cliEnv.fails("dr", "rebuild", "--region", "us-east", "--to-time", "yesterday")
	mustContain(t, "a bad --to-time", out, "RFC 3339")
	out = cliEnv.fails("dr", "rebuild", "--region", "mars")
	mustContain(t, "an unknown region", out, "region_not_found")

	// The region's database is lost.
	home.Close(context.Background())
	delete(dbs, "us-east")
	if err := pgs["us-east"].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(pgs["us-east"].DataDir); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()

	r := cli(t, cliEnv.env, "dr", "rebuild", "--region", "us-east")
	if r.code != 0 {
		t.Fatalf("atomfed dr rebuild: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	t.Logf("atomfed dr rebuild --region us-east:\n%s%s", r.stderr, r.stdout)
	mustContain(t, "rebuild progress", r.stderr, "asked for: restoring backup", "to the end of the archived WAL", "restoring on us-east-a1")
	mustContain(t, "rebuild result", r.stdout, "Phase", "done", "Restored", pgs["us-east"].DataDir)

	home, err = pgs["us-east"].Connect(cx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	dbs["us-east"] = home
	var n, maxID int
	var last time.Time
	if err := home.QueryRow(cx, `SELECT count(*), max(id), max(at) FROM orders WHERE tenant_id = 'acme'`).Scan(&n, &maxID, &last); err != nil {
		t.Fatal(err)
	}
	if n != 300 || maxID != 300 {
		t.Fatalf("the rebuilt home holds %d acme rows up to id %d, want the 300 committed before the last archived WAL", n, maxID)
	}
	t.Logf("RPO %.2f s (the last row back was committed at %s, the data directory wiped at %s); rebuild took %s",
		lost.Sub(last).Seconds(), last.Format(time.RFC3339Nano), lost.Format(time.RFC3339Nano), time.Since(lost).Round(time.Millisecond))

	// The rebuilt home takes acme's writes once its agent confirms it is
	// still the home (the home guard holds them from PostgreSQL's start).
	t.Logf("acme's home confirmed %s after the rebuild returned", waitHomeConfirmed(t, cx, home, "acme").Round(time.Millisecond))
	// The mirror streams from the rebuilt home again.
	execPG(t, cx, home, `INSERT INTO orders (tenant_id, id, email) SELECT 'acme', g, 'c' || g || '@acme.example' FROM generate_series(301, 320) g`)
	testutil.Eventually(t, 60*time.Second, func() error {
		if err := mirrorHas(320); err != nil {
			return err
		}
		v, _, err := api.TenantReplication(cx, "acme", nil)
		if err != nil {
			return err
		}
		for _, m := range v.Mirrors {
			if m.Region == "eu-west" && m.State == fsm.ReplStreaming {
				return nil
			}
		}
		return fmt.Errorf("eu-west does not stream acme yet: %+v", v.Mirrors)
	})
	st := cliEnv.ok("dr", "rebuild", "--region", "us-east", "--status")
	mustContain(t, "rebuild status", st, "done", "Timeline")
	if !strings.Contains(st, "us-east-r") {
		t.Errorf("the status does not name the rebuild: %s", st)
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Millisecond))
}

// archiveWAL switches WAL and waits until every commit so far is archived.
func archiveWAL(t *testing.T, cx context.Context, conn *pgx.Conn) {
	t.Helper()
	var wal string
	if err := conn.QueryRow(cx, `SELECT pg_walfile_name(pg_current_wal_lsn())`).Scan(&wal); err != nil {
		t.Fatal(err)
	}
	execPG(t, cx, conn, `SELECT pg_switch_wal()`)
	testutil.Eventually(t, 30*time.Second, func() error {
		var last string
		if err := conn.QueryRow(cx, `SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver`).Scan(&last); err != nil {
			return err
		}
		if len(last) == 24 && last[:8] == wal[:8] && last >= wal {
			return nil
		}
		return fmt.Errorf("WAL %s not archived yet (last %s)", wal, last)
	})
}
