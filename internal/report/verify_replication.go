package report

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
)

// The tables the replication verifications create in the regions'
// databases, in a schema of their own, and drop again.
const (
	verifySchema      = "atomfed_verify"
	verifyGlobalTable = verifySchema + ".report_global"
	verifyTenantTable = verifySchema + ".report_orders"
	// verifyOtherTenant owns rows in the tenant table that must never
	// reach the mirror (the publication's row filter).
	verifyOtherTenant = "report-verify-other"
)

// regionsWithAgents are the regions, in the registry's order, that have an
// agent in the federation.
func regionsWithAgents(ctx context.Context, env *verifyEnv) ([]string, error) {
	regions, _, err := env.c.Regions(ctx, nil)
	if err != nil {
		return nil, err
	}
	has := map[string]bool{}
	for _, a := range env.fed.Agents {
		has[a.Region] = true
	}
	var out []string
	for _, r := range regions {
		if has[r.Name] {
			out = append(out, r.Name)
		}
	}
	return out, nil
}

// simulatedReplication is the verification of a replication component
// when its agents run replication simulated: it reads the federation's
// replication summary, and the success it can reach is pass_simulated
// (Generate names the simulated parts).
func simulatedReplication(ctx context.Context, env *verifyEnv, sim []string) *Verification {
	v := &Verification{OK: true}
	sum, err := env.c.Replication(ctx, nil)
	if err != nil {
		return v.fail(Step{Call: "GET /v1/replication", Status: client.StatusOf(err)}, "%v", err)
	}
	v.ok(Step{Call: "GET /v1/replication"}, "status %s; no rows were replicated: %s", sum.Status, strings.Join(sim, "; "))
	return v
}

// regionConns connects to the databases of regions (env.regionDBs); it
// fails naming the regions it has no database for.
func regionConns(ctx context.Context, env *verifyEnv, regions []string) (map[string]*pgx.Conn, func(), error) {
	conns := map[string]*pgx.Conn{}
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}
	var missing []string
	for _, r := range regions {
		if env.regionDBs[r] == "" {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		return nil, closeAll, fmt.Errorf("no database given for %s: replication runs for real there, and the verification compares rows in the regions' databases (atomfed report --region-db REGION=DSN, or --dev-dir of a dev federation)",
			strings.Join(missing, ", "))
	}
	for _, r := range regions {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, err := pgx.Connect(cctx, env.regionDBs[r])
		cancel()
		if err != nil {
			closeAll()
			return nil, func() {}, fmt.Errorf("connect to %s's database: %w", r, redactDSNError(err))
		}
		conns[r] = c
	}
	return conns, closeAll, nil
}

// redactDSNError keeps a connection error's message but never a password:
// pgx names the host and user, not the password, but a DSN typed with one
// must not reach a report.
func redactDSNError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "password="); i >= 0 {
		msg = msg[:i] + "password=REDACTED"
	}
	return errors.New(msg)
}

func execAll(ctx context.Context, c *pgx.Conn, stmts ...string) error {
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

// digest is a table's row count and a checksum of its rows, as query
// (which returns one text column) computes it.
func digest(ctx context.Context, c *pgx.Conn, query string, args ...any) (string, error) {
	var s *string
	if err := c.QueryRow(ctx, query, args...).Scan(&s); err != nil {
		return "", err
	}
	if s == nil {
		return "none", nil
	}
	return *s, nil
}

// stopWaiting ends a waitFor at once with err: what check saw will not
// change by waiting.
type stopWaiting struct{ err error }

func (s *stopWaiting) Error() string { return s.err.Error() }

// waitFor polls check every 200 ms until it returns nil or env.timeout
// passes.
func waitFor(ctx context.Context, env *verifyEnv, check func() error) error {
	deadline := time.Now().Add(env.timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		var stop *stopWaiting
		if errors.As(err, &stop) {
			return stop.err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not within %s: %w", env.timeout, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// regionsAndConns are the first n regions with agents (all of them when n
// is 0) and connections to their databases; on failure the step that
// failed is returned with the error. closeAll is always safe to call.
func regionsAndConns(ctx context.Context, env *verifyEnv, n int, what string) (regions []string, conns map[string]*pgx.Conn, closeAll func(), failed Step, err error) {
	closeAll = func() {}
	regions, err = regionsWithAgents(ctx, env)
	if err != nil {
		return nil, nil, closeAll, Step{Call: "GET /v1/regions"}, err
	}
	if len(regions) < 2 {
		return nil, nil, closeAll, Step{Call: "GET /v1/regions"}, fmt.Errorf("%s needs two regions with agents; the federation has %d", what, len(regions))
	}
	if n > 0 {
		regions = regions[:n]
	}
	conns, closeAll, err = regionConns(ctx, env, regions)
	if err != nil {
		return nil, nil, closeAll, Step{Call: "connect to the regions' databases"}, err
	}
	return regions, conns, closeAll, Step{}, nil
}

// freshTenant removes what an interrupted run left of tenant (the tenant,
// once its tasks are torn down, and table in regions) and returns the
// cleanup to defer: the same, once the verification is over.
func freshTenant(ctx context.Context, env *verifyEnv, tenant, table string, conns map[string]*pgx.Conn, regions []string) (cleanup func(), failed Step, err error) {
	remove := func() error {
		if err := env.c.DeleteTenant(ctx, tenant, nil); err != nil && client.StatusOf(err) != http.StatusNotFound {
			return err
		}
		return waitTasksGone(ctx, env, tenant)
	}
	if err := remove(); err != nil {
		return func() {}, Step{Call: "remove a leftover tenant " + tenant}, err
	}
	for _, r := range regions {
		if err := execAll(ctx, conns[r], "DROP TABLE IF EXISTS "+table); err != nil {
			return func() {}, Step{Call: "in " + r + ": drop a leftover " + table}, err
		}
	}
	return func() {
		if remove() == nil {
			for _, r := range regions {
				_ = execAll(ctx, conns[r], "DROP TABLE IF EXISTS "+table)
			}
		}
	}, Step{}, nil
}

// sameRows waits until region to has the rows of tenant that region from
// has, as query (a digest of the tenant's rows, $1 the tenant) sees them.
func sameRows(ctx context.Context, env *verifyEnv, conns map[string]*pgx.Conn, from, to, query, tenant string) error {
	return waitFor(ctx, env, func() error {
		want, err := digest(ctx, conns[from], query, tenant)
		if err != nil {
			return fmt.Errorf("%s: %w", from, err)
		}
		got, err := digest(ctx, conns[to], query, tenant)
		if err != nil {
			return fmt.Errorf("%s: %w", to, err)
		}
		if got != want {
			return fmt.Errorf("%s has %s of %s's rows, %s %s", to, got, tenant, from, want)
		}
		return nil
	})
}

// putTenant places ten and records the step.
func putTenant(ctx context.Context, env *verifyEnv, v *Verification, ten *fsm.Tenant) (*fsm.Tenant, AuditRef, error) {
	step := Step{Call: "PUT /v1/tenants/" + ten.ID}
	got, err := env.c.PutTenant(ctx, ten, nil)
	if err != nil {
		step.Status = client.StatusOf(err)
		v.fail(step, "%v", err)
		return nil, AuditRef{}, err
	}
	step.Index = got.ModifyIndex
	v.ok(step, "home %s, mirrors %s, epoch %d, at index %d", got.HomeRegion, strings.Join(got.Mirrors, ", "), got.Epoch, got.ModifyIndex)
	return got, AuditRef{Index: got.ModifyIndex, What: "PUT /v1/tenants/" + ten.ID}, nil
}

// verifyFederationSync replicates a global table on the live federation's
// PostgreSQL: it creates verifyGlobalTable with 100 rows in the first
// region (the writer), declares it global, waits until every other region
// has the same rows (count and checksum), changes rows at the writer and
// waits for the change everywhere, then deletes the global table, waits
// until no publication or subscription holds it, and drops it.
func verifyFederationSync(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	if sim := simulatedParts(env.fed, []string{"replication"}); len(sim) > 0 {
		return simulatedReplication(ctx, env, sim), nil
	}
	v := &Verification{OK: true}
	var refs []AuditRef
	regions, conns, closeAll, failed, err := regionsAndConns(ctx, env, 0, "a global table")
	defer closeAll()
	if err != nil {
		return v.fail(failed, "%v", err), refs
	}
	writer := regions[0]
	cleanup := func() {
		_ = env.c.DeleteGlobalTable(ctx, verifyGlobalTable, nil)
	}
	cleanup() // a leftover of an interrupted run
	if err := waitGlobalGone(ctx, env, conns, writer); err != nil {
		return v.fail(Step{Call: "remove a leftover " + verifyGlobalTable}, "%v", err), refs
	}
	for _, r := range regions {
		if err := execAll(ctx, conns[r], "DROP TABLE IF EXISTS "+verifyGlobalTable); err != nil {
			return v.fail(Step{Call: "in " + r + ": drop a leftover " + verifyGlobalTable}, "%v", err), refs
		}
	}
	if err := execAll(ctx, conns[writer], "CREATE SCHEMA IF NOT EXISTS "+verifySchema,
		"CREATE TABLE "+verifyGlobalTable+" (k text PRIMARY KEY, v bigint NOT NULL)",
		"INSERT INTO "+verifyGlobalTable+" SELECT 'k' || g, g * 7 FROM generate_series(1, 100) g"); err != nil {
		return v.fail(Step{Call: "in " + writer + ": create " + verifyGlobalTable + " with 100 rows"}, "%v", err), refs
	}
	v.ok(Step{Call: "in " + writer + ": create " + verifyGlobalTable + " with 100 rows"}, "created")
	defer func() {
		cleanup()
		if waitGlobalGone(ctx, env, conns, writer) == nil {
			for _, r := range regions {
				_ = execAll(ctx, conns[r], "DROP TABLE IF EXISTS "+verifyGlobalTable)
			}
		}
	}()

	step := Step{Call: "PUT /v1/global-tables/" + verifyGlobalTable}
	g, err := env.c.PutGlobalTable(ctx, &fsm.GlobalTable{Name: verifyGlobalTable, WriterRegion: writer}, nil)
	if err != nil {
		step.Status = client.StatusOf(err)
		return v.fail(step, "%v", err), refs
	}
	step.Index = g.ModifyIndex
	v.ok(step, "global, written in %s, at index %d", writer, g.ModifyIndex)
	refs = append(refs, AuditRef{Index: g.ModifyIndex, What: "PUT /v1/global-tables/" + verifyGlobalTable})

	q := "SELECT count(*)::text || ':' || md5(string_agg(k || '=' || v, ',' ORDER BY k)) FROM " + verifyGlobalTable
	same := func(what string) error {
		return waitFor(ctx, env, func() error {
			want, err := digest(ctx, conns[writer], q)
			if err != nil {
				return err
			}
			for _, r := range regions[1:] {
				got, err := digest(ctx, conns[r], q)
				if err != nil {
					return fmt.Errorf("%s: %w", r, err)
				}
				if got != want {
					return fmt.Errorf("%s has %s, the writer %s", r, got, want)
				}
			}
			return nil
		})
	}
	call := "compare " + verifyGlobalTable + " in " + strings.Join(regions, ", ")
	if err := same("the initial copy"); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	want, _ := digest(ctx, conns[writer], q)
	v.ok(Step{Call: call}, "the same rows in every region (%s)", want)

	if err := execAll(ctx, conns[writer], "UPDATE "+verifyGlobalTable+" SET v = v + 1 WHERE v % 2 = 0",
		"DELETE FROM "+verifyGlobalTable+" WHERE k IN ('k1', 'k2')",
		"INSERT INTO "+verifyGlobalTable+" VALUES ('k101', 1), ('k102', 2)"); err != nil {
		return v.fail(Step{Call: "in " + writer + ": change rows"}, "%v", err), refs
	}
	call = "compare after updates, deletes and inserts at " + writer
	if err := same("the changes"); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	want, _ = digest(ctx, conns[writer], q)
	v.ok(Step{Call: call}, "streamed to every region (%s)", want)

	var del struct {
		Index uint64 `json:"index"`
	}
	step = Step{Call: "DELETE /v1/global-tables/" + verifyGlobalTable}
	m, err := env.c.Do(ctx, http.MethodDelete, "/v1/global-tables/"+verifyGlobalTable, nil, nil, &del)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	step.Index = del.Index
	v.ok(step, "deleted at index %d", del.Index)
	refs = append(refs, AuditRef{Index: del.Index, What: "DELETE /v1/global-tables/" + verifyGlobalTable})
	call = "wait until no publication or subscription holds " + verifyGlobalTable
	if err := waitGlobalGone(ctx, env, conns, writer); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "torn down in every region")
	return v, refs
}

// waitGlobalGone waits until the writer publishes verifyGlobalTable no
// more and no other region subscribes to it.
func waitGlobalGone(ctx context.Context, env *verifyEnv, conns map[string]*pgx.Conn, writer string) error {
	schema, table, _ := strings.Cut(verifyGlobalTable, ".")
	return waitFor(ctx, env, func() error {
		for r, c := range conns {
			var n int
			q := `SELECT count(*) FROM pg_subscription_rel WHERE srrelid = to_regclass($1)`
			args := []any{verifyGlobalTable}
			if r == writer {
				q = `SELECT count(*) FROM pg_publication_tables WHERE schemaname = $1 AND tablename = $2`
				args = []any{schema, table}
			}
			if err := c.QueryRow(ctx, q, args...).Scan(&n); err != nil {
				return fmt.Errorf("%s: %w", r, err)
			}
			if n > 0 {
				return fmt.Errorf("%s still replicates %s", r, verifyGlobalTable)
			}
		}
		return nil
	})
}

// verifyTenantReplication replicates a tenant on the live federation's
// PostgreSQL: in the first region (the home) it creates verifyTenantTable
// with 50 rows of VerifyTenant (with a PII column, email) and 20 rows of
// another tenant, places VerifyTenant there with the second region as its
// mirror, and waits until the mirror has exactly the tenant's rows:
// the same count and checksum of the published columns, no row of the
// other tenant (row filter), no PII value (P1), and row-level security on
// the table (P5). It changes rows at the home and waits for the change,
// then deletes the tenant, waits until its tasks are torn down and drops
// the table.
func verifyTenantReplication(ctx context.Context, env *verifyEnv) (*Verification, []AuditRef) {
	if sim := simulatedParts(env.fed, []string{"replication"}); len(sim) > 0 {
		return simulatedReplication(ctx, env, sim), nil
	}
	v := &Verification{OK: true}
	var refs []AuditRef
	regions, conns, closeAll, failed, err := regionsAndConns(ctx, env, 2, "a mirrored tenant")
	defer closeAll()
	if err != nil {
		return v.fail(failed, "%v", err), refs
	}
	home, mirror := regions[0], regions[1]
	cleanup, failed, err := freshTenant(ctx, env, VerifyTenant, verifyTenantTable, conns, regions)
	if err != nil {
		return v.fail(failed, "%v", err), refs
	}
	call := "in " + home + ": create " + verifyTenantTable + " with 50 rows of " + VerifyTenant + " and 20 of " + verifyOtherTenant
	if err := execAll(ctx, conns[home], "CREATE SCHEMA IF NOT EXISTS "+verifySchema,
		"CREATE TABLE "+verifyTenantTable+" (tenant_id text NOT NULL, id bigint NOT NULL, amount bigint NOT NULL, email text, PRIMARY KEY (tenant_id, id))",
		"INSERT INTO "+verifyTenantTable+" SELECT '"+VerifyTenant+"', g, g * 3, 'buyer' || g || '@example.com' FROM generate_series(1, 50) g",
		"INSERT INTO "+verifyTenantTable+" SELECT '"+verifyOtherTenant+"', g, g, 'other' || g || '@example.com' FROM generate_series(1, 20) g"); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "created")
	defer cleanup()

	ten := &fsm.Tenant{ID: VerifyTenant, HomeRegion: home, Mirrors: []string{mirror},
		Tables: []fsm.TenantTable{{Name: verifyTenantTable, PIIColumns: []string{"email"}}},
		Labels: map[string]string{"purpose": "phase-report-verification"}}
	_, ref, err := putTenant(ctx, env, v, ten)
	if err != nil {
		return v, refs
	}
	refs = append(refs, ref)

	q := "SELECT count(*)::text || ':' || md5(string_agg(id || '=' || amount, ',' ORDER BY id)) FROM " + verifyTenantTable + " WHERE tenant_id = $1"
	same := func() error { return sameRows(ctx, env, conns, home, mirror, q, VerifyTenant) }
	call = "compare " + VerifyTenant + "'s rows in " + home + " and " + mirror
	if err := same(); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	want, _ := digest(ctx, conns[home], q, VerifyTenant)
	v.ok(Step{Call: call}, "the same rows (%s)", want)

	call = "in " + mirror + ": no row of " + verifyOtherTenant + ", no PII, row-level security on"
	if err := checkMirror(ctx, conns[mirror]); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "none of the other tenant's rows, no email values, RLS enabled")

	if err := execAll(ctx, conns[home], "UPDATE "+verifyTenantTable+" SET amount = amount + 1 WHERE tenant_id = '"+VerifyTenant+"' AND id <= 10",
		"DELETE FROM "+verifyTenantTable+" WHERE tenant_id = '"+VerifyTenant+"' AND id IN (49, 50)",
		"INSERT INTO "+verifyTenantTable+" VALUES ('"+VerifyTenant+"', 51, 1, 'late@example.com'), ('"+verifyOtherTenant+"', 21, 1, NULL)"); err != nil {
		return v.fail(Step{Call: "in " + home + ": change rows"}, "%v", err), refs
	}
	call = "compare after updates, deletes and inserts at " + home
	if err := same(); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	if err := checkMirror(ctx, conns[mirror]); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	want, _ = digest(ctx, conns[home], q, VerifyTenant)
	v.ok(Step{Call: call}, "streamed to %s (%s)", mirror, want)

	var del struct {
		Index uint64 `json:"index"`
	}
	step := Step{Call: "DELETE /v1/tenants/" + VerifyTenant}
	m, err := env.c.Do(ctx, http.MethodDelete, "/v1/tenants/"+VerifyTenant, nil, nil, &del)
	step.Status = statusOf(m, err)
	if err != nil {
		return v.fail(step, "%v", err), refs
	}
	step.Index = del.Index
	v.ok(step, "deleted at index %d", del.Index)
	refs = append(refs, AuditRef{Index: del.Index, What: "DELETE /v1/tenants/" + VerifyTenant})
	call = "wait until " + VerifyTenant + "'s publication and subscription are torn down"
	if err := waitTasksGone(ctx, env, VerifyTenant); err != nil {
		return v.fail(Step{Call: call}, "%v", err), refs
	}
	v.ok(Step{Call: call}, "torn down")
	return v, refs
}

// checkMirror checks the mirror's copy of verifyTenantTable: no row of
// verifyOtherTenant, no PII value (the column is absent or NULL) and
// row-level security enabled.
func checkMirror(ctx context.Context, c *pgx.Conn) error {
	var other int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM "+verifyTenantTable+" WHERE tenant_id = $1", verifyOtherTenant).Scan(&other); err != nil {
		return err
	}
	if other > 0 {
		return fmt.Errorf("%d rows of %s reached the mirror: the row filter leaks", other, verifyOtherTenant)
	}
	var hasEmail bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'email' AND NOT attisdropped)`,
		verifyTenantTable).Scan(&hasEmail); err != nil {
		return err
	}
	if hasEmail {
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM "+verifyTenantTable+" WHERE email IS NOT NULL").Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d PII values (email) reached the mirror: P1 is broken", n)
		}
	}
	var rls bool
	if err := c.QueryRow(ctx, `SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass($1)`, verifyTenantTable).Scan(&rls); err != nil {
		return err
	}
	if !rls {
		return fmt.Errorf("row-level security is off on the mirror's table: P5 is broken")
	}
	return nil
}
