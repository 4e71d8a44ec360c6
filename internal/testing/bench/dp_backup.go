package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/recovery"
)

// BackupRegion is the region whose database the backup benchmark fills
// and backs up (a mirror of the tenant: the switchover rounds do not move
// it).
const BackupRegion = "ap-south"

// FillResult is the generated database.
type FillResult struct {
	Tables   int
	Rows     int64
	Bytes    int64 // pg_database_size after the fill
	Duration time.Duration
}

// FillDatabase fills region's database with at least targetMB MiB of rows
// (INSERT ... SELECT generate_series into four tables, two at a time, in
// batches of a million rows, until pg_database_size reaches the target),
// then checkpoints. It runs before any backup, so the WAL it writes is
// not archived (pglocal's archive_command is /bin/true until an agent
// sets up pgBackRest).
func FillDatabase(ctx context.Context, pg *pglocal.Cluster, targetMB int) (*FillResult, error) {
	const tables, batch = 4, 500_000
	start := time.Now()
	res := &FillResult{Tables: tables}
	var stmts []string
	for i := 1; i <= tables; i++ {
		stmts = append(stmts, fmt.Sprintf(`CREATE TABLE fill_%d (id bigint PRIMARY KEY, n bigint NOT NULL, a text NOT NULL, b text NOT NULL, at timestamptz NOT NULL)`, i))
	}
	if err := execAll(ctx, pg, stmts...); err != nil {
		return nil, err
	}
	size := func() (int64, error) {
		c, err := pg.Connect(ctx, pglocal.Database)
		if err != nil {
			return 0, err
		}
		defer c.Close(context.Background())
		var n int64
		err = c.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&n)
		return n, err
	}
	target := int64(targetMB) << 20
	var next [tables]int64
	for b := 0; ; b++ {
		n, err := size()
		if err != nil {
			return nil, err
		}
		if n >= target {
			break
		}
		// Two tables at a time: the machine has few cores to share.
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k := 0; k < 2; k++ {
			t := (2*b + k) % tables
			from := next[t] + 1
			next[t] += batch
			res.Rows += batch
			wg.Add(1)
			go func(k, t int, from int64) {
				defer wg.Done()
				errs[k] = execAll(ctx, pg, fmt.Sprintf(`INSERT INTO fill_%d SELECT g, g * 7, md5(g::text), md5((g + %d)::text) || md5(g::text), now() FROM generate_series(%d, %d) g`,
					t+1, t, from, from+batch-1))
			}(k, t, from)
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	if err := execAll(ctx, pg, `CHECKPOINT`); err != nil {
		return nil, err
	}
	var err error
	if res.Bytes, err = size(); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

// BackupRound is one round of the backup benchmark: a full backup and a
// restore by atomfed, and the same pgBackRest commands by hand.
type BackupRound struct {
	// Atomfed: from the request (POST /v1/regions/{r}/backups) to the
	// verified backup recorded in the catalog (leader clock): placement,
	// stanza-create, backup, info, verify, record.
	AtomfedBackup time.Duration
	// Where that time went: from the request until the agent started
	// (placement), the agent's work until its verify ended, and from then
	// until the leader recorded it (the agent's report, the FSM entry).
	Placement, AgentWork, Recording time.Duration
	AtomfedLabel                    string
	Size, Repo                      int64 // database and stored size of atomfed's backup
	// AtomfedRestore is the drill's pgbackrest restore (the agent times
	// it); DrillTotal the drill from request to record (restore point
	// with checksums at the source, restore, recovery, start, every row
	// read and compared).
	AtomfedRestore, DrillStart, DrillTotal time.Duration
	DrillVerdict                           string
	// By hand, as the data dir's owner at the agents' CPU priority, with
	// the agent's pgbackrest.conf: stanza-create, backup --type=full,
	// info, verify; then restore of that backup into a scratch dir.
	HandStanza, HandBackup, HandInfo, HandVerify, HandRestore time.Duration
	HandLabel                                                 string
}

// HandBackupTotal is the by-hand sequence atomfed runs for a backup.
func (r BackupRound) HandBackupTotal() time.Duration {
	return r.HandStanza + r.HandBackup + r.HandInfo + r.HandVerify
}

// BackupResult is the backup benchmark.
type BackupResult struct {
	Region string
	Fill   *FillResult
	Rounds []BackupRound
}

// MeasureBackup fills the backup region's database to targetMB, then runs
// rounds of: a full backup asked through the API (waited for in the
// catalog), a restore drill of it, and the same pgBackRest commands by
// hand with the agent's own configuration.
func MeasureBackup(ctx context.Context, f *DataPlaneFed, targetMB, rounds int) (*BackupResult, error) {
	region := BackupRegion
	res := &BackupResult{Region: region}
	f.Log("backup: filling %s's database to %d MiB", region, targetMB)
	var err error
	if res.Fill, err = FillDatabase(ctx, f.PG[region], targetMB); err != nil {
		return res, fmt.Errorf("fill: %w", err)
	}
	f.Log("backup: %d rows, %d MiB in %s", res.Fill.Rows, res.Fill.Bytes>>20, res.Fill.Duration.Round(time.Millisecond))
	// A first backup, not timed: the agent sets up archiving, creates the
	// stanza and checks it once; the commands by hand need its
	// configuration.
	var warm BackupRound
	if err := atomfedBackup(ctx, f, region, &warm); err != nil {
		return res, fmt.Errorf("first backup: %w", err)
	}
	f.Log("backup: first (untimed) backup %s recorded %s after the request", warm.AtomfedLabel, warm.AtomfedBackup.Round(time.Millisecond))
	for i := 1; i <= rounds; i++ {
		var r BackupRound
		// Who goes first alternates (by hand in odd rounds), so that
		// neither side always reads a cache the other warmed; an odd
		// number of rounds ends with atomfed's backup, which the rebuild
		// restores. Retention keeps one full backup: each side restores
		// its own backup before the other side's expires it.
		atomfed := func() error {
			if err := atomfedBackup(ctx, f, region, &r); err != nil {
				return fmt.Errorf("round %d: atomfed backup: %w", i, err)
			}
			f.Log("backup round %d: atomfed full backup %s of %d MiB recorded %s after the request (placement %s, agent %s, recording %s)", i, r.AtomfedLabel, r.Size>>20,
				r.AtomfedBackup.Round(time.Millisecond), r.Placement.Round(time.Millisecond), r.AgentWork.Round(time.Millisecond), r.Recording.Round(time.Millisecond))
			if err := atomfedDrill(ctx, f, region, &r); err != nil {
				return fmt.Errorf("round %d: atomfed drill: %w", i, err)
			}
			f.Log("backup round %d: drill %s, restore %s, whole drill %s", i, r.DrillVerdict, r.AtomfedRestore.Round(time.Millisecond), r.DrillTotal.Round(time.Millisecond))
			return nil
		}
		hand := func() error {
			if err := handBackup(ctx, f, region, &r); err != nil {
				return fmt.Errorf("round %d: by hand: %w", i, err)
			}
			f.Log("backup round %d: by hand stanza-create %s, backup %s, info %s, verify %s; restore %s", i,
				r.HandStanza.Round(time.Millisecond), r.HandBackup.Round(time.Millisecond), r.HandInfo.Round(time.Millisecond),
				r.HandVerify.Round(time.Millisecond), r.HandRestore.Round(time.Millisecond))
			return nil
		}
		first, second := hand, atomfed
		if i%2 == 0 {
			first, second = atomfed, hand
		}
		if err := first(); err != nil {
			return res, err
		}
		if err := second(); err != nil {
			return res, err
		}
		res.Rounds = append(res.Rounds, r)
	}
	return res, nil
}

func atomfedBackup(ctx context.Context, f *DataPlaneFed, region string, r *BackupRound) error {
	api, err := f.API()
	if err != nil {
		return err
	}
	req, err := api.RunBackup(ctx, region, fsm.BackupFull)
	if err != nil {
		return err
	}
	var started int64 // the agent's start (its clock: the same machine's)
	return eventually(ctx, 30*time.Minute, func() error {
		api, err := f.API()
		if err != nil {
			return err
		}
		st, _, err := api.Backup(ctx, req.ID, nil)
		if err != nil {
			return err
		}
		if st.Progress != nil && st.Progress.StartedAt > 0 {
			started = st.Progress.StartedAt
		}
		switch {
		case st.Backup == nil || st.Status == fsm.BackupPending || st.Status == fsm.BackupRunning:
			return fmt.Errorf("backup %s not done", req.ID)
		case st.Status != fsm.BackupSucceeded || st.BackupResult == nil:
			msg := st.TaskError
			if st.BackupResult != nil {
				msg = st.Error
			}
			return retryNot{fmt.Errorf("backup %s %s: %s", req.ID, st.Status, msg)}
		case !st.Verified:
			return retryNot{fmt.Errorf("backup %s not verified: %s", req.ID, st.VerifyError)}
		}
		r.AtomfedBackup = time.Duration(st.RecordedAt - st.RequestedAt)
		if started > 0 && st.VerifiedAt > 0 {
			r.Placement = time.Duration(started - st.RequestedAt)
			r.AgentWork = time.Duration(st.VerifiedAt - started)
			r.Recording = time.Duration(st.RecordedAt - st.VerifiedAt)
		}
		r.AtomfedLabel, r.Size, r.Repo = st.Label, st.Size, st.RepoSize
		return nil
	})
}

func atomfedDrill(ctx context.Context, f *DataPlaneFed, region string, r *BackupRound) error {
	api, err := f.API()
	if err != nil {
		return err
	}
	req, err := api.RunDrill(ctx, region)
	if err != nil {
		return err
	}
	if req.Label != r.AtomfedLabel {
		return fmt.Errorf("the drill restores %s, not the backup just taken (%s)", req.Label, r.AtomfedLabel)
	}
	return eventually(ctx, 30*time.Minute, func() error {
		api, err := f.API()
		if err != nil {
			return err
		}
		l, _, err := api.Drills(ctx, region, nil)
		if err != nil {
			return err
		}
		for _, d := range l.Drills {
			if d.ID != req.ID {
				continue
			}
			if d.Status != fsm.DrillPassed || d.DrillResult == nil {
				msg := ""
				if d.DrillResult != nil {
					msg = d.DrillResult.Phase + ": " + d.DrillResult.Error
				}
				return retryNot{fmt.Errorf("drill %s %s: %s", d.ID, d.Status, msg)}
			}
			r.DrillVerdict = d.Verdict
			r.AtomfedRestore = time.Duration(d.RestoreMS) * time.Millisecond
			r.DrillStart = time.Duration(d.StartMS) * time.Millisecond
			r.DrillTotal = time.Duration(d.RecordedAt - d.RequestedAt)
			return nil
		}
		return fmt.Errorf("drill %s not done", req.ID)
	})
}

// handBackup runs, as an operator would, the pgBackRest commands atomfed
// runs for a full backup (stanza-create, backup, info, verify) and a
// restore of the backup into a scratch directory, with the agent's
// configuration file, as the data directory's owner, at the nice level
// atomfed runs pgBackRest at (10), one after the other.
func handBackup(ctx context.Context, f *DataPlaneFed, region string, r *BackupRound) error {
	cred, err := dataDirOwner(f.PG[region])
	if err != nil {
		return err
	}
	run := func(d *time.Duration, args ...string) ([]byte, error) { return handRun(ctx, f, region, d, args...) }
	if _, err := run(&r.HandStanza, "stanza-create"); err != nil {
		return err
	}
	if _, err := run(&r.HandBackup, "backup", "--type=full"); err != nil {
		return err
	}
	out, err := run(&r.HandInfo, "info", "--output=json")
	if err != nil {
		return err
	}
	var info []recovery.Info
	if err := json.Unmarshal(out, &info); err != nil || len(info) != 1 || len(info[0].Backup) == 0 {
		return fmt.Errorf("pgbackrest info: %v: %.300s", err, out)
	}
	bs := info[0].Backup
	sort.Slice(bs, func(i, j int) bool { return bs[i].Label < bs[j].Label })
	r.HandLabel = bs[len(bs)-1].Label
	if r.HandLabel == r.AtomfedLabel {
		return fmt.Errorf("pgbackrest info names atomfed's backup %s as the newest", r.HandLabel)
	}
	if bs[len(bs)-1].Type != "full" || bs[len(bs)-1].Error {
		return fmt.Errorf("pgbackrest info: the newest backup %s is %s (error %v)", r.HandLabel, bs[len(bs)-1].Type, bs[len(bs)-1].Error)
	}
	if _, err := run(&r.HandVerify, "verify", "--output=text"); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(f.BackupDir[region], "hand-restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	data := filepath.Join(scratch, "data")
	for _, d := range []string{scratch, data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if cred != nil {
			if err := os.Chown(d, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
	}
	_, err = run(&r.HandRestore, "restore", "--set="+r.HandLabel, "--pg1-path="+data, "--type=immediate", "--target-action=promote", "--archive-mode=off")
	return err
}

// dataDirOwner is the credential pgBackRest runs as by hand: the data
// directory's owner (nil when we are not root: we are that user).
func dataDirOwner(pg *pglocal.Cluster) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	st, err := os.Stat(pg.DataDir)
	if err != nil {
		return nil, err
	}
	sys := st.Sys().(*syscall.Stat_t)
	return &syscall.Credential{Uid: sys.Uid, Gid: sys.Gid}, nil
}

// handRun runs one pgbackrest command by hand with region's agent
// configuration, as the data directory's owner at nice 10, and stores
// how long it took in d.
func handRun(ctx context.Context, f *DataPlaneFed, region string, d *time.Duration, args ...string) ([]byte, error) {
	cred, err := dataDirOwner(f.PG[region])
	if err != nil {
		return nil, err
	}
	pgbr, err := recovery.FindPgBackRest("")
	if err != nil {
		return nil, err
	}
	full := append([]string{"-n", "10", pgbr, "--config=" + filepath.Join(f.BackupDir[region], "pgbackrest.conf"), "--stanza=" + region}, args...)
	cmd := exec.CommandContext(ctx, "nice", full...)
	cmd.Dir = f.BackupDir[region]
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + f.BackupDir[region], "PGPASSWORD=" + f.PG[region].Password}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	err = cmd.Run()
	*d = time.Since(t0)
	if err != nil {
		return nil, fmt.Errorf("pgbackrest %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()+out.String()))
	}
	return out.Bytes(), nil
}
