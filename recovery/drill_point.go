package recovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// A drill compares the restored copy with the source at a named point,
// exactly. In one transaction on the source the drill locks every table
// of the agent's database in SHARE mode (writers wait; those already
// writing finish first, so their commits precede the point), creates a
// restore point (the first statement: the transaction's snapshot is
// taken here, with no write to those tables possible between it and the
// point's WAL record), and computes each table's row count and checksum
// in that snapshot; then commits, releasing the locks. The restore
// recovers to that restore point, so the restored tables must hold
// exactly the rows of that snapshot: any difference is a defect of the
// backup, the WAL archive or the restore, and fails the drill.

// tableChecksumSQL returns the row count and the checksum of a table (a
// quoted, schema-qualified name): the sum of the first 64 bits of the md5
// of each row's text, as numeric, independent of physical order.
func tableChecksumSQL(table string) string {
	return `SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text FROM ONLY ` + table + ` t`
}

// userTablesSQL lists the ordinary tables outside the system schemas, as
// quoted schema-qualified names.
const userTablesSQL = `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1`

// pointLockTimeout bounds how long a drill waits for the SHARE locks (and
// so how long it can hold writers up while it waits).
const pointLockTimeout = "5s"

// sourcePoint is the source's state at a drill's restore point.
type sourcePoint struct {
	Name   string
	LSN    string
	WAL    string // the WAL segment holding the point
	Tables map[string]fsm.DrillTable
}

// markPoint creates the restore point name on the source over conn and
// returns the checksums of every table of its database at that point.
func markPoint(ctx context.Context, conn *pgx.Conn, name string) (*sourcePoint, error) {
	rows, err := conn.Query(ctx, userTablesSQL)
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return nil, err
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+pointLockTimeout+`'`); err != nil {
		return nil, err
	}
	if len(tables) > 0 {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(tables, ", ")+` IN SHARE MODE`); err != nil {
			return nil, fmt.Errorf("lock the tables to compare (writers held up at most %s): %w", pointLockTimeout, err)
		}
	}
	p := &sourcePoint{Name: name, Tables: map[string]fsm.DrillTable{}}
	if err := tx.QueryRow(ctx, `SELECT lsn::text, pg_walfile_name(lsn) FROM pg_create_restore_point($1) lsn`, name).Scan(&p.LSN, &p.WAL); err != nil {
		return nil, fmt.Errorf("create restore point %s (needs a superuser): %w", name, err)
	}
	for _, tbl := range tables {
		dt := fsm.DrillTable{Database: db, Name: tbl}
		if err := tx.QueryRow(ctx, tableChecksumSQL(tbl)).Scan(&dt.Rows, &dt.Checksum); err != nil {
			return nil, fmt.Errorf("checksum %s at the restore point: %w", tbl, err)
		}
		p.Tables[tbl] = dt
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// awaitArchived switches WAL and waits until the segment holding the
// point is in the archive, so that recovery can reach it.
func awaitArchived(ctx context.Context, conn *pgx.Conn, p *sourcePoint, within time.Duration) error {
	if _, err := conn.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
		return fmt.Errorf("switch WAL after the restore point: %w", err)
	}
	deadline := time.Now().Add(within)
	for {
		var last, failed string
		if err := conn.QueryRow(ctx, `SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver`).Scan(&last, &failed); err != nil {
			return err
		}
		// Same timeline: segment names order as their positions.
		if len(last) == 24 && last[:8] == p.WAL[:8] && last >= p.WAL {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("WAL segment %s with the restore point was not archived within %s (last archived %q, last failed %q)", p.WAL, within, last, failed)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// compare checks the restored tables of the source's database against
// the point: every source table must be there with the same rows.
func (p *sourcePoint) compare(restored []fsm.DrillTable, res *fsm.DrillResult) error {
	got := map[string]fsm.DrillTable{}
	var db string
	for _, t := range p.Tables {
		db = t.Database
	}
	for _, t := range restored {
		if t.Database == db {
			got[t.Name] = t
		}
	}
	var bad []string
	for name, want := range p.Tables {
		g, ok := got[name]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s: missing from the restored copy", name))
		case g.Rows != want.Rows || g.Checksum != want.Checksum:
			bad = append(bad, fmt.Sprintf("%s: restored %d rows (checksum %s), the source had %d (checksum %s) at %s", name, g.Rows, g.Checksum, want.Rows, want.Checksum, p.Name))
		default:
			res.TablesCompared++
		}
	}
	if len(bad) > 0 {
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		return errors.New("the restored copy differs from the source at the restore point: " + strings.Join(bad, "; "))
	}
	return nil
}
