package replication_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// catalog lists a database's tables, views, sequences and indexes, with
// their column lists, and its subscriptions: what a mirror holds.
func (f *fed) catalog(region string) string {
	f.t.Helper()
	return f.mustValue(region, `SELECT coalesce(string_agg(x, E'\n' ORDER BY x), '') FROM (
		SELECT n.nspname || '.' || c.relname || ':' || c.relkind::text || '(' || coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
			FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') || ')' AS x
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
		UNION ALL SELECT 'subscription ' || subname FROM pg_subscription) s`)
}

// TestMaliciousSourceTypeNameIsRefusedByTheMirror is item 4's attack: the
// superuser of region a's database (the source) shadows format_type for
// the replication role, so that the schema query a mirror's agent sends
// there reports a column type that is SQL: `integer); DROP TABLE victim;
// --`. Mirror b must refuse the tenant with a clear issue and execute
// nothing; its other objects, and the tenant it already mirrors, must be
// unaffected.
func TestMaliciousSourceTypeNameIsRefusedByTheMirror(t *testing.T) {
	f := newFed(t, "a", "b")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'e@x' FROM generate_series(1, 20) g`)
	f.exec("b", `CREATE TABLE victim (id int PRIMARY KEY)`, `INSERT INTO victim SELECT generate_series(1, 3)`)
	f.putTenant(acme("b"))
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
	before := f.catalog("b")

	f.exec("a", `CREATE DOMAIN evil_t AS integer`,
		`CREATE TABLE evil (tenant_id text NOT NULL, id bigint NOT NULL, v evil_t, PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO evil VALUES ('mallory', 1, 1)`,
		`CREATE FUNCTION public.format_type(oid, integer) RETURNS text LANGUAGE sql STABLE AS
		 $$ SELECT CASE WHEN $1 = 'evil_t'::regtype THEN 'integer); DROP TABLE victim; --' ELSE pg_catalog.format_type($1, $2) END $$`,
		`ALTER ROLE `+pglocal.ReplicationUser+` SET search_path = public, pg_catalog`)
	// The attack is live: the role's schema query sees the forged type.
	src := f.replicatorConn("b", "a")
	var forged string
	if err := src.QueryRow(f.ctx(time.Minute), `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'evil'::regclass AND attname = 'v'`).Scan(&forged); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(forged, "DROP TABLE victim") {
		t.Fatalf("the forged format_type is not in effect for the replication role: %q", forged)
	}

	f.putTenant(&fsm.Tenant{ID: "mallory", HomeRegion: "a", Mirrors: []string{"b"}, Tables: []fsm.TenantTable{{Name: "evil"}}})
	var refusal fsm.ReplicationIssue
	testutil.Eventually(t, 60*time.Second, func() error {
		v, err := f.replication("mallory")
		if err != nil {
			return err
		}
		m := mirror(v, "b")
		if m == nil {
			return fmt.Errorf("no mirror b yet")
		}
		for _, is := range m.Issues {
			if is.Code == fsm.IssueUnsafeType {
				refusal = is
				return nil
			}
		}
		return fmt.Errorf("mirror b: %s", js(m))
	})
	for _, want := range []string{"region a reports column v of evil", "DROP TABLE victim", "is not a type name here", "nothing is changed here"} {
		if !strings.Contains(refusal.Message, want) {
			t.Fatalf("the refusal %q does not say %q", refusal.Message, want)
		}
	}
	// Look once the subscriber has tried again since.
	testutil.Eventually(t, 30*time.Second, func() error {
		v, err := f.replication("mallory")
		if err != nil {
			return err
		}
		for _, is := range mirror(v, "b").Issues {
			if is.Code == fsm.IssueUnsafeType && is.At > refusal.At {
				return nil
			}
		}
		return fmt.Errorf("no new attempt yet")
	})
	if after := f.catalog("b"); after != before {
		t.Fatalf("mirror b changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if n := f.mustValue("b", `SELECT count(*)::text FROM victim`); n != "3" {
		t.Fatalf("victim has %s rows, want 3", n)
	}
	// The tenant b already mirrored from a keeps replicating.
	f.exec("a", `INSERT INTO orders VALUES ('acme', 100, 1, 'after the attack', 'e@x')`)
	f.waitSame("orders", "acme", orderCols, "a", "b")
	if v, err := f.replication("acme"); err != nil || mirror(v, "b") == nil || mirror(v, "b").State != fsm.ReplStreaming {
		t.Fatalf("acme's mirror b after the attack: %s (%v)", js(v), err)
	}
}

// replicatorConn logs in to region to's database as the replication role
// with region from's credentials (its passfile and CA), as a subscription
// of from does, over TCP with verify-full.
func (f *fed) replicatorConn(from, to string) *pgx.Conn {
	f.t.Helper()
	c, err := f.replicatorConnect(from, to, "sslmode=verify-full sslrootcert="+f.pg[from].RootCert)
	if err != nil {
		f.t.Fatalf("log in to %s as the replication role of %s: %v", to, from, err)
	}
	f.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (f *fed) replicatorConnect(from, to, ssl string) (*pgx.Conn, error) {
	host, port, db := f.pg[to].Endpoint()
	return pgx.Connect(f.ctx(time.Minute), fmt.Sprintf("host=%s port=%d dbname=%s user=%s passfile=%s %s",
		host, port, db, pglocal.ReplicationUser, f.pg[from].Passfile, ssl))
}

// TestReplicationRoleFromAnotherRegionReadsOnlyWhatIsPublished is item 5's
// attack: with mirror b's replication credentials (passfile, CA), log in
// to home a and read. Region a is the home of acme (mirrored to b) and
// initech (mirrored to c), keeps globex's rows unreplicated, and mirrors
// umbrella (homed in c) into the same table, so that the table also
// carries the tenant policy of a mirror. The role must read the published
// columns of acme's and initech's rows only: never the PII column, never
// globex's rows (not even by naming globex in app.tenant_id), and only
// over TLS; tenant changes move the limit with them, and replication goes
// on.
func TestReplicationRoleFromAnotherRegionReadsOnlyWhatIsPublished(t *testing.T) {
	f := newFed(t, "a", "b", "c")
	f.exec("a", ordersDDL,
		`INSERT INTO orders SELECT 'acme', g, g, 'n', 'acme' || g || '@acme.test' FROM generate_series(1, 40) g`,
		`INSERT INTO orders SELECT 'initech', g, g, 'n', 'i@initech.test' FROM generate_series(1, 20) g`,
		`INSERT INTO orders SELECT 'globex', g, g, 'secret', 'ceo@globex.test' FROM generate_series(1, 30) g`)
	f.exec("c", ordersDDL, `INSERT INTO orders SELECT 'umbrella', g, g, 'u', 'u@umbrella.test' FROM generate_series(1, 10) g`)
	f.putTenant(acme("b"))
	f.putTenant(&fsm.Tenant{ID: "initech", HomeRegion: "a", Mirrors: []string{"c"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}})
	f.putTenant(&fsm.Tenant{ID: "umbrella", HomeRegion: "c", Mirrors: []string{"a"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}})
	f.waitStreaming("acme", "b")
	f.waitStreaming("initech", "c")
	f.waitStreaming("umbrella", "a")
	f.waitSame("orders", "acme", orderCols, "a", "b")
	f.waitSame("orders", "initech", orderCols, "a", "c")
	f.waitSame("orders", "umbrella", orderCols, "c", "a")

	ctx := f.ctx(2 * time.Minute)
	conn := f.replicatorConn("b", "a")
	var ssl bool
	if err := conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		t.Fatalf("the replication role's login is not over TLS (%v)", err)
	}
	denied := func(what, sql string) {
		t.Helper()
		var err error
		if strings.HasPrefix(sql, "COPY") {
			_, err = conn.PgConn().CopyTo(ctx, io.Discard, sql)
		} else {
			var rows pgx.Rows
			if rows, err = conn.Query(ctx, sql); err == nil {
				for rows.Next() {
				}
				rows.Close()
				err = rows.Err()
			}
		}
		var pe *pgconn.PgError
		if err == nil || !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "permission denied") {
			t.Fatalf("%s (%s): got %v, want permission denied", what, sql, err)
		}
	}
	rowsOf := func(setting string) string {
		t.Helper()
		if _, err := conn.Exec(ctx, "SELECT set_config('app.tenant_id', $1, false)", setting); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := conn.QueryRow(ctx, `SELECT coalesce(string_agg(tenant_id || ':' || n, ',' ORDER BY tenant_id), '')
			FROM (SELECT tenant_id, count(*) n FROM orders GROUP BY tenant_id) s`).Scan(&got); err != nil {
			t.Fatalf("the published columns (app.tenant_id %q): %v", setting, err)
		}
		return got
	}
	check := func(want string) {
		t.Helper()
		denied("the PII column", `SELECT email FROM orders`)
		denied("the PII column of a replicated tenant", `SELECT email FROM orders WHERE tenant_id = 'acme'`)
		denied("every column", `SELECT * FROM orders`)
		denied("a copy of the table", `COPY orders TO STDOUT`)
		if got := rowsOf(""); got != want {
			t.Fatalf("the replication role reads the rows %s, want only the published %s", got, want)
		}
		// Naming a tenant, as an application session does on a mirror
		// table, shows the role nothing at all.
		for _, setting := range []string{"globex", "umbrella", "acme"} {
			if got := rowsOf(setting); got != "" {
				t.Fatalf("with app.tenant_id %q the replication role reads the rows %s, want none", setting, got)
			}
		}
		rowsOf("")
	}
	check("acme:40,initech:20")
	if n := f.mustValue("a", `SELECT count(*)::text FROM orders WHERE tenant_id = 'globex'`); n != "30" {
		t.Fatalf("globex has %s rows at a", n)
	}

	// Without TLS the role does not get in at all.
	if c, err := f.replicatorConnect("b", "a", "sslmode=disable"); err == nil {
		c.Close(context.Background())
		t.Fatal("the replication role logged in without TLS")
	} else if !strings.Contains(err.Error(), "pg_hba.conf rejects connection") {
		t.Fatalf("a login without TLS failed with %v, want pg_hba.conf's rejection", err)
	}

	// Replication is unaffected, and the limit follows the tenants:
	// initech stops being replicated, globex starts.
	f.exec("a", `INSERT INTO orders VALUES ('acme', 41, 41, 'new', 'new@acme.test')`)
	f.waitSame("orders", "acme", orderCols, "a", "b")
	f.deleteTenant("initech")
	f.putTenant(&fsm.Tenant{ID: "globex", HomeRegion: "a", Mirrors: []string{"c"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}})
	f.waitStreaming("globex", "c")
	f.waitSame("orders", "globex", orderCols, "a", "c")
	testutil.Eventually(t, 60*time.Second, func() error {
		if got := rowsOf(""); got != "acme:41,globex:30" {
			return fmt.Errorf("the replication role reads %s", got)
		}
		return nil
	})
	check("acme:41,globex:30")
	f.exec("a", `INSERT INTO orders VALUES ('acme', 42, 42, 'newer', 'newer@acme.test')`, `UPDATE orders SET note = 'upd' WHERE tenant_id = 'globex'`)
	f.waitSame("orders", "acme", orderCols, "a", "b")
	f.waitSame("orders", "globex", orderCols, "a", "c")
	if n := f.mustValue("b", `SELECT count(*)::text FROM orders WHERE tenant_id <> 'acme'`); n != "0" {
		t.Fatalf("mirror b holds %s rows of other tenants", n)
	}
}
