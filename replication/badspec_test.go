package replication_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// fingerprint digests what the replicator could change in a database:
// tables, columns, replica identities, RLS flags, grants, publications and
// their tables, subscriptions, policies, slots, schemas and row counts.
const fingerprint = `SELECT md5(string_agg(x, E'\n' ORDER BY x)) FROM (
	SELECT 'col ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid
		WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL SELECT 'rel ' || n.nspname || '.' || relname || ' ' || relreplident::text || relrowsecurity::text || relforcerowsecurity::text || coalesce(relacl::text, '')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
	UNION ALL SELECT 'idx ' || indexrelid::regclass::text || ' ' || indisreplident::text FROM pg_index WHERE indrelid >= 16384
	UNION ALL SELECT 'pub ' || pubname FROM pg_publication
	UNION ALL SELECT 'pubtab ' || pubname || ' ' || tablename FROM pg_publication_tables
	UNION ALL SELECT 'sub ' || subname FROM pg_subscription
	UNION ALL SELECT 'pol ' || polname FROM pg_policy
	UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots
	UNION ALL SELECT 'nsp ' || nspname FROM pg_namespace
	UNION ALL SELECT 'rows no_tenant ' || count(*) FROM no_tenant
	UNION ALL SELECT 'rows pii_key ' || count(*) FROM pii_key
	UNION ALL SELECT 'setting ' || setting FROM pg_settings WHERE name = 'synchronous_standby_names'
) s(x)`

// TestBadSpecsLeaveDatabasesUntouched puts tenants whose specs cannot be
// replicated and checks that each is refused with a clear error in the
// API while no database changes.
func TestBadSpecsLeaveDatabasesUntouched(t *testing.T) {
	f := newFed(t, "a", "b")
	for _, r := range []string{"a", "b"} {
		f.exec(r, `CREATE TABLE no_tenant (id bigint PRIMARY KEY, v text)`,
			`CREATE TABLE pii_key (tenant_id text NOT NULL, email text NOT NULL, v text, PRIMARY KEY (tenant_id, email))`)
	}
	f.exec("a", `INSERT INTO no_tenant VALUES (1, 'x')`, `INSERT INTO pii_key VALUES ('t2', 'a@b', 'x')`, ordersDDL)
	before := map[string]string{"a": f.mustValue("a", fingerprint), "b": f.mustValue("b", fingerprint)}
	untouched := func(t *testing.T) {
		t.Helper()
		for r, want := range before {
			if got := f.with(t).mustValue(r, fingerprint); got != want {
				t.Fatalf("the database of region %s changed", r)
			}
		}
	}

	t.Run("PII column that is the tenant key is refused at once", func(t *testing.T) {
		resp := f.with(t).do(f.c.Nodes[0], http.MethodPut, "/v1/tenants/t0", []byte(`{"home_region":"a","mirrors":["b"],"tables":[{"name":"orders","pii_columns":["tenant_id"]}]}`))
		if d, ok := resp.ErrorDetail(); resp.Status != http.StatusBadRequest || !ok || d.Code != "invalid_tables" {
			t.Fatalf("got %d %s", resp.Status, resp.Body)
		}
	})
	cases := []struct {
		name, tenant string
		tables       []fsm.TenantTable
		code, says   string
	}{
		{"table without tenant_id", "t1", []fsm.TenantTable{{Name: "no_tenant"}}, fsm.IssueMissingTenantID, "no tenant_id column"},
		{"PII column that is the key", "t2", []fsm.TenantTable{{Name: "pii_key", PIIColumns: []string{"email"}}}, fsm.IssuePIIInKey, "PII column email is part of its only usable key"},
		{"unknown table", "t3", []fsm.TenantTable{{Name: "orders"}, {Name: "nope"}}, fsm.IssueTableNotFound, "table nope does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := f.with(t)
			f.putTenant(&fsm.Tenant{ID: tc.tenant, HomeRegion: "a", Mirrors: []string{"b"}, Tables: tc.tables})
			f.waitRefused(tc.tenant, tc.code, tc.says)
			// The mirror has looked at the spec too, and waits.
			testutil.Eventually(t, 30*time.Second, func() error {
				v, err := f.replication(tc.tenant)
				if err != nil {
					return err
				}
				if m := mirror(v, "b"); m == nil || len(m.Issues) == 0 || m.Issues[0].Code != fsm.IssueWaitingForPublisher {
					return fmt.Errorf("mirror b: %s", js(m))
				}
				return nil
			})
			untouched(t)
			f.deleteTenant(tc.tenant)
			f.waitGone(tc.tenant)
			untouched(t)
		})
	}

	t.Run("unreachable region database", func(t *testing.T) {
		f := f.with(t)
		if err := f.pg["a"].Stop(); err != nil {
			t.Fatal(err)
		}
		f.putTenant(&fsm.Tenant{ID: "t4", HomeRegion: "a", Mirrors: []string{"b"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}})
		f.waitRefused("t4", fsm.IssueDatabaseUnreachable, "cannot reach the region's PostgreSQL")
		testutil.Eventually(t, 30*time.Second, func() error {
			v, err := f.replication("t4")
			if err != nil {
				return err
			}
			m := mirror(v, "b")
			if m == nil || len(m.Issues) == 0 || m.Issues[0].Code != fsm.IssuePublisherUnreachable || !strings.Contains(m.Issues[0].Message, "region a") {
				return fmt.Errorf("mirror b: %s", js(m))
			}
			return nil
		})
		if got := f.mustValue("b", fingerprint); got != before["b"] {
			t.Fatal("the mirror's database changed while its source was unreachable")
		}
		// Once the database is back, the same spec goes through.
		if err := f.pg["a"].Restart(f.ctx(time.Minute)); err != nil {
			t.Fatal(err)
		}
		f.waitStreaming("t4", "b")
	})
}

// waitRefused waits until the tenant's replication is in error with an
// issue of code whose message says says.
func (f *fed) waitRefused(id, code, says string) {
	f.t.Helper()
	testutil.Eventually(f.t, 30*time.Second, func() error {
		v, err := f.replication(id)
		if err != nil {
			return err
		}
		if v.Status != fsm.ReplStatusError || v.Publisher == nil {
			return fmt.Errorf("status %s: %s", v.Status, js(v))
		}
		for _, is := range v.Publisher.Issues {
			if is.Code == code && strings.Contains(is.Message, says) {
				for _, r := range v.Reasons {
					if strings.Contains(r, says) {
						return nil
					}
				}
				return fmt.Errorf("reasons do not say it: %v", v.Reasons)
			}
		}
		return fmt.Errorf("publisher issues: %s", js(v.Publisher.Issues))
	})
}

// waitGone waits until a deleted tenant's tasks have torn down and gone.
func (f *fed) waitGone(id string) {
	f.t.Helper()
	testutil.Eventually(f.t, 30*time.Second, func() error {
		if _, err := f.replication(id); err == nil {
			return fmt.Errorf("tenant %s still has replication tasks", id)
		}
		return nil
	})
}
