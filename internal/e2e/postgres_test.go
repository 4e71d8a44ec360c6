package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// throwawayPG is a PostgreSQL cluster of the installed binaries, private to
// one test: password authentication for the superuser "atom", a free
// loopback port, a temporary directory, stopped and removed by t.Cleanup.
// It is deliberately minimal; the replication work has the full harness.
type throwawayPG struct {
	Port     int
	Password string
}

// DSN returns a URL DSN for database postgres with password pw.
func (p *throwawayPG) DSN(pw string) string {
	return fmt.Sprintf("postgres://atom:%s@127.0.0.1:%d/postgres?sslmode=disable", pw, p.Port)
}

func pgBinDir(t *testing.T) string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		t.Fatal("no PostgreSQL binaries under /usr/lib/postgresql/*/bin: install postgresql (.ci/run does)")
	}
	sort.Strings(m)
	return filepath.Dir(m[len(m)-1])
}

// startPG starts a cluster whose superuser atom has password.
func startPG(t *testing.T, password string) *throwawayPG {
	t.Helper()
	bin := pgBinDir(t)
	base, err := os.MkdirTemp("", "atomfed-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	// initdb refuses to run as root: run the cluster as postgres, who must
	// be able to reach its directories.
	var cred *syscall.Credential
	var uid, gid int = -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(base, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	data, sock, pwfile := filepath.Join(base, "data"), filepath.Join(base, "sock"), filepath.Join(base, "pwfile")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		for _, p := range []string{data, sock, pwfile} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
		cmd.Dir = base
		return cmd
	}
	initdb := run("initdb", "-D", data, "-U", "atom", "--pwfile", pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := testutil.FreePort(t)
	logf, err := os.Create(filepath.Join(base, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	pg := run("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=20")
	pg.Stdout, pg.Stderr = logf, logf
	if err := pg.Start(); err != nil {
		logf.Close()
		t.Fatalf("start postgres: %v", err)
	}
	done := make(chan struct{})
	go func() { pg.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		// A fast shutdown: the postmaster stops and reaps its own children.
		_ = pg.Process.Signal(syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = pg.Process.Kill()
			<-done
		}
	})
	p := &throwawayPG{Port: port, Password: password}
	err = testutil.Poll(30*time.Second, func() error {
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(base, "postgres.log"))
			t.Fatalf("postgres exited:\n%s", b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, p.DSN(password))
		if err != nil {
			return err
		}
		return c.Close(ctx)
	})
	if err != nil {
		t.Fatalf("postgres did not accept connections: %v", err)
	}
	return p
}
