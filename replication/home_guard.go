package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
)

// The home guard: a home database takes a replicated tenant's writes only
// once the region's agent has confirmed, since PostgreSQL last started,
// that the region is still the tenant's home (like a leader key: no
// confirmation, no writes).
//
// Why: an unplanned failover cannot fence the lost home (it is
// unreachable). When that home's PostgreSQL comes back, nothing but its
// agent's resync would refuse the application's writes of the tenant, and
// the agent may come later than PostgreSQL, or never: two writable homes.
// With the guard, a home whose PostgreSQL restarted refuses the tenant's
// writes from its first connection on, until its agent either confirms it
// (the tenant-publisher, which runs only at the home of the tenant's
// current epoch) or fences it (the resync, when the home moved away).
//
// How: atomfed.home_confirmations holds, per tenant, the region, epoch and
// pg_postmaster_start_time() of the last confirmation. One BEFORE ROW
// trigger per tenant table (af_home_guard, the same for every tenant)
// refuses a row of a tenant whose confirmation row carries another
// postmaster start, with SQLSTATE UnconfirmedSQLState; a BEFORE TRUNCATE
// trigger refuses a TRUNCATE while any tenant is unconfirmed here (a
// TRUNCATE ignores tenants, as the fence's does). Rows of tenants without
// a confirmation row pass (tenants not replicated, or not yet confirmed at
// a new home). Like the fence's, the triggers are ordinary ("origin")
// ones: the subscription apply worker and the resync's reconcile run with
// session_replication_role = replica and are not held.
//
// Unlike the fence (see fence.go), the trigger reads its state from a
// table, and that is safe here: the state that matters only exists after
// a restart, and a restart ends every session, so no transaction's
// snapshot predates it; from then on the state only moves from refused to
// allowed (a confirmation), and a transaction that still sees "refused"
// from an older snapshot only refuses more. The move from allowed to
// refused is not made by a write to the table at all but by the restart
// itself (pg_postmaster_start_time() changes).
//
// When the home moves away, the old home's row stays: the fence refuses
// there, and after a restart the stale row refuses as well until the
// resync fences. The new home's row (if it had one from an earlier time as
// home) is removed by the promotion and by UnfenceTenant, so the new
// home's first writes are not held; its publisher confirms afterwards.

// UnconfirmedSQLState is the SQLSTATE of a write refused by the home guard
// (class WF, as the fence's FencedSQLState).
const UnconfirmedSQLState = "WF002"

var homeGuardSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS atomfed`,
	`CREATE TABLE IF NOT EXISTS atomfed.home_confirmations (
		tenant_id text PRIMARY KEY,
		epoch bigint NOT NULL,
		region text NOT NULL,
		postmaster_start timestamptz NOT NULL,
		confirmed_at timestamptz NOT NULL DEFAULT now())`,
	`REVOKE ALL ON atomfed.home_confirmations FROM PUBLIC`,
	// SECURITY DEFINER: the application's roles cannot read the table.
	`CREATE OR REPLACE FUNCTION atomfed.home_guard_row() RETURNS trigger LANGUAGE plpgsql
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
	DECLARE
		ids text[] := '{}';
		c record;
	BEGIN
		IF TG_OP IN ('INSERT', 'UPDATE') THEN
			ids := ids || NEW.tenant_id::text;
		END IF;
		IF TG_OP IN ('UPDATE', 'DELETE') THEN
			ids := ids || OLD.tenant_id::text;
		END IF;
		SELECT h.tenant_id, h.region INTO c FROM atomfed.home_confirmations h
			WHERE h.tenant_id = ANY (ids) AND h.postmaster_start IS DISTINCT FROM pg_postmaster_start_time() LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION USING ERRCODE = '` + UnconfirmedSQLState + `',
				MESSAGE = format('tenant %s''s home in region %s is not confirmed since PostgreSQL started at %s: writes wait until the region''s atomfed agent confirms it is still the home (or fences it if the home moved)', c.tenant_id, c.region, pg_postmaster_start_time()),
				DETAIL = format('a %s of its rows in %s is refused until then', TG_OP, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME),
				HINT = format('retry shortly; if it lasts, check the atomfed agent of region %s (GET /v1/tenants/%s names the home)', c.region, c.tenant_id);
		END IF;
		IF TG_OP = 'DELETE' THEN
			RETURN OLD;
		END IF;
		RETURN NEW;
	END $fn$`,
	`CREATE OR REPLACE FUNCTION atomfed.home_guard_truncate() RETURNS trigger LANGUAGE plpgsql
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
	DECLARE
		c record;
	BEGIN
		SELECT h.tenant_id, h.region INTO c FROM atomfed.home_confirmations h
			WHERE h.postmaster_start IS DISTINCT FROM pg_postmaster_start_time() LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION USING ERRCODE = '` + UnconfirmedSQLState + `',
				MESSAGE = format('tenant %s''s home in region %s is not confirmed since PostgreSQL started at %s, and TRUNCATE of %s would remove its rows: writes wait until the region''s atomfed agent confirms it is still the home (or fences it if the home moved)', c.tenant_id, c.region, pg_postmaster_start_time(), TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME),
				HINT = 'retry once the agent has confirmed, or delete other tenants'' rows with DELETE ... WHERE tenant_id = ...';
		END IF;
		RETURN NULL;
	END $fn$`,
}

const homeGuardTrigger = "af_home_guard"

// HomeConfirmation is what the tenant's home confirms.
type HomeConfirmation struct {
	Tenant string
	Epoch  uint64
	Region string
	Tables []fsm.TenantTable
}

// ConfirmHome installs the home guard on the tenant's tables (those that
// exist) and records that, since PostgreSQL last started, region is still
// the tenant's home at epoch: the tenant's writes pass again. It only
// writes the confirmation when it differs; a confirmation of a newer epoch
// is left as it is. It returns the postmaster start time it confirmed.
func ConfirmHome(ctx context.Context, conn *pgx.Conn, h HomeConfirmation) (time.Time, error) {
	if !fsm.ValidTenantID(h.Tenant) || !fsm.ValidRegionName(h.Region) {
		return time.Time{}, fmt.Errorf("confirm home: tenant %q and region %q must be valid", h.Tenant, h.Region)
	}
	var start time.Time
	err := homeGuardTx(ctx, conn, func(tx pgx.Tx) error {
		tables, err := existingTables(ctx, tx, h.Tables)
		if err != nil {
			return err
		}
		for _, t := range tables {
			if err := ensureHomeGuard(ctx, tx, parseTable(t)); err != nil {
				return err
			}
		}
		if err := tx.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&start); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO atomfed.home_confirmations AS h (tenant_id, epoch, region, postmaster_start, confirmed_at)
			VALUES ($1, $2, $3, pg_postmaster_start_time(), now())
			ON CONFLICT (tenant_id) DO UPDATE SET epoch = EXCLUDED.epoch, region = EXCLUDED.region,
				postmaster_start = EXCLUDED.postmaster_start, confirmed_at = EXCLUDED.confirmed_at
			WHERE h.epoch <= EXCLUDED.epoch AND (h.epoch, h.region, h.postmaster_start) IS DISTINCT FROM (EXCLUDED.epoch, EXCLUDED.region, EXCLUDED.postmaster_start)`,
			h.Tenant, int64(h.Epoch), h.Region)
		return err
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("confirm tenant %s's home in region %s: %w", h.Tenant, h.Region, err)
	}
	return start, nil
}

// ensureHomeGuard creates the guard's two triggers on the table unless
// they are there (CREATE TRIGGER locks the table; a check does not).
func ensureHomeGuard(ctx context.Context, tx pgx.Tx, ref tableRef) error {
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname::text IN ($2::text, $2::text || '_trunc') AND tgenabled = 'O'`,
		ref.Quoted(), homeGuardTrigger).Scan(&n)
	if err != nil || n == 2 {
		return err
	}
	for _, s := range []string{
		`DROP TRIGGER IF EXISTS ` + homeGuardTrigger + ` ON ` + ref.Quoted(),
		`DROP TRIGGER IF EXISTS ` + homeGuardTrigger + `_trunc ON ` + ref.Quoted(),
		`CREATE TRIGGER ` + homeGuardTrigger + ` BEFORE INSERT OR UPDATE OR DELETE ON ` + ref.Quoted() + ` FOR EACH ROW EXECUTE FUNCTION atomfed.home_guard_row()`,
		`CREATE TRIGGER ` + homeGuardTrigger + `_trunc BEFORE TRUNCATE ON ` + ref.Quoted() + ` FOR EACH STATEMENT EXECUTE FUNCTION atomfed.home_guard_truncate()`,
	} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// ClearHomeConfirmation removes tenant's confirmation row: its rows are
// not guarded here any more. The promotion calls it at the new home (a
// row from an earlier time as home must not hold the new home's first
// writes), and UnfenceTenant where a fence is lifted (the region is the
// home again).
func ClearHomeConfirmation(ctx context.Context, conn *pgx.Conn, tenant string) error {
	return clearHomeConfirmation(ctx, conn, tenant, false)
}

// clearHomeConfirmation deletes the row; onlyIfHeld keeps a stale row
// unless the tenant is fenced here (see the publisher's teardown).
func clearHomeConfirmation(ctx context.Context, conn dbtx, tenant string, onlyIfHeld bool) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('atomfed.home_confirmations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return err
	}
	q := `DELETE FROM atomfed.home_confirmations WHERE tenant_id = $1`
	if onlyIfHeld {
		var fences bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass('atomfed.tenant_fences') IS NOT NULL`).Scan(&fences); err != nil {
			return err
		}
		q += ` AND (postmaster_start = pg_postmaster_start_time()`
		if fences {
			q += ` OR EXISTS (SELECT 1 FROM atomfed.tenant_fences f WHERE f.tenant_id = $1)`
		}
		q += `)`
	}
	_, err := conn.Exec(ctx, q, tenant)
	return err
}

// dbtx is a connection or a transaction.
type dbtx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// homeGuardTx runs fn in a transaction with the guard's schema in place,
// serialized with fences (the functions' CREATE OR REPLACE would race).
func homeGuardTx(ctx context.Context, conn *pgx.Conn, fn func(pgx.Tx) error) error {
	return lockedSchemaTx(ctx, conn, homeGuardSchema, fn)
}

// confirmHome is the tenant-publisher's part: at most one round trip when
// nothing changed (PostgreSQL's start time against the last one it
// confirmed), the full confirmation when PostgreSQL restarted, the tables
// changed, or a minute went by (a trigger dropped by hand comes back).
func (p *publisher) confirmHome(ctx context.Context, conn *pgx.Conn) error {
	tables := make([]string, len(p.spec.Tables))
	for i, t := range p.spec.Tables {
		tables[i] = t.Name
	}
	var start time.Time
	if err := conn.QueryRow(ctx, `SELECT pg_postmaster_start_time()`).Scan(&start); err != nil {
		return err
	}
	if start.Equal(p.confirmed.start) && slices.Equal(tables, p.confirmed.tables) && time.Since(p.confirmed.at) < time.Minute {
		return nil
	}
	got, err := ConfirmHome(ctx, conn, HomeConfirmation{Tenant: p.spec.Tenant, Epoch: p.spec.Epoch, Region: p.spec.Region, Tables: p.spec.Tables})
	if err != nil {
		return err
	}
	if !got.Equal(p.confirmed.start) && !p.confirmed.start.IsZero() {
		p.log.Info("tenant's home confirmed since PostgreSQL restarted: its writes pass again", "tenant", p.spec.Tenant, "postmaster_start", got)
	}
	p.confirmed.start, p.confirmed.tables, p.confirmed.at = got, tables, time.Now()
	return nil
}

// homeConfirmed is what a publisher confirmed last.
type homeConfirmed struct {
	start  time.Time
	tables []string
	at     time.Time
}

// isConnErr tells a lost connection from an error PostgreSQL answered.
func isConnErr(err error) bool {
	return err != nil && !isPgError(err) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}
