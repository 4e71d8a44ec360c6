package replication

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// The PII guard of a temporary home (policy P1, fsm/residency.go): when a
// promotion makes a region the home of a tenant whose residency region is
// elsewhere and whose pii_while_away is null_only, the PII columns it
// brings back (nullable) accept only NULL in the tenant's rows. An INSERT
// or UPDATE of a row of the tenant with a value in one of them is refused
// with SQLSTATE PIIGuardSQLState and a message that names P1, the tenant,
// its residency region and the column. NULL is accepted, and so is every
// other tenant's row.
//
// How: like the fence (fence.go), an ordinary BEFORE ROW trigger per table
// and tenant whose arguments carry the tenant, its residency region and
// the PII columns, with one generic function that reads the columns by
// name from to_jsonb(NEW). Ordinary triggers do not fire with
// session_replication_role = replica: the apply worker of any subscription
// at this database is never refused. The guard stays in place when the
// region later becomes a mirror of the tenant again (fail-back): a region
// that is not the residency region should hold no PII of the tenant. A
// promotion at the residency region, or one with no guard asked
// (keep_local), lifts it.

// PIIGuardSQLState is the SQLSTATE of a write refused by the PII guard
// (class WP: implementation-defined, "PII policy").
const PIIGuardSQLState = "WP001"

var piiGuardSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS atomfed`,
	// TG_ARGV: tenant, residency region, policy, then the PII columns.
	`CREATE OR REPLACE FUNCTION atomfed.pii_guard_row() RETURNS trigger LANGUAGE plpgsql AS $fn$
	DECLARE
		row_doc jsonb;
		i int;
	BEGIN
		IF NEW.tenant_id::text IS DISTINCT FROM TG_ARGV[0] THEN
			RETURN NEW;
		END IF;
		row_doc := to_jsonb(NEW);
		FOR i IN 3 .. TG_NARGS - 1 LOOP
			IF row_doc ? TG_ARGV[i] AND jsonb_typeof(row_doc -> TG_ARGV[i]) <> 'null' THEN
				RAISE EXCEPTION USING ERRCODE = '` + PIIGuardSQLState + `',
					MESSAGE = format('P1: tenant %s is away from its residency region %s; its PII column %s accepts only NULL here (pii_while_away: %s)', TG_ARGV[0], TG_ARGV[1], TG_ARGV[i], TG_ARGV[2]),
					DETAIL = format('a %s of a row of tenant %s in %s with a value in %s is refused in this region', TG_OP, TG_ARGV[0], TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_ARGV[i]),
					HINT = format('write NULL there, or keep the PII in region %s; an operator may allow it with pii_while_away: keep_local (a residency exception)', TG_ARGV[1]);
			END IF;
		END LOOP;
		RETURN NEW;
	END $fn$`,
}

// piiGuardTrigger is the name of tenant's guard trigger.
func piiGuardTrigger(tenant string) string {
	return "af_piiguard_" + strings.TrimPrefix(fsm.TenantPublication(tenant), "af_t_")
}

// GuardPII puts tenant's PII guard in place on its tables in the database
// of conn (g set), or lifts it (g nil). It is idempotent: the triggers are
// made again from the spec each time, in one transaction.
func GuardPII(ctx context.Context, conn *pgx.Conn, tenant string, tables []fsm.TenantTable, g *fsm.PIIGuard) error {
	if !fsm.ValidTenantID(tenant) || g != nil && (!fsm.ValidRegionName(g.ResidencyRegion) || g.Policy != fsm.PIIWhileAwayNullOnly) {
		return fmt.Errorf("pii guard: tenant %q and guard %+v must be valid", tenant, g)
	}
	err := fenceTx(ctx, conn, func(tx pgx.Tx) error {
		for _, st := range piiGuardSchema {
			if _, err := tx.Exec(ctx, st); err != nil {
				return err
			}
		}
		name := piiGuardTrigger(tenant)
		if err := dropTriggersNamed(ctx, tx, name); err != nil {
			return err
		}
		if g == nil {
			return nil
		}
		for _, t := range tables {
			if len(t.PIIColumns) == 0 {
				continue
			}
			ref := parseTable(t.Name)
			var ok bool
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, ref.Quoted()).Scan(&ok); err != nil {
				return err
			}
			if !ok {
				continue
			}
			args := []string{quoteLiteral(tenant), quoteLiteral(g.ResidencyRegion), quoteLiteral(g.Policy)}
			for _, c := range t.PIIColumns {
				args = append(args, quoteLiteral(c))
			}
			if _, err := tx.Exec(ctx, "CREATE TRIGGER "+ident(name)+" BEFORE INSERT OR UPDATE ON "+ref.Quoted()+
				" FOR EACH ROW EXECUTE FUNCTION atomfed.pii_guard_row("+strings.Join(args, ", ")+")"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pii guard of tenant %s: %w", tenant, err)
	}
	return nil
}

// dropTriggersNamed drops every trigger called name, on whatever table.
func dropTriggersNamed(ctx context.Context, tx pgx.Tx, name string) error {
	rows, err := tx.Query(ctx, `SELECT n.nspname::text, c.relname::text
		FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgname::text = $1`, name)
	if err != nil {
		return err
	}
	var refs []tableRef
	for rows.Next() {
		var r tableRef
		if err := rows.Scan(&r.Schema, &r.Name); err != nil {
			rows.Close()
			return err
		}
		refs = append(refs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range refs {
		if _, err := tx.Exec(ctx, "DROP TRIGGER IF EXISTS "+ident(name)+" ON "+r.Quoted()); err != nil {
			return err
		}
	}
	return nil
}
