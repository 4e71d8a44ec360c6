package recovery

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Managed is the region PostgreSQL an agent manages for a rebuild: the
// data directory it restores into and the server it starts there. cmd
// builds it from the agent's --pg-* flags.
type Managed struct {
	// DataDir is the data directory (absolute). A rebuild refuses it
	// while a server runs on it, and when it is not empty unless the
	// request says force.
	DataDir string
	// BinDir holds postgres and pg_ctl ("": the binaries of the newest
	// PostgreSQL installed).
	BinDir string
	// Port and Socket, when set, override the restored configuration's.
	Port   int
	Socket string
	// OSUser runs the server ("": the data directory's parent's owner
	// when the agent runs as root, else the agent's user).
	OSUser string
}

// Validate checks m.
func (m *Managed) Validate() error {
	if !filepath.IsAbs(m.DataDir) || filepath.Clean(m.DataDir) == "/" {
		return fmt.Errorf("--pg-data %q must be an absolute path to the region's data directory", m.DataDir)
	}
	if m.Socket != "" && !filepath.IsAbs(m.Socket) {
		return fmt.Errorf("--pg-socket %q must be an absolute directory", m.Socket)
	}
	if m.Port < 0 || m.Port > 65535 {
		return fmt.Errorf("--pg-port %d is not a port", m.Port)
	}
	return nil
}

// ErrServerRunning means a PostgreSQL runs on the data directory a
// rebuild was asked to restore into.
var ErrServerRunning = errors.New("a PostgreSQL server runs on the data directory")

// RebuildExecutor runs region-rebuild tasks: the region's PostgreSQL
// restored from a verified backup onto the empty data directory the agent
// manages, recovered to the end of the archived WAL (or to a point in
// time), started, and pointed at this agent's WAL archiving again.
type RebuildExecutor struct {
	cfg Config
	m   Managed
	log hclog.Logger
	x   *Executor // shares the agent's one-at-a-time lock and repository
}

// NewRebuildExecutor returns the rebuild executor that goes with x.
func NewRebuildExecutor(x *Executor, m Managed) (*RebuildExecutor, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	m.DataDir = filepath.Clean(m.DataDir)
	return &RebuildExecutor{cfg: x.cfg, m: m, log: x.cfg.Logger.Named("rebuild"), x: x}, nil
}

// Type is "region-rebuild".
func (r *RebuildExecutor) Type() string { return fsm.TaskTypeRebuild }

// Run runs the rebuild t asks for and reports its progress and result.
// A rebuild that is interrupted (its context ends, pgBackRest or the
// server dies) reports a failure, never done; the data directory it left
// is its own (a marker says so), and a rerun empties it and starts over.
func (r *RebuildExecutor) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.RebuildSpec
	if err := json.Unmarshal(t.Spec, &spec); err != nil || spec.Rebuild == "" || spec.Label == "" || !fsm.ValidRegionName(spec.Stanza) {
		return fmt.Errorf("rebuild spec is invalid: %s", t.Spec)
	}
	r.x.mu.Lock()
	defer r.x.mu.Unlock()
	start := time.Now()
	p := &fsm.RebuildProgress{Rebuild: spec.Rebuild, Phase: fsm.RebuildPhaseConfigure, StartedAt: start.UnixNano(), BytesTotal: spec.BytesTotal}
	send := func(status string) {
		p.At = time.Now().UnixNano()
		c := *p
		report(structs.TaskStatus{Status: status, Result: &c})
	}
	send(fsm.TaskRunning)
	res := &fsm.RebuildResult{DataDir: r.m.DataDir, StartedAt: start.UnixNano()}
	err := r.rebuild(ctx, spec, p, send, res)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	res.DurationMS, res.EndedAt = time.Since(start).Milliseconds(), time.Now().UnixNano()
	res.Bytes, res.Files = p.Bytes, p.Files
	p.Done, p.Result = true, res
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted (%v): the data directory holds a partial restore; run the rebuild again", ctx.Err())
		}
		res.Error, res.Phase = err.Error(), p.Phase
		p.Phase = fsm.RebuildPhaseFailed
		r.log.Warn("rebuild failed", "rebuild", spec.Rebuild, "phase", res.Phase, "error", err)
		p.At = time.Now().UnixNano()
		c := *p
		report(structs.TaskStatus{Status: fsm.TaskFailing, Result: &c, Error: err.Error()})
		return nil
	}
	res.Phase, p.Phase = fsm.RebuildPhaseDone, fsm.RebuildPhaseDone
	r.log.Info("region rebuilt", "rebuild", spec.Rebuild, "label", spec.Label, "bytes", res.Bytes, "duration", time.Since(start))
	send(fsm.TaskSucceeded)
	return nil
}

// markerPath is the file that says a rebuild has written into the data
// directory and not finished: next to the data directory, so that any
// agent managing it (a peer the task moved to included) recognises a
// partial restore as a rebuild's own.
func (r *RebuildExecutor) markerPath(stanza string) string {
	return filepath.Join(filepath.Dir(r.m.DataDir), "."+filepath.Base(r.m.DataDir)+".atomfed-rebuild-"+stanza)
}

func (r *RebuildExecutor) rebuild(ctx context.Context, spec fsm.RebuildSpec, p *fsm.RebuildProgress, send func(string), res *fsm.RebuildResult) error {
	repo, err := r.x.repository(fsm.BackupSpec{Repository: spec.Repository})
	if err != nil {
		return err
	}
	bin, err := FindPgBackRest(r.cfg.PgBackRest)
	if err != nil {
		return err
	}
	pc, err := pgx.ParseConfig(r.cfg.DSN)
	if err != nil {
		return errors.New("POSTGRES_DSN does not parse")
	}
	owner, err := r.owner()
	if err != nil {
		return err
	}
	pgBin := r.m.BinDir
	if pgBin == "" {
		if pgBin, err = postgresBin(0); err != nil {
			return err
		}
	}
	target := Target{DataDir: r.m.DataDir, Socket: r.m.Socket, Port: r.m.Port, User: pc.User, Password: pc.Password, Owner: owner}
	if target.Socket == "" {
		target.Socket = "/var/run/postgresql"
	}
	if target.Port == 0 {
		target.Port = 5432
	}
	e := &Engine{Bin: bin, Dir: r.cfg.Dir, Stanza: spec.Stanza, Repo: repo, Retention: 1, Target: target}
	if err := e.Prepare(); err != nil {
		return err
	}
	// Everything is checked before the data directory is touched.
	if spec.TargetTime != 0 {
		if err := checkArchiveReaches(e, spec.TargetTime); err != nil {
			return err
		}
	}
	if err := r.prepareDataDir(spec, owner); err != nil {
		return err
	}

	p.Phase = fsm.RebuildPhaseRestoring
	p.FilesTotal = manifestFiles(e, spec.Label)
	send(fsm.TaskRunning)
	if err := os.WriteFile(r.markerPath(spec.Stanza), []byte(r.m.DataDir+"\n"), 0o600); err != nil {
		return fmt.Errorf("mark the data directory as being rebuilt (the agent writes %s next to it): %w", r.markerPath(spec.Stanza), err)
	}
	args := []string{"restore", "--set=" + spec.Label, "--log-level-console=detail"}
	if spec.TargetTime != 0 {
		args = append(args, "--type=time", "--target="+pgTime(spec.TargetTime), "--target-action=promote")
	}
	t0 := time.Now()
	if err := r.restore(ctx, e, args, p, send); err != nil {
		return err
	}
	res.RestoreMS = time.Since(t0).Milliseconds()

	p.Phase = fsm.RebuildPhaseStarting
	send(fsm.TaskRunning)
	t0 = time.Now()
	logFile := filepath.Join(r.cfg.Dir, "rebuild-"+spec.Stanza+"-postgres.log")
	if err := r.start(ctx, pgBin, logFile, owner); err != nil {
		return err
	}
	p.Phase = fsm.RebuildPhaseRecovering
	send(fsm.TaskRunning)
	conn, err := r.awaitPromoted(ctx, pc, logFile, 10*time.Minute)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	res.RecoveryMS = time.Since(t0).Milliseconds()
	_ = conn.QueryRow(ctx, `SELECT timeline_id FROM pg_control_checkpoint()`).Scan(&res.Timeline)

	// The restored configuration archives through the agent that took
	// the backup: from now on through this one.
	p.Phase = fsm.RebuildPhaseResuming
	send(fsm.TaskRunning)
	if _, err := e.EnsureArchiving(ctx, conn); err != nil {
		return err
	}
	return os.Remove(r.markerPath(spec.Stanza))
}

// owner is the OS user the server runs as.
func (r *RebuildExecutor) owner() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		if r.m.OSUser != "" {
			if u, err := user.Current(); err != nil || u.Username != r.m.OSUser {
				return nil, fmt.Errorf("--pg-user %s: the agent runs as another user and can only run PostgreSQL as itself (run it as root, or as %s)", r.m.OSUser, r.m.OSUser)
			}
		}
		return nil, nil
	}
	name := r.m.OSUser
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("--pg-user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		return nil, errors.New("PostgreSQL refuses to run as root: give --pg-user")
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// prepareDataDir checks that the data directory can be restored into:
// no server runs on it, and it is empty, or force (or a partial restore
// of this agent's) allows emptying it. It then exists, owned by the
// server's user, mode 0700.
func (r *RebuildExecutor) prepareDataDir(spec fsm.RebuildSpec, owner *syscall.Credential) error {
	dir := r.m.DataDir
	if pid, ok := runningPostmaster(dir); ok {
		return fmt.Errorf("%w: %s (postmaster.pid names pid %d, which is alive): stop it first; a rebuild never touches a running server's data directory", ErrServerRunning, dir, pid)
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("read the data directory %s: %w", dir, err)
	case len(entries) > 0:
		marker, _ := os.ReadFile(r.markerPath(spec.Stanza))
		ours := strings.TrimSpace(string(marker)) == dir
		if !spec.Force && !ours {
			return fmt.Errorf("the data directory %s is not empty (%d entries): a rebuild restores into an empty one; move it away, or ask again with --force to delete its contents", dir, len(entries))
		}
		for _, en := range entries {
			if err := os.RemoveAll(filepath.Join(dir, en.Name())); err != nil {
				return fmt.Errorf("empty the data directory %s: %w", dir, err)
			}
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	if owner != nil {
		if err := os.Chown(dir, int(owner.Uid), int(owner.Gid)); err != nil {
			return err
		}
		return reachable(dir, owner)
	}
	return nil
}

// runningPostmaster reads dir's postmaster.pid and reports whether the
// process it names is alive and a server of dir.
func runningPostmaster(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return pid, false
	}
	// A postmaster works in its data directory; a live process elsewhere
	// reuses a dead server's pid (when /proc says; else assume it runs).
	if cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd")); err == nil {
		return pid, filepath.Clean(cwd) == filepath.Clean(dir)
	}
	return pid, true
}

// checkArchiveReaches refuses a point in time after the end of the
// archived WAL: in a posix repository, the newest archived segment must
// have been written at or after it (S3: not checked here; recovery then
// fails with PostgreSQL's "recovery ended before configured recovery
// target was reached").
func checkArchiveReaches(e *Engine, target int64) error {
	if e.Repo.Kind != fsm.RepoPosix {
		return nil
	}
	var newest time.Time
	_ = filepath.WalkDir(filepath.Join(e.Repo.Path, "archive", e.Stanza), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if st, err := d.Info(); err == nil && st.ModTime().After(newest) {
			newest = st.ModTime()
		}
		return nil
	})
	if newest.IsZero() {
		return fmt.Errorf("the repository %s holds no archived WAL of %s", e.Repo.Path, e.Stanza)
	}
	if newest.UnixNano() < target {
		return fmt.Errorf("target time %s is after the end of the archived WAL (its newest segment was archived at %s): nothing after that can be recovered",
			time.Unix(0, target).UTC().Format(time.RFC3339Nano), newest.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// pgTime formats unix ns as PostgreSQL's recovery_target_time.
func pgTime(ns int64) string {
	return time.Unix(0, ns).UTC().Format("2006-01-02 15:04:05.999999") + "+00"
}

// restoreLine matches pgBackRest's detail line of a restored file:
// "restore file /path (8KB, 12.34%) checksum ...".
var restoreLine = regexp.MustCompile(`restore file (\S+) \(([^,)]*), ([0-9.]+)%\)`)

// manifestFiles counts the files of a backup in its manifest (the
// [target:file] section), when the agent can read it: a filesystem
// repository without encryption; 0 otherwise.
func manifestFiles(e *Engine, label string) int64 {
	if e.Repo.Kind != fsm.RepoPosix || e.Repo.CipherPass != "" {
		return 0
	}
	f, err := os.Open(filepath.Join(e.Repo.Path, "backup", e.Stanza, label, "backup.manifest"))
	if err != nil {
		return 0
	}
	defer f.Close()
	var n int64
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "["):
			in = line == "[target:file]"
		case in && strings.TrimSpace(line) != "":
			n++
		}
	}
	return n
}

// restore runs pgbackrest restore and reports its progress from the
// files it logs.
func (r *RebuildExecutor) restore(ctx context.Context, e *Engine, args []string, p *fsm.RebuildProgress, send func(string)) error {
	t0 := time.Now()
	last := time.Time{}
	onLine := func(line string) {
		m := restoreLine.FindStringSubmatch(line)
		if m == nil {
			return
		}
		p.Files++
		pct, _ := strconv.ParseFloat(m[3], 64)
		p.Percent = pct
		if p.BytesTotal > 0 {
			p.Bytes = int64(pct / 100 * float64(p.BytesTotal))
		}
		if pct > 0 {
			p.ETASeconds = int64(time.Since(t0).Seconds() * (100 - pct) / pct)
		}
		if time.Since(last) >= r.cfg.ProgressInterval {
			last = time.Now()
			send(fsm.TaskRunning)
		}
	}
	if err := e.runLines(ctx, onLine, args...); err != nil {
		return err
	}
	p.Percent, p.ETASeconds = 100, 0
	if p.BytesTotal > 0 {
		p.Bytes = p.BytesTotal
	}
	send(fsm.TaskRunning)
	return nil
}

// runLines runs one pgbackrest command, calling onLine with each line of
// its stdout.
func (e *Engine) runLines(ctx context.Context, onLine func(string), args ...string) error {
	full := append([]string{"--config=" + e.ConfigPath(), "--stanza=" + e.Stanza}, args...)
	cmd := exec.CommandContext(ctx, e.Bin, full...)
	cmd.Dir = e.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + e.Dir}
	cmd.SysProcAttr = sysProcAttr(e.Target.Owner)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	background(cmd.Process.Pid)
	var errLines []string
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "ERROR:") || len(errLines) > 0 {
			errLines = append(errLines, line)
		}
		onLine(line)
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("pgbackrest %s: %w: %s", args[0], err, tail(stderr.String()+strings.Join(errLines, "\n")))
	}
	return nil
}

// start starts the restored server with pg_ctl, detached from the agent
// (it is the region's database, not a child of the agent: it outlives
// the agent), with the managed port and socket.
func (r *RebuildExecutor) start(ctx context.Context, pgBin, logFile string, owner *syscall.Credential) error {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if owner != nil {
		if err := os.Chown(logFile, int(owner.Uid), int(owner.Gid)); err != nil {
			return err
		}
	}
	var opts []string
	if r.m.Port != 0 {
		opts = append(opts, "-p "+strconv.Itoa(r.m.Port))
	}
	if r.m.Socket != "" {
		opts = append(opts, "-k "+r.m.Socket)
	}
	args := []string{"start", "-D", r.m.DataDir, "-l", logFile, "-W"}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, " "))
	}
	cmd := exec.CommandContext(ctx, filepath.Join(pgBin, "pg_ctl"), args...)
	cmd.Dir = r.cfg.Dir
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner, Setsid: true}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("start the restored PostgreSQL (pg_ctl): %w: %s", err, tail(string(out)))
	}
	return nil
}

// awaitPromoted waits until the restored server accepts the agent's
// connection and has left recovery (replayed the archived WAL, or reached
// the target, and promoted).
func (r *RebuildExecutor) awaitPromoted(ctx context.Context, pc *pgx.ConnConfig, logFile string, within time.Duration) (*pgx.Conn, error) {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.ConnectConfig(cctx, pc.Copy())
		if err == nil {
			var inRecovery bool
			err = conn.QueryRow(cctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery)
			if err == nil && !inRecovery {
				cancel()
				return conn, nil
			}
			conn.Close(context.Background())
			if err == nil {
				err = errors.New("still in recovery")
			}
		}
		cancel()
		last = err
		if _, running := runningPostmaster(r.m.DataDir); !running {
			b, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("the restored PostgreSQL exited during recovery: %s%s", tail(string(b)), serverLogTail(r.m.DataDir))
		}
	}
	return nil, fmt.Errorf("the restored PostgreSQL did not finish recovery within %s: %s", within, redactErr(last, pc.Password))
}

// serverLogTail returns the end of the newest file in the data
// directory's log directory (where a logging collector writes).
func serverLogTail(dataDir string) string {
	files, _ := filepath.Glob(filepath.Join(dataDir, "log", "*"))
	var newest string
	var at time.Time
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.ModTime().After(at) {
			newest, at = f, st.ModTime()
		}
	}
	if newest == "" {
		return ""
	}
	b, _ := os.ReadFile(newest)
	s := string(b)
	if len(s) > 600 {
		s = s[len(s)-600:]
	}
	return " (server log: " + strings.TrimSpace(s) + ")"
}
