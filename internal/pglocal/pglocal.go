// Package pglocal starts local, throwaway PostgreSQL clusters from the
// installed binaries: one per region of `atomfed dev` (the embedded
// federation), and one per simulated region in tests, through
// internal/testing/pgtest. Each
// cluster gets its own directory, a free port on 127.0.0.1, wal_level
// logical with room for dozens of slots and senders, a password-protected
// superuser, and a replication role whose password sits in a passfile that
// the server itself can read (how subscriptions authenticate without a
// password in their connection string). The server speaks TLS with a
// certificate for localhost, 127.0.0.1 and ::1, and lets the replication
// role in over TLS only (hostssl), so that connections between clusters
// can verify each other with sslmode=verify-full and RootCert. WAL archiving
// is on (archive_mode needs a restart), archiving nowhere until an agent
// points archive_command at pgBackRest. When the process runs as root,
// initdb and the server run as the postgres user, since initdb refuses root.
//
// Clusters are started as child processes of the caller (not daemonised by
// pg_ctl), die with it (parent-death signal), and Remove stops them and
// deletes everything.
package pglocal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// Defaults of every cluster.
const (
	Superuser       = "postgres"
	ReplicationUser = "atomfed_replicator"
	Database        = "atomfed"
)

// ErrNoBinaries means no PostgreSQL installation was found.
var ErrNoBinaries = errors.New("no PostgreSQL binaries found (install postgresql, or set PGTEST_BIN to the directory holding initdb and postgres)")

// Find returns the bin directory of the newest installed PostgreSQL:
// $PGTEST_BIN, else /usr/lib/postgresql/<version>/bin (Debian), else the
// directory of an initdb on $PATH.
func Find() (string, error) {
	var cands []string
	if d := os.Getenv("PGTEST_BIN"); d != "" {
		cands = append(cands, d)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	cands = append(cands, dirs...)
	cands = append(cands, "/usr/local/pgsql/bin")
	if p, err := exec.LookPath("initdb"); err == nil {
		cands = append(cands, filepath.Dir(p))
	}
	for _, d := range cands {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// Options shape a cluster.
type Options struct {
	// Name labels the cluster in errors and directory names.
	Name string
	// BinDir holds initdb and postgres (default: Find()).
	BinDir string
	// Parent is where the cluster's directory is created (default: the
	// system temp dir).
	Parent string
	// Port to listen on (0: a free one).
	Port int
	// ReplicationPassword is the replication role's password; clusters of
	// one federation share it, so each one's passfile opens the others
	// (default: random).
	ReplicationPassword string
	// Settings are extra postgresql.conf settings (raw values).
	Settings map[string]string
	// CA signs the server's certificate (default: one throwaway CA per
	// process, shared by the clusters it starts, so that they verify one
	// another like the regions of one federation).
	CA *tlsutil.CA
	// TLSNames, when set, are the only names (DNS) in the server's
	// certificate, instead of localhost, 127.0.0.1 and ::1: a server
	// presenting a certificate for another name.
	TLSNames []string
	// NoTLS starts the server without TLS (ssl = off), and lets the
	// replication role in without it.
	NoTLS bool
	// Output receives the server's stderr before its log collector takes
	// over (default: discarded; the server log is in Dir/data/log).
	Output io.Writer
}

// Cluster is a running (or stopped) throwaway PostgreSQL cluster.
type Cluster struct {
	Name     string
	Dir      string // everything lives here; Remove deletes it
	DataDir  string
	BinDir   string
	Host     string
	Port     int
	Password string // the superuser's
	// ReplicationPassword is the replication role's password, and
	// Passfile a pgpass file with it, readable by the server (owned by
	// the postgres user when running as root).
	ReplicationPassword string
	Passfile            string
	// SuperuserPassfile is a pgpass file with the superuser's password,
	// for psql (PGPASSFILE=...).
	SuperuserPassfile string
	// RootCert is a copy of the CA certificate that signs the server
	// certificates of the cluster's federation, readable by everyone: the
	// sslrootcert of connections to the other clusters ("" with NoTLS).
	RootCert string

	opts Options
	cred *syscall.Credential

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start initialises and starts a cluster, and creates the atomfed
// database and the replication role.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.BinDir == "" {
		d, err := Find()
		if err != nil {
			return nil, err
		}
		o.BinDir = d
	}
	if o.Name == "" {
		o.Name = "pg"
	}
	if o.ReplicationPassword == "" {
		o.ReplicationPassword = NewSecret()
	}
	dir, err := os.MkdirTemp(o.Parent, "pglocal-"+o.Name+"-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Name: o.Name, Dir: dir, DataDir: filepath.Join(dir, "data"), BinDir: o.BinDir, Host: "127.0.0.1",
		Port: o.Port, Password: NewSecret(), ReplicationPassword: o.ReplicationPassword, opts: o}
	ok := false
	defer func() {
		if !ok {
			_ = c.Remove()
		}
	}()
	if c.cred, err = runAs(); err != nil {
		return nil, err
	}
	if err := reachable(dir, c.cred); err != nil {
		return nil, err
	}
	if err := c.initdb(ctx); err != nil {
		return nil, err
	}
	if c.Port == 0 {
		if c.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if err := c.writeTLS(); err != nil {
		return nil, err
	}
	if err := c.writeHBA(); err != nil {
		return nil, err
	}
	if err := c.writeConfig(); err != nil {
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	if err := c.bootstrap(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// runAs returns the credential to run PostgreSQL with: the postgres user
// when this process is root, else nil (run as ourselves).
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb refuses root: create a postgres user (apt's postgresql package does): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// reachable checks that the server's user can get to dir: every ancestor
// must be searchable by it, which a root-owned 0700 temporary directory
// is not.
func reachable(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if ok {
			mode := st.Mode().Perm()
			switch {
			case sys.Uid == cred.Uid && mode&0o100 != 0:
			case sys.Gid == cred.Gid && mode&0o010 != 0:
			case mode&0o001 != 0:
			default:
				return fmt.Errorf("the postgres user cannot reach %s: %s is mode %o; make it searchable (chmod o+x) or start PostgreSQL elsewhere", dir, d, mode)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// own hands a path to the user the server runs as.
func (c *Cluster) own(path string) error {
	if c.cred == nil {
		return nil
	}
	return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = []string{"LC_ALL=C", "PATH=" + c.BinDir + ":/usr/bin:/bin"}
	cmd.SysProcAttr = sysProcAttr(c.cred)
	return cmd
}

func (c *Cluster) initdb(ctx context.Context) error {
	if err := os.Chmod(c.Dir, 0o755); err != nil {
		return err
	}
	if err := c.own(c.Dir); err != nil {
		return err
	}
	pw := filepath.Join(c.Dir, "superuser.pw")
	if err := c.writeSecretFile(pw, c.Password+"\n", true); err != nil {
		return err
	}
	defer os.Remove(pw)
	cmd := c.command(ctx, "initdb", "-D", c.DataDir, "-U", Superuser, "--pwfile", pw,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %w: %s", c.Name, err, tail(out))
	}
	// The replication role's password, for subscriptions (read by this
	// server's apply workers) and for agents (read by the agent).
	c.Passfile = filepath.Join(c.Dir, "replication.pgpass")
	if err := c.writeSecretFile(c.Passfile, "*:*:*:"+ReplicationUser+":"+c.ReplicationPassword+"\n", true); err != nil {
		return err
	}
	c.SuperuserPassfile = filepath.Join(c.Dir, "superuser.pgpass")
	return c.writeSecretFile(c.SuperuserPassfile, "*:*:*:"+Superuser+":"+c.Password+"\n", false)
}

// writeSecretFile writes a 0600 file, owned by the server's user when
// forServer.
func (c *Cluster) writeSecretFile(path, content string, forServer bool) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	if forServer {
		return c.own(path)
	}
	return nil
}

func (c *Cluster) writeConfig() error {
	settings := map[string]string{
		"listen_addresses":                  "'127.0.0.1'",
		"port":                              strconv.Itoa(c.Port),
		"unix_socket_directories":           "'" + c.Dir + "'",
		"wal_level":                         "logical",
		"max_replication_slots":             "64",
		"max_wal_senders":                   "64",
		"max_logical_replication_workers":   "32",
		"max_worker_processes":              "48",
		"max_sync_workers_per_subscription": "4",
		"max_connections":                   "100",
		"shared_buffers":                    "'32MB'",
		"wal_sender_timeout":                "'10s'",
		"wal_receiver_timeout":              "'10s'",
		"wal_retrieve_retry_interval":       "'1s'",
		// Throwaway clusters: a crash of the process (kill -9) loses
		// nothing with fsync off, only a crash of the machine would.
		"fsync":             "off",
		"full_page_writes":  "off",
		"logging_collector": "on",
		"log_destination":   "'jsonlog'",
		"log_directory":     "'log'",
		"log_min_messages":  "warning",
		// archive_mode needs a restart, archive_command only a reload:
		// every cluster starts archiving (to nowhere), so that an agent
		// can point archive_command at pgBackRest (recovery) without a
		// restart. Until then segments are dropped as they complete
		// rather than kept for an archiver that may never come.
		"archive_mode":    "on",
		"archive_command": "'/bin/true'",
	}
	if !c.opts.NoTLS {
		settings["ssl"] = "on"
		settings["ssl_cert_file"] = "'server.crt'"
		settings["ssl_key_file"] = "'server.key'"
	}
	for k, v := range c.opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("\n# pglocal\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, settings[k])
	}
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	return errors.Join(err, f.Close())
}

// start runs the postmaster and waits until it accepts connections.
func (c *Cluster) start(ctx context.Context) error {
	c.mu.Lock()
	if c.cmd != nil {
		c.mu.Unlock()
		return fmt.Errorf("%s is already running", c.Name)
	}
	out := &lockedBuffer{b: &bytes.Buffer{}}
	cmd := c.command(context.Background(), "postgres", "-D", c.DataDir)
	w := io.Writer(out)
	if c.opts.Output != nil {
		w = io.MultiWriter(w, c.opts.Output)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		c.mu.Unlock()
		return fmt.Errorf("start postgres %s: %w", c.Name, err)
	}
	done := make(chan struct{})
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.DSN("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		select {
		case <-done:
			c.forget(cmd)
			return fmt.Errorf("postgres %s exited during start-up: %s", c.Name, tail(out.Bytes()))
		case <-ctx.Done():
			_ = c.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = c.Stop()
			return fmt.Errorf("postgres %s did not accept connections within 60s: %v", c.Name, err)
		}
	}
}

func (c *Cluster) forget(cmd *exec.Cmd) {
	c.mu.Lock()
	if c.cmd == cmd {
		c.cmd = nil
	}
	c.mu.Unlock()
}

func (c *Cluster) bootstrap(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	stmts := []string{
		// No BYPASSRLS: the role reads only the rows the publishers'
		// row-level security policies give it (replication/publisher.go).
		"CREATE ROLE " + ReplicationUser + " WITH LOGIN REPLICATION NOBYPASSRLS PASSWORD " + quoteLiteral(c.ReplicationPassword),
		"CREATE DATABASE " + Database,
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("bootstrap %s: %w", c.Name, err)
		}
	}
	return nil
}

// DSN returns a superuser connection string for database db.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable connect_timeout=5",
		c.Host, c.Port, Superuser, quoteConnValue(c.Password), db)
}

// Addr returns host:port.
func (c *Cluster) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// Connect opens a superuser connection to db.
func (c *Cluster) Connect(ctx context.Context, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, c.DSN(db))
}

// CreateDatabase creates a database.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	conn, err := c.Connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	return err
}

// Running reports whether the postmaster runs.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd != nil
}

// Stop shuts the cluster down (fast shutdown: sessions are disconnected,
// a checkpoint is written) and waits for it, for at most 30 s before
// killing it.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// The log collector outlives the postmaster by a moment; it is
	// re-parented to us and reaped here, not left a zombie.
	becomeSubreaper()
	kids := childrenOf(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return c.Kill()
	}
	c.forget(cmd)
	reap(kids, 10*time.Second)
	return nil
}

// Kill crashes the cluster: SIGKILL to the postmaster and to every one of
// its processes, like a machine losing power as far as PostgreSQL can
// tell (it runs crash recovery on the next start).
func (c *Cluster) Kill() error {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	// Orphaned backends are re-parented to us instead of to PID 1 (which
	// may never reap them), so we can wait for them below.
	becomeSubreaper()
	pid := cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGSTOP) // it may not fork or reap while we look
	kids := childrenOf(pid)
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	<-done
	c.forget(cmd)
	reap(kids, 10*time.Second)
	return nil
}

// Restart starts a stopped or killed cluster again on its data directory
// and port.
func (c *Cluster) Restart(ctx context.Context) error {
	return c.start(ctx)
}

// Remove stops the cluster and deletes its directory. A server started
// on the data directory by someone else (an agent rebuilding the region
// starts one with pg_ctl) is stopped too.
func (c *Cluster) Remove() error {
	err := c.Stop()
	if c.foreignPostmaster() {
		_ = c.command(context.Background(), "pg_ctl", "stop", "-D", c.DataDir, "-m", "immediate", "-t", "30").Run()
	}
	return errors.Join(err, os.RemoveAll(c.Dir))
}

// foreignPostmaster reports whether a postmaster this Cluster did not
// start runs on its data directory: postmaster.pid names a live process
// whose working directory is the data directory (not a reused pid).
func (c *Cluster) foreignPostmaster() bool {
	b, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 0 {
		return false
	}
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "cwd"))
	return err == nil && filepath.Clean(cwd) == filepath.Clean(c.DataDir)
}

// LogFiles returns the server's log files.
func (c *Cluster) LogFiles() []string {
	m, _ := filepath.Glob(filepath.Join(c.DataDir, "log", "*"))
	sort.Strings(m)
	return m
}

// Endpoint returns host, port and the atomfed database: what the FSM
// stores for the region.
func (c *Cluster) Endpoint() (string, int, string) { return c.Host, c.Port, Database }

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// NewSecret returns a random password for a cluster's roles (36 hex digits).
func NewSecret() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// quoteConnValue quotes a libpq connection string value.
func quoteConnValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}
