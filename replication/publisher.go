package replication

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// publisherExec runs tenant-publisher or global-publisher tasks.
type publisherExec struct {
	cfg  Config
	kind string
	m    *metrics
}

// Type is tenant-publisher or global-publisher.
func (p *publisherExec) Type() string {
	if p.kind == fsm.KindGlobal {
		return fsm.TaskTypeGlobalPublisher
	}
	return fsm.TaskTypeTenantPublisher
}

// Run keeps the publication of the spec in the region's database until
// ctx ends, or tears it down and returns when the spec is absent.
func (p *publisherExec) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.PublisherSpec
	if err := decodeSpec(t, &spec); err != nil {
		return err
	}
	if spec.Kind != p.kind || spec.Publication == "" || spec.SlotPrefix == "" {
		return fmt.Errorf("task %s: spec of kind %q with publication %q does not fit a %s executor", t.ID, spec.Kind, spec.Publication, p.Type())
	}
	pub := &publisher{spec: spec, cfg: p.cfg, db: &localConn{dsn: p.cfg.DSN}, log: p.cfg.Logger.Named("publisher").With("task", t.ID)}
	defer pub.db.close()
	defer p.m.forget(t.ID)
	name := spec.Tenant
	if p.kind == fsm.KindGlobal {
		name = spec.Region
	}
	every(ctx, p.cfg.Interval, func(ctx context.Context) (bool, bool) {
		res, done := pub.step(ctx)
		if ctx.Err() != nil {
			return true, true
		}
		p.m.observeIssues(t.ID, p.kind, name, spec.Region, res.Issues)
		report(status(res.Issues, done, res))
		return done, res.State == fsm.ReplReady && len(res.Issues) == 0
	})
	return nil
}

type publisher struct {
	spec fsm.PublisherSpec
	cfg  Config
	db   *localConn
	log  hclog.Logger
	// warn collects, during a step, what keeps the replication role from
	// being limited to what is published without stopping replication
	// (see grants.go); the step reports it.
	warn []fsm.ReplicationIssue
	// filters remembers the row filters this run set, as PostgreSQL
	// deparsed them, to recognise its own publication later.
	filters map[string]string
	// confirmed is the home guard's last confirmation (home_guard.go).
	confirmed homeConfirmed
}

// plannedTable is a validated table with what to publish of it.
type plannedTable struct {
	ref     tableRef
	info    *tableInfo
	key     string // replica identity index to set ("" = keep)
	keyPK   bool   // the key is the primary key (replica identity default)
	columns []column
}

func (p *publisher) step(ctx context.Context) (*fsm.PublisherResult, bool) {
	res := &fsm.PublisherResult{Publication: p.spec.Publication, At: time.Now().UnixNano()}
	p.warn = nil
	conn, err := p.db.get(ctx)
	if err != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{unreachable("region", err)}
		return res, false
	}
	if p.spec.Ensure == fsm.EnsureAbsent {
		if p.spec.Kind == fsm.KindTenant {
			return p.teardownUnlessPromoted(ctx, conn, res)
		}
		return p.teardown(ctx, conn, res)
	}
	p.publish(ctx, conn, res)
	if p.spec.Kind == fsm.KindTenant && res.State != fsm.ReplInvalid {
		// After a restart of PostgreSQL the tenant's writes wait for this
		// (home_guard.go); a bad spec changes nothing, so it waits for a
		// good one. A connection that died with the restart is reopened
		// at once rather than at the next run.
		var guardErr error
		if conn, err = p.db.get(ctx); err == nil {
			if guardErr = p.confirmHome(ctx, conn); isConnErr(guardErr) {
				p.db.drop()
				if conn, err = p.db.get(ctx); err == nil {
					guardErr = p.confirmHome(ctx, conn)
				}
			}
		}
		if err != nil {
			guardErr = err
		}
		if guardErr != nil {
			res.State = fsm.ReplError
			res.Issues = append([]fsm.ReplicationIssue{issueFromErr("", "confirm the tenant's home (its writes wait for it after a restart of PostgreSQL)", guardErr)}, res.Issues...)
			return res, false
		}
	}
	// Whatever the publication's state, a foreign slot can carry this
	// database's PII away: it comes first in what the task reports.
	foreign, err := p.foreignSlots(ctx, conn)
	switch {
	case err != nil && res.State == fsm.ReplReady:
		res.Issues = append(res.Issues, issueFromErr("", "list logical replication slots", err))
	case len(foreign) > 0:
		res.Issues = append(foreign, res.Issues...)
	}
	return res, false
}

// publish makes the publication match the spec and fills res.
func (p *publisher) publish(ctx context.Context, conn *pgx.Conn, res *fsm.PublisherResult) {
	plan, issues, err := p.validate(ctx, conn)
	if err != nil {
		p.db.drop()
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "inspect tables", err)}
		return
	}
	if len(issues) > 0 {
		// A bad spec changes nothing: no replica identity, no grant, no
		// publication, until every table passes.
		res.State, res.Issues = fsm.ReplInvalid, issues
		p.reportPublished(ctx, conn, res, nil)
		return
	}
	if is := p.apply(ctx, conn, plan); is != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{*is}
		p.reportPublished(ctx, conn, res, nil)
		return
	}
	if is := p.reportPublished(ctx, conn, res, plan); is != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{*is}
		return
	}
	res.Slots, res.Issues = p.slots(ctx, conn, false)
	if p.spec.Kind == fsm.KindTenant {
		// For a failover, which cannot read the home once it is lost.
		if pii, err := HomePIIColumns(ctx, conn, p.spec.Tables); err == nil {
			for _, c := range pii {
				res.PII = append(res.PII, fsm.PIIColumnType(c))
			}
		}
	}
	p.roleBypassesRLS(ctx, conn)
	res.Issues = dedupe(append(res.Issues, p.warn...))
	res.State = fsm.ReplReady
}

// reportPublished adds the published tables to res. For a tenant it reads
// back what the publication publishes of each table, the columns and row
// filter PostgreSQL holds (pg_publication_tables), whatever the plan meant
// or a failed step left: that is what is in transit, and policy P1 rests
// on it. Planned tables also carry their digest and replica identity.
func (p *publisher) reportPublished(ctx context.Context, conn *pgx.Conn, res *fsm.PublisherResult, plan []plannedTable) *fsm.ReplicationIssue {
	tenant := p.spec.Kind == fsm.KindTenant
	var published map[string]publishedTable
	if tenant {
		var err error
		if _, published, err = readPublication(ctx, conn, p.spec.Publication); err != nil {
			if !isPgError(err) {
				p.db.drop()
			}
			is := issueFromErr("", "read publication "+p.spec.Publication, err)
			return &is
		}
	}
	planned := map[string]bool{}
	for _, pt := range plan {
		ts := fsm.TableState{Name: pt.ref.display(), Digest: digest(pt.columns), ReplicaIdentity: pt.key}
		if pt.key == "" {
			ts.ReplicaIdentity = pt.info.RIIndex
		}
		if pub, ok := published[pt.ref.String()]; ok {
			ts.Columns, ts.RowFilter = pub.Columns, pub.RowFilter
		}
		planned[pt.ref.String()] = true
		res.Tables = append(res.Tables, ts)
	}
	var rest []string
	for k := range published {
		if !planned[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		pub := published[k]
		res.Tables = append(res.Tables, fsm.TableState{Name: pub.Ref.display(), Columns: pub.Columns, RowFilter: pub.RowFilter})
	}
	return nil
}

// validate inspects every table of the spec and plans what to publish.
func (p *publisher) validate(ctx context.Context, conn *pgx.Conn) ([]plannedTable, []fsm.ReplicationIssue, error) {
	var plan []plannedTable
	var issues []fsm.ReplicationIssue
	add := func(code, table, format string, a ...any) {
		issues = append(issues, fsm.ReplicationIssue{Code: code, Table: table, Message: fmt.Sprintf(format, a...), At: time.Now().UnixNano()})
	}
	for _, tt := range p.spec.Tables {
		ref := parseTable(tt.Name)
		ti, err := inspectTable(ctx, conn, ref)
		if err != nil {
			return nil, nil, err
		}
		if !ti.Exists {
			add(fsm.IssueTableNotFound, tt.Name, "table %s does not exist in region %s's database", tt.Name, p.spec.Region)
			continue
		}
		pt := plannedTable{ref: ref, info: ti}
		if p.spec.Kind == fsm.KindGlobal {
			idx, is := globalKey(ti)
			if is != nil {
				issues = append(issues, *is)
				continue
			}
			pt.key, pt.columns = idx, ti.Columns
			plan = append(plan, pt)
			continue
		}
		tid := ti.column("tenant_id")
		if tid == nil {
			add(fsm.IssueMissingTenantID, tt.Name, "table %s has no tenant_id column, so its rows cannot be filtered by tenant", tt.Name)
			continue
		}
		if !isText(tid.Type) {
			add(fsm.IssueTenantIDType, tt.Name, "table %s: tenant_id is %s; it must be text or varchar to hold tenant ids", tt.Name, tid.Type)
			continue
		}
		pii := map[string]bool{}
		bad := false
		for _, c := range tt.PIIColumns {
			pii[c] = true
			if ti.column(c) == nil {
				add(fsm.IssuePIIColumnNotFound, tt.Name, "table %s has no column %s listed as PII; fix the spec (a misspelt PII column would let the real one be published)", tt.Name, c)
				bad = true
			}
		}
		if bad {
			continue
		}
		key, is := tenantKey(ti, pii)
		if is != nil {
			issues = append(issues, *is)
			continue
		}
		pt.key, pt.keyPK = key.Name, key.Primary
		for _, c := range ti.Columns {
			if !pii[c.Name] {
				pt.columns = append(pt.columns, c)
			}
		}
		plan = append(plan, pt)
	}
	return plan, issues, nil
}

// apply sets replica identities, makes the publication match the plan,
// and then limits the replication role to what the publications publish
// (see grants.go).
func (p *publisher) apply(ctx context.Context, conn *pgx.Conn, plan []plannedTable) *fsm.ReplicationIssue {
	fail := func(table, what string, err error) *fsm.ReplicationIssue {
		if !isPgError(err) {
			p.db.drop()
		}
		is := issueFromErr(table, what, err)
		return &is
	}
	for _, pt := range plan {
		if stmt := replicaIdentityStmt(pt); stmt != "" {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return fail(pt.ref.display(), "set replica identity of "+pt.ref.display(), err)
			}
			p.log.Info("replica identity set", "table", pt.ref.String(), "index", pt.key)
		}
		// Before the publication changes too, so that a subscription's
		// first copy finds the grants in place.
		if is := p.grant(ctx, conn, pt, p.piiOf(pt.ref)); is != nil {
			return is
		}
	}
	if err := p.publication(ctx, conn, plan); err != nil {
		return fail("", "publication "+p.spec.Publication, err)
	}
	for _, pt := range plan {
		if is := p.grant(ctx, conn, pt, p.piiOf(pt.ref)); is != nil {
			return is
		}
	}
	if err := p.dropRowPolicies(ctx, conn, plan); err != nil {
		return fail("", "drop the replication role's policies of tables no longer published", err)
	}
	return nil
}

// piiOf returns the spec's PII columns of a table.
func (p *publisher) piiOf(ref tableRef) []string {
	for _, tt := range p.spec.Tables {
		if parseTable(tt.Name) == ref {
			return tt.PIIColumns
		}
	}
	return nil
}

func replicaIdentityStmt(pt plannedTable) string {
	switch {
	case pt.key == "":
		return ""
	case pt.keyPK && pt.info.ReplIdent == "d":
		return ""
	case pt.keyPK:
		return "ALTER TABLE " + pt.ref.Quoted() + " REPLICA IDENTITY DEFAULT"
	case pt.info.ReplIdent == "i" && pt.info.RIIndex == pt.key:
		return ""
	}
	return "ALTER TABLE " + pt.ref.Quoted() + " REPLICA IDENTITY USING INDEX " + ident(pt.key)
}

func (p *publisher) publishOption() string {
	if p.spec.Kind == fsm.KindGlobal {
		return "insert, update, delete, truncate"
	}
	// No truncate: a TRUNCATE ignores row filters and would empty the
	// mirror's table of every tenant.
	return "insert, update, delete"
}

func (p *publisher) tableList(plan []plannedTable) string {
	items := make([]string, len(plan))
	for i, pt := range plan {
		items[i] = pt.ref.Quoted()
		if p.spec.Kind == fsm.KindTenant {
			cols := make([]string, len(pt.columns))
			for j, c := range pt.columns {
				cols[j] = ident(c.Name)
			}
			items[i] += " (" + strings.Join(cols, ", ") + ")"
			if !dropRowFilter() {
				items[i] += " WHERE (tenant_id = " + quoteLiteral(p.spec.Tenant) + ")"
			}
		}
	}
	return strings.Join(items, ", ")
}

func (p *publisher) publication(ctx context.Context, conn *pgx.Conn, plan []plannedTable) error {
	exists, cur, err := readPublication(ctx, conn, p.spec.Publication)
	if err != nil {
		return err
	}
	pub := ident(p.spec.Publication)
	if !exists {
		_, err := conn.Exec(ctx, "CREATE PUBLICATION "+pub+" FOR TABLE "+p.tableList(plan)+" WITH (publish = '"+p.publishOption()+"')")
		if err == nil {
			p.log.Info("publication created", "publication", p.spec.Publication, "tables", len(plan))
			return p.rememberFilters(ctx, conn)
		}
		return err
	}
	var ins, upd, del, trunc bool
	if err := conn.QueryRow(ctx, `SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1`,
		p.spec.Publication).Scan(&ins, &upd, &del, &trunc); err != nil {
		return err
	}
	if !ins || !upd || !del || trunc != (p.spec.Kind == fsm.KindGlobal) {
		if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" SET (publish = '"+p.publishOption()+"')"); err != nil {
			return err
		}
	}
	if p.matches(plan, cur) {
		return nil
	}
	if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+pub+" SET TABLE "+p.tableList(plan)); err != nil {
		return err
	}
	p.log.Info("publication changed", "publication", p.spec.Publication, "tables", len(plan))
	return p.rememberFilters(ctx, conn)
}

func (p *publisher) rememberFilters(ctx context.Context, conn *pgx.Conn) error {
	_, cur, err := readPublication(ctx, conn, p.spec.Publication)
	if err != nil {
		return err
	}
	p.filters = map[string]string{}
	for k, v := range cur {
		p.filters[k] = v.RowFilter
	}
	return nil
}

// matches reports whether the publication holds exactly the planned tables
// with the planned columns and the tenant's row filter.
func (p *publisher) matches(plan []plannedTable, cur map[string]publishedTable) bool {
	if len(cur) != len(plan) {
		return false
	}
	for _, pt := range plan {
		c, ok := cur[pt.ref.String()]
		if !ok {
			return false
		}
		if p.spec.Kind == fsm.KindGlobal {
			continue
		}
		want := make([]string, len(pt.columns))
		for i, col := range pt.columns {
			want[i] = col.Name
		}
		if strings.Join(want, ",") != strings.Join(c.Columns, ",") {
			return false
		}
		if f, ok := p.filters[pt.ref.String()]; ok {
			if f != c.RowFilter {
				return false
			}
		} else if !strings.Contains(c.RowFilter, "tenant_id") || !strings.Contains(c.RowFilter, quoteLiteral(p.spec.Tenant)) {
			return false
		}
	}
	return true
}

// slots reports the publication's slots and drops those no subscriber
// holds any more (all of them when dropAll).
func (p *publisher) slots(ctx context.Context, conn *pgx.Conn, dropAll bool) ([]fsm.SlotState, []fsm.ReplicationIssue) {
	rows, err := conn.Query(ctx, `SELECT slot_name::text, active, coalesce(active_pid, 0), coalesce(wal_status, ''),
			coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint
		FROM pg_replication_slots WHERE starts_with(slot_name::text, $1) AND database = current_database()
		ORDER BY slot_name`, p.spec.SlotPrefix)
	if err != nil {
		return nil, []fsm.ReplicationIssue{issueFromErr("", "list replication slots", err)}
	}
	type slot struct {
		fsm.SlotState
		pid int
	}
	var all []slot
	for rows.Next() {
		var s slot
		if err := rows.Scan(&s.Name, &s.Active, &s.pid, &s.WALStatus, &s.LagBytes); err != nil {
			rows.Close()
			return nil, []fsm.ReplicationIssue{issueFromErr("", "list replication slots", err)}
		}
		all = append(all, s)
	}
	rows.Close()
	keep := map[string]bool{}
	if !dropAll {
		for _, s := range p.spec.Subscriptions {
			keep[s] = true
		}
	}
	var out []fsm.SlotState
	var issues []fsm.ReplicationIssue
	for _, s := range all {
		if keep[s.Name] {
			out = append(out, s.SlotState)
			continue
		}
		if err := dropSlot(ctx, conn, s.Name, s.pid); err != nil {
			out = append(out, s.SlotState)
			issues = append(issues, issueFromErr("", "drop orphan slot "+s.Name, err))
			continue
		}
		p.log.Info("dropped a slot no subscriber holds", "slot", s.Name)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, issues
}

// dropSlot drops a slot, first ending the sender that holds it.
func dropSlot(ctx context.Context, conn *pgx.Conn, name string, pid int) error {
	if pid != 0 {
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
			return err
		}
		// The sender releases the slot as it exits; give it a moment.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			var active bool
			err := conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active)
			if err == pgx.ErrNoRows {
				return nil
			}
			if err != nil {
				return err
			}
			if !active {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
	return err
}

// teardown drops the publication and every slot of it. It is done when no
// slot is left.
func (p *publisher) teardown(ctx context.Context, conn *pgx.Conn, res *fsm.PublisherResult) (*fsm.PublisherResult, bool) {
	if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+ident(p.spec.Publication)); err != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "drop publication", err)}
		return res, false
	}
	if err := p.dropRowPolicies(ctx, conn, nil); err != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "drop the replication role's row policies", err)}
		return res, false
	}
	if err := p.revokeUnpublished(ctx, conn); err != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "revoke the replication role's column grants", err)}
		return res, false
	}
	res.Slots, res.Issues = p.slots(ctx, conn, true)
	if len(res.Slots) > 0 || len(res.Issues) > 0 {
		res.State = fsm.ReplError
		return res, false
	}
	if p.spec.Kind == fsm.KindTenant {
		// A stale confirmation of an unfenced tenant is kept: this may be
		// a lost home that restarted and was not fenced yet.
		if err := clearHomeConfirmation(ctx, conn, p.spec.Tenant, true); err != nil {
			res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "remove the tenant's home confirmation", err)}
			return res, false
		}
	}
	p.log.Info("publication torn down", "publication", p.spec.Publication)
	res.State = fsm.ReplRemoved
	return res, true
}
