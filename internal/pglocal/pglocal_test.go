package pglocal_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func query(t *testing.T, c *pglocal.Cluster, sql string) string {
	t.Helper()
	conn, err := c.Connect(ctx(t), pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var s string
	if err := conn.QueryRow(ctx(t), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestClusterIsLogicalAndRunsAsPostgres(t *testing.T) {
	c := pgtest.New(t, pglocal.Options{Name: "a"})
	if got := query(t, c, "SHOW wal_level"); got != "logical" {
		t.Fatalf("wal_level = %s", got)
	}
	if got := query(t, c, "SHOW max_replication_slots"); got != "64" {
		t.Fatalf("max_replication_slots = %s", got)
	}
	if got := query(t, c, "SELECT rolreplication::text FROM pg_roles WHERE rolname = '"+pglocal.ReplicationUser+"'"); got != "true" {
		t.Fatalf("replication role: %s", got)
	}
	st, err := os.Stat(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if uid := st.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Fatal("the data directory belongs to root: initdb would have refused it")
		}
	}
	// The superuser needs its password over TCP.
	bad := strings.Replace(c.DSN(pglocal.Database), c.Password, "wrong", 1)
	if conn, err := pgx.Connect(ctx(t), bad); err == nil {
		conn.Close(context.Background())
		t.Fatal("a wrong password was accepted over TCP")
	}
	// The replication role gets in with the passfile alone.
	conn, err := pgx.Connect(ctx(t), "host=127.0.0.1 port="+strconv.Itoa(c.Port)+" dbname="+pglocal.Database+" user="+pglocal.ReplicationUser+" passfile="+c.Passfile)
	if err != nil {
		t.Fatalf("replication role with passfile: %v", err)
	}
	conn.Close(context.Background())
}

func TestRemoveStopsAndDeletesEverything(t *testing.T) {
	c, err := pglocal.Start(ctx(t), pglocal.Options{Name: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	pid := pglocal.PostmasterPID(c)
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Fatalf("directory %s still there: %v", c.Dir, err)
	}
	if pglocal.ProcessExists(pid) {
		t.Fatalf("postmaster %d still running", pid)
	}
	if out, _ := exec.Command("pgrep", "-f", c.DataDir).Output(); len(out) > 0 {
		t.Fatalf("processes of the removed cluster remain: %s", out)
	}
}

func TestKillLeavesNoProcessAndRestartRecovers(t *testing.T) {
	c := pgtest.New(t, pglocal.Options{Name: "crash"})
	conn, err := c.Connect(ctx(t), pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx(t), "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	pid := pglocal.PostmasterPID(c)
	kids := pglocal.ChildrenOf(pid)
	if len(kids) == 0 {
		t.Fatal("the postmaster has no children to kill")
	}
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	for _, p := range append(kids, pid) {
		if pglocal.ProcessExists(p) {
			t.Fatalf("process %d of the killed cluster is still alive", p)
		}
	}
	if err := c.Restart(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := query(t, c, "SELECT count(*)::text FROM t"); got != "1000" {
		t.Fatalf("after crash recovery: %s rows", got)
	}
}

func TestFederationSharesReplicationPassword(t *testing.T) {
	fed := pgtest.NewFederation(t, "x", "y")
	x, y := fed["x"], fed["y"]
	if x.ReplicationPassword != y.ReplicationPassword || x.Port == y.Port {
		t.Fatal("clusters of one federation must share the replication password and not the port")
	}
	conn, err := pgx.Connect(ctx(t), "host=127.0.0.1 port="+strconv.Itoa(y.Port)+" dbname="+pglocal.Database+" user="+pglocal.ReplicationUser+" passfile="+x.Passfile)
	if err != nil {
		t.Fatalf("x's passfile does not open y: %v", err)
	}
	conn.Close(context.Background())
}
