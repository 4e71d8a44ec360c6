package precheck

import (
	"fmt"
	"strings"
	"testing"

	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
)

// TestPostgresCheckFindsWhatWidensTheReplicationRole, against a real
// PostgreSQL 15 (whose $libdir has test_decoding): as a superuser the
// check reports test_decoding and, once the replication role gets
// BYPASSRLS, that too, and stays REACHABLE; as a role that may not list
// $libdir it says the plugins were not checked and still sees the role.
func TestPostgresCheckFindsWhatWidensTheReplicationRole(t *testing.T) {
	pg := pgtest.New(t, pglocal.Options{Name: "precheck"})
	check := func(dsn string) Check {
		t.Helper()
		c := Run(ctx(t), Config{PostgresDSN: dsn}, Postgres)[Postgres]
		if c.Status != StatusReachable {
			t.Fatalf("postgres check: %s %s", c.Status, c.Detail)
		}
		return c
	}
	has := func(ws []string, sub string) bool {
		for _, w := range ws {
			if strings.Contains(w, sub) {
				return true
			}
		}
		return false
	}
	c := check(pg.DSN(pglocal.Database))
	if !has(c.Findings, "output plugin test_decoding is installed") || has(c.Findings, "BYPASSRLS") {
		t.Fatalf("superuser, NOBYPASSRLS role, test_decoding in $libdir: findings %q", c.Findings)
	}
	conn, err := pg.Connect(ctx(t), pglocal.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx(t))
	for _, s := range []string{
		`ALTER ROLE ` + pglocal.ReplicationUser + ` BYPASSRLS`,
		`CREATE ROLE checker LOGIN PASSWORD 'checker-pw-long'`,
	} {
		if _, err := conn.Exec(ctx(t), s); err != nil {
			t.Fatal(err)
		}
	}
	if c := check(pg.DSN(pglocal.Database)); !has(c.Findings, "has BYPASSRLS") {
		t.Fatalf("the replication role with BYPASSRLS: findings %q", c.Findings)
	}
	c = check(fmt.Sprintf("host=%s port=%d user=checker password=checker-pw-long dbname=%s sslmode=disable", pg.Host, pg.Port, pglocal.Database))
	if !has(c.Findings, "has BYPASSRLS") || has(c.Findings, "test_decoding") || !strings.Contains(c.Detail, "output plugins in $libdir not checked: checker may not list it") {
		t.Fatalf("a role that may not list $libdir: findings %q, detail %q", c.Findings, c.Detail)
	}
}
