package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// TestFenceRefusesTheTenantsWritesButNotReplication fences tenant acme in
// the database of its old home (real PostgreSQL), which also subscribes
// to acme's rows at the new home: an application role's INSERT, UPDATE,
// DELETE, upsert, COPY and TRUNCATE of acme's rows are refused with the
// fence's SQLSTATE and a message naming tenant, epoch and new home (from
// a REPEATABLE READ transaction that began before the fence too), while
// reads work, initech's rows stay writable and the subscription's apply
// still lands. A writer in flight holds the fence back, and its commit
// lies below the fenced LSN. Fencing again returns the same LSN; an older
// epoch is refused; unfencing makes acme writable again.
func TestFenceRefusesTheTenantsWritesButNotReplication(t *testing.T) {
	pgs := pgtest.NewFederation(t, "newhome", "oldhome")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	db := pgSQL{t: t, ctx: ctx, pgs: pgs}
	connect, exec := db.connect, db.exec
	value := func(c *pgx.Conn, sql string) string {
		t.Helper()
		var v string
		if err := c.QueryRow(ctx, sql).Scan(&v); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return v
	}
	src, old := connect("newhome"), connect("oldhome")
	const ddl = `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount int, email text, PRIMARY KEY (tenant_id, id))`
	exec(src, ddl, `INSERT INTO orders SELECT 'acme', g, g, NULL FROM generate_series(1, 10) g`,
		`GRANT SELECT ON orders TO `+pglocal.ReplicationUser,
		`CREATE PUBLICATION fence_pub FOR TABLE orders (tenant_id, id, amount) WHERE (tenant_id = 'acme') WITH (publish = 'insert, update, delete')`)
	exec(old, ddl, `INSERT INTO orders SELECT 'acme', g, g, 'a' || g || '@acme.test' FROM generate_series(1, 10) g`,
		`INSERT INTO orders SELECT 'initech', g, g, 'i@initech.test' FROM generate_series(1, 5) g`,
		`CREATE ROLE app_rw`, `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON orders TO app_rw`,
		fmt.Sprintf(`CREATE SUBSCRIPTION fence_sub CONNECTION 'host=%s port=%d dbname=%s user=%s passfile=%s sslmode=verify-full sslrootcert=%s' PUBLICATION fence_pub WITH (copy_data = false)`,
			pgs["newhome"].Host, pgs["newhome"].Port, pglocal.Database, pglocal.ReplicationUser, pgs["oldhome"].Passfile, pgs["oldhome"].RootCert))
	app := connect("oldhome")
	exec(app, `SET ROLE app_rw`)
	fence := replication.Fence{Tenant: "acme", Epoch: 2, WritesTo: "newhome", Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}, {Name: "gone"}}}

	// A writer in flight when the fence comes: the fence waits for it.
	inflight := connect("oldhome")
	exec(inflight, `BEGIN`, `INSERT INTO orders VALUES ('acme', 100, 100, NULL)`)
	// A REPEATABLE READ transaction whose snapshot predates the fence.
	rr := connect("oldhome")
	exec(rr, `SET ROLE app_rw`, `BEGIN ISOLATION LEVEL REPEATABLE READ`, `SELECT count(*) FROM orders`)
	type fenced struct {
		lsn string
		err error
	}
	done := make(chan fenced, 1)
	go func() {
		c, err := pgs["oldhome"].Connect(ctx, pglocal.Database)
		if err != nil {
			done <- fenced{err: err}
			return
		}
		defer c.Close(context.Background())
		lsn, err := replication.FenceTenant(ctx, c, fence)
		done <- fenced{lsn, err}
	}()
	select {
	case f := <-done:
		t.Fatalf("the fence did not wait for the writer in flight: %+v", f)
	case <-time.After(time.Second):
	}
	exec(inflight, `COMMIT`)
	committed := value(inflight, `SELECT pg_current_wal_lsn()::text`)
	f := <-done
	if f.err != nil {
		t.Fatal(f.err)
	}
	if value(old, fmt.Sprintf(`SELECT (%s::pg_lsn <= %s::pg_lsn)::text`, quote(committed), quote(f.lsn))) != "true" {
		t.Fatalf("a write committed before the fence ends after the fenced LSN %s (at %s)", f.lsn, committed)
	}
	if again, err := replication.FenceTenant(ctx, old, fence); err != nil || again != f.lsn {
		t.Fatalf("fencing again: %q %v, want the recorded LSN %s", again, err, f.lsn)
	}
	if st, err := replication.ReadFence(ctx, old, "acme"); err != nil || st == nil || st.LSN != f.lsn || st.Epoch != 2 || st.WritesTo != "newhome" || len(st.Tables) != 1 || st.Tables[0] != "public.orders" {
		t.Fatalf("the recorded fence: %+v %v", st, err)
	}

	refused := func(c *pgx.Conn, sql string) {
		t.Helper()
		_, err := c.Exec(ctx, sql)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != replication.FencedSQLState {
			t.Fatalf("%s on a fenced tenant: %v, want SQLSTATE %s", sql, err, replication.FencedSQLState)
		}
		for _, want := range []string{"tenant acme is fenced", "epoch 2", "region newhome"} {
			if !strings.Contains(pe.Message, want) {
				t.Fatalf("%s: the refusal %q does not say %q", sql, pe.Message, want)
			}
		}
	}
	_, err := rr.Exec(ctx, `INSERT INTO orders VALUES ('acme', 200, 1, NULL)`)
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != replication.FencedSQLState {
		t.Fatalf("a REPEATABLE READ transaction older than the fence wrote through it: %v", err)
	}
	exec(rr, `ROLLBACK`)
	for _, sql := range []string{
		`INSERT INTO orders VALUES ('acme', 11, 11, NULL)`,
		`UPDATE orders SET amount = 0 WHERE tenant_id = 'acme' AND id = 1`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id = 2`,
		`UPDATE orders SET tenant_id = 'acme', id = 500 WHERE tenant_id = 'initech' AND id = 1`,
		`INSERT INTO orders VALUES ('acme', 3, 3, NULL) ON CONFLICT (tenant_id, id) DO UPDATE SET amount = 99`,
		`TRUNCATE orders`,
	} {
		refused(app, sql)
	}
	_, err = app.CopyFrom(ctx, pgx.Identifier{"orders"}, []string{"tenant_id", "id", "amount"}, pgx.CopyFromRows([][]any{{"acme", 300, 1}}))
	if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || pe.Code != replication.FencedSQLState {
		t.Fatalf("COPY of a fenced tenant's row: %v", err)
	}
	refused(old, `DELETE FROM orders WHERE tenant_id = 'acme'`) // the superuser's session too

	// Reads work; another tenant's rows stay writable.
	if n := value(app, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme'`); n != "11" {
		t.Fatalf("acme has %s rows in the fenced database, want 11", n)
	}
	exec(app, `INSERT INTO orders VALUES ('initech', 6, 6, NULL)`, `UPDATE orders SET amount = 7 WHERE tenant_id = 'initech' AND id = 6`,
		`DELETE FROM orders WHERE tenant_id = 'initech' AND id = 5`)

	// The subscription's apply lands in the fenced database.
	exec(src, `INSERT INTO orders VALUES ('acme', 20, 20, NULL)`, `UPDATE orders SET amount = 1000 WHERE tenant_id = 'acme' AND id = 1`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id = 3`)
	testutil.Eventually(t, 60*time.Second, func() error {
		got := value(old, `SELECT count(*) FILTER (WHERE id = 20)::text || ',' || coalesce(max(amount) FILTER (WHERE id = 1), 0)::text || ',' || count(*) FILTER (WHERE id = 3)::text FROM orders WHERE tenant_id = 'acme'`)
		if got != "1,1000,0" {
			return fmt.Errorf("acme's applied changes in the fenced database: %s, want 1,1000,0", got)
		}
		return nil
	})

	// A fence of an older epoch is stale; a newer one replaces the fence.
	if _, err := replication.FenceTenant(ctx, old, replication.Fence{Tenant: "acme", Epoch: 3, WritesTo: "newhome", Tables: fence.Tables}); err != nil {
		t.Fatal(err)
	}
	if _, err := replication.FenceTenant(ctx, old, fence); !errors.Is(err, replication.ErrNewerFence) {
		t.Fatalf("a fence of epoch 2 over epoch 3: %v, want ErrNewerFence", err)
	}
	refused3 := func() {
		_, err := app.Exec(ctx, `INSERT INTO orders VALUES ('acme', 12, 12, NULL)`)
		if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || !strings.Contains(pe.Message, "epoch 3") {
			t.Fatalf("after the fence of epoch 3: %v", err)
		}
	}
	refused3()

	// Unfenced (twice: idempotent), acme is writable again.
	for i := 0; i < 2; i++ {
		if err := replication.UnfenceTenant(ctx, old, "acme"); err != nil {
			t.Fatal(err)
		}
	}
	exec(app, `INSERT INTO orders VALUES ('acme', 12, 12, NULL)`, `DELETE FROM orders WHERE tenant_id = 'acme' AND id = 4`)
	if st, err := replication.ReadFence(ctx, old, "acme"); err != nil || st != nil {
		t.Fatalf("after unfence the fence reads %+v %v", st, err)
	}
	if n := value(old, `SELECT count(*)::text FROM pg_trigger WHERE tgname LIKE 'af_fence_%'`); n != "0" {
		t.Fatalf("%s fence triggers left after unfence", n)
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
