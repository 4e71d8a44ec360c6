package recovery

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
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/structs"
)

// DrillExecutor runs restore drills: a restore point marked on the
// region's PostgreSQL with the checksums of its tables there
// (drill_point.go), the newest verified backup restored with pgBackRest
// into a scratch data directory on the agent's machine and recovered to
// that point, started on a unix socket only (no TCP, archiving off, no
// logical replication workers: it can reach nothing and nothing reaches
// it), every table of every database read (row count and checksum) and
// compared with the source's at the point, stopped and removed.
type DrillExecutor struct {
	cfg Config
	log hclog.Logger
	x   *Executor // shares the agent's one-at-a-time lock and repository
}

// NewDrillExecutor returns the drill executor that goes with x.
func NewDrillExecutor(x *Executor) *DrillExecutor {
	return &DrillExecutor{cfg: x.cfg, log: x.cfg.Logger.Named("drill"), x: x}
}

// Type is "restore-drill".
func (d *DrillExecutor) Type() string { return fsm.TaskTypeDrill }

// Run runs the drill t asks for and reports its verdict.
func (d *DrillExecutor) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.DrillSpec
	if err := json.Unmarshal(t.Spec, &spec); err != nil || spec.Drill == "" || spec.Label == "" || !fsm.ValidRegionName(spec.Stanza) {
		return fmt.Errorf("drill spec is invalid: %s", t.Spec)
	}
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	start := time.Now()
	p := &fsm.DrillProgress{Drill: spec.Drill, Phase: "configure", StartedAt: start.UnixNano()}
	send := func(status string) {
		p.At = time.Now().UnixNano()
		c := *p
		report(structs.TaskStatus{Status: status, Result: &c})
	}
	send(fsm.TaskRunning)
	res := &fsm.DrillResult{Label: spec.Label}
	err := d.drill(ctx, spec, p, send, res)
	if ctx.Err() != nil {
		return nil
	}
	res.DurationMS = time.Since(start).Milliseconds()
	p.Done, p.Result = true, res
	if err != nil {
		res.Verdict, res.Error, res.Phase = fsm.DrillFailed, err.Error(), p.Phase
		d.log.Warn("restore drill failed", "drill", spec.Drill, "label", spec.Label, "phase", p.Phase, "error", err)
		p.At = time.Now().UnixNano()
		c := *p
		report(structs.TaskStatus{Status: fsm.TaskFailing, Result: &c, Error: err.Error()})
		return nil
	}
	res.Verdict, res.Phase = fsm.DrillPassed, "done"
	d.x.m.drill(spec.Region, time.Since(start))
	d.log.Info("restore drill passed", "drill", spec.Drill, "label", spec.Label, "tables", res.TablesRead, "duration", time.Since(start))
	send(fsm.TaskSucceeded)
	return nil
}

func (d *DrillExecutor) drill(ctx context.Context, spec fsm.DrillSpec, p *fsm.DrillProgress, send func(string), res *fsm.DrillResult) error {
	repo, err := d.x.repository(fsm.BackupSpec{Repository: spec.Repository})
	if err != nil {
		return err
	}
	bin, err := FindPgBackRest(d.cfg.PgBackRest)
	if err != nil {
		return err
	}
	pc, err := pgx.ParseConfig(d.cfg.DSN)
	if err != nil {
		return errors.New("POSTGRES_DSN does not parse")
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := pgx.ConnectConfig(cctx, pc)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to the region's PostgreSQL: %s", redactErr(err, pc.Password))
	}
	target, err := DiscoverTarget(ctx, conn, pc.User, pc.Password)
	var version int
	if err == nil {
		err = conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int / 10000`).Scan(&version)
	}
	// The point the copy must equal: marked on the source now, after the
	// backup, and archived before the restore replays up to it.
	var point *sourcePoint
	if err == nil {
		point, err = markPoint(ctx, conn, "atomfed-"+spec.Drill)
	}
	if err == nil {
		res.RestorePoint, res.RestoreLSN = point.Name, point.LSN
		err = awaitArchived(ctx, conn, point, time.Minute)
	}
	conn.Close(context.Background())
	if err != nil {
		return err
	}
	pgBin, err := postgresBin(version)
	if err != nil {
		return err
	}
	e := &Engine{Bin: bin, Dir: d.cfg.Dir, Stanza: spec.Stanza, Repo: repo, Retention: 1, Target: target}
	if err := e.Prepare(); err != nil {
		return err
	}
	scratch, err := os.MkdirTemp(d.cfg.Dir, "drill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	data := filepath.Join(scratch, "data")
	for _, dir := range []string{scratch, data} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := e.own(dir); err != nil {
			return err
		}
	}

	p.Phase = "restore"
	send(fsm.TaskRunning)
	t0 := time.Now()
	// The backup, with the archived WAL replayed up to the point,
	// promoted, with archiving off: the scratch server never pushes WAL
	// into the region's archive.
	if _, err := e.run(ctx, "restore", "--set="+spec.Label, "--pg1-path="+data, "--type=name", "--target="+point.Name,
		"--target-action=promote", "--archive-mode=off"); err != nil {
		return err
	}
	res.RestoreMS = time.Since(t0).Milliseconds()
	// Only local connections, trusted: the socket directory is the
	// scratch directory, reachable by its owner alone.
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte("local all all trust\n"), 0o600); err != nil {
		return err
	}
	if err := e.own(filepath.Join(data, "pg_hba.conf")); err != nil {
		return err
	}

	p.Phase = "start"
	send(fsm.TaskRunning)
	t0 = time.Now()
	srv, err := startScratch(ctx, pgBin, data, scratch, target.Owner)
	if err != nil {
		return err
	}
	defer srv.stop()
	user := target.User
	if user == "" {
		user = "postgres"
	}
	if err := srv.waitPromoted(ctx, user, 5*time.Minute); err != nil {
		return err
	}
	res.StartMS = time.Since(t0).Milliseconds()

	p.Phase = "check"
	send(fsm.TaskRunning)
	all, err := readTables(ctx, srv, user)
	if err != nil {
		return err
	}
	res.TablesRead = len(all)
	res.Tables = all[:min(len(all), fsm.MaxDrillTables)]
	return point.compare(all, res)
}

// postgresBin is the bin directory of PostgreSQL major version v.
func postgresBin(v int) (string, error) {
	d := filepath.Join("/usr/lib/postgresql", strconv.Itoa(v), "bin")
	if st, err := os.Stat(filepath.Join(d, "postgres")); err == nil && !st.IsDir() {
		return d, nil
	}
	d, err := pglocal.Find()
	if err != nil {
		return "", fmt.Errorf("a restore drill starts the restored backup with PostgreSQL %d's binaries on the agent's machine: %w", v, err)
	}
	return d, nil
}

// scratchServer is the restored PostgreSQL of a drill.
type scratchServer struct {
	cmd    *exec.Cmd
	done   chan struct{}
	socket string
	port   int
	out    *bytes.Buffer
}

func startScratch(ctx context.Context, bin, data, socket string, owner *syscall.Credential) (*scratchServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &scratchServer{socket: socket, port: port, out: &bytes.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "port="+strconv.Itoa(port), "-c", "listen_addresses=", "-c", "unix_socket_directories="+socket,
		"-c", "archive_mode=off", "-c", "max_logical_replication_workers=0", "-c", "synchronous_standby_names=",
		"-c", "ssl=off", "-c", "logging_collector=off", "-c", "shared_buffers=32MB", "-c", "hot_standby=on")
	s.cmd.Dir = socket
	s.cmd.Env = []string{"LC_ALL=C", "PATH=/usr/bin:/bin"}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = scratchProcAttr(owner)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the restored PostgreSQL: %w", err)
	}
	background(s.cmd.Process.Pid)
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	return s, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (s *scratchServer) connect(ctx context.Context, user, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=5", s.socket, s.port, user, db))
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// waitPromoted waits until the restored server accepts connections and
// has left recovery (reached the backup's consistent point and promoted).
func (s *scratchServer) waitPromoted(ctx context.Context, user string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("the restored PostgreSQL exited during recovery: %s", tail(s.out.String()))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := s.connect(cctx, user, "postgres")
		if err != nil {
			cancel()
			last = err
			continue
		}
		var inRecovery bool
		err = conn.QueryRow(cctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery)
		conn.Close(context.Background())
		cancel()
		if err == nil && !inRecovery {
			return nil
		}
		last = err
		if err == nil {
			last = errors.New("still in recovery")
		}
	}
	return fmt.Errorf("the restored PostgreSQL did not finish recovery within %s: %v", within, last)
}

// stop shuts the scratch server down (fast), killing it after 30 s.
func (s *scratchServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// readTables reads every table of every database of the restored server:
// its row count and an order-independent checksum of its rows.
func readTables(ctx context.Context, s *scratchServer, user string) ([]fsm.DrillTable, error) {
	conn, err := s.connect(ctx, user, "postgres")
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname`)
	if err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	conn.Close(context.Background())
	if err != nil {
		return nil, err
	}
	var out []fsm.DrillTable
	for _, db := range dbs {
		if out, err = readDatabase(ctx, s, user, db, out); err != nil {
			return nil, fmt.Errorf("database %s: %w", db, err)
		}
	}
	return out, nil
}

func readDatabase(ctx context.Context, s *scratchServer, user, db string, out []fsm.DrillTable) ([]fsm.DrillTable, error) {
	conn, err := s.connect(ctx, user, db)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, userTablesSQL)
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, tbl := range tables {
		t := fsm.DrillTable{Database: db, Name: tbl}
		if err := conn.QueryRow(ctx, tableChecksumSQL(tbl)).Scan(&t.Rows, &t.Checksum); err != nil {
			return nil, fmt.Errorf("read %s: %w", tbl, err)
		}
		out = append(out, t)
	}
	return out, nil
}
