package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// Fencing a tenant in one region's database: the first database step of a
// switchover or failover, and what an old home that comes back does before
// anything else. After FenceTenant, every INSERT, UPDATE, DELETE (and
// COPY, and INSERT ... ON CONFLICT) of the tenant's rows in its tables is
// refused with SQLSTATE FencedSQLState and a message naming the tenant,
// the epoch and the region its writes go to now; a TRUNCATE of such a
// table is refused too (it ignores tenants). Reads work as before, and so
// do other tenants' writes to the same tables.
//
// How: a BEFORE ROW trigger per table and tenant (and a BEFORE TRUNCATE
// one) whose arguments carry the tenant, epoch and new home. Triggers are
// catalog state, seen by every session from the moment it next locks the
// table, whatever its isolation level; a fence table read by the trigger
// would not be (a REPEATABLE READ transaction would keep reading its old
// snapshot and write through). The triggers are ordinary ("origin")
// triggers, so they do not fire with session_replication_role = replica:
// the apply worker of a subscription runs so, and its changes still land
// (the fenced old home can become a mirror), as do those of a superuser
// session that sets it on purpose.
//
// The fenced LSN: the fence takes a SHARE ROW EXCLUSIVE lock on every
// table of the tenant (waiting for the writers in flight, and holding off
// new ones until it commits), reads pg_current_wal_insert_lsn() under those
// locks and records it with the fence, in one transaction. Every write of
// the tenant that committed here lies below that position, and none can
// come after it: a mirror that has applied up to it has everything the
// fenced database holds of the tenant. It is the insert position, not
// pg_current_wal_lsn() (the write position): a writer that committed with
// synchronous_commit = off has its commit record inserted before it
// releases its locks, but not necessarily written out yet.
//
// The state lives in the database itself (schema atomfed, table
// tenant_fences), so a fence outlives the agent that set it.

// FencedSQLState is the SQLSTATE of a write refused by a tenant fence
// (class WF: implementation-defined, "write fenced").
const FencedSQLState = "WF001"

// Fence is what FenceTenant sets for a tenant in one database.
type Fence struct {
	Tenant string
	// Epoch is the tenant's epoch that ended here (the new home's).
	Epoch uint64
	// WritesTo is the region the tenant's writes go to now.
	WritesTo string
	// Tables are the tenant's tables; those missing from the database are
	// left out (nothing can write to them).
	Tables []fsm.TenantTable
}

// FenceState is a fence as the database records it.
type FenceState struct {
	Tenant   string
	Epoch    uint64
	WritesTo string
	Tables   []string // schema.table
	// LSN is the fenced position (pg_current_wal_insert_lsn() with the
	// fence in place), as PostgreSQL writes it ("0/16B3748").
	LSN string
	At  time.Time
}

// ErrNewerFence means the tenant is already fenced here at a newer epoch:
// a fence of an older epoch is stale and changes nothing.
var ErrNewerFence = errors.New("tenant fenced at a newer epoch")

// fenceSchema creates the fence table and trigger functions. The function
// bodies never change, so CREATE OR REPLACE is idempotent.
var fenceSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS atomfed`,
	`CREATE TABLE IF NOT EXISTS atomfed.tenant_fences (
		tenant_id text PRIMARY KEY,
		epoch bigint NOT NULL,
		writes_to text NOT NULL,
		tables text[] NOT NULL,
		fenced_lsn pg_lsn NOT NULL,
		fenced_at timestamptz NOT NULL DEFAULT now())`,
	`REVOKE ALL ON atomfed.tenant_fences FROM PUBLIC`,
	// TG_ARGV: tenant, epoch, region its writes go to.
	`CREATE OR REPLACE FUNCTION atomfed.fence_row() RETURNS trigger LANGUAGE plpgsql AS $fn$
	DECLARE
		hit boolean := false;
	BEGIN
		IF TG_OP IN ('INSERT', 'UPDATE') THEN
			hit := NEW.tenant_id::text = TG_ARGV[0];
		END IF;
		IF NOT hit AND TG_OP IN ('UPDATE', 'DELETE') THEN
			hit := OLD.tenant_id::text = TG_ARGV[0];
		END IF;
		IF hit THEN
			RAISE EXCEPTION USING ERRCODE = '` + FencedSQLState + `',
				MESSAGE = format('tenant %s is fenced in this database since epoch %s: its writes go to region %s now', TG_ARGV[0], TG_ARGV[1], TG_ARGV[2]),
				DETAIL = format('atomfed moved tenant %s''s home to region %s; a %s of its rows in %s is refused here', TG_ARGV[0], TG_ARGV[2], TG_OP, TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME),
				HINT = format('send the tenant''s writes to region %s (GET /v1/tenants/%s names its home)', TG_ARGV[2], TG_ARGV[0]);
		END IF;
		IF TG_OP = 'DELETE' THEN
			RETURN OLD;
		END IF;
		RETURN NEW;
	END $fn$`,
	`CREATE OR REPLACE FUNCTION atomfed.fence_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$
	BEGIN
		RAISE EXCEPTION USING ERRCODE = '` + FencedSQLState + `',
			MESSAGE = format('tenant %s is fenced in this database since epoch %s: its writes go to region %s now, and TRUNCATE of %s would remove its rows', TG_ARGV[0], TG_ARGV[1], TG_ARGV[2], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME),
			HINT = 'delete the other tenants'' rows with DELETE ... WHERE tenant_id = ... instead';
	END $fn$`,
}

// fenceTrigger is the name of tenant's row trigger (its TRUNCATE trigger
// adds "_trunc"); the tenant part is that of its publication's name.
func fenceTrigger(tenant string) string {
	return "af_fence_" + strings.TrimPrefix(fsm.TenantPublication(tenant), "af_t_")
}

// fenceLockKey serializes fences and unfences in one database (the
// functions' CREATE OR REPLACE would otherwise race).
const fenceLockKey = 0x6166656e6365 // "afence"

// FenceTenant fences f.Tenant's writes in the database of conn (see the
// top of this file) and returns the fenced LSN. It is idempotent: the same
// fence again returns the LSN recorded the first time, as long as every
// trigger of it is still in place; a fence of a newer epoch (or another
// new home, or other tables) replaces it with a new LSN; one of an older
// epoch is refused with ErrNewerFence.
func FenceTenant(ctx context.Context, conn *pgx.Conn, f Fence) (string, error) {
	if !fsm.ValidTenantID(f.Tenant) || !fsm.ValidRegionName(f.WritesTo) || f.Epoch == 0 {
		return "", fmt.Errorf("fence: tenant %q, epoch %d and region %q must all be set and valid", f.Tenant, f.Epoch, f.WritesTo)
	}
	var lsn string
	err := fenceTx(ctx, conn, func(tx pgx.Tx) error {
		tables, err := existingTables(ctx, tx, f.Tables)
		if err != nil {
			return err
		}
		cur, err := readFence(ctx, tx, f.Tenant, true)
		if err != nil {
			return err
		}
		if cur != nil && cur.Epoch > f.Epoch {
			return fmt.Errorf("%w: tenant %s is fenced here at epoch %d, writes to %s; a fence of epoch %d is stale", ErrNewerFence, f.Tenant, cur.Epoch, cur.WritesTo, f.Epoch)
		}
		if cur != nil && cur.Epoch == f.Epoch && cur.WritesTo == f.WritesTo && slices.Equal(cur.Tables, tables) {
			if ok, err := triggersInPlace(ctx, tx, f, tables); err != nil || ok {
				lsn = cur.LSN
				return err
			}
		}
		if lsn, err = placeFence(ctx, tx, f, tables); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO atomfed.tenant_fences (tenant_id, epoch, writes_to, tables, fenced_lsn, fenced_at)
			VALUES ($1, $2, $3, $4, $5::pg_lsn, now())
			ON CONFLICT (tenant_id) DO UPDATE SET epoch = EXCLUDED.epoch, writes_to = EXCLUDED.writes_to,
				tables = EXCLUDED.tables, fenced_lsn = EXCLUDED.fenced_lsn, fenced_at = EXCLUDED.fenced_at`,
			f.Tenant, int64(f.Epoch), f.WritesTo, tables, lsn)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("fence tenant %s: %w", f.Tenant, err)
	}
	return lsn, nil
}

// UnfenceTenant removes tenant's fence from the database of conn: its
// triggers on every table and its record. Unfencing a tenant that is not
// fenced changes nothing.
func UnfenceTenant(ctx context.Context, conn *pgx.Conn, tenant string) error {
	err := fenceTx(ctx, conn, func(tx pgx.Tx) error {
		if err := dropFenceTriggers(ctx, tx, tenant); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM atomfed.tenant_fences WHERE tenant_id = $1`, tenant); err != nil {
			return err
		}
		// The region is the tenant's home again: a confirmation row of an
		// earlier time here must not hold its writes (home_guard.go).
		return clearHomeConfirmation(ctx, tx, tenant, false)
	})
	if err != nil {
		return fmt.Errorf("unfence tenant %s: %w", tenant, err)
	}
	return nil
}

// ReadFence returns tenant's fence in the database of conn, or nil when it
// is not fenced there.
func ReadFence(ctx context.Context, conn *pgx.Conn, tenant string) (*FenceState, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('atomfed.tenant_fences') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read only
	return readFence(ctx, tx, tenant, false)
}

// fenceTx runs fn in a transaction that holds the fence lock, with the
// fence schema in place and a bound on how long it waits for table locks.
func fenceTx(ctx context.Context, conn *pgx.Conn, fn func(pgx.Tx) error) error {
	return lockedSchemaTx(ctx, conn, fenceSchema, fn)
}

// lockedSchemaTx runs fn in a transaction that holds the fence lock (which
// serializes fences and home guards: their CREATE OR REPLACE would race),
// with schema's statements run first and a bound on how long it waits for
// table locks.
func lockedSchemaTx(ctx context.Context, conn *pgx.Conn, schema []string, fn func(pgx.Tx) error) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	stmts := append([]string{`SET LOCAL lock_timeout = '10s'`, `SELECT pg_advisory_xact_lock(` + strconv.Itoa(fenceLockKey) + `)`}, schema...)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return err
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// existingTables returns the tables of the list that exist here, as
// sorted schema.table names.
func existingTables(ctx context.Context, tx pgx.Tx, tables []fsm.TenantTable) ([]string, error) {
	var out []string
	for _, t := range tables {
		ref := parseTable(t.Name)
		var ok bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, ref.Quoted()).Scan(&ok); err != nil {
			return nil, err
		}
		if ok && !slices.Contains(out, ref.String()) {
			out = append(out, ref.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

func readFence(ctx context.Context, tx pgx.Tx, tenant string, forUpdate bool) (*FenceState, error) {
	q := `SELECT epoch, writes_to, tables, fenced_lsn::text, fenced_at FROM atomfed.tenant_fences WHERE tenant_id = $1`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	st := FenceState{Tenant: tenant}
	var epoch int64
	err := tx.QueryRow(ctx, q, tenant).Scan(&epoch, &st.WritesTo, &st.Tables, &st.LSN, &st.At)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st.Epoch = uint64(epoch)
	return &st, nil
}

// triggersInPlace reports whether every table carries the fence's two
// triggers, enabled, with its arguments, and no other table carries one.
func triggersInPlace(ctx context.Context, tx pgx.Tx, f Fence, tables []string) (bool, error) {
	name := fenceTrigger(f.Tenant)
	rows, err := tx.Query(ctx, `SELECT n.nspname || '.' || c.relname, t.tgname::text, t.tgenabled = 'O',
			encode(t.tgargs, 'escape') = $2
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname::text IN ($1::text, $1::text || '_trunc')`, name, fenceArgs(f))
	if err != nil {
		return false, err
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var table, tg string
		var enabled, args bool
		if err := rows.Scan(&table, &tg, &enabled, &args); err != nil {
			return false, err
		}
		if !slices.Contains(tables, table) || !enabled || !args {
			return false, nil
		}
		seen++
	}
	return seen == 2*len(tables), rows.Err()
}

// fenceArgs is how pg_trigger.tgargs holds the fence's arguments, each
// ended by a NUL byte (encode(..., 'escape') writes it as \000).
func fenceArgs(f Fence) string {
	var b strings.Builder
	for _, a := range []string{f.Tenant, strconv.FormatUint(f.Epoch, 10), f.WritesTo} {
		b.WriteString(a + `\000`)
	}
	return b.String()
}

// placeFence locks the tables, drops the tenant's fence triggers wherever
// they are, creates them on each table, and returns the fenced LSN.
func placeFence(ctx context.Context, tx pgx.Tx, f Fence, tables []string) (string, error) {
	quoted := make([]string, len(tables))
	for i, t := range tables {
		quoted[i] = parseTable(t).Quoted()
	}
	if len(quoted) > 0 {
		// In name order, so that concurrent lockers never deadlock.
		if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(quoted, ", ")+" IN SHARE ROW EXCLUSIVE MODE"); err != nil {
			return "", err
		}
	}
	if err := dropFenceTriggers(ctx, tx, f.Tenant); err != nil {
		return "", err
	}
	name := fenceTrigger(f.Tenant)
	args := quoteLiteral(f.Tenant) + ", " + quoteLiteral(strconv.FormatUint(f.Epoch, 10)) + ", " + quoteLiteral(f.WritesTo)
	for _, q := range quoted {
		for _, st := range []string{
			"CREATE TRIGGER " + ident(name) + " BEFORE INSERT OR UPDATE OR DELETE ON " + q + " FOR EACH ROW EXECUTE FUNCTION atomfed.fence_row(" + args + ")",
			"CREATE TRIGGER " + ident(name+"_trunc") + " BEFORE TRUNCATE ON " + q + " FOR EACH STATEMENT EXECUTE FUNCTION atomfed.fence_truncate(" + args + ")",
		} {
			if _, err := tx.Exec(ctx, st); err != nil {
				return "", err
			}
		}
	}
	var lsn string
	err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn)
	return lsn, err
}

// dropFenceTriggers drops tenant's fence triggers from every table that
// has them.
func dropFenceTriggers(ctx context.Context, tx pgx.Tx, tenant string) error {
	name := fenceTrigger(tenant)
	rows, err := tx.Query(ctx, `SELECT n.nspname::text, c.relname::text, t.tgname::text
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname::text IN ($1::text, $1::text || '_trunc')`, name)
	if err != nil {
		return err
	}
	type trig struct {
		ref  tableRef
		name string
	}
	var drop []trig
	for rows.Next() {
		var tg trig
		if err := rows.Scan(&tg.ref.Schema, &tg.ref.Name, &tg.name); err != nil {
			rows.Close()
			return err
		}
		drop = append(drop, tg)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, tg := range drop {
		if _, err := tx.Exec(ctx, "DROP TRIGGER IF EXISTS "+ident(tg.name)+" ON "+tg.ref.Quoted()); err != nil {
			return err
		}
	}
	return nil
}
