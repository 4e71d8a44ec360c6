package replication

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
)

// The old home comes back after an unplanned failover (spec Resync, with
// FormerHome). The tenant's home A was lost, and the failover promoted its
// mirror B without fencing A: A may hold writes B never got, and B took
// writes of its own since. No former-home slot exists at B. Before A can
// be B's former home, its tenant-subscriber runs, in this order, each
// step idempotent so that an agent killed anywhere resumes safely:
//
//  1. Fence (phase fencing). FenceTenant at A, before anything else and
//     on every step: the application's writes of the tenant are refused
//     here with WF001 and a message naming B. The fence stays: only B
//     takes the tenant's writes. A later planned switchover back to A
//     lifts it (the promotion lifts an older fence at its target).
//  2. Quarantine and reconcile (phases quarantining, reconciling), in one
//     transaction here, against one consistent point S of B:
//     - over a replication connection to B (the replication role, its
//       passfile and CA, as the subscription connects), the slot A will
//       subscribe from is created with an exported snapshot: its
//       consistent point is S, and the snapshot sees B's rows as of S;
//     - B's published columns of the tenant's rows are read under that
//       snapshot (SET TRANSACTION SNAPSHOT) while the replication
//       connection stays open;
//     - in one local transaction: every row of the tenant here whose key
//       B does not have (missing_at_new_home) or whose published columns
//       differ from B's (differs_from_new_home) is copied, whole and with
//       its PII, into atomfed_quarantine.divergent_rows (quarantine.go);
//       then B's rows are upserted by primary key into the non-PII
//       columns (a row's PII here is kept; a row B inserted gets NULL
//       there), the tenant's rows B does not have are deleted (they are
//       in the quarantine), and the resync record (atomfed.tenant_resyncs:
//       placement, slot position, counts) is written. The transaction
//       runs with session_replication_role = replica, as the apply worker
//       does, so the fence lets it through.
//     Cut short before the commit, nothing here changed; the next run
//     drops the slot it made (no subscription uses it) and starts over.
//  3. Subscribe (phase subscribing): with the record in place, the usual
//     former-home path (SubscribeFormerHome) subscribes from that slot
//     with copy_data = false: A's rows equal B's at S, and the slot holds
//     exactly B's changes after S.
//  4. Streaming: A is an ordinary former-home mirror of B.
//
// B's publisher keeps the slot: it is named like A's subscription
// (fsm.TenantSubscription), which B's publisher spec lists once A is a
// mirror of the tenant; a slot made while it is not listed would be
// dropped as an orphan, and the next step here would find it gone and
// reconcile again.

// resyncSchema creates the resync record.
var resyncSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS atomfed`,
	`CREATE TABLE IF NOT EXISTS atomfed.tenant_resyncs (
		tenant_id text PRIMARY KEY,
		tenant_created bigint NOT NULL,
		epoch bigint NOT NULL,
		source text NOT NULL,
		slot_lsn pg_lsn NOT NULL,
		divergent jsonb NOT NULL,
		missing bigint NOT NULL,
		reconciled bigint NOT NULL,
		keys jsonb NOT NULL DEFAULT '[]',
		at timestamptz NOT NULL DEFAULT now())`,
	`REVOKE ALL ON atomfed.tenant_resyncs FROM PUBLIC`,
}

// resyncStatementTimeout replaces the agent's 30 s statement timeout in
// the reconcile's two transactions: reading and rewriting a big tenant's
// rows takes longer, and a try cut short starts over from scratch.
const resyncStatementTimeout = `SET LOCAL statement_timeout = '15min'`

// resyncPoint, when set (tests only), is called at each boundary between
// the resync's steps: fenced, slot_created, read, quarantined (inside the
// local transaction, before its commit) and reconciled (after it).
var resyncPoint func(point string)

func atResyncPoint(point string) {
	if resyncPoint != nil {
		resyncPoint(point)
	}
}

// resyncRecord is a row of atomfed.tenant_resyncs: the tenant's rows here
// were reconciled with the source's for this placement.
type resyncRecord struct {
	Created, Epoch uint64
	Source         string
	SlotLSN        string
	Divergent      map[string]int64
	Missing        int64
	Reconciled     int64
	Keys           []fsm.DivergentKey
	At             time.Time
}

func readResync(ctx context.Context, conn *pgx.Conn, tenant string) (*resyncRecord, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('atomfed.tenant_resyncs') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	var r resyncRecord
	var created, epoch int64
	var div, keys []byte
	err := conn.QueryRow(ctx, `SELECT tenant_created, epoch, source, slot_lsn::text, divergent::text, missing, reconciled, keys::text, at
		FROM atomfed.tenant_resyncs WHERE tenant_id = $1`, tenant).Scan(&created, &epoch, &r.Source, &r.SlotLSN, &div, &r.Missing, &r.Reconciled, &keys, &r.At)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the resync record of tenant %s: %w", tenant, err)
	}
	if err := json.Unmarshal(div, &r.Divergent); err != nil {
		return nil, fmt.Errorf("read the resync record of tenant %s: %w", tenant, err)
	}
	if err := json.Unmarshal(keys, &r.Keys); err != nil {
		return nil, fmt.Errorf("read the resync record of tenant %s: %w", tenant, err)
	}
	r.Created, r.Epoch = uint64(created), uint64(epoch)
	return &r, nil
}

// status is the record as a task reports it.
func (r *resyncRecord) status(phase string) *fsm.ResyncStatus {
	st := &fsm.ResyncStatus{Phase: phase, Epoch: r.Epoch, Missing: r.Missing, Reconciled: r.Reconciled, SlotLSN: r.SlotLSN,
		ReconciledAt: r.At.UnixNano(), Keys: r.Keys}
	for t, n := range r.Divergent {
		if n > 0 {
			if st.Divergent == nil {
				st.Divergent = map[string]int64{}
			}
			st.Divergent[t] = n
			st.DivergentTotal += n
		}
	}
	return st
}

// resync runs the steps before the subscription (see the top of this
// file). It reports true once the tenant's rows here are reconciled for
// the spec's placement, so that the subscriber may subscribe; false with
// res saying why not yet.
func (s *subscriber) resync(ctx context.Context, conn *pgx.Conn, res *fsm.SubscriberResult) bool {
	res.Resync = &fsm.ResyncStatus{Phase: fsm.ResyncFencing, Epoch: s.spec.Epoch}
	fail := func(what string, err error) bool {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", what, err)}
		return false
	}
	if _, err := FenceTenant(ctx, conn, Fence{Tenant: s.spec.Tenant, Epoch: s.spec.Epoch, WritesTo: s.spec.Source, Tables: s.spec.Tables}); err != nil {
		return fail("fence the tenant's writes in this database (the old home) before anything else", err)
	}
	atResyncPoint("fenced")
	rec, err := readResync(ctx, conn, s.spec.Tenant)
	if err != nil {
		return fail("read the resync record", err)
	}
	// The record holds for this source and a placement up to the spec's:
	// a later epoch with the same source (a re-plan) needs no new
	// reconcile while the subscription it made still streams from there.
	current := rec != nil && rec.Created == s.spec.TenantCreated && rec.Epoch <= s.spec.Epoch && rec.Source == s.spec.Source
	sub, err := readSubscription(ctx, conn, s.spec.Subscription)
	if err != nil {
		return fail("read the subscription", err)
	}
	if current && sub != nil && sameSource(sub.ConnInfo, s.connInfo()) {
		res.Resync = rec.status(fsm.ResyncSubscribing)
		return true
	}
	if sub != nil {
		// A subscription of this name not made from the record: a former
		// home's to the lost home (the failover's other former homes
		// follow the new home this way too), or one made without a
		// reconcile. Its rows stay; it goes, without reaching its source:
		// the reconcile below makes the rows exact, and a new slot.
		if _, err := detachSubscription(ctx, conn, s.spec.Subscription); err != nil {
			return fail("detach the subscription "+s.spec.Subscription+" made before the failover", err)
		}
		s.log.Info("detached a subscription made before the reconcile", "subscription", s.spec.Subscription, "to_the_new_home", sameSource(sub.ConnInfo, s.connInfo()))
		current = false
	}
	src, is := s.source(ctx)
	if is != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{*is}
		return false
	}
	if current && rec.Epoch == s.spec.Epoch {
		// Reconciled for this placement; the slot must still be there
		// (it holds B's writes since). If it is gone, the rows are
		// reconciled again. A record of an earlier placement without its
		// subscription is not trusted with a slot of that name: the rows
		// may have moved on since (a fail-back and another failover).
		if _, err := handOffSlot(ctx, src, s.spec.Subscription, ErrNoFormerHomeSlot); err == nil {
			res.Resync = rec.status(fsm.ResyncSubscribing)
			return true
		} else if !errors.Is(err, ErrNoFormerHomeSlot) {
			s.dropSource()
			return fail("look for the former-home slot at region "+s.spec.Source, err)
		}
		s.log.Warn("the slot the tenant's rows were reconciled at is gone at the new home; reconciling again", "slot", s.spec.Subscription)
	}
	st, err := s.reconcile(ctx, conn, src, res)
	if err != nil {
		s.dropSource()
		return fail("reconcile the tenant's rows with region "+s.spec.Source, err)
	}
	res.Resync = st
	return true
}

// reconcile is step 2 (see the top of this file).
func (s *subscriber) reconcile(ctx context.Context, conn, src *pgx.Conn, res *fsm.SubscriberResult) (*fsm.ResyncStatus, error) {
	tenant, slot := s.spec.Tenant, s.spec.Subscription
	res.Resync.Phase = fsm.ResyncQuarantine
	s.progress(res)
	pub := fsm.TenantPublication(tenant)
	exists, published, err := readPublication(ctx, src, pub)
	if err != nil {
		return nil, fmt.Errorf("read the new home's publication: %w", err)
	}
	if !exists {
		return nil, fmt.Errorf("region %s has no publication %s yet; it must publish the tenant first", s.spec.Source, pub)
	}
	var plans []*quarantinePlan
	for _, tt := range s.spec.Tables {
		qp, err := planQuarantine(ctx, conn, tt, published)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", tt.Name, err)
		}
		if qp != nil {
			plans = append(plans, qp)
		}
	}
	// A slot of this name that no subscription here uses is an earlier
	// run's, cut short before its commit: its point is not ours.
	if err := dropStaleSlot(ctx, src, slot); err != nil {
		return nil, fmt.Errorf("drop an earlier run's slot %s: %w", slot, err)
	}
	repl, err := pgconn.Connect(ctx, sourceConnString(s.spec.SourceDB, &s.cfg)+" replication=database")
	if err != nil {
		return nil, fmt.Errorf("open a replication connection to region %s as %s: %s", s.spec.Source, s.cfg.ReplicationUser, pgMessage(err))
	}
	defer repl.Close(context.Background()) //nolint:errcheck // its snapshot is needed only until the local commit
	rr, err := repl.Exec(ctx, "CREATE_REPLICATION_SLOT "+ident(slot)+" LOGICAL pgoutput (SNAPSHOT 'export')").ReadAll()
	if err != nil {
		return nil, fmt.Errorf("create slot %s with an exported snapshot: %w", slot, err)
	}
	if len(rr) != 1 || len(rr[0].Rows) != 1 || len(rr[0].Rows[0]) < 3 {
		return nil, fmt.Errorf("create slot %s: unexpected answer", slot)
	}
	lsn, snapshot := string(rr[0].Rows[0][1]), string(rr[0].Rows[0][2])
	atResyncPoint("slot_created")
	theirs, err := readAtSnapshot(ctx, src, snapshot, tenant, plans)
	if err != nil {
		return nil, fmt.Errorf("read the new home's rows at the slot's snapshot: %w", err)
	}
	atResyncPoint("read")
	res.Resync.Phase = fsm.ResyncReconciling
	s.progress(res)
	rec := &resyncRecord{Created: s.spec.TenantCreated, Epoch: s.spec.Epoch, Source: s.spec.Source, SlotLSN: lsn, Divergent: map[string]int64{}}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	stmts := append(append(append([]string{`SET LOCAL session_replication_role = replica`, resyncStatementTimeout}, jsonSettings...), quarantineSchema...), resyncSchema...)
	for _, st := range stmts {
		if _, err := tx.Exec(ctx, st); err != nil {
			return nil, err
		}
	}
	for i, qp := range plans {
		n, missing, keys, err := qp.quarantine(ctx, tx, tenant, theirs[i])
		if err != nil {
			return nil, fmt.Errorf("quarantine %s: %w", qp.ref.display(), err)
		}
		for _, k := range keys {
			if len(rec.Keys) < fsm.MaxDivergentKeys && len(k.Key) <= fsm.MaxDivergentKeyLen {
				rec.Keys = append(rec.Keys, k)
			}
		}
		rec.Divergent[qp.ref.String()] += n
		rec.Missing += missing
		m, err := qp.reconcile(ctx, tx, tenant)
		if err != nil {
			return nil, fmt.Errorf("reconcile %s: %w", qp.ref.display(), err)
		}
		rec.Reconciled += m
	}
	div, _ := json.Marshal(rec.Divergent)
	if rec.Keys == nil {
		rec.Keys = []fsm.DivergentKey{}
	}
	keys, _ := json.Marshal(rec.Keys)
	err = tx.QueryRow(ctx, `INSERT INTO atomfed.tenant_resyncs AS r (tenant_id, tenant_created, epoch, source, slot_lsn, divergent, missing, reconciled, keys)
		VALUES ($1, $2, $3, $4, $5::pg_lsn, $6::jsonb, $7, $8, $9::jsonb)
		ON CONFLICT (tenant_id) DO UPDATE SET tenant_created = EXCLUDED.tenant_created, epoch = EXCLUDED.epoch, source = EXCLUDED.source,
			slot_lsn = EXCLUDED.slot_lsn, divergent = EXCLUDED.divergent, missing = EXCLUDED.missing, reconciled = EXCLUDED.reconciled,
			keys = EXCLUDED.keys, at = now()
		RETURNING at`, tenant, int64(rec.Created), int64(rec.Epoch), rec.Source, lsn, string(div), rec.Missing, rec.Reconciled, string(keys)).Scan(&rec.At)
	if err != nil {
		return nil, fmt.Errorf("write the resync record: %w", err)
	}
	atResyncPoint("quarantined")
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	atResyncPoint("reconciled")
	s.log.Info("reconciled the old home's rows with the new home", "tenant", tenant, "source", s.spec.Source, "slot_lsn", lsn,
		"quarantined", rec.status("").DivergentTotal, "reconciled", rec.Reconciled)
	return rec.status(fsm.ResyncSubscribing), nil
}

// readAtSnapshot reads each table's rows of the tenant at src as of an
// exported snapshot, as jsonb texts of their compared columns.
func readAtSnapshot(ctx context.Context, src *pgx.Conn, snapshot, tenant string, plans []*quarantinePlan) ([][]string, error) {
	tx, err := src.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read only
	for _, st := range append([]string{`SET TRANSACTION SNAPSHOT ` + quoteLiteral(snapshot), resyncStatementTimeout}, jsonSettings...) {
		if _, err := tx.Exec(ctx, st); err != nil {
			return nil, err
		}
	}
	out := make([][]string, len(plans))
	for i, qp := range plans {
		rows, err := tx.Query(ctx, qp.newHomeQuery(), tenant)
		if err != nil {
			return nil, err
		}
		if out[i], err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// reconcile makes the tenant's rows of the table here equal, in their
// compared columns, to the new home's rows loaded in af_new_home_rows by
// quarantine: upserts by primary key (only rows that differ are written,
// PII columns are left as they are, and NULL in a row new here), and
// deletes the tenant's rows the new home does not have. It returns how
// many rows it wrote or deleted.
func (qp *quarantinePlan) reconcile(ctx context.Context, tx pgx.Tx, tenant string) (int64, error) {
	q := func(prefix string, cols []string) string {
		out := make([]string, len(cols))
		for i, c := range cols {
			out[i] = prefix + ident(c)
		}
		return strings.Join(out, ", ")
	}
	for _, st := range []string{`DROP TABLE IF EXISTS pg_temp.af_reconcile_rows`,
		`CREATE TEMP TABLE af_reconcile_rows ON COMMIT DROP AS SELECT r.* FROM af_new_home_rows b, jsonb_populate_record(NULL::` + qp.ref.Quoted() + `, b.row) r`} {
		if _, err := tx.Exec(ctx, st); err != nil {
			return 0, err
		}
	}
	var set []string
	for _, c := range qp.cols {
		if !slices.Contains(qp.key, c) {
			set = append(set, ident(c)+" = EXCLUDED."+ident(c))
		}
	}
	conflict := "DO NOTHING"
	if len(set) > 0 {
		conflict = "DO UPDATE SET " + strings.Join(set, ", ") + " WHERE (" + q("f.", qp.cols) + ") IS DISTINCT FROM (" + q("EXCLUDED.", qp.cols) + ")"
	}
	up, err := tx.Exec(ctx, "INSERT INTO "+qp.ref.Quoted()+" AS f ("+q("", qp.cols)+") SELECT "+q("", qp.cols)+" FROM af_reconcile_rows ON CONFLICT ("+q("", qp.key)+") "+conflict)
	if err != nil {
		return 0, err
	}
	match := make([]string, len(qp.key))
	for i, k := range qp.key {
		match[i] = "r." + ident(k) + " = f." + ident(k)
	}
	del, err := tx.Exec(ctx, "DELETE FROM "+qp.ref.Quoted()+" f WHERE f.tenant_id = $1 AND NOT EXISTS (SELECT 1 FROM af_reconcile_rows r WHERE "+
		strings.Join(match, " AND ")+")", tenant)
	if err != nil {
		return 0, err
	}
	return up.RowsAffected() + del.RowsAffected(), nil
}

// progress reports a phase while a step runs (the resync's steps may take
// a while with many rows).
func (s *subscriber) progress(res *fsm.SubscriberResult) {
	if s.report != nil {
		s.report(res)
	}
}
