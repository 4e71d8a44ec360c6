package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/recovery"
)

// TestBackupsEndToEnd runs backups of a region's real PostgreSQL with real
// pgBackRest, driven by a three-server TLS federation and two real agents
// of the region sharing a filesystem repository:
//
//   - with no setup (the default policy) the region is backed up on
//     schedule, and the catalog lists the backup with its label, size,
//     WAL range, repository, and a passing pgbackrest verify;
//   - `atomfed backup run --wait` takes one on request and shows its
//     progress; list and status show it;
//   - bad input (unknown region or backup, bad type, bad policy) is
//     refused with a code that says what to fix and changes nothing;
//   - the agent running a backup is killed (-9) mid-run: the backup moves
//     to its peer, which takes it, and only the peer's result is recorded.
func TestBackupsEndToEnd(t *testing.T) {
	if _, err := recovery.FindPgBackRest(""); err != nil {
		t.Fatalf("this test needs pgBackRest: %v", err)
	}
	c := startCluster(t)
	leader := waitLeader(t, c)
	ctx := ctx(t, 4*time.Minute)
	registerRegion(t, c, leader, "us-east")
	pg := pgtest.New(t, pglocal.Options{Name: "us-east"})
	conn, err := pg.Connect(ctx, pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE orders AS SELECT 'acme' AS tenant_id, g AS id, repeat('o', 100) AS note FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	// The regions' PostgreSQL runs as the postgres user and must reach
	// pgBackRest's configuration and the repository.
	shared, err := os.MkdirTemp("", "atomfed-e2e-backup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o711); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(shared, "repo")
	agents := map[string]*procs.AgentProc{}
	for _, node := range []string{"us-east-a1", "us-east-a2"} {
		a, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), t.TempDir(), node, "us-east", func() (int, error) { return testutil.FreePort(t), nil },
			c.SerfAddrs(), c.Sec, "--backup-dir", filepath.Join(shared, node), "--backup-repo", repo)
		if err != nil {
			t.Fatal(err)
		}
		a.Env = append(a.Env, "POSTGRES_DSN="+pg.DSN(pglocal.Database)) // a secret: never on the command line
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log of %s:\n%s", a.Node, a.LogTail(40))
			}
			a.Close()
		})
		agents[node] = a
	}
	api := leader.Client

	t.Run("scheduled with the default policy", func(t *testing.T) {
		p, err := api.BackupPolicy(ctx, "us-east", nil)
		if err != nil || !p.Default || p.FullEverySeconds != 86400 {
			t.Fatalf("policy of a region without one: %+v %v", p, err)
		}
		b := waitBackup(t, ctx, api, func(b *fsm.Backup) bool { return b.Reason == fsm.BackupReasonSchedule })
		checkGoodBackup(t, b, fsm.BackupFull, repo)
		l, _, err := api.Backups(ctx, "us-east", nil)
		if err != nil || len(l.Regions) != 1 || l.Regions[0].Stale || l.Regions[0].LastVerified == nil {
			t.Fatalf("backup health after a verified backup: %+v %v", l.Regions, err)
		}
		// P7 reads the catalog: the region's verified backup is in place
		// (P7 still blocks on what is not built: shipped control-plane
		// snapshots, failover).
		if ev := p7(t, ctx, api); !ev.Scheduled.InPlace || len(ev.Regions) != 1 || ev.Regions[0].LastVerified == nil || ev.status != "block" {
			t.Fatalf("P7 after a verified backup of the only region: %+v", ev)
		}
	})

	t.Run("a restore drill on schedule reads every row back", func(t *testing.T) {
		var d *fsm.Drill
		testutil.Eventually(t, 90*time.Second, func() error {
			l, _, err := api.Drills(ctx, "us-east", nil)
			if err != nil {
				return err
			}
			for _, x := range l.Drills {
				if x.Reason == fsm.BackupReasonSchedule {
					d = x
					return nil
				}
			}
			return fmt.Errorf("no scheduled drill recorded yet (running: %+v)", l.Running)
		})
		var want fsm.DrillTable
		if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY public.orders t`).Scan(&want.Rows, &want.Checksum); err != nil {
			t.Fatal(err)
		}
		if d.Status != fsm.DrillPassed || d.DrillResult == nil || d.TablesRead == 0 || d.TablesCompared != 1 || d.RestorePoint == "" || d.Label == "" {
			t.Fatalf("scheduled drill: %+v %+v", d, d.DrillResult)
		}
		var got *fsm.DrillTable
		for i, tb := range d.Tables {
			if tb.Database == pglocal.Database && tb.Name == "public.orders" {
				got = &d.Tables[i]
			}
		}
		if got == nil || got.Rows != 20000 || got.Checksum != want.Checksum {
			t.Fatalf("the drill read %+v of public.orders, the source has %+v", got, want)
		}
		b, _, err := api.Backup(ctx, d.Backup, nil)
		if err != nil || b.Drill == nil || b.Drill.ID != d.ID || b.Drill.Verdict != fsm.DrillPassed {
			t.Fatalf("the restored backup's catalog entry does not carry the drill: %+v %v", b, err)
		}
		out := newCLI(t, c).with("ATOMFED_ADDR="+leader.URL).ok("backup", "drills", "--region", "us-east")
		mustContain(t, "backup drills", out, d.ID, d.Label, "passed")
		if ev := p7(t, ctx, api); !ev.Drills.InPlace || !strings.Contains(ev.reason, "restore drills are in place") {
			t.Fatalf("P7 after a passed drill of the only region: %+v", ev)
		}
	})

	t.Run("on request with the CLI", func(t *testing.T) {
		cl := newCLI(t, c)
		r := cli(t, append(cl.env, "ATOMFED_ADDR="+leader.URL), "backup", "run", "--region", "us-east", "--type", "incr", "--wait")
		if r.code != 0 {
			t.Fatalf("backup run --wait: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
		}
		mustContain(t, "backup run --wait (stderr)", r.stderr, "asked for (incr)", "running on us-east-a")
		mustContain(t, "backup run --wait", r.stdout, "Status      succeeded", "Verified    yes", "WAL")
		var l wire.BackupList
		decodeJSON(t, "backup list", cl.with("ATOMFED_ADDR="+leader.URL).ok("backup", "list", "--region", "us-east", "-o", "json"), &l)
		if len(l.Backups) < 2 || l.Backups[0].Reason != fsm.BackupReasonManual {
			t.Fatalf("catalog after the manual backup: %+v", l.Backups)
		}
		checkGoodBackup(t, l.Backups[0], fsm.BackupIncr, repo)
		out := cl.with("ATOMFED_ADDR="+leader.URL).ok("backup", "status", l.Backups[0].ID)
		mustContain(t, "backup status", out, l.Backups[0].Label, l.Backups[0].WALStart)
	})

	t.Run("bad input is refused", func(t *testing.T) {
		before, _, err := api.Backups(ctx, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name, code string
			status     int
			fn         func() error
		}{
			{"unknown region", "region_not_found", 404, func() error { _, err := api.RunBackup(ctx, "mars", fsm.BackupFull); return err }},
			{"bad type", "invalid_backup_type", 400, func() error { _, err := api.RunBackup(ctx, "us-east", "nightly"); return err }},
			{"unknown backup", "backup_not_found", 404, func() error { _, _, err := api.Backup(ctx, "us-east-1", nil); return err }},
			{"bad policy", "invalid_backup_policy", 400, func() error {
				_, err := api.PutBackupPolicy(ctx, &fsm.BackupPolicy{Region: "us-east", FullEverySeconds: 60, IncrEverySeconds: 120, RetentionFull: 1, MaxAgeSeconds: 600})
				return err
			}},
			{"secret in policy", "invalid_backup_policy", 400, func() error {
				_, err := api.PutBackupPolicy(ctx, &fsm.BackupPolicy{Region: "us-east", FullEverySeconds: 3600, IncrEverySeconds: 60, RetentionFull: 1, MaxAgeSeconds: 600,
					Repository: fsm.BackupRepo{Kind: fsm.RepoS3, Bucket: "b"}})
				return err
			}},
		} {
			err := tc.fn()
			if !client.IsCode(err, tc.code) || client.StatusOf(err) != tc.status {
				t.Errorf("%s: %v, want %d %s", tc.name, err, tc.status, tc.code)
			}
		}
		after, _, err := api.Backups(ctx, "", nil)
		if err != nil || len(after.Backups) != len(before.Backups) || len(after.Running) != 0 {
			t.Fatalf("refused requests changed the catalog: %d -> %d backups, running %+v", len(before.Backups), len(after.Backups), after.Running)
		}
		if p, err := api.BackupPolicy(ctx, "us-east", nil); err != nil || !p.Default {
			t.Fatalf("refused policies changed the policy: %+v %v", p, err)
		}
	})

	t.Run("a killed agent's backup moves to its peer", func(t *testing.T) {
		for attempt := 1; ; attempt++ {
			req, err := api.RunBackup(ctx, "us-east", fsm.BackupFull)
			if err != nil {
				t.Fatal(err)
			}
			var victim string
			testutil.Eventually(t, 20*time.Second, func() error {
				st, _, err := api.Backup(ctx, req.ID, nil)
				if err != nil {
					return err
				}
				if st.Agent == "" {
					return fmt.Errorf("backup %s not placed yet", req.ID)
				}
				victim = st.Agent
				return nil
			})
			if err := agents[victim].Kill9(); err != nil {
				t.Fatal(err)
			}
			b := waitBackup(t, ctx, api, func(b *fsm.Backup) bool { return b.ID == req.ID })
			if b.Agent == victim && attempt < 3 {
				// It finished before the kill landed: bring it back, try again.
				t.Logf("attempt %d: %s finished %s before it was killed", attempt, victim, req.ID)
				if err := agents[victim].Restart(); err != nil {
					t.Fatal(err)
				}
				waitAgentAlive(t, ctx, api, victim)
				continue
			}
			if b.Agent == victim {
				t.Fatalf("three times the killed agent finished its backup first; the move to a peer was never exercised")
			}
			checkGoodBackup(t, b, fsm.BackupFull, repo)
			t.Logf("backup %s: %s was killed, %s took it (%s)", b.ID, victim, b.Agent, b.Label)
			return
		}
	})
}

// waitBackup waits for a catalog entry that match accepts.
func waitBackup(t *testing.T, ctx context.Context, api *client.Client, match func(*fsm.Backup) bool) *fsm.Backup {
	t.Helper()
	var found *fsm.Backup
	testutil.Eventually(t, 90*time.Second, func() error {
		l, _, err := api.Backups(ctx, "us-east", nil)
		if err != nil {
			return err
		}
		for _, b := range l.Backups {
			if match(b) {
				found = b
				return nil
			}
		}
		return fmt.Errorf("no such backup in the catalog yet (running: %+v)", l.Running)
	})
	return found
}

// checkGoodBackup checks a catalog entry of a successful, verified backup.
func checkGoodBackup(t *testing.T, b *fsm.Backup, typ, repo string) {
	t.Helper()
	r := b.BackupResult
	switch {
	case b.Status != fsm.BackupSucceeded || r == nil:
		t.Fatalf("backup %s: status %s, result %+v", b.ID, b.Status, r)
	case b.Type != typ || !strings.HasSuffix(r.Label, map[string]string{fsm.BackupFull: "F", fsm.BackupIncr: "I"}[typ]):
		t.Fatalf("backup %s: type %s label %s, want %s", b.ID, b.Type, r.Label, typ)
	case !r.Verified || r.VerifyError != "" || r.VerifiedAt == 0:
		t.Fatalf("backup %s is not verified: %+v", b.ID, r)
	case r.Size <= 0 || r.RepoSize <= 0 || r.WALStart == "" || r.WALStop == "" || r.LSNStart == "" || r.Stop < r.Start:
		t.Fatalf("backup %s lacks size or WAL range: %+v", b.ID, r)
	case r.Repo.Kind != fsm.RepoPosix || r.Repo.Path != repo || r.Stanza != "us-east":
		t.Fatalf("backup %s: repository %+v stanza %s, want %s", b.ID, r.Repo, r.Stanza, repo)
	case !strings.HasPrefix(b.Agent, "us-east-a"):
		t.Fatalf("backup %s was taken by %q", b.ID, b.Agent)
	}
	if _, err := os.Stat(filepath.Join(repo, "backup", "us-east", r.Label, "backup.manifest")); err != nil {
		t.Fatalf("backup %s: no manifest in the repository: %v", b.ID, err)
	}
}

func waitAgentAlive(t *testing.T, ctx context.Context, api *client.Client, node string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		as, _, err := api.Agents(ctx, "us-east", nil)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.Node == node && a.Status == fsm.AgentAlive {
				return nil
			}
		}
		return fmt.Errorf("agent %s is not alive again yet", node)
	})
}

// p7Evidence is the part of P7's evidence about region backups and drills.
type p7Evidence struct {
	status, reason string
	Scheduled      struct {
		InPlace bool `json:"in_place"`
	} `json:"scheduled_snapshots"`
	Drills struct {
		InPlace bool `json:"in_place"`
	} `json:"restore_drills"`
	Regions []fsm.BackupHealth `json:"region_backups"`
}

func p7(t *testing.T, ctx context.Context, api *client.Client) *p7Evidence {
	t.Helper()
	ps, err := api.PolicyStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps.Policies {
		if p.ID == "P7" {
			var ev p7Evidence
			b, _ := json.Marshal(p.Evidence)
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatal(err)
			}
			ev.status, ev.reason = p.Status, p.Reason
			return &ev
		}
	}
	t.Fatal("no P7 in the policy status")
	return nil
}
