package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/recovery"
)

// Backups and restore drills during the faults (DataPlaneConfig.Backups):
// scheduled ones are off; the run asks for a backup of each region in
// turn (full, then incremental, alternating) and, once one is recorded
// verified, a drill of it, while the nemeses run. After healing the
// checker holds atomfed to its verdicts:
//
//   - every backup and drill asked for ends (succeeded or failed): a run
//     a fault interrupted is failed or retried, never left hanging;
//   - a backup recorded verified passes `pgbackrest verify`, run by the
//     checker with the agent's configuration as PostgreSQL's OS user,
//     while pgBackRest still holds it;
//   - a drill recorded passed is recomputed: the checker restores the
//     same backup to the same named restore point into a scratch
//     directory, starts it, and reads every table the drill recorded; the
//     row counts and checksums must equal the recorded ones;
//   - after healing, a backup and a drill of every region pass (the checks
//     above are not vacuous, and the faults left the repositories usable).

// dpBackups is the backup workload's state.
type dpBackups struct {
	base string // the agents' --backup-dir parent (reachable by PostgreSQL's user)

	mu      sync.Mutex
	backups []string // catalog ids asked for
	drills  []string // drill ids asked for
	regions map[string]string
	notes   []string
}

func (b *dpBackups) add(kind, id, region string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if kind == "backup" {
		b.backups = append(b.backups, id)
	} else {
		b.drills = append(b.drills, id)
	}
	b.regions[id] = region
}

// BackupChecks are the backup and drill counts of a data-plane run.
type BackupChecks struct {
	BackupsAsked    int `json:"backups_asked"`
	BackupsVerified int `json:"backups_verified"`
	BackupsFailed   int `json:"backups_failed"`
	// BackupsUnverified succeeded without passing atomfed's verify.
	BackupsUnverified int `json:"backups_unverified"`
	DrillsAsked       int `json:"drills_asked"`
	DrillsPassed      int `json:"drills_passed"`
	DrillsFailed      int `json:"drills_failed"`
	// Rechecked: verified backups the checker's pgbackrest verify passed;
	// drills whose restore the checker recomputed with equal checksums.
	BackupsRechecked int `json:"backups_rechecked"`
	DrillsRechecked  int `json:"drills_rechecked"`
	// Expired: verified backups retention removed before the check.
	BackupsExpired int `json:"backups_expired"`
}

// prepareBackups makes the agents' backup directory and turns scheduled
// backups off in every region (the run asks for its own), keeping enough
// full backups that the check finds the ones it rechecks.
func (d *dataPlane) prepareBackups(ctx context.Context) error {
	base, err := os.MkdirTemp("", "atomfed-chaos-backup-")
	if err != nil {
		return err
	}
	// PostgreSQL and pgBackRest run as PostgreSQL's user.
	if err := os.Chmod(base, 0o711); err != nil {
		return err
	}
	d.bk = &dpBackups{base: base, regions: map[string]string{}}
	for _, r := range d.regions {
		if err := d.retryAPI(ctx, 60*time.Second, "backup policy of "+r, func(ctx context.Context, cl *client.Client) error {
			p, err := cl.BackupPolicy(ctx, r, nil)
			if err != nil {
				return err
			}
			p.Disabled, p.RetentionFull, p.Default = true, 20, false
			_, err = cl.PutBackupPolicy(ctx, p)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// backupDir is region's agent --backup-dir.
func (d *dataPlane) backupDir(region string) string { return filepath.Join(d.bk.base, region) }

// runBackups asks for backups and drills, region after region, until ctx
// ends. Each is waited for at most a minute: one a fault holds up is left
// to finish on its own (the check waits for it after healing).
func (d *dataPlane) runBackups(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		region := d.regions[i%len(d.regions)]
		typ := fsm.BackupFull
		if (i/len(d.regions))%2 == 1 {
			typ = fsm.BackupIncr
		}
		var b *fsm.Backup
		if err := d.retryAPI(ctx, 30*time.Second, "ask for a backup of "+region, func(ctx context.Context, cl *client.Client) error {
			var err error
			b, err = cl.RunBackup(ctx, region, typ)
			return err
		}); err != nil {
			d.cfg.Logf("backup workload: %v", err)
			continue
		}
		d.bk.add("backup", b.ID, region)
		got, _ := d.waitBackup(ctx, b.ID, time.Minute)
		if got == nil || got.Status != fsm.BackupSucceeded || got.BackupResult == nil || !got.Verified {
			continue
		}
		var dr *fsm.Drill
		if err := d.retryAPI(ctx, 30*time.Second, "ask for a drill of "+region, func(ctx context.Context, cl *client.Client) error {
			var err error
			dr, err = cl.RunDrill(ctx, region)
			return err
		}); err != nil {
			d.cfg.Logf("backup workload: %v", err)
			continue
		}
		d.bk.add("drill", dr.ID, region)
		_, _ = d.waitDrill(ctx, region, dr.ID, time.Minute)
	}
}

// waitBackup waits until backup id ended (nil, err when it did not
// within timeout).
func (d *dataPlane) waitBackup(ctx context.Context, id string, timeout time.Duration) (*fsm.Backup, error) {
	var out *fsm.Backup
	err := d.retryAPI(ctx, timeout, "backup "+id, func(ctx context.Context, cl *client.Client) error {
		st, _, err := cl.Backup(ctx, id, &client.QueryOptions{Consistency: "stale"})
		if err != nil {
			return err
		}
		if st.Backup == nil || st.Status == fsm.BackupPending || st.Status == fsm.BackupRunning {
			return fmt.Errorf("backup %s has not ended (%s)", id, st.TaskError)
		}
		out = st.Backup
		return nil
	})
	return out, err
}

// waitDrill waits until drill id of region ended.
func (d *dataPlane) waitDrill(ctx context.Context, region, id string, timeout time.Duration) (*fsm.Drill, error) {
	var out *fsm.Drill
	err := d.retryAPI(ctx, timeout, "drill "+id, func(ctx context.Context, cl *client.Client) error {
		l, _, err := cl.Drills(ctx, region, &client.QueryOptions{Consistency: "stale"})
		if err != nil {
			return err
		}
		for _, x := range l.Drills {
			if x.ID == id && x.Status != fsm.DrillPending && x.Status != fsm.DrillRunning {
				out = x
				return nil
			}
		}
		return fmt.Errorf("drill %s has not ended", id)
	})
	return out, err
}

// checkBackups runs after healing: see the comment at the top.
func (d *dataPlane) checkBackups(ctx context.Context, res *DataPlaneResult) {
	// After healing: one more backup and drill of every region, which must
	// pass.
	for _, r := range d.regions {
		var b *fsm.Backup
		if err := d.retryAPI(ctx, 30*time.Second, "ask for a backup of "+r, func(ctx context.Context, cl *client.Client) error {
			var err error
			b, err = cl.RunBackup(ctx, r, fsm.BackupFull)
			return err
		}); err != nil {
			res.fail("after healing: %v", err)
			continue
		}
		d.bk.add("backup", b.ID, r)
		got, err := d.waitBackup(ctx, b.ID, 3*time.Minute)
		if err != nil || got.Status != fsm.BackupSucceeded || got.BackupResult == nil || !got.Verified {
			res.fail("after healing, backup %s of %s did not succeed verified: %s", b.ID, r, backupText(got, err))
			continue
		}
		var dr *fsm.Drill
		if err := d.retryAPI(ctx, 30*time.Second, "ask for a drill of "+r, func(ctx context.Context, cl *client.Client) error {
			var err error
			dr, err = cl.RunDrill(ctx, r)
			return err
		}); err != nil {
			res.fail("after healing: %v", err)
			continue
		}
		d.bk.add("drill", dr.ID, r)
		if x, err := d.waitDrill(ctx, r, dr.ID, 3*time.Minute); err != nil || x.Status != fsm.DrillPassed {
			res.fail("after healing, drill %s of %s did not pass: %s", dr.ID, r, drillText(x, err))
		}
	}

	c := &res.Backup
	d.bk.mu.Lock()
	backups, drills := append([]string(nil), d.bk.backups...), append([]string(nil), d.bk.drills...)
	d.bk.mu.Unlock()
	verified := map[string][]*fsm.Backup{} // region -> its verified backups
	labels := map[string]*fsm.Backup{}     // region/label -> backup
	for _, id := range backups {
		c.BackupsAsked++
		b, err := d.waitBackup(ctx, id, 3*time.Minute)
		if err != nil {
			res.fail("backup %s of %s never ended after healing: %v", id, d.bk.regions[id], err)
			continue
		}
		switch {
		case b.Status == fsm.BackupFailed:
			c.BackupsFailed++
		case b.Status == fsm.BackupSucceeded && b.BackupResult != nil && b.Verified:
			c.BackupsVerified++
			verified[b.Region] = append(verified[b.Region], b)
			labels[b.Region+"/"+b.Label] = b
		case b.Status == fsm.BackupExpired:
			c.BackupsExpired++
		default:
			c.BackupsUnverified++
		}
	}
	for _, r := range d.regions {
		if len(verified[r]) == 0 {
			continue
		}
		inRepo, valid, out, err := d.pgbackrestVerify(ctx, r)
		if err != nil {
			res.fail("%s: the checker's pgbackrest verify: %v", r, err)
			continue
		}
		for _, b := range verified[r] {
			switch {
			case !inRepo[b.Label]:
				c.BackupsExpired++
			case !valid(b.Label):
				res.fail("backup %s (%s) of %s is recorded verified, but pgbackrest verify after healing says: %s", b.ID, b.Label, r, oneLineOf(out))
			default:
				c.BackupsRechecked++
			}
		}
	}
	for _, id := range drills {
		c.DrillsAsked++
		r := d.bk.regions[id]
		x, err := d.waitDrill(ctx, r, id, 3*time.Minute)
		if err != nil {
			res.fail("drill %s of %s never ended after healing: %v", id, r, err)
			continue
		}
		if x.Status != fsm.DrillPassed {
			c.DrillsFailed++
			continue
		}
		c.DrillsPassed++
		if x.DrillResult == nil || len(x.Tables) == 0 || x.RestorePoint == "" {
			res.fail("drill %s of %s is recorded passed without tables or a restore point: %+v", id, r, x.DrillResult)
			continue
		}
		if labels[r+"/"+x.Label] == nil {
			// Restored a backup no longer verified or held: not rechecked.
			res.Notes = append(res.Notes, fmt.Sprintf("drill %s of %s: its backup %s is no longer in the repository; not recomputed", id, r, x.Label))
			continue
		}
		if err := d.recomputeDrill(ctx, r, x); err != nil {
			res.fail("drill %s of %s is recorded passed, but its recomputation disagrees: %v", id, r, err)
			continue
		}
		c.DrillsRechecked++
	}
	d.cfg.Logf("backups: %d asked, %d verified (%d rechecked with pgbackrest verify, %d expired), %d failed, %d unverified; drills: %d asked, %d passed (%d recomputed), %d failed",
		c.BackupsAsked, c.BackupsVerified, c.BackupsRechecked, c.BackupsExpired, c.BackupsFailed, c.BackupsUnverified, c.DrillsAsked, c.DrillsPassed, c.DrillsRechecked, c.DrillsFailed)
}

func backupText(b *fsm.Backup, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case b.BackupResult == nil:
		return b.Status
	}
	return fmt.Sprintf("%s verified=%v %s %s", b.Status, b.Verified, b.Error, b.VerifyError)
}

func drillText(x *fsm.Drill, err error) string {
	switch {
	case err != nil:
		return err.Error()
	case x.DrillResult == nil:
		return x.Status
	}
	return fmt.Sprintf("%s at %s: %s", x.Status, x.Phase, x.Error)
}

func oneLineOf(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// pgbackrest runs pgBackRest with region's agent configuration as the
// data directory's owner.
func (d *dataPlane) pgbackrest(ctx context.Context, region string, args ...string) ([]byte, error) {
	i := d.regionIndex(region)
	pg := d.pgs[i]
	bin, err := recovery.FindPgBackRest("")
	if err != nil {
		return nil, err
	}
	dir := d.backupDir(region)
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config=" + filepath.Join(dir, "pgbackrest.conf"), "--stanza=" + region}, args...)...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + dir, "PGPASSWORD=" + pg.Password}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: ownerOf(pg.DataDir)}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("pgbackrest %s: %w: %s", args[0], err, oneLineOf(append(errb.Bytes(), out.Bytes()...)))
	}
	return out.Bytes(), nil
}

// ownerOf is the credential of path's owner (nil when we are not root:
// then we are that user).
func ownerOf(path string) *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil
	}
	sys := st.Sys().(*syscall.Stat_t)
	return &syscall.Credential{Uid: sys.Uid, Gid: sys.Gid}
}

func (d *dataPlane) regionIndex(region string) int {
	for i, r := range d.regions {
		if r == region {
			return i
		}
	}
	return -1
}

// pgbackrestVerify runs pgbackrest info and verify on region's stanza:
// the labels the repository holds, and whether verify found a label
// valid (its own line when it names the backup, else the stanza's
// status).
func (d *dataPlane) pgbackrestVerify(ctx context.Context, region string) (map[string]bool, func(string) bool, []byte, error) {
	out, err := d.pgbackrest(ctx, region, "info", "--output=json")
	if err != nil {
		return nil, nil, nil, err
	}
	var info []recovery.Info
	if err := json.Unmarshal(out, &info); err != nil || len(info) != 1 {
		return nil, nil, nil, fmt.Errorf("pgbackrest info: %v: %s", err, oneLineOf(out))
	}
	in := map[string]bool{}
	for _, b := range info[0].Backup {
		in[b.Label] = true
	}
	vout, verr := d.pgbackrest(ctx, region, "verify", "--output=text", "--verbose")
	d.cfg.Logf("%s: the checker's pgbackrest verify: %s", region, oneLineOf(vout))
	if verr != nil {
		vout = append(vout, []byte(" "+verr.Error())...)
	}
	return in, verifyVerdicts(vout, verr), vout, nil
}

// verifyVerdicts reads pgbackrest verify's text output: a label is valid
// when its own line says "status: valid", or, when no line names it, when
// the command succeeded and no status line says anything but ok.
func verifyVerdicts(out []byte, runErr error) func(label string) bool {
	lines := strings.Split(string(out), "\n")
	stanzaOK := runErr == nil
	for _, l := range lines {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "status:") && t != "status: ok" {
			stanzaOK = false
		}
	}
	return func(label string) bool {
		for _, l := range lines {
			if strings.Contains(l, "backup: "+label) {
				return strings.Contains(l, "status: valid")
			}
		}
		return stanzaOK
	}
}

// recomputeDrill restores the drill's backup to its restore point into a
// scratch directory with the agent's configuration, starts it on a
// socket, and compares every table the drill recorded.
func (d *dataPlane) recomputeDrill(ctx context.Context, region string, x *fsm.Drill) error {
	rctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	pg := d.pgs[d.regionIndex(region)]
	cred := ownerOf(pg.DataDir)
	scratch, err := os.MkdirTemp(d.backupDir(region), "recheck-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	data := filepath.Join(scratch, "data")
	for _, dir := range []string{scratch, data} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if cred != nil {
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
	}
	if _, err := d.pgbackrest(rctx, region, "restore", "--set="+x.Label, "--pg1-path="+data, "--type=name", "--target="+x.RestorePoint,
		"--target-action=promote", "--archive-mode=off"); err != nil {
		return err
	}
	hba := filepath.Join(data, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all trust\n"), 0o600); err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(hba, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var log bytes.Buffer
	cmd := exec.Command(filepath.Join(pg.BinDir, "postgres"), "-D", data, "-c", "port="+strconv.Itoa(port), "-c", "listen_addresses=",
		"-c", "unix_socket_directories="+scratch, "-c", "archive_mode=off", "-c", "max_logical_replication_workers=0",
		"-c", "synchronous_standby_names=", "-c", "ssl=off", "-c", "logging_collector=off", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	user := "postgres"
	if c, err := pgx.ParseConfig(pg.DSN(pglocal.Database)); err == nil && c.User != "" {
		user = c.User
	}
	connect := func(db string) (*pgx.Conn, error) {
		return pgx.Connect(rctx, fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=5", scratch, port, user, db))
	}
	// Until the copy has replayed to the point and promoted.
	for {
		select {
		case <-done:
			return fmt.Errorf("the restored PostgreSQL exited: %s", oneLineOf(log.Bytes()))
		default:
		}
		conn, err := connect("postgres")
		if err == nil {
			var rec bool
			err = conn.QueryRow(rctx, `SELECT pg_is_in_recovery()`).Scan(&rec)
			conn.Close(context.Background())
			if err == nil && !rec {
				break
			}
		}
		if rctx.Err() != nil {
			return fmt.Errorf("the restored PostgreSQL did not come up promoted: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	byDB := map[string][]fsm.DrillTable{}
	for _, t := range x.Tables {
		byDB[t.Database] = append(byDB[t.Database], t)
	}
	got := map[string]fsm.DrillTable{}
	for db, tables := range byDB {
		conn, err := connect(db)
		if err != nil {
			return fmt.Errorf("database %s of the restored copy: %w", db, err)
		}
		for _, t := range tables {
			r := fsm.DrillTable{Database: db, Name: t.Name}
			// The checksum the drill records (recovery/drill_point.go):
			// the sum of the first 64 bits of each row's md5.
			if err := conn.QueryRow(rctx, `SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY `+t.Name+` t`).Scan(&r.Rows, &r.Checksum); err == nil {
				got[db+"/"+t.Name] = r
			}
		}
		conn.Close(context.Background())
	}
	return compareDrillTables(x.Tables, got)
}

// compareDrillTables compares the tables a drill recorded with the
// checker's recomputation (database/name to table): every recorded table
// must be there with the same row count and checksum.
func compareDrillTables(recorded []fsm.DrillTable, got map[string]fsm.DrillTable) error {
	var errs []error
	for _, t := range recorded {
		g, ok := got[t.Database+"/"+t.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s %s: recorded, but the restored copy could not be read", t.Database, t.Name))
		case g.Rows != t.Rows || g.Checksum != t.Checksum:
			errs = append(errs, fmt.Errorf("%s %s: recorded %d rows (checksum %s), the restored copy has %d (%s)", t.Database, t.Name, t.Rows, t.Checksum, g.Rows, g.Checksum))
		}
	}
	return errors.Join(errs...)
}
