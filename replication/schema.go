package replication

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// querier is what schema inspection needs from a connection.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type column struct {
	Name string
	// Type is the column's type as format_type prints it. Read from a
	// remote database it is only a name to look up, never SQL: see
	// resolveTypes.
	Type    string
	TypMod  int32
	NotNull bool
}

type index struct {
	Name    string
	Primary bool
	// Usable: unique, immediate, valid, without expressions or predicate,
	// and every column NOT NULL: what REPLICA IDENTITY USING INDEX takes.
	Usable  bool
	Columns []string
}

// tableInfo is one table as the catalog describes it.
type tableInfo struct {
	Ref       tableRef
	Exists    bool
	OID       uint32
	Columns   []column // in attnum order
	Indexes   []index
	ReplIdent string // pg_class.relreplident: d, n, f or i
	RIIndex   string // the replica identity index when ReplIdent is i
	RLS       bool
	ForceRLS  bool
}

func (t *tableInfo) column(name string) *column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

func inspectTable(ctx context.Context, q querier, ref tableRef) (*tableInfo, error) {
	ti := &tableInfo{Ref: ref}
	err := q.QueryRow(ctx, `SELECT c.oid, c.relreplident::text, c.relrowsecurity, c.relforcerowsecurity
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, ref.Schema, ref.Name).
		Scan(&ti.OID, &ti.ReplIdent, &ti.RLS, &ti.ForceRLS)
	if err == pgx.ErrNoRows {
		return ti, nil
	}
	if err != nil {
		return nil, err
	}
	ti.Exists = true
	rows, err := q.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod), atttypmod, attnotnull FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, ti.OID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var c column
		if err := rows.Scan(&c.Name, &c.Type, &c.TypMod, &c.NotNull); err != nil {
			return nil, err
		}
		ti.Columns = append(ti.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, `SELECT ic.relname::text, i.indisprimary, i.indisreplident,
			i.indisunique AND i.indimmediate AND i.indisvalid AND i.indexprs IS NULL AND i.indpred IS NULL,
			array(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord),
			(SELECT bool_and(a.attnotnull) FROM pg_attribute a
				WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]))
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		WHERE i.indrelid = $1 ORDER BY ic.relname`, ti.OID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var ix index
		var replident bool
		var notNull *bool
		if err := rows.Scan(&ix.Name, &ix.Primary, &replident, &ix.Usable, &ix.Columns, &notNull); err != nil {
			return nil, err
		}
		ix.Usable = ix.Usable && notNull != nil && *notNull
		if replident {
			ti.RIIndex = ix.Name
		}
		ti.Indexes = append(ti.Indexes, ix)
	}
	return ti, rows.Err()
}

// isText reports whether a formatted type can hold a tenant id compared
// with a text literal.
func isText(typ string) bool {
	return typ == "text" || strings.HasPrefix(typ, "character varying") || strings.HasPrefix(typ, "character(") || typ == "character"
}

// tenantKey picks the replica identity of a tenant table: the primary key
// if it is usable and holds tenant_id, else the first (by name) usable
// unique index that holds tenant_id, never one with a PII column.
func tenantKey(ti *tableInfo, pii map[string]bool) (*index, *fsm.ReplicationIssue) {
	var withPII *index
	pick := func(primary bool) *index {
		for i := range ti.Indexes {
			ix := &ti.Indexes[i]
			if ix.Primary != primary || !ix.Usable || !slices.Contains(ix.Columns, "tenant_id") {
				continue
			}
			if piiIn(ix.Columns, pii) != "" {
				if withPII == nil {
					withPII = ix
				}
				continue
			}
			return ix
		}
		return nil
	}
	if ix := pick(true); ix != nil {
		return ix, nil
	}
	if ix := pick(false); ix != nil {
		return ix, nil
	}
	name := ti.Ref.display()
	if withPII != nil {
		return nil, &fsm.ReplicationIssue{Code: fsm.IssuePIIInKey, Table: name, Message: fmt.Sprintf(
			"table %s: PII column %s is part of its only usable key %s (%s); a replica identity is published, so the key must hold no PII column",
			name, piiIn(withPII.Columns, pii), withPII.Name, strings.Join(withPII.Columns, ", "))}
	}
	return nil, &fsm.ReplicationIssue{Code: fsm.IssueNoReplicaIdentity, Table: name, Message: fmt.Sprintf(
		"table %s has no unique index that holds tenant_id and can serve as replica identity "+
			"(unique, not deferrable, no expression or predicate, every column NOT NULL); add one, e.g. UNIQUE (tenant_id, id)", name)}
}

// globalKey returns the index a global table's replica identity should use,
// "" when its current identity is fine (primary key, an index, or FULL).
func globalKey(ti *tableInfo) (string, *fsm.ReplicationIssue) {
	switch {
	case ti.ReplIdent == "f" || (ti.ReplIdent == "i" && ti.RIIndex != ""):
		return "", nil
	case ti.ReplIdent == "d":
		for _, ix := range ti.Indexes {
			if ix.Primary {
				return "", nil
			}
		}
	}
	for _, ix := range ti.Indexes {
		if ix.Usable {
			return ix.Name, nil
		}
	}
	name := ti.Ref.display()
	return "", &fsm.ReplicationIssue{Code: fsm.IssueNoReplicaIdentity, Table: name, Message: fmt.Sprintf(
		"global table %s has no primary key or usable unique index, so updates and deletes could not be replicated; add a primary key", name)}
}

func piiIn(cols []string, pii map[string]bool) string {
	for _, c := range cols {
		if pii[c] {
			return c
		}
	}
	return ""
}

// digest is the schema digest of a set of columns: their names and types,
// order-free (logical replication matches columns by name), so equal
// digests mean a publisher's rows fit a subscriber's table.
func digest(cols []column) string {
	lines := make([]string, len(cols))
	for i, c := range cols {
		lines[i] = c.Name + " " + c.Type
	}
	sort.Strings(lines)
	h := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(h[:8])
}

// selectColumns returns the columns of ti named in names, in table order.
func selectColumns(ti *tableInfo, names []string) []column {
	var out []column
	for _, c := range ti.Columns {
		if slices.Contains(names, c.Name) {
			out = append(out, c)
		}
	}
	return out
}

// drift describes how a mirror's columns differ from what the source
// publishes, or "" when they match.
func drift(local []column, published []column, sourceRegion string) string {
	var d []string
	for _, p := range published {
		var l *column
		for i := range local {
			if local[i].Name == p.Name {
				l = &local[i]
			}
		}
		switch {
		case l == nil:
			d = append(d, fmt.Sprintf("column %s is missing here", p.Name))
		case l.Type != p.Type:
			d = append(d, fmt.Sprintf("column %s is %s here but %s in %s", p.Name, l.Type, p.Type, sourceRegion))
		}
	}
	for _, l := range local {
		found := false
		for _, p := range published {
			found = found || p.Name == l.Name
		}
		if !found {
			d = append(d, fmt.Sprintf("column %s exists only here", l.Name))
		}
	}
	return strings.Join(d, "; ")
}

// publishedTable is a row of pg_publication_tables.
type publishedTable struct {
	Ref       tableRef
	Columns   []string
	RowFilter string
}

func readPublication(ctx context.Context, q querier, pub string) (exists bool, tables map[string]publishedTable, err error) {
	var n int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname = $1`, pub).Scan(&n); err != nil {
		return false, nil, err
	}
	if n == 0 {
		return false, nil, nil
	}
	rows, err := q.Query(ctx, `SELECT schemaname::text, tablename::text, coalesce(attnames::text[], '{}'), coalesce(rowfilter, '')
		FROM pg_publication_tables WHERE pubname = $1`, pub)
	if err != nil {
		return true, nil, err
	}
	defer rows.Close()
	tables = map[string]publishedTable{}
	for rows.Next() {
		var p publishedTable
		if err := rows.Scan(&p.Ref.Schema, &p.Ref.Name, &p.Columns, &p.RowFilter); err != nil {
			return true, nil, err
		}
		tables[p.Ref.String()] = p
	}
	return true, tables, rows.Err()
}
