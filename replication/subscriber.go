package replication

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// subscriberExec runs tenant-subscriber or global-subscriber tasks.
type subscriberExec struct {
	cfg  Config
	kind string
	m    *metrics
}

// Type is tenant-subscriber or global-subscriber.
func (e *subscriberExec) Type() string {
	if e.kind == fsm.KindGlobal {
		return fsm.TaskTypeGlobalSubscriber
	}
	return fsm.TaskTypeTenantSubscriber
}

// Run keeps the subscription of the spec in the mirror's database and
// reports its lag, errors and drift until ctx ends, or tears it down and
// returns when the spec is absent.
func (e *subscriberExec) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.SubscriberSpec
	if err := decodeSpec(t, &spec); err != nil {
		return err
	}
	if spec.Kind != e.kind || spec.Subscription == "" || spec.Publication == "" {
		return fmt.Errorf("task %s: spec of kind %q does not fit a %s executor", t.ID, spec.Kind, e.Type())
	}
	if spec.Resync && (!spec.FormerHome || spec.Kind != fsm.KindTenant) {
		return fmt.Errorf("task %s: resync is for a tenant's former home only (former_home must be set with it)", t.ID)
	}
	s := &subscriber{spec: spec, cfg: e.cfg, db: &localConn{dsn: e.cfg.DSN}, tail: newLogTail(spec.Subscription),
		log: e.cfg.Logger.Named("subscriber").With("task", t.ID), pendingPII: map[string]uint64{}, started: time.Now(),
		driftSince: map[string]int64{}, rlsSeen: map[string]bool{}, rlsRepaired: map[string]int64{}}
	s.report = func(r *fsm.SubscriberResult) { report(status(nil, false, r)) }
	defer s.close()
	defer e.m.forget(t.ID)
	every(ctx, e.cfg.Interval, func(ctx context.Context) (bool, bool) {
		res, done := s.step(ctx)
		if ctx.Err() != nil {
			return true, true
		}
		e.m.observeSubscriber(t.ID, &spec, res)
		report(status(res.Issues, done, res))
		return done, res.State == fsm.ReplStreaming && len(res.Issues) == 0
	})
	return nil
}

type subscriber struct {
	spec fsm.SubscriberSpec
	cfg  Config
	db   *localConn
	src  *pgx.Conn
	tail *logTail
	log  hclog.Logger

	plan        []plannedTable    // the source's tables as last validated
	pendingPII  map[string]uint64 // "schema.table.column" -> source LSN it may go after
	applyErrors int64
	seenCounts  bool
	lastHeard   time.Time
	started     time.Time
	driftSince  map[string]int64 // table -> when its current drift was first seen
	lagBytes    int64
	// sourcePII: the home's PII column types, as last read there.
	sourcePII   []fsm.PIIColumnType
	rlsSeen     map[string]bool  // tables whose probe found row-level security in place
	rlsRepaired map[string]int64 // table -> when rls last restored it
	// report, when set, reports a result while a step runs (resync.go).
	report func(*fsm.SubscriberResult)
}

func (s *subscriber) close() {
	s.db.close()
	s.dropSource()
}

func (s *subscriber) dropSource() {
	if s.src != nil {
		_ = s.src.Close(context.Background())
		s.src = nil
	}
}

// source returns a connection to the source region as the replication
// role, or an issue saying why there is none.
func (s *subscriber) source(ctx context.Context) (*pgx.Conn, *fsm.ReplicationIssue) {
	if s.spec.SourceDB == nil {
		return nil, &fsm.ReplicationIssue{Code: fsm.IssueEndpointUnknown, At: time.Now().UnixNano(),
			Message: "no agent of region " + s.spec.Source + " has reported its database endpoint yet"}
	}
	if s.src != nil && !s.src.IsClosed() {
		return s.src, nil
	}
	c, err := connectSource(ctx, s.spec.SourceDB, &s.cfg)
	if err != nil {
		is := unreachable("publisher", err)
		is.Message = fmt.Sprintf("cannot reach region %s's PostgreSQL at %s:%d as %s: %s", s.spec.Source,
			s.spec.SourceDB.Host, s.spec.SourceDB.Port, s.cfg.ReplicationUser, pgMessage(err))
		return nil, &is
	}
	s.src = c
	return c, nil
}

func (s *subscriber) step(ctx context.Context) (*fsm.SubscriberResult, bool) {
	res := &fsm.SubscriberResult{Subscription: s.spec.Subscription, At: time.Now().UnixNano(), LagBytes: s.lagBytes}
	conn, err := s.db.get(ctx)
	if err != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{unreachable("region", err)}
		res.LagSeconds = time.Since(s.heard()).Seconds()
		return res, false
	}
	if s.spec.Kind == fsm.KindTenant {
		// See handoff_guard.go: the check and the step are one.
		unlock, err := lockTenantStep(ctx, conn, s.spec.Tenant)
		if err != nil {
			s.db.drop()
			res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "take the tenant's step lock", err)}
			return res, false
		}
		defer unlock()
		h, err := readHandOff(ctx, conn, s.spec.Tenant)
		if err != nil {
			res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "read the tenant's hand-off record", err)}
			return res, false
		}
		if h != nil && h.covers(s.spec.TenantCreated, s.spec.Epoch) {
			return s.handedOff(ctx, conn, res, h)
		}
	}
	if s.spec.Ensure == fsm.EnsureAbsent {
		return s.teardown(ctx, conn, res)
	}
	// An old home back after a failover is fenced and reconciled before
	// it subscribes (resync.go).
	if s.spec.Resync && !s.resync(ctx, conn, res) {
		return res, false
	}
	var issues []fsm.ReplicationIssue
	src, is := s.source(ctx)
	if is != nil {
		issues = append(issues, *is)
	} else {
		issues = append(issues, s.converge(ctx, conn, src)...)
	}
	probeIssues := s.probe(ctx, conn, src, res)
	res.Issues = dedupe(append(issues, probeIssues...))
	if res.Resync != nil && res.State == fsm.ReplStreaming {
		res.Resync.Phase = fsm.ResyncStreaming
	}
	for i := range res.Issues {
		if res.Issues[i].Code == fsm.IssuePermissionDenied {
			res.Issues[i].Message += " (a mirror's agent needs a superuser role: PostgreSQL 15 lets only superusers own subscriptions)"
		}
	}
	return res, false
}

// dedupe drops repeated issues (same code and message).
func dedupe(issues []fsm.ReplicationIssue) []fsm.ReplicationIssue {
	seen := map[string]bool{}
	out := issues[:0]
	for _, is := range issues {
		k := is.Code + "\x00" + is.Message
		if !seen[k] {
			seen[k] = true
			out = append(out, is)
		}
	}
	return out
}

func (s *subscriber) heard() time.Time {
	if s.lastHeard.IsZero() {
		return s.started
	}
	return s.lastHeard
}

// converge validates the spec against the source (read only), prepares the
// mirror's tables, and keeps the subscription once the source publishes
// what the spec says. It changes nothing while the spec does not validate.
func (s *subscriber) converge(ctx context.Context, conn, src *pgx.Conn) []fsm.ReplicationIssue {
	v := &publisher{spec: fsm.PublisherSpec{Kind: s.spec.Kind, Tenant: s.spec.Tenant, Region: s.spec.Source, Tables: s.spec.Tables}}
	plan, bad, err := v.validate(ctx, src)
	if err != nil {
		s.dropSource()
		return []fsm.ReplicationIssue{issueFromErr("", "inspect the source's tables", err)}
	}
	if len(bad) > 0 {
		return []fsm.ReplicationIssue{{Code: fsm.IssueWaitingForPublisher, At: time.Now().UnixNano(),
			Message: "the spec does not validate against region " + s.spec.Source + ", so nothing is changed here: " + bad[0].Message}}
	}
	// Everything read from the source is untrusted: the column types the
	// mirror's DDL will name are this database's own (see resolveTypes).
	for i := range plan {
		cols, is := resolveTypes(ctx, conn, s.spec.Source, plan[i].ref.display(), plan[i].columns)
		if is != nil {
			return []fsm.ReplicationIssue{*is}
		}
		plan[i].columns = cols
	}
	s.plan = plan
	if s.spec.Kind == fsm.KindTenant {
		if home, err := s.isHomeHere(ctx, conn); err != nil || home {
			if err != nil {
				return []fsm.ReplicationIssue{issueFromErr("", "look for the tenant's publication", err)}
			}
			return []fsm.ReplicationIssue{{Code: fsm.IssueSQL, At: time.Now().UnixNano(),
				Message: "this database publishes tenant " + s.spec.Tenant + " (it is its home); it cannot also mirror it"}}
		}
	}
	sub, err := readSubscription(ctx, conn, s.spec.Subscription)
	if err != nil {
		return []fsm.ReplicationIssue{issueFromErr("", "read the subscription", err)}
	}
	for _, pt := range plan {
		if is := s.prepareTable(ctx, conn, src, pt, sub); is != nil {
			return []fsm.ReplicationIssue{*is}
		}
	}
	pubOK, why, err := s.publicationReady(ctx, src)
	if err != nil {
		s.dropSource()
		return []fsm.ReplicationIssue{issueFromErr("", "read the source's publication", err)}
	}
	if !pubOK {
		return []fsm.ReplicationIssue{{Code: fsm.IssueWaitingForPublisher, Message: why, At: time.Now().UnixNano()}}
	}
	if is := s.subscription(ctx, conn, src, sub); is != nil {
		return []fsm.ReplicationIssue{*is}
	}
	return nil
}

// isHomeHere reports whether this database publishes the tenant itself.
func (s *subscriber) isHomeHere(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname = $1`, s.spec.Publication).Scan(&n)
	return n > 0, err
}

// publicationReady reports whether the source's publication holds exactly
// the spec's tables and, for a tenant, none of its PII columns.
func (s *subscriber) publicationReady(ctx context.Context, src *pgx.Conn) (bool, string, error) {
	exists, tables, err := readPublication(ctx, src, s.spec.Publication)
	if err != nil {
		return false, "", err
	}
	if !exists {
		return false, fmt.Sprintf("publication %s does not exist in region %s yet (see the publisher's status)", s.spec.Publication, s.spec.Source), nil
	}
	if len(tables) != len(s.spec.Tables) {
		return false, fmt.Sprintf("publication %s in region %s publishes %d tables, the spec names %d: waiting for the publisher", s.spec.Publication, s.spec.Source, len(tables), len(s.spec.Tables)), nil
	}
	for _, tt := range s.spec.Tables {
		pt, ok := tables[parseTable(tt.Name).String()]
		if !ok {
			return false, fmt.Sprintf("publication %s does not publish %s yet: waiting for the publisher", s.spec.Publication, tt.Name), nil
		}
		for _, c := range tt.PIIColumns {
			if slices.Contains(pt.Columns, c) {
				return false, fmt.Sprintf("publication %s still publishes PII column %s of %s: waiting for the publisher to drop it", s.spec.Publication, c, tt.Name), nil
			}
		}
	}
	return true, "", nil
}

// keyColumns returns the columns of a planned table's replica identity
// key, or nil for REPLICA IDENTITY FULL.
func keyColumns(pt plannedTable) []string {
	name := pt.key
	if name == "" {
		name = pt.info.RIIndex
	}
	for _, ix := range pt.info.Indexes {
		if (name != "" && ix.Name == name) || (name == "" && ix.Primary) {
			return ix.Columns
		}
	}
	return nil
}

// prepareTable creates a missing mirror table (without PII columns), adds
// columns the source publishes, removes newly marked PII columns once it
// is safe, and sets up row-level security.
func (s *subscriber) prepareTable(ctx context.Context, conn, src *pgx.Conn, pt plannedTable, sub *subscriptionRow) *fsm.ReplicationIssue {
	name := pt.ref.display()
	fail := func(what string, err error) *fsm.ReplicationIssue {
		is := issueFromErr(name, what, err)
		return &is
	}
	local, err := inspectTable(ctx, conn, pt.ref)
	if err != nil {
		return fail("inspect "+name, err)
	}
	if !local.Exists {
		if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+ident(pt.ref.Schema)); err != nil {
			return fail("create schema "+pt.ref.Schema, err)
		}
		if err := createMirrorTable(ctx, conn, pt); err != nil {
			return fail("create table "+name, err)
		}
		s.log.Info("created mirror table", "table", pt.ref.String(), "columns", len(pt.columns))
		if local, err = inspectTable(ctx, conn, pt.ref); err != nil {
			return fail("inspect "+name, err)
		}
	}
	for _, c := range pt.columns {
		if local.column(c.Name) == nil {
			if _, err := conn.Exec(ctx, "ALTER TABLE "+pt.ref.Quoted()+" ADD COLUMN IF NOT EXISTS "+ident(c.Name)+" "+c.Type); err != nil {
				return fail("add column "+c.Name, err)
			}
			s.log.Info("added a column the source publishes", "table", pt.ref.String(), "column", c.Name)
		}
	}
	if s.spec.Kind != fsm.KindTenant {
		return nil
	}
	if is := s.removePII(ctx, conn, src, pt, local, sub); is != nil {
		return is
	}
	return s.rls(ctx, conn, pt, local)
}

// mirrorMarker is the comment on a table the replicator created as a
// mirror. Only such a table may lose a PII column: any other table may be
// the home table of a tenant homed in this region, whose PII column is
// that tenant's data.
const mirrorMarker = "atomfed: mirror table created by the replicator"

// createMirrorTable creates a missing mirror table and marks it as the
// replicator's, in one transaction.
func createMirrorTable(ctx context.Context, conn *pgx.Conn, pt plannedTable) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, createTableStmt(pt)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "COMMENT ON TABLE "+pt.ref.Quoted()+" IS "+quoteLiteral(mirrorMarker)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func createTableStmt(pt plannedTable) string {
	defs := make([]string, 0, len(pt.columns)+1)
	for _, c := range pt.columns {
		d := ident(c.Name) + " " + c.Type
		if c.NotNull {
			d += " NOT NULL"
		}
		defs = append(defs, d)
	}
	if key := keyColumns(pt); len(key) > 0 {
		q := make([]string, len(key))
		for i, k := range key {
			q[i] = ident(k)
		}
		defs = append(defs, "PRIMARY KEY ("+strings.Join(q, ", ")+")")
	}
	return "CREATE TABLE IF NOT EXISTS " + pt.ref.Quoted() + " (" + strings.Join(defs, ", ") + ")"
}

// removePII makes the tenant's PII columns vanish from the mirror. While a
// subscription runs, the column may still arrive in changes decoded before
// the publication dropped it, so the column goes only once the
// subscription has caught up with a source position taken after the
// publication stopped carrying it. A table that this region also
// publishes (it is some other tenant's home table), or that may be one
// (see sharedTable), keeps the column, and the tenant's values in it are
// cleared instead.
//
// A former home keeps its PII columns and values: they are the tenant's
// PII at its original home, which exists nowhere else.
func (s *subscriber) removePII(ctx context.Context, conn, src *pgx.Conn, pt plannedTable, local *tableInfo, sub *subscriptionRow) *fsm.ReplicationIssue {
	if s.spec.FormerHome {
		return nil
	}
	var pii []string
	for _, tt := range s.spec.Tables {
		if parseTable(tt.Name) == pt.ref {
			pii = tt.PIIColumns
		}
	}
	for _, c := range pii {
		if local.column(c) == nil {
			continue
		}
		key := pt.ref.String() + "." + c
		if sub != nil {
			if ready, _, err := s.publicationReady(ctx, src); err != nil || !ready {
				continue // the publication still carries it: wait
			}
			lsn, seen := s.pendingPII[key]
			if !seen {
				var cur string
				if err := src.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&cur); err != nil {
					continue
				}
				s.pendingPII[key], _ = parseLSN(cur)
				continue
			}
			if applied, ok := s.appliedLSN(ctx, conn, sub.OID); !ok || applied < lsn {
				continue
			}
		}
		published, err := publishedHere(ctx, conn, pt.ref)
		if err == nil && !published {
			published, err = s.sharedTable(ctx, conn, pt.ref, sub)
		}
		if err != nil {
			is := issueFromErr(pt.ref.display(), "look for local publications", err)
			return &is
		}
		stmt := "ALTER TABLE " + pt.ref.Quoted() + " DROP COLUMN IF EXISTS " + ident(c)
		if published {
			stmt = "UPDATE " + pt.ref.Quoted() + " SET " + ident(c) + " = NULL WHERE tenant_id = " + quoteLiteral(s.spec.Tenant) + " AND " + ident(c) + " IS NOT NULL"
		}
		tag, err := conn.Exec(ctx, stmt)
		if err != nil {
			is := issueFromErr(pt.ref.display(), "remove PII column "+c, err)
			return &is
		}
		delete(s.pendingPII, key)
		// A shared table keeps the column, so this runs again at every
		// other step; say so only when it changed something.
		if !published || tag.RowsAffected() > 0 {
			s.log.Info("removed a PII column from the mirror", "table", pt.ref.String(), "column", c, "cleared_only", published, "rows_cleared", tag.RowsAffected())
		}
	}
	return nil
}

// sharedTable reports whether a mirror table that no publication here
// lists may still be another tenant's home table, whose PII column is that
// tenant's data and must stay: a table this subscriber found already there
// before its subscription existed (the other tenant's publisher may not
// have run yet), one the replicator did not create (see mirrorMarker), or
// one that holds rows of other tenants.
func (s *subscriber) sharedTable(ctx context.Context, conn *pgx.Conn, ref tableRef, sub *subscriptionRow) (bool, error) {
	if sub == nil {
		return true, nil
	}
	var comment string
	if err := conn.QueryRow(ctx, `SELECT coalesce(obj_description(to_regclass($1), 'pg_class'), '')`, ref.Quoted()).Scan(&comment); err != nil {
		return false, err
	}
	if comment != mirrorMarker {
		return true, nil
	}
	// Range conditions, so that the (tenant_id, ...) key index answers
	// without reading the tenant's own rows.
	var others bool
	q := ref.Quoted()
	err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+q+" WHERE tenant_id < $1) OR EXISTS (SELECT 1 FROM "+q+" WHERE tenant_id > $1) OR EXISTS (SELECT 1 FROM "+q+" WHERE tenant_id IS NULL)",
		s.spec.Tenant).Scan(&others)
	return others, err
}

func publishedHere(ctx context.Context, conn *pgx.Conn, ref tableRef) (bool, error) {
	var n int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication_tables WHERE schemaname = $1 AND tablename = $2`, ref.Schema, ref.Name).Scan(&n)
	return n > 0, err
}

// appliedLSN is the source position of the last message the subscription's
// apply worker received, if it runs. The worker applies messages one at a
// time in order, so everything before that position has been applied.
func (s *subscriber) appliedLSN(ctx context.Context, conn *pgx.Conn, subOID uint32) (uint64, bool) {
	var lsn *string
	err := conn.QueryRow(ctx, `SELECT received_lsn::text FROM pg_stat_subscription WHERE subid = $1 AND relid IS NULL`, subOID).Scan(&lsn)
	if err != nil || lsn == nil {
		return 0, false
	}
	return parseLSN(*lsn)
}

// tenantPolicyUsing is the tenant policy's filter: an application session
// sees the rows of the tenant it names in app.tenant_id, and none when it
// names none.
const tenantPolicyUsing = "tenant_id = current_setting('app.tenant_id', true)"

// tenantPolicyQual matches tenantPolicyUsing as PostgreSQL deparses it
// (with a cast of tenant_id when it is not text).
var tenantPolicyQual = regexp.MustCompile(`^\(\(?tenant_id\)?(::[a-z ]+)? = current_setting\('app\.tenant_id'::text, true\)\)$`)

// readRLS reads a mirror table's row-level security: the relation flags
// and every policy on it; hasPolicy says whether a policy of the tenant
// policy's name exists, whatever it says. The policies a publisher here
// gives the replication role (user) to read a published tenant's rows, if
// the table is also a home table, widen nothing for a session and are
// left out.
func readRLS(ctx context.Context, conn *pgx.Conn, local *tableInfo, user string) (st *fsm.RLSState, hasPolicy bool, err error) {
	st = &fsm.RLSState{Enabled: local.RLS, Forced: local.ForceRLS}
	rows, err := conn.Query(ctx, `SELECT polname::text, polpermissive, polcmd::text, polroles = '{0}'::oid[],
			coalesce(pg_get_expr(polqual, polrelid), ''),
			polcmd = 'r' AND polroles = ARRAY[(SELECT oid FROM pg_roles WHERE rolname = $2)]
		FROM pg_policy WHERE polrelid = $1 ORDER BY polname`, local.OID, user)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var name, cmd, qual string
		var permissive, public, replicatorOnly bool
		if err := rows.Scan(&name, &permissive, &cmd, &public, &qual, &replicatorOnly); err != nil {
			return nil, false, err
		}
		switch {
		case replicatorOnly && name != fsm.TenantPolicyName:
		case name == fsm.TenantPolicyName:
			hasPolicy, st.Policy = true, qual
			st.PolicyOK = permissive && cmd == "*" && public && tenantPolicyQual.MatchString(qual)
		case permissive:
			st.OtherPolicies = append(st.OtherPolicies, name)
		}
	}
	return st, hasPolicy, rows.Err()
}

// rls makes the mirror table's row-level security what policy P5 asks:
// enabled, forced, and the tenant policy in place. Other policies are the
// operator's: they are reported, not dropped. A table whose security was
// in place before and is found lost is restored, logged and reported.
func (s *subscriber) rls(ctx context.Context, conn *pgx.Conn, pt plannedTable, local *tableInfo) *fsm.ReplicationIssue {
	if skipRLS() {
		return nil
	}
	cur, hasPolicy, err := readRLS(ctx, conn, local, s.cfg.ReplicationUser)
	if err != nil {
		is := issueFromErr(pt.ref.display(), "read row-level security", err)
		return &is
	}
	var stmts []string
	if !cur.Enabled {
		stmts = append(stmts, "ALTER TABLE "+pt.ref.Quoted()+" ENABLE ROW LEVEL SECURITY")
	}
	if !cur.Forced {
		stmts = append(stmts, "ALTER TABLE "+pt.ref.Quoted()+" FORCE ROW LEVEL SECURITY")
	}
	if !cur.PolicyOK {
		if hasPolicy {
			stmts = append(stmts, "DROP POLICY IF EXISTS "+fsm.TenantPolicyName+" ON "+pt.ref.Quoted())
		}
		stmts = append(stmts, "CREATE POLICY "+fsm.TenantPolicyName+" ON "+pt.ref.Quoted()+" USING ("+tenantPolicyUsing+")")
	}
	if slices.Contains(cur.OtherPolicies, othersPolicy) {
		// A publisher here enabled row-level security on this home
		// table and let every other role see all of it; as a mirror
		// table too, sessions see their tenant's rows only.
		stmts = append(stmts, "DROP POLICY IF EXISTS "+othersPolicy+" ON "+pt.ref.Quoted())
	}
	if len(stmts) == 0 {
		return nil
	}
	if err := execTx(ctx, conn, stmts); err != nil {
		is := issueFromErr(pt.ref.display(), "row-level security", err)
		return &is
	}
	if s.rlsSeen[pt.ref.String()] {
		s.rlsRepaired[pt.ref.String()] = time.Now().UnixNano()
		s.log.Warn("restored the row-level security of a mirror table, which had been changed outside atomfed",
			"table", pt.ref.String(), "found", strings.Join(cur.Problems(), "; "))
	}
	return nil
}

// execTx runs statements in one transaction.
func execTx(ctx context.Context, conn *pgx.Conn, stmts []string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	for _, st := range stmts {
		if _, err := tx.Exec(ctx, st); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// subscriptionRow is a row of pg_subscription.
type subscriptionRow struct {
	OID          uint32
	Enabled      bool
	ConnInfo     string
	SyncCommit   string
	Publications []string
}

func readSubscription(ctx context.Context, conn *pgx.Conn, name string) (*subscriptionRow, error) {
	var r subscriptionRow
	err := conn.QueryRow(ctx, `SELECT oid, subenabled, subconninfo, subsynccommit, subpublications::text[] FROM pg_subscription
		WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, name).
		Scan(&r.OID, &r.Enabled, &r.ConnInfo, &r.SyncCommit, &r.Publications)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *subscriber) connInfo() string {
	return sourceConnString(s.spec.SourceDB, &s.cfg)
}

// sameSource reports whether two of our connection strings reach the same
// database (host, port and dbname come first in them).
func sameSource(a, b string) bool {
	key := func(c string) string {
		f := strings.Fields(c)
		if len(f) < 3 {
			return c
		}
		return strings.Join(f[:3], " ")
	}
	return key(a) == key(b)
}

func (s *subscriber) syncCommit() string {
	if s.spec.Sync {
		return "on"
	}
	return "off"
}

// subscription creates the subscription or brings it in line with the
// spec: connection, synchronous commit, publication, enabled, and the set
// of tables (a refresh copies tables added to the publication).
func (s *subscriber) subscription(ctx context.Context, conn, src *pgx.Conn, sub *subscriptionRow) *fsm.ReplicationIssue {
	fail := func(what string, err error) *fsm.ReplicationIssue {
		is := issueFromErr("", what, err)
		return &is
	}
	name := ident(s.spec.Subscription)
	if (s.spec.FormerHome || s.spec.HandOff) && (sub == nil || !sameSource(sub.ConnInfo, s.connInfo())) {
		// Never re-created with a copy, and nothing purged first: see
		// former_home.go.
		if err := s.subscribeFormerHome(ctx, conn, src); err != nil {
			return s.handOffIssue(err)
		}
		if sub == nil {
			return nil
		}
	}
	if sub != nil && sub.ConnInfo != s.connInfo() {
		if !sameSource(sub.ConnInfo, s.connInfo()) {
			// The source moved: a slot there would not know this
			// subscription, so it starts over with a fresh copy.
			s.log.Warn("the source's endpoint changed; re-creating the subscription")
			if err := dropSubscription(ctx, conn, s.spec.Subscription); err != nil {
				return fail("drop the subscription to re-create it", err)
			}
			sub = nil
		} else if _, err := conn.Exec(ctx, "ALTER SUBSCRIPTION "+name+" CONNECTION "+quoteLiteral(s.connInfo())); err != nil {
			return fail("change the subscription's connection (role or passfile)", err)
		}
	}
	if sub != nil && !s.spec.FormerHome && !s.spec.HandOff {
		gone, err := slotMissing(ctx, src, s.spec.Subscription)
		if err != nil {
			return fail("look for the subscription's slot on the source", err)
		}
		if gone {
			// The source lost the slot (its database was rebuilt from a
			// physical backup, which holds no replication slot): the
			// subscription can never stream again. A mirror holds no
			// PII and nothing of its own, so it starts over: purge and
			// a fresh copy from a new slot.
			s.log.Warn("the subscription's slot is gone from the source (rebuilt?); re-creating the subscription with a fresh copy", "slot", s.spec.Subscription)
			if err := dropSubscription(ctx, conn, s.spec.Subscription); err != nil {
				return fail("drop the subscription whose slot is gone", err)
			}
			sub = nil
		}
	}
	if sub == nil {
		if err := s.purge(ctx, conn, s.plan); err != nil {
			return fail("clear the tenant's rows before the initial copy", err)
		}
		if err := dropStaleSlot(ctx, src, s.spec.Subscription); err != nil {
			return fail("drop a stale slot on the source", err)
		}
		// The slot is made on the source first, outside any transaction
		// here. CREATE SUBSCRIPTION making it itself would hold a
		// transaction open on this cluster while the source waits for its
		// own open transactions to end; regions mirroring each other in a
		// cycle then wait on each other until the statement timeout.
		if _, err := src.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, s.spec.Subscription); err != nil {
			return fail("create the replication slot "+s.spec.Subscription+" on the source", err)
		}
		_, err := conn.Exec(ctx, "CREATE SUBSCRIPTION "+name+" CONNECTION "+quoteLiteral(s.connInfo())+
			" PUBLICATION "+ident(s.spec.Publication)+" WITH (copy_data = true, create_slot = false, slot_name = "+quoteLiteral(s.spec.Subscription)+
			", synchronous_commit = '"+s.syncCommit()+"')")
		if err != nil {
			// No subscription holds the slot: drop it rather than leave an
			// orphan that keeps WAL on the source.
			if derr := dropStaleSlot(ctx, src, s.spec.Subscription); derr != nil {
				s.log.Warn("could not drop the slot of a subscription that failed to be created; the publisher drops slots no subscriber holds", "slot", s.spec.Subscription, "error", derr)
			}
			return fail("create subscription "+s.spec.Subscription, err)
		}
		s.log.Info("subscription created", "subscription", s.spec.Subscription, "source", s.spec.Source)
		return nil
	}
	var stmts []string
	if sub.SyncCommit != s.syncCommit() {
		stmts = append(stmts, "ALTER SUBSCRIPTION "+name+" SET (synchronous_commit = '"+s.syncCommit()+"')")
	}
	if len(sub.Publications) != 1 || sub.Publications[0] != s.spec.Publication {
		stmts = append(stmts, "ALTER SUBSCRIPTION "+name+" SET PUBLICATION "+ident(s.spec.Publication)+" WITH (refresh = false)")
	}
	if !sub.Enabled {
		stmts = append(stmts, "ALTER SUBSCRIPTION "+name+" ENABLE")
	}
	for _, st := range stmts {
		if _, err := conn.Exec(ctx, st); err != nil {
			return fail("alter subscription", err)
		}
	}
	return s.refresh(ctx, conn, sub)
}

// refresh makes the subscription's tables those of the publication:
// tables added get the tenant's stale rows (a global table's whole copy)
// cleared before their copy, tables removed lose the tenant's rows after.
func (s *subscriber) refresh(ctx context.Context, conn *pgx.Conn, sub *subscriptionRow) *fsm.ReplicationIssue {
	rels, err := subscriptionRels(ctx, conn, sub.OID)
	if err != nil {
		is := issueFromErr("", "read the subscription's tables", err)
		return &is
	}
	want := map[string]bool{}
	var added []plannedTable
	for _, pt := range s.plan {
		want[pt.ref.String()] = true
		if _, ok := rels[pt.ref.String()]; !ok {
			added = append(added, pt)
		}
	}
	var removed []tableRef
	for k := range rels {
		if !want[k] {
			removed = append(removed, parseTable(k))
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return nil
	}
	if err := s.purge(ctx, conn, added); err != nil {
		is := issueFromErr("", "clear the tenant's rows of an added table", err)
		return &is
	}
	// A former home holds the tenant's rows of every table it had as home;
	// a copy would collide with them (see former_home.go).
	copyData := "true"
	if s.spec.FormerHome {
		copyData = "false"
	}
	if _, err := conn.Exec(ctx, "ALTER SUBSCRIPTION "+ident(s.spec.Subscription)+" REFRESH PUBLICATION WITH (copy_data = "+copyData+")"); err != nil {
		is := issueFromErr("", "refresh the subscription", err)
		return &is
	}
	var gone []plannedTable
	for _, r := range removed {
		gone = append(gone, plannedTable{ref: r})
	}
	if s.spec.Kind != fsm.KindTenant {
		gone = nil // a global table that is no longer replicated keeps its copy
	}
	if err := s.purge(ctx, conn, gone); err != nil {
		is := issueFromErr("", "clear the tenant's rows of a removed table", err)
		return &is
	}
	s.log.Info("subscription refreshed", "added", len(added), "removed", len(removed))
	return nil
}

// purge removes what the subscription would copy again: the tenant's rows
// (a tenant mirror), or the whole table (a global table's copy, which the
// writer's replaces).
// A former home purges nothing: its rows are the tenant's own, PII
// included (see former_home.go).
func (s *subscriber) purge(ctx context.Context, conn *pgx.Conn, tables []plannedTable) error {
	if s.spec.FormerHome {
		return nil
	}
	for _, pt := range tables {
		ti, err := inspectTable(ctx, conn, pt.ref)
		if err != nil {
			return err
		}
		if !ti.Exists {
			continue
		}
		stmt := "TRUNCATE " + pt.ref.Quoted()
		if s.spec.Kind == fsm.KindTenant {
			if ti.column("tenant_id") == nil {
				continue
			}
			stmt = "DELETE FROM " + pt.ref.Quoted() + " WHERE tenant_id = " + quoteLiteral(s.spec.Tenant)
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

func subscriptionRels(ctx context.Context, conn *pgx.Conn, oid uint32) (map[string]string, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname::text, c.relname::text, r.srsubstate::text FROM pg_subscription_rel r
		JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.srsubid = $1`, oid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var ref tableRef
		var st string
		if err := rows.Scan(&ref.Schema, &ref.Name, &st); err != nil {
			return nil, err
		}
		out[ref.String()] = st
	}
	return out, rows.Err()
}

// dropStaleSlot drops an inactive slot of the subscription's name that no
// subscription holds: left on the source by an earlier incarnation
// (dropped without reaching the source), where reusing it would replay
// changes on top of a fresh copy, or made for a CREATE SUBSCRIPTION that
// then failed.
func dropStaleSlot(ctx context.Context, src *pgx.Conn, name string) error {
	var active bool
	err := src.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active)
	if err == pgx.ErrNoRows {
		return nil
	}
	if err != nil {
		return err
	}
	if active {
		return fmt.Errorf("slot %s on the source is in use by another subscriber", name)
	}
	_, err = src.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name)
	return err
}

// slotMissing reports whether the source has no replication slot name.
func slotMissing(ctx context.Context, src *pgx.Conn, name string) (bool, error) {
	var ok bool
	err := src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name).Scan(&ok)
	return !ok, err
}

// dropSubscription drops a subscription and its slot on the source; when
// the source cannot be reached, it detaches the slot first and leaves it
// to the publisher, which drops slots no subscriber holds.
func dropSubscription(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, "DROP SUBSCRIPTION IF EXISTS "+ident(name)); err == nil {
		return nil
	}
	_, err := detachSubscription(ctx, conn, name)
	return err
}

// detachSubscription drops a subscription without reaching its source:
// it disables it, lets go of its slot (slot_name = NONE) and drops it, so
// the slot stays on the source. Each statement is safe to run again, so
// a detach cut short is finished by the next one. It reports whether
// there was a subscription to drop.
func detachSubscription(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
	sub, err := readSubscription(ctx, conn, name)
	if err != nil || sub == nil {
		return false, err
	}
	q := ident(name)
	for _, st := range []string{"ALTER SUBSCRIPTION " + q + " DISABLE", "ALTER SUBSCRIPTION " + q + " SET (slot_name = NONE)", "DROP SUBSCRIPTION IF EXISTS " + q} {
		if _, err := conn.Exec(ctx, st); err != nil {
			return false, err
		}
	}
	return true, nil
}

// teardown drops the subscription and, for a tenant, the tenant's rows
// from the mirror's tables (a stale copy must not outlive the mirror),
// except at a former home, whose rows are the tenant's own (see purge).
func (s *subscriber) teardown(ctx context.Context, conn *pgx.Conn, res *fsm.SubscriberResult) (*fsm.SubscriberResult, bool) {
	fail := func(what string, err error) (*fsm.SubscriberResult, bool) {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", what, err)}
		return res, false
	}
	if err := dropSubscription(ctx, conn, s.spec.Subscription); err != nil {
		return fail("drop subscription", err)
	}
	if s.spec.Kind == fsm.KindTenant {
		home, err := s.isHomeHere(ctx, conn)
		if err != nil {
			return fail("look for the tenant's publication", err)
		}
		if !home {
			var tables []plannedTable
			for _, tt := range s.spec.Tables {
				tables = append(tables, plannedTable{ref: parseTable(tt.Name)})
			}
			if err := s.purge(ctx, conn, tables); err != nil {
				return fail("clear the tenant's rows", err)
			}
		}
	}
	if src, is := s.source(ctx); is == nil {
		_ = dropStaleSlot(ctx, src, s.spec.Subscription) // best effort; the publisher drops orphans too
	}
	s.log.Info("subscription torn down", "subscription", s.spec.Subscription)
	res.State = fsm.ReplRemoved
	return res, true
}
