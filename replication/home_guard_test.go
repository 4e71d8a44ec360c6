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
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// TestHomeGuardHoldsWritesAfterARestartUntilConfirmed confirms acme's
// home in a real PostgreSQL; its writes pass. After a restart of
// PostgreSQL, an application role's INSERT, UPDATE, DELETE and TRUNCATE
// touching acme's rows are refused with WF002 and a message naming tenant,
// region and start time, while initech's rows stay writable and a
// session_replication_role = replica session (as the subscription apply
// worker and the resync's reconcile run) still writes acme's rows. A
// confirmation lets acme's writes pass again. A home that restarts and is
// never confirmed keeps refusing; a fence put there refuses with its own
// WF001 first; lifting the fence (the region is the home again) clears the
// confirmation, so acme's writes pass without one.
func TestHomeGuardHoldsWritesAfterARestartUntilConfirmed(t *testing.T) {
	pgs := pgtest.NewFederation(t, "home")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	db := pgSQL{t: t, ctx: ctx, pgs: pgs}
	su := db.connect("home")
	db.exec(su, `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount int, PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO orders SELECT t, g, g FROM unnest(ARRAY['acme', 'initech']) t, generate_series(1, 5) g`,
		`CREATE ROLE app_rw`, `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON orders TO app_rw`)
	confirm := replication.HomeConfirmation{Tenant: "acme", Epoch: 2, Region: "home", Tables: []fsm.TenantTable{{Name: "orders"}, {Name: "gone"}}}
	app := func() *pgx.Conn {
		c := db.connect("home")
		db.exec(c, `SET ROLE app_rw`)
		return c
	}
	write := func(c *pgx.Conn, sql string) error {
		_, err := c.Exec(ctx, sql)
		return err
	}
	refused := func(err error, state, want string) {
		t.Helper()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != state || !strings.Contains(pe.Message, want) {
			t.Fatalf("want a refusal %s with %q, got %v", state, want, err)
		}
	}
	restart := func() {
		t.Helper()
		if err := pgs["home"].Kill(); err != nil {
			t.Fatal(err)
		}
		if err := pgs["home"].Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	start1, err := replication.ConfirmHome(ctx, su, confirm)
	if err != nil {
		t.Fatal(err)
	}
	a := app()
	if err := write(a, `INSERT INTO orders VALUES ('acme', 10, 10)`); err != nil {
		t.Fatalf("a confirmed home refuses acme's write: %v", err)
	}
	// Again: nothing changes (no write when the confirmation is current).
	if s, err := replication.ConfirmHome(ctx, su, confirm); err != nil || !s.Equal(start1) {
		t.Fatalf("confirm again: %v, %v (first %v)", s, err, start1)
	}

	restart()
	su, a = db.connect("home"), app()
	var start2 time.Time
	if err := su.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&start2); err != nil || start2.Equal(start1) {
		t.Fatalf("postmaster start %v after a restart (before %v): %v", start2, start1, err)
	}
	msg := "tenant acme's home in region home is not confirmed since PostgreSQL started at"
	for _, sql := range []string{`INSERT INTO orders VALUES ('acme', 11, 11)`, `UPDATE orders SET amount = 0 WHERE tenant_id = 'acme'`,
		`DELETE FROM orders WHERE tenant_id = 'acme'`, `UPDATE orders SET tenant_id = 'acme' WHERE tenant_id = 'initech' AND id = 1`,
		`INSERT INTO orders VALUES ('acme', 1, 1) ON CONFLICT (tenant_id, id) DO UPDATE SET amount = 7`} {
		refused(write(a, sql), replication.UnconfirmedSQLState, msg)
	}
	refused(write(a, `TRUNCATE orders`), replication.UnconfirmedSQLState, msg)
	refused(write(a, `DELETE FROM orders WHERE tenant_id = 'acme'`), replication.UnconfirmedSQLState,
		"writes wait until the region's atomfed agent confirms it is still the home (or fences it if the home moved)")
	if err := write(a, `INSERT INTO orders VALUES ('initech', 11, 11)`); err != nil {
		t.Fatalf("another tenant's write is held: %v", err)
	}
	if err := write(a, `SELECT count(*) FROM orders WHERE tenant_id = 'acme'`); err != nil {
		t.Fatalf("a read is refused: %v", err)
	}
	// The apply worker's and the resync's way of writing is not held.
	repl := db.connect("home")
	db.exec(repl, `SET session_replication_role = replica`, `INSERT INTO orders VALUES ('acme', 12, 12)`, `DELETE FROM orders WHERE tenant_id = 'acme' AND id = 12`)
	if n := mustCount(t, ctx, su, `SELECT count(*) FROM orders WHERE tenant_id = 'acme'`); n != 6 {
		t.Fatalf("acme has %d rows after the refused writes, want 6", n)
	}

	// The agent confirms: acme's writes pass again.
	if s, err := replication.ConfirmHome(ctx, su, confirm); err != nil || !s.Equal(start2) {
		t.Fatalf("confirm after the restart: %v, %v", s, err)
	}
	if err := write(a, `INSERT INTO orders VALUES ('acme', 11, 11)`); err != nil {
		t.Fatalf("a confirmed home refuses acme's write: %v", err)
	}
	// A stale confirmation of an older epoch does not replace a newer one.
	old := confirm
	old.Epoch, old.Region = 1, "elsewhere"
	if _, err := replication.ConfirmHome(ctx, su, old); err != nil {
		t.Fatal(err)
	}
	var region string
	if err := su.QueryRow(ctx, `SELECT region FROM atomfed.home_confirmations WHERE tenant_id = 'acme'`).Scan(&region); err != nil || region != "home" {
		t.Fatalf("confirmation region %q after an older epoch's confirmation: %v", region, err)
	}
	// The application cannot read or change the confirmations.
	refusedPriv := write(a, `DELETE FROM atomfed.home_confirmations`)
	if refusedPriv == nil {
		t.Fatal("the application role deleted the home confirmations")
	}

	// The home is lost (killed) and comes back, never confirmed: refused.
	restart()
	su, a = db.connect("home"), app()
	refused(write(a, `INSERT INTO orders VALUES ('acme', 13, 13)`), replication.UnconfirmedSQLState, msg)
	// Its returning agent fences it first: the fence's refusal is the one seen.
	if _, err := replication.FenceTenant(ctx, su, replication.Fence{Tenant: "acme", Epoch: 3, WritesTo: "newhome", Tables: confirm.Tables}); err != nil {
		t.Fatal(err)
	}
	refused(write(a, `INSERT INTO orders VALUES ('acme', 13, 13)`), replication.FencedSQLState, "its writes go to region newhome now")
	// A later fail-back lifts the fence here: the region is the home again
	// and its first writes are not held by the old confirmation.
	if err := replication.UnfenceTenant(ctx, su, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := write(a, `INSERT INTO orders VALUES ('acme', 13, 13)`); err != nil {
		t.Fatalf("after the fence is lifted acme's write is refused: %v", err)
	}
	if err := write(a, `INSERT INTO orders VALUES ('initech', 13, 13)`); err != nil {
		t.Fatal(err)
	}
}

func mustCount(t *testing.T, ctx context.Context, c *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// waitConfirmed waits until region's agent has confirmed, since its
// PostgreSQL last started, that it is tenant's home: a test that restarts
// a home's PostgreSQL writes the tenant's rows there only then (before,
// the home guard refuses them, by design).
func (f *fed) waitConfirmed(region, tenant string) {
	f.t.Helper()
	testutil.Eventually(f.t, time.Minute, func() error {
		got, err := f.value(region, `SELECT (postmaster_start = pg_postmaster_start_time())::text FROM atomfed.home_confirmations WHERE tenant_id = $1`, tenant)
		if err != nil || got != "true" {
			return fmt.Errorf("%s's home in %s not confirmed since PostgreSQL started: %q %v", tenant, region, got, err)
		}
		return nil
	})
}
