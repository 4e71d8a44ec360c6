package recovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Config configures an agent's backup executor. cmd builds it from flags
// and the environment.
type Config struct {
	// DSN is the agent's connection to its region's PostgreSQL (a
	// superuser's: archive_command is set with ALTER SYSTEM). Never
	// logged or reported.
	DSN string
	// PgBackRest is the pgbackrest binary.
	PgBackRest string
	// Dir is the agent's pgBackRest working directory (configuration,
	// locks, logs, spool).
	Dir string
	// Repo is the agent's repository: S3 from the environment, else a
	// directory. A policy may name another path or insist on a kind.
	Repo Repository
	// ProgressInterval is how often a running backup reports progress.
	ProgressInterval time.Duration
	Logger           hclog.Logger
	Registerer       prometheus.Registerer
}

// Validate checks the config.
func (c *Config) Validate() error {
	if c.DSN == "" {
		return errors.New("backups need the region's PostgreSQL: set POSTGRES_DSN or --postgres-dsn")
	}
	if _, err := pgx.ParseConfig(c.DSN); err != nil {
		return errors.New("POSTGRES_DSN does not parse")
	}
	if !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("the pgBackRest working directory %q must be an absolute path (--backup-dir)", c.Dir)
	}
	return c.Repo.Validate()
}

// Executor runs backup tasks: one backup of the region's PostgreSQL with
// pgBackRest, verified, described in its result.
type Executor struct {
	cfg Config
	log hclog.Logger
	m   *metrics
	mu  sync.Mutex // one backup at a time on this agent
}

// NewExecutor returns the backup executor of an agent.
func NewExecutor(cfg Config) (*Executor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Executor{cfg: cfg, log: cfg.Logger.Named("backup"), m: newMetrics(cfg.Registerer)}, nil
}

// Type is "backup".
func (x *Executor) Type() string { return fsm.TaskTypeBackup }

// Run takes the backup t asks for and reports it: progress while it runs,
// then the result (succeeded, or failing with the phase and the error).
func (x *Executor) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.BackupSpec
	if err := json.Unmarshal(t.Spec, &spec); err != nil || spec.Backup == "" || (spec.Type != fsm.BackupFull && spec.Type != fsm.BackupIncr) || !fsm.ValidRegionName(spec.Stanza) {
		return fmt.Errorf("backup spec is invalid: %s", t.Spec)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	p := &fsm.BackupProgress{Backup: spec.Backup, Phase: "configure", StartedAt: time.Now().UnixNano()}
	send := func(status string) {
		p.At = time.Now().UnixNano()
		c := *p
		report(structs.TaskStatus{Status: status, Result: &c})
	}
	send(fsm.TaskRunning)
	start := time.Now()
	res, err := x.backup(ctx, spec, p, send)
	if ctx.Err() != nil {
		return nil // moved, deleted or stopping: the next owner starts over
	}
	p.Done, p.Result = true, res
	if err != nil {
		res.Error, res.Phase = err.Error(), p.Phase
		x.log.Warn("backup failed", "backup", spec.Backup, "phase", p.Phase, "error", err)
		x.m.failures.WithLabelValues(spec.Region).Inc()
		p.At = time.Now().UnixNano()
		c := *p
		report(structs.TaskStatus{Status: fsm.TaskFailing, Result: &c, Error: err.Error()})
		return nil
	}
	x.m.observe(spec, res, time.Since(start))
	x.log.Info("backup taken", "backup", spec.Backup, "label", res.Label, "type", spec.Type, "size", res.Size,
		"wal_start", res.WALStart, "wal_stop", res.WALStop, "verified", res.Verified)
	send(fsm.TaskSucceeded)
	return nil
}

// repository is the repository of spec on this agent.
func (x *Executor) repository(spec fsm.BackupSpec) (Repository, error) {
	r := x.cfg.Repo
	want := spec.Repository
	switch {
	case want.Kind == fsm.RepoS3 && r.Kind != fsm.RepoS3:
		return r, errors.New("the backup policy asks for an S3 repository, but this agent has none: set S3_ENDPOINT, S3_BUCKET and the credentials in its environment")
	case want.Kind == fsm.RepoPosix && r.Kind != fsm.RepoPosix:
		r = Repository{Kind: fsm.RepoPosix, CipherPass: r.CipherPass}
		if want.Path == "" {
			return r, errors.New("the backup policy asks for a posix repository without a path while this agent uses S3: give repository.path")
		}
	}
	if want.Path != "" {
		r.Path = want.Path
	}
	return r, r.Validate()
}

// backup runs the phases; p.Phase says where it stopped on error.
func (x *Executor) backup(ctx context.Context, spec fsm.BackupSpec, p *fsm.BackupProgress, send func(string)) (*fsm.BackupResult, error) {
	res := &fsm.BackupResult{Stanza: spec.Stanza}
	repo, err := x.repository(spec)
	res.Repo = repo.Describe()
	if err != nil {
		return res, err
	}
	bin, err := FindPgBackRest(x.cfg.PgBackRest)
	if err != nil {
		return res, err
	}
	pc, err := pgx.ParseConfig(x.cfg.DSN)
	if err != nil {
		return res, errors.New("POSTGRES_DSN does not parse")
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := pgx.ConnectConfig(cctx, pc)
	cancel()
	if err != nil {
		return res, fmt.Errorf("connect to the region's PostgreSQL: %s", redactErr(err, pc.Password))
	}
	defer conn.Close(context.Background())
	target, err := DiscoverTarget(ctx, conn, pc.User, pc.Password)
	if err != nil {
		return res, err
	}
	e := &Engine{Bin: bin, Dir: x.cfg.Dir, Stanza: spec.Stanza, Repo: repo, Retention: spec.Retention, Target: target}
	if err := e.Prepare(); err != nil {
		return res, err
	}
	arch, err := e.EnsureArchiving(ctx, conn)
	res.Archiving = "archive_command = " + arch.Command
	if err != nil {
		return res, err
	}
	p.Phase = "stanza"
	send(fsm.TaskRunning)
	if err := e.StanzaCreate(ctx); err != nil {
		return res, err
	}
	if arch.Changed {
		// First backup through this agent's configuration: prove that
		// WAL reaches the repository before relying on it.
		if err := e.Check(ctx); err != nil {
			return res, fmt.Errorf("WAL archiving does not reach the repository: %w", err)
		}
		res.Archiving += " (set by this agent; pgbackrest check passed)"
	}
	p.Phase = "backup"
	send(fsm.TaskRunning)
	before := time.Now().Unix()
	if err := x.withProgress(ctx, e, p, send, func() error { return e.Backup(ctx, spec.Type, spec.Backup) }); err != nil {
		return res, err
	}
	info, err := e.Info(ctx)
	if err != nil {
		return res, err
	}
	if err := describe(ctx, e, info, spec.Backup, before, res); err != nil {
		return res, err
	}
	p.Phase = "verify"
	send(fsm.TaskRunning)
	out, verr := e.Verify(ctx)
	res.VerifiedAt = time.Now().UnixNano()
	if verr != nil {
		res.VerifyError = tail(verr.Error())
	} else if strings.Contains(out, "status: error") {
		res.VerifyError = tail(out)
	} else {
		res.Verified = true
	}
	return res, nil
}

// describe fills res from the stanza's info: the newest backup, which
// must be this one (started after before, annotated with its id), and
// the labels retention left in the repository.
func describe(ctx context.Context, e *Engine, info *Info, id string, before int64, res *fsm.BackupResult) error {
	if len(info.Backup) == 0 {
		return errors.New("pgbackrest reported success but lists no backup")
	}
	for _, b := range info.Backup {
		if len(res.InRepo) < 200 {
			res.InRepo = append(res.InRepo, b.Label)
		}
	}
	b := info.Backup[len(info.Backup)-1]
	if b.Timestamp.Start < before-1 {
		return fmt.Errorf("the newest backup in the repository (%s) started before this one: it was not taken", b.Label)
	}
	if full, err := e.BackupInfo(ctx, b.Label); err == nil && full.Annotation["atomfed-backup"] != "" && full.Annotation["atomfed-backup"] != id {
		return fmt.Errorf("the newest backup in the repository (%s) belongs to %s, not %s", b.Label, full.Annotation["atomfed-backup"], id)
	}
	res.Label, res.Start, res.Stop = b.Label, b.Timestamp.Start, b.Timestamp.Stop
	res.Size, res.RepoSize = b.Info.Size, b.Info.Repository.Delta
	res.WALStart, res.WALStop = b.Archive.Start, b.Archive.Stop
	res.LSNStart, res.LSNStop = b.LSN.Start, b.LSN.Stop
	res.Prior = b.Prior
	if b.Error {
		return fmt.Errorf("pgbackrest marks backup %s as having page checksum errors", b.Label)
	}
	return nil
}

// withProgress runs fn and reports the backup's progress from pgBackRest's
// lock while it runs.
func (x *Executor) withProgress(ctx context.Context, e *Engine, p *fsm.BackupProgress, send func(string), fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	tick := time.NewTicker(x.cfg.ProgressInterval)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := e.Info(ictx)
			cancel()
			if err != nil || !info.Status.Lock.Backup.Held || info.Status.Lock.Backup.Size == 0 {
				continue
			}
			l := info.Status.Lock.Backup
			p.Bytes, p.BytesTotal = l.SizeCplt, l.Size
			p.Percent = float64(int(1000*float64(l.SizeCplt)/float64(l.Size))) / 10
			send(fsm.TaskRunning)
		}
	}
}

// redactErr removes the password from a connection error.
func redactErr(err error, password string) string {
	s := err.Error()
	if password != "" {
		s = strings.ReplaceAll(s, password, "<redacted>")
	}
	return s
}
