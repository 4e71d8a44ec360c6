package replication

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// probe measures the subscription: its worker, tables, errors, lag and
// schema drift.
func (s *subscriber) probe(ctx context.Context, conn, src *pgx.Conn, res *fsm.SubscriberResult) []fsm.ReplicationIssue {
	now := time.Now()
	var issues []fsm.ReplicationIssue
	add := func(code, table, msg string) {
		issues = append(issues, fsm.ReplicationIssue{Code: code, Table: table, Message: msg, At: now.UnixNano()})
	}
	sub, err := readSubscription(ctx, conn, s.spec.Subscription)
	if err != nil {
		s.db.drop()
		res.State = fsm.ReplError
		return []fsm.ReplicationIssue{issueFromErr("", "read the subscription", err)}
	}
	res.Tables = s.tables(ctx, conn, sub)
	for _, t := range res.Tables {
		if t.Drift != "" {
			add(fsm.IssueSchemaDrift, t.Name, "schema drift in "+t.Name+": "+t.Drift)
		}
	}
	if sub == nil {
		res.State = fsm.ReplWaiting
		res.LagSeconds = now.Sub(s.heard()).Seconds()
		return issues
	}
	var pid *int
	var receipt *time.Time
	err = conn.QueryRow(ctx, `SELECT pid, last_msg_receipt_time FROM pg_stat_subscription WHERE subid = $1 AND relid IS NULL`, sub.OID).Scan(&pid, &receipt)
	if err != nil && err != pgx.ErrNoRows {
		add(fsm.IssueSQL, "", "read pg_stat_subscription: "+pgMessage(err))
	}
	running := pid != nil
	if running {
		s.lastHeard = now
	}
	_ = conn.QueryRow(ctx, `SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats WHERE subid = $1`, sub.OID).
		Scan(&res.ApplyErrors, &res.SyncErrors)
	workerPID := 0
	if pid != nil {
		workerPID = *pid
	}
	res.LastError = s.tail.poll(ctx, conn, sub.OID, workerPID)
	failing := s.seenCounts && res.ApplyErrors+res.SyncErrors > s.applyErrors
	s.applyErrors, s.seenCounts = res.ApplyErrors+res.SyncErrors, true
	syncing := false
	for _, t := range res.Tables {
		syncing = syncing || (t.State != "" && t.State != "ready")
	}
	switch {
	case !sub.Enabled:
		res.State = fsm.ReplDown
		add(fsm.IssueSubscriptionDown, "", "subscription "+s.spec.Subscription+" is disabled")
	case !running:
		res.State = fsm.ReplDown
		msg := "the subscription's apply worker is not running"
		if res.LastError != nil {
			msg += "; its last error: " + res.LastError.Message
		}
		add(fsm.IssueSubscriptionDown, "", msg)
	case syncing:
		res.State = fsm.ReplSyncing
	default:
		res.State = fsm.ReplStreaming
	}
	if (failing || !running) && res.LastError != nil && res.LastError.Code != fsm.IssueSubscriptionDown {
		issues = append(issues, *res.LastError)
	} else if failing {
		add(fsm.IssueApplyError, "", fmt.Sprintf("the subscription's workers failed %d times (apply %d, sync %d); see the mirror's PostgreSQL log",
			res.ApplyErrors+res.SyncErrors, res.ApplyErrors, res.SyncErrors))
	}
	// The applied position: the origin moves with every transaction of
	// the tenant applied here (not flushed first: a look, not a promise).
	var applied *string
	if err := conn.QueryRow(ctx, `SELECT pg_replication_origin_progress($1, false)::text`, fmt.Sprintf("pg_%d", sub.OID)).Scan(&applied); err == nil && applied != nil && *applied != "0/0" {
		res.AppliedLSN = *applied
	}
	s.lag(ctx, src, res, running, now)
	// The home's PII column types, kept from the last look that could
	// read them (a failover needs them once the home is gone).
	if src != nil && s.spec.Kind == fsm.KindTenant {
		if pii, err := HomePIIColumns(ctx, src, s.spec.Tables); err == nil {
			s.sourcePII = nil
			for _, c := range pii {
				s.sourcePII = append(s.sourcePII, fsm.PIIColumnType(c))
			}
		}
	}
	res.SourcePII = s.sourcePII
	return issues
}

// lag measures the subscription's lag on the source: bytes from its slot
// (pg_replication_slots), seconds from the sender's replay lag
// (pg_stat_replication), 0 when caught up; while the worker is down, the
// time since the mirror last streamed.
func (s *subscriber) lag(ctx context.Context, src *pgx.Conn, res *fsm.SubscriberResult, running bool, now time.Time) {
	if !running {
		res.LagSeconds = now.Sub(s.heard()).Seconds()
	}
	if src == nil {
		res.LagBytes = s.lagBytes
		return
	}
	var bytes *int64
	err := src.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1`,
		s.spec.Subscription).Scan(&bytes)
	if err != nil && err != pgx.ErrNoRows {
		s.dropSource()
		return
	}
	if bytes != nil {
		s.lagBytes, res.LagBytes = *bytes, *bytes
	}
	if !running {
		return
	}
	var replay *float64
	err = src.QueryRow(ctx, `SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication WHERE application_name = $1 ORDER BY backend_start DESC LIMIT 1`,
		s.spec.Subscription).Scan(&replay)
	if err == nil && replay != nil {
		res.LagSeconds = *replay
	}
}

// tables reports each table's digest against the source's and its state
// in the subscription.
func (s *subscriber) tables(ctx context.Context, conn *pgx.Conn, sub *subscriptionRow) []fsm.TableState {
	var rels map[string]string
	if sub != nil {
		rels, _ = subscriptionRels(ctx, conn, sub.OID)
	}
	byRef := map[tableRef]plannedTable{}
	for _, pt := range s.plan {
		byRef[pt.ref] = pt
	}
	var out []fsm.TableState
	for _, tt := range s.spec.Tables {
		ref := parseTable(tt.Name)
		ts := fsm.TableState{Name: ref.display()}
		local, err := inspectTable(ctx, conn, ref)
		if err == nil && local.Exists {
			ts.Digest = digest(local.Columns)
		}
		if pt, ok := byRef[ref]; ok {
			ts.SourceDigest = digest(pt.columns)
			if err == nil && local.Exists {
				// PII columns still here are removePII's business, not drift.
				var cols []column
				for _, c := range local.Columns {
					if !slices.Contains(tt.PIIColumns, c.Name) {
						cols = append(cols, c)
					}
				}
				ts.Digest = digest(cols)
				ts.Drift = drift(cols, pt.columns, s.spec.Source)
			}
		}
		if st, ok := rels[ref.String()]; ok {
			ts.State = relState(st)
		}
		if s.spec.Kind == fsm.KindTenant && err == nil && local.Exists {
			ts.RLS = s.observeRLS(ctx, conn, ref, local)
		}
		if ts.Drift == "" {
			delete(s.driftSince, ts.Name)
		} else {
			if s.driftSince[ts.Name] == 0 {
				s.driftSince[ts.Name] = time.Now().UnixNano()
			}
			ts.DriftSince = s.driftSince[ts.Name]
		}
		out = append(out, ts)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func relState(s string) string {
	switch s {
	case "r":
		return "ready"
	case "i":
		return "init"
	case "d":
		return "copying"
	case "f", "s":
		return "syncing"
	}
	return s
}

// observeRLS reads a tenant mirror table's row-level security for the
// report (policy P5). A table found in order is remembered, so that rls
// can tell a lost setting (restored and reported) from a first set-up.
func (s *subscriber) observeRLS(ctx context.Context, conn *pgx.Conn, ref tableRef, local *tableInfo) *fsm.RLSState {
	st, _, err := readRLS(ctx, conn, local, s.cfg.ReplicationUser)
	if err != nil {
		return nil
	}
	st.RepairedAt = s.rlsRepaired[ref.String()]
	if st.Enabled && st.Forced && st.PolicyOK {
		s.rlsSeen[ref.String()] = true
	}
	return st
}
