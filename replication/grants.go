package replication

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// The replication role logs in from other regions, and its password is in
// every region's passfile: it must read at a home only what the home
// publishes. Streaming needs no privilege on tables (the walsender decodes
// the WAL through the publication's row filter and column list); the
// initial copy of a subscription, COPY (SELECT <columns> FROM t WHERE
// <row filter>), runs as the role. So the role gets SELECT on the columns
// some publication here publishes, never on the table (a PII column stays
// out of reach), and on a tenant table a row-level security policy per
// tenant publication, named after it, lets it see that tenant's rows:
// rows of tenants that are not replicated stay out of reach.

// othersPolicy is the policy a publisher adds when it has to enable
// row-level security on a home table that had none, so that every role
// but the replication role sees the table as before.
const othersPolicy = "atomfed_others"

// noTenantSettingPolicy is a restrictive policy for the replication role:
// a table that is also a tenant's mirror table carries the tenant policy
// (rows of the tenant a session names in app.tenant_id), and the role
// could otherwise name a tenant that is not replicated and see its rows.
const noTenantSettingPolicy = "atomfed_replicator_no_tenant_setting"

const noTenantSettingUsing = "coalesce(current_setting('app.tenant_id', true), '') = ''"

// grant gives the replication role what the initial copies of the
// table's subscriptions read, and nothing more: the columns the
// database's publications publish, and those the plan publishes. It runs
// before the publication changes (so that a first copy finds its grants)
// and after (so that a column the publication no longer publishes is
// taken back at once). pii are the table's PII columns in the spec; one
// that another publication publishes is reported.
func (p *publisher) grant(ctx context.Context, conn *pgx.Conn, pt plannedTable, pii []string) *fsm.ReplicationIssue {
	user := p.cfg.ReplicationUser
	name := pt.ref.display()
	fail := func(err error) *fsm.ReplicationIssue {
		is := issueFromErr(name, "limit the replication role to what is published", err)
		return &is
	}
	var schemaOK, tableOK bool
	err := conn.QueryRow(ctx, `SELECT has_schema_privilege($1, $2, 'USAGE'), has_table_privilege($1, $3::oid, 'SELECT')`,
		user, pt.ref.Schema, pt.info.OID).Scan(&schemaOK, &tableOK)
	if sqlState(err) == "42704" {
		return &fsm.ReplicationIssue{Code: fsm.IssuePermissionDenied, Table: name, At: time.Now().UnixNano(), Message: fmt.Sprintf(
			"the replication role %s does not exist in region %s's database; create it (CREATE ROLE %s LOGIN REPLICATION PASSWORD '...') with the password in the agents' replication passfile",
			user, p.spec.Region, user)}
	}
	if err != nil {
		return fail(err)
	}
	var stmts []string
	if !schemaOK {
		stmts = append(stmts, "GRANT USAGE ON SCHEMA "+ident(pt.ref.Schema)+" TO "+ident(user))
	}
	if tableOK {
		// Granted on the whole table (as atomfed did before): revoking it
		// revokes its column grants too, which are made again below.
		stmts = append(stmts, "REVOKE SELECT ON "+pt.ref.Quoted()+" FROM "+ident(user))
	}
	if err := execTx(ctx, conn, stmts); err != nil {
		return fail(err)
	}
	if is := p.grantColumns(ctx, conn, pt, pii); is != nil {
		return is
	}
	if p.spec.Kind != fsm.KindTenant {
		return nil
	}
	return p.rowPolicy(ctx, conn, pt)
}

// grantColumns makes the role's column grants on the table those that the
// database's publications publish, and reports a column it can read
// otherwise (through PUBLIC or another role) that none publishes, or a PII
// column of the spec that another publication publishes.
func (p *publisher) grantColumns(ctx context.Context, conn *pgx.Conn, pt plannedTable, pii []string) *fsm.ReplicationIssue {
	user, name := p.cfg.ReplicationUser, pt.ref.display()
	planned := make([]string, 0, len(pt.columns))
	for _, c := range pt.columns {
		planned = append(planned, c.Name)
	}
	// The publications' columns are read once (a materialized CTE):
	// pg_publication_tables decodes every publication, and as a subquery
	// per column it made this take seconds.
	rows, err := conn.Query(ctx, `WITH published AS MATERIALIZED (SELECT attnames FROM pg_publication_tables
				WHERE schemaname = $2 AND tablename = $3)
		SELECT a.attname::text,
			has_column_privilege($1, a.attrelid, a.attnum, 'SELECT'),
			EXISTS (SELECT 1 FROM aclexplode(a.attacl) x JOIN pg_roles r ON r.oid = x.grantee
				WHERE r.rolname = $1 AND x.privilege_type = 'SELECT'),
			a.attname = ANY($5::text[]) OR EXISTS (SELECT 1 FROM published p WHERE a.attname = ANY(p.attnames))
		FROM pg_attribute a WHERE a.attrelid = $4 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
		user, pt.ref.Schema, pt.ref.Name, pt.info.OID, planned)
	if err != nil {
		is := issueFromErr(name, "read the replication role's column privileges", err)
		return &is
	}
	var grant, revoke, exposed, piiPublished []string
	for rows.Next() {
		var col string
		var has, direct, published bool
		if err := rows.Scan(&col, &has, &direct, &published); err != nil {
			rows.Close()
			is := issueFromErr(name, "read the replication role's column privileges", err)
			return &is
		}
		switch {
		case published && !has:
			grant = append(grant, ident(col))
		case !published && direct:
			revoke = append(revoke, ident(col))
		case !published && has:
			exposed = append(exposed, col)
		}
		if published && slices.Contains(pii, col) {
			piiPublished = append(piiPublished, col)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		is := issueFromErr(name, "read the replication role's column privileges", err)
		return &is
	}
	var stmts []string
	if len(grant) > 0 {
		stmts = append(stmts, "GRANT SELECT ("+strings.Join(grant, ", ")+") ON "+pt.ref.Quoted()+" TO "+ident(user))
	}
	if len(revoke) > 0 {
		stmts = append(stmts, "REVOKE SELECT ("+strings.Join(revoke, ", ")+") ON "+pt.ref.Quoted()+" FROM "+ident(user))
	}
	if err := execTx(ctx, conn, stmts); err != nil {
		is := issueFromErr(name, "grant the replication role the published columns", err)
		return &is
	}
	switch {
	case len(exposed) > 0:
		p.warn = append(p.warn, fsm.ReplicationIssue{Code: fsm.IssuePermissionDenied, Table: name, At: time.Now().UnixNano(), Message: fmt.Sprintf(
			"the replication role %s can read column(s) %s of %s, which no publication publishes, through PUBLIC or a role it belongs to; revoke that grant (other regions log in as this role)",
			user, strings.Join(exposed, ", "), name)})
	case len(piiPublished) > 0:
		p.warn = append(p.warn, fsm.ReplicationIssue{Code: fsm.IssuePermissionDenied, Table: name, At: time.Now().UnixNano(), Message: fmt.Sprintf(
			"column(s) %s of %s are PII for tenant %s but another tenant's publication publishes them, so the replication role can read them for every published tenant's rows; mark them PII for every tenant of the table",
			strings.Join(piiPublished, ", "), name, p.spec.Tenant)})
	}
	return nil
}

// rowPolicy keeps the table's policy for this tenant's publication: the
// replication role sees the tenant's rows, as the row filter publishes
// them. Row-level security must be on for it to count; a table that had
// it off gets it on, with othersPolicy letting every other role see the
// table as before.
func (p *publisher) rowPolicy(ctx context.Context, conn *pgx.Conn, pt plannedTable) *fsm.ReplicationIssue {
	user, pol, name := p.cfg.ReplicationUser, p.spec.Publication, pt.ref.display()
	var rlsOn, exists, ok, restricted bool
	var wider []string
	err := conn.QueryRow(ctx, `SELECT c.relrowsecurity,
			EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = c.oid AND polname = $2),
			EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = c.oid AND polname = $2 AND polpermissive AND polcmd = 'r'
				AND polroles = ARRAY[(SELECT oid FROM pg_roles WHERE rolname = $3)]
				AND pg_get_expr(polqual, polrelid) LIKE '%tenant_id%' AND strpos(pg_get_expr(polqual, polrelid), $4) > 0),
			EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = c.oid AND polname = $5 AND NOT polpermissive AND polcmd = 'r'
				AND polroles = ARRAY[(SELECT oid FROM pg_roles WHERE rolname = $3)]
				AND strpos(pg_get_expr(polqual, polrelid), 'app.tenant_id') > 0),
			array(SELECT polname::text FROM pg_policy WHERE polrelid = c.oid AND polpermissive AND polcmd IN ('r', '*')
				AND polname NOT IN ($6, $7) AND NOT (polname LIKE 'af\_t\_%' AND polroles = ARRAY[(SELECT oid FROM pg_roles WHERE rolname = $3)])
				AND ('{0}'::oid[] && polroles OR (SELECT oid FROM pg_roles WHERE rolname = $3) = ANY(polroles)) ORDER BY polname)
		FROM pg_class c WHERE c.oid = $1`, pt.info.OID, pol, user, quoteLiteral(p.spec.Tenant), noTenantSettingPolicy,
		othersPolicy, fsm.TenantPolicyName).Scan(&rlsOn, &exists, &ok, &restricted, &wider)
	if err != nil {
		is := issueFromErr(name, "read the table's row-level security", err)
		return &is
	}
	if len(wider) > 0 {
		p.warn = append(p.warn, fsm.ReplicationIssue{Code: fsm.IssuePermissionDenied, Table: name, At: time.Now().UnixNano(), Message: fmt.Sprintf(
			"permissive policy %s on %s applies to the replication role %s (other regions log in as it) and may show it rows of tenants that are not replicated; limit it to the roles that need it (TO ...)",
			strings.Join(wider, ", "), name, user)})
	}
	var stmts []string
	if !restricted {
		stmts = append(stmts, "DROP POLICY IF EXISTS "+noTenantSettingPolicy+" ON "+pt.ref.Quoted(),
			"CREATE POLICY "+noTenantSettingPolicy+" ON "+pt.ref.Quoted()+" AS RESTRICTIVE FOR SELECT TO "+ident(user)+" USING ("+noTenantSettingUsing+")")
	}
	if !rlsOn {
		stmts = append(stmts, "ALTER TABLE "+pt.ref.Quoted()+" ENABLE ROW LEVEL SECURITY",
			"DROP POLICY IF EXISTS "+othersPolicy+" ON "+pt.ref.Quoted(),
			"CREATE POLICY "+othersPolicy+" ON "+pt.ref.Quoted()+" USING (current_user <> "+quoteLiteral(user)+")")
	}
	if !ok {
		if exists {
			stmts = append(stmts, "DROP POLICY "+ident(pol)+" ON "+pt.ref.Quoted())
		}
		stmts = append(stmts, "CREATE POLICY "+ident(pol)+" ON "+pt.ref.Quoted()+" FOR SELECT TO "+ident(user)+
			" USING (tenant_id = "+quoteLiteral(p.spec.Tenant)+")")
	}
	if len(stmts) == 0 {
		return nil
	}
	if err := execTx(ctx, conn, stmts); err != nil {
		is := issueFromErr(name, "let the replication role see the tenant's rows", err)
		return &is
	}
	p.log.Info("replication role limited to the tenant's rows", "table", pt.ref.String(), "policy", pol, "enabled_rls", !rlsOn)
	return nil
}

// dropRowPolicies drops this publication's policies from the tables not in
// keep (every table when keep is empty): a table that left the spec, or a
// tenant torn down, no longer lets the role see the tenant's rows.
func (p *publisher) dropRowPolicies(ctx context.Context, conn *pgx.Conn, keep []plannedTable) error {
	if p.spec.Kind != fsm.KindTenant {
		return nil
	}
	oids := make([]uint32, 0, len(keep))
	for _, pt := range keep {
		oids = append(oids, pt.info.OID)
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname::text, c.relname::text FROM pg_policy p
		JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.polname = $1 AND NOT (p.polrelid = ANY($2::oid[]))`, p.spec.Publication, oids)
	if err != nil {
		return err
	}
	var stale []tableRef
	for rows.Next() {
		var r tableRef
		if err := rows.Scan(&r.Schema, &r.Name); err != nil {
			rows.Close()
			return err
		}
		stale = append(stale, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range stale {
		if _, err := conn.Exec(ctx, "DROP POLICY IF EXISTS "+ident(p.spec.Publication)+" ON "+r.Quoted()); err != nil {
			return err
		}
		p.log.Info("dropped the replication role's policy of a table no longer published", "table", r.String(), "policy", p.spec.Publication)
	}
	return nil
}

// revokeUnpublished takes back the column grants that no publication
// needs any more on the spec's tables, after the publication is gone.
func (p *publisher) revokeUnpublished(ctx context.Context, conn *pgx.Conn) error {
	for _, tt := range p.spec.Tables {
		ref := parseTable(tt.Name)
		ti, err := inspectTable(ctx, conn, ref)
		if err != nil {
			return err
		}
		if !ti.Exists {
			continue
		}
		if is := p.grantColumns(ctx, conn, plannedTable{ref: ref, info: ti}, nil); is != nil {
			return fmt.Errorf("%s", is.Message)
		}
	}
	return nil
}

// roleBypassesRLS warns when the replication role is a superuser or has
// BYPASSRLS: row-level security then limits nothing.
func (p *publisher) roleBypassesRLS(ctx context.Context, conn *pgx.Conn) {
	user := p.cfg.ReplicationUser
	var bypass bool
	err := conn.QueryRow(ctx, `SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = $1`, user).Scan(&bypass)
	if err != nil || !bypass {
		return // a missing role is reported by grant
	}
	p.warn = append(p.warn, fsm.ReplicationIssue{Code: fsm.IssuePermissionDenied, At: time.Now().UnixNano(), Message: fmt.Sprintf(
		"the replication role %s is a superuser or has BYPASSRLS in region %s's database, so it can read every tenant's rows here; ALTER ROLE %s NOSUPERUSER NOBYPASSRLS",
		user, p.spec.Region, user)})
}
