package recovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// Sentinel errors.
var (
	// ErrNoPgBackRest means the pgbackrest binary was not found.
	ErrNoPgBackRest = errors.New("pgbackrest is not installed (Debian: apt-get install pgbackrest; or set --pgbackrest to its path)")
	// ErrArchiveModeOff means the region's PostgreSQL does not archive
	// WAL, which only a restart changes.
	ErrArchiveModeOff = errors.New("the region's PostgreSQL runs with archive_mode = off: set archive_mode = on in postgresql.conf and restart it " +
		"(archive_command is set by the agent, with a reload)")
)

// Target is the region's PostgreSQL as pgBackRest reaches it: locally,
// through its data directory and unix socket.
type Target struct {
	DataDir string
	Socket  string
	Port    int
	User    string
	// Password, when set, goes to pgBackRest as PGPASSWORD.
	Password string
	// Owner is the OS user owning DataDir; pgBackRest runs as that user
	// when the agent runs as root (nil: as the agent itself).
	Owner *syscall.Credential
}

// Engine drives pgBackRest for one stanza (one region's PostgreSQL).
type Engine struct {
	// Bin is the pgbackrest binary.
	Bin string
	// Dir holds the configuration, locks, logs and spool: the agent's
	// own (two agents of a region never share one). The user PostgreSQL
	// runs as must be able to reach it (archive-push reads the config).
	Dir       string
	Stanza    string
	Repo      Repository
	Retention int
	Target    Target
}

// FindPgBackRest returns the pgbackrest binary: path when set, else
// pgbackrest on $PATH.
func FindPgBackRest(path string) (string, error) {
	if path != "" {
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			return "", fmt.Errorf("--pgbackrest %s: not a file", path)
		}
		return path, nil
	}
	p, err := exec.LookPath("pgbackrest")
	if err != nil {
		return "", ErrNoPgBackRest
	}
	return p, nil
}

// ConfigPath is the engine's pgbackrest.conf.
func (e *Engine) ConfigPath() string { return filepath.Join(e.Dir, "pgbackrest.conf") }

// ArchiveCommand is the archive_command that pushes WAL to the repository.
func (e *Engine) ArchiveCommand() string {
	return fmt.Sprintf("%s --config=%s --stanza=%s archive-push %%p", e.Bin, e.ConfigPath(), e.Stanza)
}

// DiscoverTarget reads what pgBackRest needs from the region's PostgreSQL
// over conn (a superuser's): data directory, socket, port, and the owner
// of the data directory.
func DiscoverTarget(ctx context.Context, conn *pgx.Conn, user, password string) (Target, error) {
	t := Target{User: user, Password: password}
	var sockets, port string
	err := conn.QueryRow(ctx, `SELECT current_setting('data_directory'), current_setting('unix_socket_directories'), current_setting('port')`).
		Scan(&t.DataDir, &sockets, &port)
	if err != nil {
		return t, fmt.Errorf("read data_directory, unix_socket_directories and port (the agent's role must be a superuser or have pg_read_all_settings): %w", err)
	}
	t.Port, _ = strconv.Atoi(port)
	t.Socket = strings.TrimSpace(strings.Split(sockets, ",")[0])
	if t.Socket == "" {
		return t, errors.New("the region's PostgreSQL has no unix socket (unix_socket_directories is empty): pgBackRest reaches it through one")
	}
	st, err := os.Stat(t.DataDir)
	if err != nil {
		return t, fmt.Errorf("the agent cannot see the region's data directory %s (pgBackRest runs next to PostgreSQL, on its machine): %w", t.DataDir, err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && sys.Uid != 0 {
		t.Owner = &syscall.Credential{Uid: sys.Uid, Gid: sys.Gid}
	}
	return t, nil
}

// Archiving is what EnsureArchiving found and did.
type Archiving struct {
	Command string `json:"archive_command"`
	Changed bool   `json:"changed"`
}

// EnsureArchiving checks archive_mode and points archive_command at this
// engine (ALTER SYSTEM and a reload; no restart).
func (e *Engine) EnsureArchiving(ctx context.Context, conn *pgx.Conn) (Archiving, error) {
	var mode, cmd string
	if err := conn.QueryRow(ctx, `SELECT current_setting('archive_mode'), current_setting('archive_command')`).Scan(&mode, &cmd); err != nil {
		return Archiving{}, fmt.Errorf("read archive_mode: %w", err)
	}
	want := e.ArchiveCommand()
	if mode == "off" {
		return Archiving{Command: cmd}, ErrArchiveModeOff
	}
	if cmd == want {
		return Archiving{Command: want}, nil
	}
	if _, err := conn.Exec(ctx, `ALTER SYSTEM SET archive_command = `+quoteLiteral(want)); err != nil {
		return Archiving{}, fmt.Errorf("set archive_command (needs a superuser): %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		return Archiving{}, fmt.Errorf("reload the configuration: %w", err)
	}
	// The reload is asynchronous: wait until this session sees it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := conn.QueryRow(ctx, `SELECT current_setting('archive_command')`).Scan(&cmd); err != nil {
			return Archiving{}, err
		}
		if cmd == want {
			return Archiving{Command: want, Changed: true}, nil
		}
		if time.Now().After(deadline) {
			return Archiving{}, errors.New("archive_command was set but PostgreSQL did not reload it within 10 s")
		}
		select {
		case <-ctx.Done():
			return Archiving{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Prepare writes the configuration (0600, owned by the user pgBackRest
// and PostgreSQL run as: it may hold the S3 keys) and the working
// directories, and creates a posix repository.
func (e *Engine) Prepare() error {
	if err := e.Repo.Validate(); err != nil {
		return err
	}
	if e.Retention < 1 {
		e.Retention = 1
	}
	for _, d := range []string{e.Dir, filepath.Join(e.Dir, "lock"), filepath.Join(e.Dir, "log"), filepath.Join(e.Dir, "spool")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := e.own(d); err != nil {
			return err
		}
	}
	if err := reachable(e.Dir, e.Target.Owner); err != nil {
		return err
	}
	if e.Repo.Kind == fsm.RepoPosix {
		if err := os.MkdirAll(e.Repo.Path, 0o750); err != nil {
			return fmt.Errorf("create the backup repository %s: %w", e.Repo.Path, err)
		}
		if err := e.own(e.Repo.Path); err != nil {
			return err
		}
		if err := reachable(e.Repo.Path, e.Target.Owner); err != nil {
			return err
		}
	}
	lines := []string{
		"[global]",
		"lock-path=" + filepath.Join(e.Dir, "lock"),
		"log-path=" + filepath.Join(e.Dir, "log"),
		"spool-path=" + filepath.Join(e.Dir, "spool"),
		"log-level-console=warn",
		"log-level-stderr=warn",
		"log-level-file=info",
		"start-fast=y",
		"archive-timeout=60",
		"compress-type=lz4",
		// One process: backups are background work (see background).
		"process-max=1",
		"repo1-retention-full=" + strconv.Itoa(e.Retention),
		"repo1-retention-full-type=count",
	}
	lines = append(lines, e.Repo.config()...)
	lines = append(lines, "", "["+e.Stanza+"]",
		"pg1-path="+e.Target.DataDir,
		"pg1-socket-path="+e.Target.Socket,
		"pg1-port="+strconv.Itoa(e.Target.Port),
	)
	if e.Target.User != "" {
		lines = append(lines, "pg1-user="+e.Target.User)
	}
	tmp := e.ConfigPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	if err := e.own(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, e.ConfigPath())
}

func (e *Engine) own(path string) error {
	if o := e.Target.Owner; o != nil {
		return os.Chown(path, int(o.Uid), int(o.Gid))
	}
	return nil
}

// reachable checks that cred's user can get to dir through its ancestors.
func reachable(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	name := strconv.Itoa(int(cred.Uid))
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			mode := st.Mode().Perm()
			switch {
			case sys.Uid == cred.Uid && mode&0o100 != 0:
			case sys.Gid == cred.Gid && mode&0o010 != 0:
			case mode&0o001 != 0:
			default:
				return fmt.Errorf("PostgreSQL's user %s cannot reach %s: %s is mode %o; make it searchable (chmod o+x) or move the directory (--backup-dir, --backup-repo)", name, dir, d, mode)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// run runs one pgbackrest command and returns its stdout; a failure
// carries the tail of its stderr (pgBackRest never prints secrets there).
func (e *Engine) run(ctx context.Context, args ...string) ([]byte, error) {
	full := append([]string{"--config=" + e.ConfigPath(), "--stanza=" + e.Stanza}, args...)
	cmd := exec.CommandContext(ctx, e.Bin, full...)
	cmd.Dir = e.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + e.Dir}
	if e.Target.Password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+e.Target.Password)
	}
	cmd.SysProcAttr = sysProcAttr(e.Target.Owner)
	// A cancelled command gets SIGTERM first: pgBackRest then releases
	// its lock and leaves a backup it can resume.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Start()
	if err == nil {
		background(cmd.Process.Pid)
		err = cmd.Wait()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return stdout.Bytes(), fmt.Errorf("pgbackrest %s: %w: %s", args[0], err, tail(stderr.String()+stdout.String()))
	}
	return stdout.Bytes(), nil
}

// tail keeps the part of pgBackRest's output that says what failed: from
// its first ERROR line, at most 600 bytes.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(s, "ERROR:"); i > 0 {
		s = s[i:]
	}
	if len(s) > 600 {
		return s[:600] + "..."
	}
	return s
}

// StanzaCreate creates the stanza in the repository (idempotent).
func (e *Engine) StanzaCreate(ctx context.Context) error {
	_, err := e.run(ctx, "stanza-create")
	return err
}

// Check asks pgBackRest to prove that WAL archiving works: it switches
// WAL and waits for the segment to reach the repository.
func (e *Engine) Check(ctx context.Context) error {
	_, err := e.run(ctx, "check")
	return err
}

// Backup takes a backup of type typ (full or incr), annotated with the
// atomfed backup id.
func (e *Engine) Backup(ctx context.Context, typ, id string) error {
	_, err := e.run(ctx, "backup", "--type="+typ, "--annotation=atomfed-backup="+id)
	return err
}

// Verify runs pgbackrest verify over the stanza's repository: backups'
// files against their manifests and checksums, and the WAL archive.
func (e *Engine) Verify(ctx context.Context) (string, error) {
	out, err := e.run(ctx, "verify", "--output=text")
	return strings.TrimSpace(string(out)), err
}

// Info is the stanza's part of `pgbackrest info --output=json`.
type Info struct {
	Name   string `json:"name"`
	Status struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Lock    struct {
			Backup struct {
				Held     bool  `json:"held"`
				Size     int64 `json:"size"`
				SizeCplt int64 `json:"size-cplt"`
			} `json:"backup"`
		} `json:"lock"`
	} `json:"status"`
	Backup []InfoBackup `json:"backup"`
}

// InfoBackup is one backup in Info.
type InfoBackup struct {
	Label   string `json:"label"`
	Type    string `json:"type"`
	Prior   string `json:"prior"`
	Error   bool   `json:"error"`
	Archive struct {
		Start string `json:"start"`
		Stop  string `json:"stop"`
	} `json:"archive"`
	Info struct {
		Size       int64 `json:"size"`
		Delta      int64 `json:"delta"`
		Repository struct {
			Size  int64 `json:"size"`
			Delta int64 `json:"delta"`
		} `json:"repository"`
	} `json:"info"`
	LSN struct {
		Start string `json:"start"`
		Stop  string `json:"stop"`
	} `json:"lsn"`
	Timestamp struct {
		Start int64 `json:"start"`
		Stop  int64 `json:"stop"`
	} `json:"timestamp"`
	Annotation map[string]string `json:"annotation"`
}

// Info reads the stanza's info.
func (e *Engine) Info(ctx context.Context) (*Info, error) {
	out, err := e.run(ctx, "info", "--output=json")
	if err != nil {
		return nil, err
	}
	var all []Info
	if err := json.Unmarshal(out, &all); err != nil {
		return nil, fmt.Errorf("pgbackrest info: unexpected output: %w", err)
	}
	for i := range all {
		if all[i].Name == e.Stanza {
			return &all[i], nil
		}
	}
	return nil, fmt.Errorf("pgbackrest info does not list stanza %s", e.Stanza)
}

// BackupInfo reads one backup's details, annotation included.
func (e *Engine) BackupInfo(ctx context.Context, label string) (*InfoBackup, error) {
	out, err := e.run(ctx, "info", "--output=json", "--set="+label)
	if err != nil {
		return nil, err
	}
	var all []Info
	if err := json.Unmarshal(out, &all); err != nil {
		return nil, fmt.Errorf("pgbackrest info --set: unexpected output: %w", err)
	}
	for _, st := range all {
		for i := range st.Backup {
			if st.Backup[i].Label == label {
				return &st.Backup[i], nil
			}
		}
	}
	return nil, fmt.Errorf("pgbackrest info does not list backup %s", label)
}
