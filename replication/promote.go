package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// The third database step of a switchover: the mirror that has caught up
// with the fenced old home (WaitCaughtUp) becomes a writable home copy of
// the tenant. PromoteMirror, in order, each sub-step safe to run again
// after a crash:
//
//  1. checks and resolves everything before changing anything: every table
//     is here, and every PII column missing here has a type (read from the
//     home's catalog by HomePIIColumns, and resolved in this database's
//     catalog as types.go does for mirror tables: nothing read from
//     another database is spliced into SQL);
//  2. detaches the tenant's subscription without reaching the old home
//     (DISABLE, slot_name = NONE, DROP: detachSubscription), so a home
//     that is down does not hold it up;
//  3. per table, in one transaction: adds the PII columns back, nullable,
//     with their home types (the mirrored rows hold NULL in them: their
//     values never left the old home), and takes off the mirror marker: the
//     table is a home table now, and no subscriber of another tenant may
//     drop a column of it (see sharedTable);
//  4. puts the PII guard of a temporary home in place, or lifts it
//     (GuardPII, pii_guard.go), before the tenant can take writes here;
//  5. per table, under a SHARE lock (inserts wait; reads and the apply of
//     other tenants' subscriptions go on after it): moves every sequence
//     of its integer columns (serial, identity, or named by a column
//     default) past the highest value in the column, over every tenant's
//     rows, since a sequence serves the table and not one tenant. It never
//     moves a sequence back;
//  6. drops the subscription's slot at the old home when it can be
//     reached (DropHomeSlot); a failure is reported, not fatal: the old
//     home's publisher drops slots that no subscriber holds.
//
// Row-level security stays as the subscriber set it: enabled, forced, and
// the tenant policy atomfed_tenant_isolation (sessions see and write the
// rows of the tenant they name in app.tenant_id). That is what a home
// table shared with mirrored tenants has too, and what the publisher
// expects at a home: it finds row-level security on, so it adds no
// atomfed_others policy, only its policy letting the replication role read
// the tenant's published rows. The application writing at the new home
// must set app.tenant_id, as it does for reads at a mirror.
//
// The caller makes sure nothing else changes the subscription meanwhile:
// the tenant's subscriber task at this mirror is stopped first, or it
// would create the subscription again.

// PIIColumn is a tenant's PII column as the home's catalog describes it.
// Type and TypMod are only a name to look up in the promoted mirror's
// catalog, never SQL.
type PIIColumn struct {
	Table  string `json:"table"` // schema.table
	Column string `json:"column"`
	Type   string `json:"type"` // format_type at the home
	TypMod int32  `json:"typmod"`
}

// Promotion is what PromoteMirror needs.
type Promotion struct {
	Tenant string
	// Subscription is the tenant's subscription at this mirror
	// (fsm.TenantSubscription); it is also the name of its slot at the
	// old home.
	Subscription string
	// Tables are the tenant's tables and their PII columns (the spec).
	Tables []fsm.TenantTable
	// PII are the PII columns' types at the home (HomePIIColumns), read
	// while the home was reachable, e.g. when it was fenced. Only the
	// columns missing here need one.
	PII []PIIColumn
	// Home connects to the old home's database (ConnectSource) to drop
	// the slot; nil leaves the slot to the old home's publisher.
	Home func(ctx context.Context) (*pgx.Conn, error)
	// PIIGuard: this database becomes a temporary home whose PII columns
	// accept only NULL in the tenant's rows (GuardPII); nil lifts such a
	// guard.
	PIIGuard *fsm.PIIGuard
	// SequenceGap (a failover: the old home was not fenced) moves each
	// sequence that many steps past the highest value here rather than
	// just past it: the lost home may have handed out the next values to
	// rows this mirror never received, and a new row here must not take
	// the key of a row that comes back in the old home's quarantine (its
	// PII, kept there, would then sit on another row). Bounded by half the
	// room left in the sequence's range.
	SequenceGap int64
}

// SequenceMove is what PromoteMirror found and did for one sequence.
type SequenceMove struct {
	Sequence string `json:"sequence"` // schema.name
	Table    string `json:"table"`
	Column   string `json:"column"`
	// Highest is the highest value in the column (the lowest for a
	// descending sequence).
	Highest int64 `json:"highest"`
	// Next is the value nextval returns next, before and after.
	NextBefore int64 `json:"next_before"`
	NextAfter  int64 `json:"next_after"`
	Moved      bool  `json:"moved"`
}

// PromoteResult says what PromoteMirror did, for the caller to record. A
// run on an already promoted mirror changes nothing (Changed is false).
type PromoteResult struct {
	Tenant string `json:"tenant"`
	// SubscriptionDropped: this run detached and dropped the subscription
	// (false: there was none left).
	SubscriptionDropped bool `json:"subscription_dropped"`
	// PIIColumnsAdded are the columns this run added, schema.table.column.
	PIIColumnsAdded []string `json:"pii_columns_added,omitempty"`
	// MarkersRemoved are the tables whose mirror marker this run removed.
	MarkersRemoved []string       `json:"markers_removed,omitempty"`
	Sequences      []SequenceMove `json:"sequences,omitempty"`
	// SlotDropped: this run dropped the slot at the old home. SlotError
	// says why the slot may still be there (the home could not be
	// reached, or the drop failed); it does not fail the promotion.
	SlotDropped bool   `json:"slot_dropped"`
	SlotError   string `json:"slot_error,omitempty"`
}

// Changed reports whether the run changed anything in the mirror's
// database or at the old home.
func (r *PromoteResult) Changed() bool {
	moved := slices.ContainsFunc(r.Sequences, func(m SequenceMove) bool { return m.Moved })
	return r.SubscriptionDropped || len(r.PIIColumnsAdded) > 0 || len(r.MarkersRemoved) > 0 || moved || r.SlotDropped
}

// promotedMarker replaces mirrorMarker on a promoted table.
const promotedMarker = "atomfed: home table, promoted from a mirror"

// promoteTable is one table's plan.
type promoteTable struct {
	ref tableRef
	oid uint32
	add []column // PII columns to add, with this database's type names
}

// PromoteMirror makes the database of mirror, a caught-up mirror of
// p.Tenant, a writable home copy of it (see the top of this file). Every
// sub-step is idempotent: run again after a crash, it finishes what is
// left. An error before the subscription is detached changes nothing.
func PromoteMirror(ctx context.Context, mirror *pgx.Conn, p Promotion) (*PromoteResult, error) {
	if !fsm.ValidTenantID(p.Tenant) || p.Subscription == "" {
		return nil, fmt.Errorf("promote: tenant %q and subscription %q must be set and valid", p.Tenant, p.Subscription)
	}
	res := &PromoteResult{Tenant: p.Tenant}
	plan, err := planPromotion(ctx, mirror, p)
	if err != nil {
		return nil, fmt.Errorf("promote tenant %s: %w", p.Tenant, err)
	}
	if res.SubscriptionDropped, err = detachSubscription(ctx, mirror, p.Subscription); err != nil {
		return nil, fmt.Errorf("promote tenant %s: detach subscription %s: %w", p.Tenant, p.Subscription, err)
	}
	for _, pt := range plan {
		if err := addPIIColumns(ctx, mirror, pt, res); err != nil {
			return res, fmt.Errorf("promote tenant %s: table %s: %w", p.Tenant, pt.ref.display(), err)
		}
	}
	// Before the tenant can take writes here (the commit comes after the
	// promotion): a temporary home accepts only NULL in its PII columns
	// (pii_guard.go); at the residency region any earlier guard goes.
	if err := GuardPII(ctx, mirror, p.Tenant, p.Tables, p.PIIGuard); err != nil {
		return res, fmt.Errorf("promote tenant %s: %w", p.Tenant, err)
	}
	for _, pt := range plan {
		moves, err := moveSequences(ctx, mirror, pt, p.SequenceGap)
		res.Sequences = append(res.Sequences, moves...)
		if err != nil {
			return res, fmt.Errorf("promote tenant %s: sequences of %s: %w", p.Tenant, pt.ref.display(), err)
		}
	}
	res.SlotDropped, res.SlotError = dropHomeSlotVia(ctx, p.Home, p.Subscription)
	return res, nil
}

// planPromotion checks the tables and resolves the types of the PII
// columns to add, changing nothing.
func planPromotion(ctx context.Context, conn *pgx.Conn, p Promotion) ([]promoteTable, error) {
	var plan []promoteTable
	for _, tt := range p.Tables {
		ref := parseTable(tt.Name)
		local, err := inspectTable(ctx, conn, ref)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", ref.display(), err)
		}
		if !local.Exists {
			return nil, fmt.Errorf("table %s does not exist here: this database is not a mirror of the tenant", ref.display())
		}
		pt := promoteTable{ref: ref, oid: local.OID}
		for _, c := range tt.PIIColumns {
			if local.column(c) != nil {
				continue
			}
			i := slices.IndexFunc(p.PII, func(pc PIIColumn) bool { return parseTable(pc.Table) == ref && pc.Column == c })
			if i < 0 {
				return nil, fmt.Errorf("PII column %s of %s is missing here and no home type was given for it (read them with HomePIIColumns while the home is reachable)", c, ref.display())
			}
			cols, is := resolveTypes(ctx, conn, "the old home", ref.display(), []column{{Name: c, Type: p.PII[i].Type, TypMod: p.PII[i].TypMod}})
			if is != nil {
				return nil, errors.New(is.Message)
			}
			pt.add = append(pt.add, cols[0])
		}
		plan = append(plan, pt)
	}
	return plan, nil
}

// addPIIColumns adds a table's missing PII columns, nullable, and takes
// off its mirror marker, in one transaction.
func addPIIColumns(ctx context.Context, conn *pgx.Conn, pt promoteTable, res *PromoteResult) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	var added []string
	for _, c := range pt.add {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped)`,
			pt.oid, c.Name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			continue
		}
		if _, err := tx.Exec(ctx, "ALTER TABLE "+pt.ref.Quoted()+" ADD COLUMN IF NOT EXISTS "+ident(c.Name)+" "+c.Type); err != nil {
			return fmt.Errorf("add PII column %s %s: %w", c.Name, c.Type, err)
		}
		added = append(added, pt.ref.String()+"."+c.Name)
	}
	var comment string
	if err := tx.QueryRow(ctx, `SELECT coalesce(obj_description($1::oid, 'pg_class'), '')`, pt.oid).Scan(&comment); err != nil {
		return err
	}
	marker := comment == mirrorMarker
	if marker {
		if _, err := tx.Exec(ctx, "COMMENT ON TABLE "+pt.ref.Quoted()+" IS "+quoteLiteral(promotedMarker)); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	res.PIIColumnsAdded = append(res.PIIColumnsAdded, added...)
	if marker {
		res.MarkersRemoved = append(res.MarkersRemoved, pt.ref.String())
	}
	return nil
}

// tableSequencesSQL lists the sequences of a table's integer columns:
// owned by a column (serial: dependency 'a'; identity: 'i'), or named in
// a column's default (nextval('s'): the default depends on it).
const tableSequencesSQL = `SELECT DISTINCT s.oid, sn.nspname::text, s.relname::text, a.attname::text, q.seqincrement, q.seqmin, q.seqmax
	FROM pg_attribute a
	JOIN pg_depend d ON (d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
			AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype IN ('a', 'i'))
		OR (d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
			AND d.objid = (SELECT ad.oid FROM pg_attrdef ad WHERE ad.adrelid = a.attrelid AND ad.adnum = a.attnum))
	JOIN pg_class s ON s.oid = CASE WHEN d.classid = 'pg_class'::regclass THEN d.objid ELSE d.refobjid END AND s.relkind = 'S'
	JOIN pg_namespace sn ON sn.oid = s.relnamespace
	JOIN pg_sequence q ON q.seqrelid = s.oid
	WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
	ORDER BY 2, 3, 4`

// moveSequences moves each sequence of the table's columns past the
// highest value in its column (the lowest, for a descending one), plus
// gap steps (Promotion.SequenceGap), never back, under a SHARE lock on the
// table so that no insert races it.
func moveSequences(ctx context.Context, conn *pgx.Conn, pt promoteTable, gap int64) ([]SequenceMove, error) {
	ref := pt.ref
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, "LOCK TABLE "+ref.Quoted()+" IN SHARE MODE"); err != nil {
		return nil, err
	}
	type seq struct {
		oid                  uint32
		schema, name, column string
		inc, min, max        int64
	}
	rows, err := tx.Query(ctx, tableSequencesSQL, pt.oid)
	if err != nil {
		return nil, err
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (seq, error) {
		var s seq
		err := r.Scan(&s.oid, &s.schema, &s.name, &s.column, &s.inc, &s.min, &s.max)
		return s, err
	})
	if err != nil {
		return nil, err
	}
	var out []SequenceMove
	for _, s := range seqs {
		m := SequenceMove{Sequence: s.schema + "." + s.name, Table: ref.String(), Column: s.column}
		agg := "max"
		if s.inc < 0 {
			agg = "min"
		}
		var highest *int64
		if err := tx.QueryRow(ctx, "SELECT "+agg+"("+ident(s.column)+")::int8 FROM "+ref.Quoted()).Scan(&highest); err != nil {
			return out, err
		}
		var last int64
		var called bool
		if err := tx.QueryRow(ctx, "SELECT last_value, is_called FROM "+pgx.Identifier{s.schema, s.name}.Sanitize()).Scan(&last, &called); err != nil {
			return out, err
		}
		m.NextBefore, m.NextAfter = last, last
		if called {
			m.NextBefore, m.NextAfter = last+s.inc, last+s.inc
		}
		if highest != nil {
			m.Highest = *highest
			to := *highest + gapSteps(*highest, s.inc, s.min, s.max, gap)*s.inc
			behind := (s.inc > 0 && m.NextBefore <= to) || (s.inc < 0 && m.NextBefore >= to)
			if behind {
				if _, err := tx.Exec(ctx, `SELECT setval($1::oid::regclass, $2, true)`, s.oid, to); err != nil {
					return out, fmt.Errorf("move sequence %s past %d: %w", m.Sequence, to, err)
				}
				m.NextAfter, m.Moved = to+s.inc, true
			}
		}
		out = append(out, m)
	}
	return out, tx.Commit(ctx)
}

// gapSteps bounds a sequence gap of gap steps of inc past highest to half
// the room left before the sequence's limit (min or max), so that a gap
// never exhausts a small (int2, int4) sequence.
func gapSteps(highest, inc, min, max, gap int64) int64 {
	if gap <= 0 || inc == 0 {
		return 0
	}
	room := max - highest
	if inc < 0 {
		room = highest - min
	}
	step := inc
	if step < 0 {
		step = -step
	}
	if limit := room / step / 2; gap > limit {
		return limit
	}
	return gap
}

// HomePIIColumns reads the types of the tenant's PII columns from the
// home's catalog (readable by the replication role, which cannot read
// the columns' values), for a later PromoteMirror. A PII column the home
// does not have is an error: the spec is wrong.
func HomePIIColumns(ctx context.Context, home *pgx.Conn, tables []fsm.TenantTable) ([]PIIColumn, error) {
	var out []PIIColumn
	for _, tt := range tables {
		if len(tt.PIIColumns) == 0 {
			continue
		}
		ref := parseTable(tt.Name)
		ti, err := inspectTable(ctx, home, ref)
		if err != nil {
			return nil, fmt.Errorf("inspect %s at the home: %w", ref.display(), err)
		}
		for _, c := range tt.PIIColumns {
			col := ti.column(c)
			if col == nil {
				return nil, fmt.Errorf("the home's table %s has no PII column %s", ref.display(), c)
			}
			out = append(out, PIIColumn{Table: ref.String(), Column: c, Type: col.Type, TypMod: col.TypMod})
		}
	}
	return out, nil
}

// dropHomeSlotVia connects to the old home and drops the slot, within a
// bound; it returns whether it dropped it and, if it may still be there,
// why.
func dropHomeSlotVia(ctx context.Context, home func(context.Context) (*pgx.Conn, error), slot string) (bool, string) {
	if home == nil {
		return false, "no connection to the old home was given: its publisher drops the slot once no subscriber holds it"
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := home(ctx)
	if err != nil {
		return false, "cannot reach the old home's database (" + pgMessage(err) + "); its publisher drops slot " + slot + " once no subscriber holds it"
	}
	defer conn.Close(context.Background())
	dropped, err := DropHomeSlot(ctx, conn, slot)
	if err != nil {
		return false, err.Error()
	}
	return dropped, ""
}

// DropHomeSlot drops a detached subscription's slot in the home's
// database and reports whether there was one. A slot still in use (its
// walsender has not seen the subscription go yet) is waited for, until
// ctx ends; it is never taken from a sender that keeps it.
func DropHomeSlot(ctx context.Context, home *pgx.Conn, slot string) (bool, error) {
	for {
		var pid *int32
		err := home.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`, slot).Scan(&pid)
		if err == pgx.ErrNoRows {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read slot %s at the home: %s", slot, pgMessage(err))
		}
		if pid == nil {
			_, err := home.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot)
			switch sqlState(err) {
			case "":
				return true, nil
			case "55006", "42704": // taken again meanwhile, or dropped by someone else
			default:
				return false, fmt.Errorf("drop slot %s at the home: %s", slot, pgMessage(err))
			}
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("slot %s at the home is still in use by process %s: %w", slot, pidText(pid), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func pidText(pid *int32) string {
	if pid == nil {
		return "?"
	}
	return strconv.Itoa(int(*pid))
}
