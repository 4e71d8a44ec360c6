package replication

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// Quarantine: after an unplanned failover, the old home may hold rows the
// new home never got (committed before the fence, or before the home was
// lost, and not yet streamed). Before the old home subscribes to the new
// home as its former home, QuarantineDivergence copies each such row into
// one table of the old home's own database:
//
//	atomfed_quarantine.divergent_rows (tenant_id, table_name, row_key,
//	    home_row, new_home_row, reason, found_at)
//
// One table with jsonb rows rather than one table per tenant and table: it
// needs no DDL derived from the tenant's schema (nothing to keep in step
// when a table changes), one query lists a tenant's divergence, and the
// row as it was (home_row, every column, PII included) is kept whatever
// the table looks like later. PII stays where it was: in the old home's
// database, in its region. The table is readable by superusers only.
//
// A row is divergent when its key does not exist at the new home
// (reason missing_at_new_home) or when its published (non-PII) columns
// differ from the new home's (differs_from_new_home, with the new home's
// row in new_home_row). The new home's rows are read at the time of the
// call: a row the new home itself changed since its promotion shows up as
// differing too. Quarantine is for a person to reconcile, so such a row is
// noise, never a loss. The rows are copied, not moved: the old home's
// table is left as it is.

// quarantineSchema creates the quarantine table.
var quarantineSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS atomfed_quarantine`,
	`REVOKE ALL ON SCHEMA atomfed_quarantine FROM PUBLIC`,
	`CREATE TABLE IF NOT EXISTS atomfed_quarantine.divergent_rows (
		tenant_id text NOT NULL,
		table_name text NOT NULL,
		row_key jsonb NOT NULL,
		home_row jsonb NOT NULL,
		new_home_row jsonb,
		reason text NOT NULL,
		found_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (tenant_id, table_name, row_key))`,
	`REVOKE ALL ON atomfed_quarantine.divergent_rows FROM PUBLIC`,
}

// Both sides print values alike in jsonb (timestamps, floats), whatever
// the sessions' settings.
var jsonSettings = []string{`SET LOCAL TimeZone = 'UTC'`, `SET LOCAL DateStyle = 'ISO, YMD'`, `SET LOCAL extra_float_digits = 1`, `SET LOCAL IntervalStyle = 'iso_8601'`}

// QuarantineDivergence copies into the quarantine table of the database of
// conn (the tenant's former home) every row of the tenant's tables there
// whose key does not exist at the new home (src) or whose published
// columns differ from the new home's, and returns how many rows of the
// tenant are divergent now. It runs before the former home subscribes
// (SubscribeFormerHome). It reads the new home's rows over src with the
// columns the tenant's publication there publishes; the column and table
// names in every statement are this database's own, and the new home's
// values reach this database only as bound data. It is idempotent: a row
// quarantined again is updated in place, and a row quarantined before
// that no longer diverges stays in quarantine.
func QuarantineDivergence(ctx context.Context, conn, src *pgx.Conn, tenant string, tables []fsm.TenantTable) (int64, error) {
	if !fsm.ValidTenantID(tenant) {
		return 0, fmt.Errorf("quarantine: tenant %q is not a valid tenant id", tenant)
	}
	pub := fsm.TenantPublication(tenant)
	exists, published, err := readPublication(ctx, src, pub)
	if err != nil {
		return 0, fmt.Errorf("quarantine tenant %s: read the new home's publication: %w", tenant, err)
	}
	if !exists {
		return 0, fmt.Errorf("quarantine tenant %s: the new home has no publication %s; it must publish the tenant first", tenant, pub)
	}
	var total int64
	for _, tt := range tables {
		n, err := quarantineTable(ctx, conn, src, tenant, tt, published)
		if err != nil {
			return 0, fmt.Errorf("quarantine tenant %s, table %s: %w", tenant, tt.Name, err)
		}
		total += n
	}
	return total, nil
}

func quarantineTable(ctx context.Context, conn, src *pgx.Conn, tenant string, tt fsm.TenantTable, published map[string]publishedTable) (int64, error) {
	qp, err := planQuarantine(ctx, conn, tt, published)
	if err != nil || qp == nil {
		return 0, err
	}
	theirs, err := newHomeRows(ctx, src, qp.newHomeQuery(), tenant)
	if err != nil {
		return 0, fmt.Errorf("read the new home's rows: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	for _, s := range append(append([]string{}, jsonSettings...), quarantineSchema...) {
		if _, err := tx.Exec(ctx, s); err != nil {
			return 0, err
		}
	}
	n, _, _, err := qp.quarantine(ctx, tx, tenant, theirs)
	if err != nil {
		return 0, err
	}
	return n, tx.Commit(ctx)
}

// quarantinePlan is how one of the tenant's tables is compared with the
// new home's: its columns compared (published there, present here, not
// PII), its primary key, and the FROM clause both sides read it with.
type quarantinePlan struct {
	ref  tableRef
	cols []string
	key  []string
	from string // ... WHERE f.tenant_id = (the tenant's parameter follows)
}

// planQuarantine plans the comparison of one table, or returns nil when
// the table holds no row of the tenant here.
func planQuarantine(ctx context.Context, conn *pgx.Conn, tt fsm.TenantTable, published map[string]publishedTable) (*quarantinePlan, error) {
	ref := parseTable(tt.Name)
	local, err := inspectTable(ctx, conn, ref)
	if err != nil {
		return nil, err
	}
	if !local.Exists || local.column("tenant_id") == nil {
		return nil, nil // no row of the tenant here
	}
	pt, ok := published[ref.String()]
	if !ok {
		return nil, fmt.Errorf("the new home does not publish it")
	}
	// The columns compared: those published there that exist here and
	// are not PII, named as this database names them.
	qp := &quarantinePlan{ref: ref}
	for _, c := range local.Columns {
		if slices.Contains(pt.Columns, c.Name) && !slices.Contains(tt.PIIColumns, c.Name) {
			qp.cols = append(qp.cols, c.Name)
		}
	}
	for _, ix := range local.Indexes {
		if ix.Primary {
			qp.key = ix.Columns
		}
	}
	if len(qp.key) == 0 {
		return nil, fmt.Errorf("it has no primary key here, so its rows cannot be matched")
	}
	for _, k := range qp.key {
		if !slices.Contains(qp.cols, k) {
			return nil, fmt.Errorf("its key column %s is not published by the new home", k)
		}
	}
	quoted := make([]string, len(qp.cols))
	for i, c := range qp.cols {
		quoted[i] = "f." + ident(c)
	}
	// pub is a row's compared columns as jsonb (its key, the part of it
	// the primary key names); full, here only, the whole row.
	qp.from = " FROM " + ref.Quoted() + " f CROSS JOIN LATERAL (SELECT " + strings.Join(quoted, ", ") + ") p WHERE f.tenant_id = "
	return qp, nil
}

// newHomeQuery reads the tenant's rows ($1) at the new home as jsonb texts
// of their compared columns.
func (qp *quarantinePlan) newHomeQuery() string { return "SELECT to_jsonb(p)::text" + qp.from + "$1" }

const keyOf = "(SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(%s) e WHERE e.key = ANY($1))"

// quarantine loads the new home's rows (theirs) into the temporary table
// af_new_home_rows of tx (row, and its key k) and copies each divergent
// row of the tenant here into the quarantine table. tx has run
// jsonSettings and quarantineSchema. It returns how many rows it
// quarantined and how many of them the new home does not have at all.
func (qp *quarantinePlan) quarantine(ctx context.Context, tx pgx.Tx, tenant string, theirs []string) (n, missing int64, keys []fsm.DivergentKey, err error) {
	for _, s := range []string{`CREATE TEMP TABLE IF NOT EXISTS af_new_home_rows (row jsonb NOT NULL, k jsonb) ON COMMIT DROP`,
		`TRUNCATE af_new_home_rows`, `DROP INDEX IF EXISTS pg_temp.af_new_home_rows_k`} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return 0, 0, nil, err
		}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"af_new_home_rows"}, []string{"row"}, pgx.CopyFromSlice(len(theirs), func(i int) ([]any, error) {
		return []any{theirs[i]}, nil
	})); err != nil {
		return 0, 0, nil, err
	}
	if _, err := tx.Exec(ctx, "UPDATE af_new_home_rows SET k = "+fmt.Sprintf(keyOf, "row"), qp.key); err != nil {
		return 0, 0, nil, err
	}
	if _, err := tx.Exec(ctx, `CREATE INDEX af_new_home_rows_k ON af_new_home_rows (k)`); err != nil {
		return 0, 0, nil, err
	}
	rows, err := tx.Query(ctx, `INSERT INTO atomfed_quarantine.divergent_rows AS q (tenant_id, table_name, row_key, home_row, new_home_row, reason)
		SELECT $2, $3, a.k, a.full, b.row, CASE WHEN b.row IS NULL THEN 'missing_at_new_home' ELSE 'differs_from_new_home' END
		FROM (SELECT h.pub, h.full, `+fmt.Sprintf(keyOf, "h.pub")+` AS k FROM (SELECT to_jsonb(p) AS pub, to_jsonb(f) AS full`+qp.from+`$2) h) a
		LEFT JOIN af_new_home_rows b ON b.k = a.k
		WHERE b.row IS DISTINCT FROM a.pub
		ON CONFLICT (tenant_id, table_name, row_key) DO UPDATE SET home_row = EXCLUDED.home_row,
			new_home_row = EXCLUDED.new_home_row, reason = EXCLUDED.reason, found_at = EXCLUDED.found_at
		RETURNING row_key::text, reason`, qp.key, tenant, qp.ref.String())
	if err != nil {
		return 0, 0, nil, err
	}
	keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (fsm.DivergentKey, error) {
		k := fsm.DivergentKey{Table: qp.ref.String()}
		err := r.Scan(&k.Key, &k.Reason)
		return k, err
	})
	if err != nil {
		return 0, 0, nil, err
	}
	for _, k := range keys {
		if k.Reason == fsm.ReasonMissingAtNewHome {
			missing++
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Key < keys[j].Key })
	return int64(len(keys)), missing, keys, nil
}

// newHomeRows reads the tenant's rows at the new home as jsonb texts of
// their compared columns, in a read-only transaction.
func newHomeRows(ctx context.Context, src *pgx.Conn, query, tenant string) ([]string, error) {
	tx, err := src.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read only
	for _, s := range append([]string{`SET TRANSACTION READ ONLY`}, jsonSettings...) {
		if _, err := tx.Exec(ctx, s); err != nil {
			return nil, err
		}
	}
	rows, err := tx.Query(ctx, query, tenant)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
