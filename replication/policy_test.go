package replication_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/policy"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// policies evaluates P1 and P5 on a server, as GET /v1/policy/status does.
func (f *fed) policies() map[string]structs.PolicyResult {
	f.t.Helper()
	var ps []policy.Policy
	for _, p := range policy.Policies() {
		if p.ID == "P1" || p.ID == "P5" {
			ps = append(ps, p)
		}
	}
	st := policy.New(policy.Config{Source: f.c.Nodes[0].Server, Policies: ps}).Status(f.ctx(30 * time.Second))
	out := map[string]structs.PolicyResult{}
	for _, r := range st.Policies {
		out[r.ID] = r
	}
	return out
}

// waitPolicy waits until policy id has status and its reason holds every
// one of want, and returns it.
func (f *fed) waitPolicy(id, status string, want ...string) structs.PolicyResult {
	f.t.Helper()
	var r structs.PolicyResult
	testutil.Eventually(f.t, 90*time.Second, func() error {
		r = f.policies()[id]
		if r.Status != status {
			return fmt.Errorf("%s is %s (%s), want %s", id, r.Status, r.Reason, status)
		}
		for _, w := range want {
			if !strings.Contains(r.Reason, w) {
				return fmt.Errorf("%s reason %q does not say %q", id, r.Reason, w)
			}
		}
		return nil
	})
	return r
}

func evidence[T any](t *testing.T, r structs.PolicyResult) T {
	t.Helper()
	var v T
	b, _ := json.Marshal(r.Evidence)
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s evidence: %v\n%s", r.ID, err, b)
	}
	return v
}

// breakAndHold makes a change by hand in region, then takes an EXCLUSIVE
// lock on table and checks under it that the change is still there (an
// executor may have undone it in between: then it starts over). While the
// lock is held, an executor cannot change the table or its publication
// back (its DDL runs into lock_timeout), but can still read the catalog,
// so its probes find the change. It returns the release.
func (f *fed) breakAndHold(region, table, change, check string) (release func()) {
	f.t.Helper()
	conn := f.conn(region)
	ctx := f.ctx(5 * time.Minute)
	var tx pgx.Tx
	testutil.Eventually(f.t, 60*time.Second, func() error {
		if _, err := conn.Exec(ctx, change); err != nil {
			f.t.Fatalf("%s: %s: %v", region, change, err)
		}
		var err error
		if tx, err = conn.Begin(ctx); err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, "LOCK TABLE "+table+" IN EXCLUSIVE MODE"); err == nil {
			var ok bool
			if err = tx.QueryRow(ctx, check).Scan(&ok); err == nil && !ok {
				err = fmt.Errorf("an executor undid the change before the lock was taken")
			}
		}
		if err != nil {
			_ = tx.Rollback(ctx)
		}
		return err
	})
	return func() { _ = tx.Rollback(context.Background()) }
}

// TestPoliciesP1P5FromReplication evaluates P1 (no PII published) and P5
// (row-level security on every mirror table) on real PostgreSQL: not
// evaluated before any tenant is replicated, passing once the executors
// report, blocking with the tenant, table and column when PII is in a
// publication or a mirror's isolation is broken by hand (held so that the
// executors cannot repair it), and passing again once they have.
func TestPoliciesP1P5FromReplication(t *testing.T) {
	f := newFed(t, "a", "b")
	for _, id := range []string{"P1", "P5"} {
		f.waitPolicy(id, structs.PolicyNotEvaluated, "no tenant is replicated yet")
	}
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'x' || g || '@acme.test' FROM generate_series(1, 50) g`)
	f.putTenant(acme("b"))
	f.waitStreaming("acme", "b")

	p1 := f.waitPolicy("P1", structs.PolicyPass, "none of the 1 tenant publications")
	ev1 := evidence[policy.PIIEvidence](t, p1)
	if len(ev1.Publications) != 1 || ev1.Publications[0].Verdict != policy.VerdictVerified || len(ev1.Publications[0].Tables) != 1 {
		t.Fatalf("P1 evidence: %s", js(ev1))
	}
	if tc := ev1.Publications[0].Tables[0]; strings.Join(tc.PublishedColumns, ",") != "tenant_id,id,amount,note" ||
		strings.Join(tc.PIIColumns, ",") != "email" || len(tc.PIIPublished) != 0 || !strings.Contains(tc.RowFilter, "'acme'") {
		t.Fatalf("P1 evidence of orders: %s", js(tc))
	}
	p5 := f.waitPolicy("P5", structs.PolicyPass, "every table of the 1 mirrors")
	ev5 := evidence[policy.RLSEvidence](t, p5)
	if len(ev5.Mirrors) != 1 || ev5.Mirrors[0].Region != "b" || len(ev5.Mirrors[0].Tables) != 1 {
		t.Fatalf("P5 evidence: %s", js(ev5))
	}
	if rls := ev5.Mirrors[0].Tables[0].RLS; rls == nil || !rls.Enabled || !rls.Forced || !rls.PolicyOK || rls.RepairedAt != 0 {
		t.Fatalf("P5 evidence of b's orders: %s", js(ev5.Mirrors[0].Tables[0]))
	}
	// The endpoint answers the same.
	st, err := f.api.PolicyStatus(f.ctx(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Policies {
		if (r.ID == "P1" || r.ID == "P5") && r.Status != structs.PolicyPass {
			t.Fatalf("GET /v1/policy/status: %s is %s: %s", r.ID, r.Status, r.Reason)
		}
	}

	pub := fsm.TenantPublication("acme")
	t.Run("PII put into the publication by hand", func(t *testing.T) {
		f := f.with(t)
		release := f.breakAndHold("a", "orders", "ALTER PUBLICATION "+pub+" SET TABLE orders (tenant_id, id, amount, note, email) WHERE (tenant_id = 'acme')",
			`SELECT 'email' = ANY(attnames) FROM pg_publication_tables WHERE pubname = '`+pub+`'`)
		r := f.waitPolicy("P1", structs.PolicyBlock, "tenant acme table orders column email")
		ev := evidence[policy.PIIEvidence](t, r)
		if p := ev.Publications[0]; p.Verdict != policy.VerdictViolation || strings.Join(p.Tables[0].PIIPublished, ",") != "email" {
			t.Fatalf("P1 evidence while email is published: %s", js(p))
		}
		release()
		f.waitPolicy("P1", structs.PolicyPass)
		if cols := f.mustValue("a", `SELECT array_to_string(attnames, ',') FROM pg_publication_tables WHERE pubname = $1`, pub); cols != "tenant_id,id,amount,note" {
			t.Fatalf("the publisher left the publication publishing %s", cols)
		}
	})
	t.Run("a permissive policy added by hand on a mirror", func(t *testing.T) {
		f := f.with(t)
		f.exec("b", `CREATE POLICY everyone ON orders USING (true)`)
		f.waitPolicy("P5", structs.PolicyBlock, "tenant acme region b table orders", "permissive policy everyone widens")
		f.exec("b", `DROP POLICY everyone ON orders`)
		f.waitPolicy("P5", structs.PolicyPass)
	})
	t.Run("row-level security disabled by hand on a mirror", func(t *testing.T) {
		f := f.with(t)
		release := f.breakAndHold("b", "orders", `ALTER TABLE orders DISABLE ROW LEVEL SECURITY`,
			`SELECT NOT relrowsecurity FROM pg_class WHERE oid = 'orders'::regclass`)
		f.waitPolicy("P5", structs.PolicyBlock, "tenant acme region b table orders", "row-level security is disabled")
		release()
		r := f.waitPolicy("P5", structs.PolicyPass)
		if rls := evidence[policy.RLSEvidence](t, r).Mirrors[0].Tables[0].RLS; rls == nil || rls.RepairedAt == 0 {
			t.Fatalf("the subscriber restored row-level security without reporting it: %s", js(rls))
		}
		if v := f.mustValue("b", `SELECT (relrowsecurity AND relforcerowsecurity)::text FROM pg_class WHERE oid = 'orders'::regclass`); v != "true" {
			t.Fatalf("row-level security on b's orders after the repair: %s", v)
		}
	})
	t.Run("a test_decoding slot made with the replication role at the home", func(t *testing.T) {
		f := f.with(t)
		// The role a region's credentials log in as can make one: that is
		// the hole this detects.
		src := f.replicatorConn("b", "a")
		ctx := f.ctx(2 * time.Minute)
		if _, err := src.Exec(ctx, `SELECT pg_create_logical_replication_slot('cdc_leak', 'test_decoding')`); err != nil {
			t.Fatalf("the replication role could not make a test_decoding slot (the test would prove nothing): %v", err)
		}
		t.Cleanup(func() {
			f.exec("a", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'cdc_leak'`)
		})
		f.exec("a", `INSERT INTO orders VALUES ('acme', 9001, 1, 'n', 'leak@acme.test')`)
		var decoded string
		if err := src.QueryRow(ctx, `SELECT coalesce(string_agg(data, E'\n'), '') FROM pg_logical_slot_peek_changes('cdc_leak', NULL, NULL)`).Scan(&decoded); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(decoded, "leak@acme.test") {
			t.Fatalf("the slot does not decode the PII column (the test would prove nothing):\n%s", decoded)
		}

		r := f.waitPolicy("P1", structs.PolicyBlock, "logical slot cdc_leak (plugin test_decoding, inactive) in a's database")
		if p := evidence[policy.PIIEvidence](t, r).Publications[0]; p.Verdict != policy.VerdictViolation || len(p.ForeignSlots) != 1 ||
			p.ForeignSlots[0] != (fsm.ForeignSlot{Name: "cdc_leak", Plugin: "test_decoding"}) {
			t.Fatalf("P1 evidence while the slot exists: %s", js(p))
		}
		v, err := f.replication("acme")
		if err != nil {
			t.Fatal(err)
		}
		var found *fsm.ReplicationIssue
		for i, is := range v.Publisher.Issues {
			if is.Code == fsm.IssueForeignLogicalSlot {
				found = &v.Publisher.Issues[i]
			}
		}
		if found == nil || found.Slot == nil || found.Slot.Name != "cdc_leak" ||
			!strings.Contains(found.Message, "pg_drop_replication_slot('cdc_leak')") || !strings.Contains(found.Message, "region a") {
			t.Fatalf("the home's publisher reports no foreign_logical_slot issue naming the slot and what to do: %s", js(v.Publisher))
		}
		if n, err := agentMetric(f.agents["a"], "atomfed_replication_foreign_slots", map[string]string{"region": "a"}); err != nil || n != 1 {
			t.Fatalf("atomfed_replication_foreign_slots{region=a} = %v (%v), want 1", n, err)
		}
		// Nothing of atomfed's was dropped with it, and nothing of the
		// slot by atomfed: it is the operator's to drop.
		if n := f.mustValue("a", `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'cdc_leak'`); n != "1" {
			t.Fatalf("the slot is gone (%s): atomfed must report it, not drop it", n)
		}

		if _, err := src.Exec(ctx, `SELECT pg_drop_replication_slot('cdc_leak')`); err != nil {
			t.Fatal(err)
		}
		f.waitPolicy("P1", structs.PolicyPass)
		testutil.Eventually(t, 30*time.Second, func() error {
			if n, err := agentMetric(f.agents["a"], "atomfed_replication_foreign_slots", map[string]string{"region": "a"}); err == nil {
				return fmt.Errorf("atomfed_replication_foreign_slots{region=a} = %v after the slot was dropped", n)
			}
			return nil
		})
	})
}
