package replication_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/replication"
)

// TestPIIGuardAtATemporaryHome puts tenant acme's PII guard (pii_while_away
// null_only, residency region us-east) on a temporary home's tables (real
// PostgreSQL): an application role's INSERT and UPDATE of acme's rows with
// a value in a PII column are refused with WP001 and the P1 message; NULL
// is accepted, and so are initech's PII values and the rows a
// subscription's apply worker writes into the guarded column. Guarding
// again changes nothing; lifting it (the residency region, or keep_local)
// lets acme's values in.
func TestPIIGuardAtATemporaryHome(t *testing.T) {
	pgs := pgtest.NewFederation(t, "useast", "euwest")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	db := pgSQL{t: t, ctx: ctx, pgs: pgs}
	connect, exec := db.connect, db.exec
	src, tmp := connect("useast"), connect("euwest")
	const ddl = `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount int, email text, phone varchar(32), PRIMARY KEY (tenant_id, id))`
	// A publication that carries the PII column: never one atomfed makes,
	// here only to have the apply worker write a value into a guarded
	// column.
	exec(src, ddl, `GRANT SELECT ON orders TO `+pglocal.ReplicationUser,
		`CREATE PUBLICATION guard_pub FOR TABLE orders WHERE (tenant_id = 'acme') WITH (publish = 'insert, update, delete')`)
	exec(tmp, ddl, `INSERT INTO orders SELECT 'acme', g, g, NULL, NULL FROM generate_series(1, 5) g`,
		`CREATE ROLE app_rw`, `GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app_rw`)
	tables := []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email", "phone"}}, {Name: "gone", PIIColumns: []string{"x"}}}
	guard := &fsm.PIIGuard{ResidencyRegion: "us-east", Policy: fsm.PIIWhileAwayNullOnly}
	for i := 0; i < 2; i++ { // idempotent
		if err := replication.GuardPII(ctx, tmp, "acme", tables, guard); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := tmp.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname::text LIKE 'af_piiguard_acme%'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("guard triggers: %d, %v; want 1", n, err)
	}
	app := connect("euwest")
	exec(app, `SET ROLE app_rw`)
	refused := func(sql, col string) {
		t.Helper()
		_, err := app.Exec(ctx, sql)
		want := fmt.Sprintf("P1: tenant acme is away from its residency region us-east; its PII column %s accepts only NULL here (pii_while_away: null_only)", col)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != replication.PIIGuardSQLState || pe.Message != want {
			t.Fatalf("%s: %v; want SQLSTATE %s %q", sql, err, replication.PIIGuardSQLState, want)
		}
	}
	refused(`INSERT INTO orders VALUES ('acme', 10, 1, 'a@acme.test', NULL)`, "email")
	refused(`INSERT INTO orders VALUES ('acme', 11, 1, NULL, '+1 555')`, "phone")
	refused(`UPDATE orders SET email = 'b@acme.test' WHERE tenant_id = 'acme' AND id = 1`, "email")
	refused(`INSERT INTO orders VALUES ('acme', 1, 1, NULL, NULL) ON CONFLICT (tenant_id, id) DO UPDATE SET phone = '1'`, "phone")
	exec(app, `INSERT INTO orders VALUES ('acme', 12, 1, NULL, NULL)`,
		`UPDATE orders SET amount = amount + 1 WHERE tenant_id = 'acme'`,
		`INSERT INTO orders VALUES ('initech', 1, 1, 'i@initech.test', '+44 20')`,
		`UPDATE orders SET email = 'j@initech.test' WHERE tenant_id = 'initech'`)
	var vals int
	if err := tmp.QueryRow(ctx, `SELECT count(*) FROM orders WHERE tenant_id = 'acme' AND (email IS NOT NULL OR phone IS NOT NULL)`).Scan(&vals); err != nil || vals != 0 {
		t.Fatalf("acme rows with PII at the temporary home: %d, %v", vals, err)
	}

	// The apply worker is not refused.
	exec(tmp, fmt.Sprintf(`CREATE SUBSCRIPTION guard_sub CONNECTION 'host=%s port=%d dbname=%s user=%s passfile=%s sslmode=verify-full sslrootcert=%s' PUBLICATION guard_pub WITH (copy_data = false)`,
		pgs["useast"].Host, pgs["useast"].Port, pglocal.Database, pglocal.ReplicationUser, pgs["euwest"].Passfile, pgs["euwest"].RootCert))
	deadline := time.Now().Add(30 * time.Second)
	for {
		exec(src, `INSERT INTO orders VALUES ('acme', 100 + (SELECT count(*) FROM orders), 1, 'applied@acme.test', NULL)`)
		if err := tmp.QueryRow(ctx, `SELECT count(*) FROM orders WHERE email = 'applied@acme.test'`).Scan(&vals); err != nil {
			t.Fatal(err)
		}
		if vals > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the apply worker's rows never reached the guarded table")
		}
		time.Sleep(300 * time.Millisecond)
	}
	exec(tmp, `ALTER SUBSCRIPTION guard_sub DISABLE`, `ALTER SUBSCRIPTION guard_sub SET (slot_name = NONE)`, `DROP SUBSCRIPTION guard_sub`)
	exec(src, `SELECT pg_drop_replication_slot('guard_sub')`)

	// Lifted: the residency region, or keep_local.
	if err := replication.GuardPII(ctx, tmp, "acme", tables, nil); err != nil {
		t.Fatal(err)
	}
	exec(app, `INSERT INTO orders VALUES ('acme', 20, 1, 'kept@acme.test', '+1 555')`)
	if err := tmp.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname::text LIKE 'af_piiguard_acme%'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("guard triggers after the lift: %d, %v; want 0", n, err)
	}
}
