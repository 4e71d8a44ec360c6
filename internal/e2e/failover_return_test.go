package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// oldHomeReturn is what checkOldHomeComesBack needs of a federation where
// tenant's home oldHome (its PostgreSQL and agent killed) was failed over
// to newHome: the table is orders (tenant_id, id, amount, email), email
// PII.
type oldHomeReturn struct {
	c                        *procs.Cluster
	api                      *client.Client
	pgs                      map[string]*pglocal.Cluster
	agents                   map[string]*procs.AgentProc
	tenant, oldHome, newHome string
}

// checkOldHomeComesBack brings the lost home back (its PostgreSQL, then
// its agent) and checks issue 17 item 4 end to end: the old home is
// fenced (the application's write there is refused naming the new home);
// exactly the rows it has that the new home has not (or has otherwise)
// are in its quarantine table; the leader records the count (GET
// /v1/tenants/{id}/divergence, the audit entry, the metric on every
// server, the CLI); the old home's published columns equal the new
// home's, its PII of the surviving rows is intact and the new home's rows
// have NULL PII there; it mirrors the new home's later writes; an
// operator marks the quarantine reconciled through the CLI (audited,
// metric 0).
func checkOldHomeComesBack(t *testing.T, cx context.Context, f oldHomeReturn) {
	t.Helper()
	old, nw := f.pgs[f.oldHome], f.pgs[f.newHome]
	if err := old.Restart(cx); err != nil {
		t.Fatalf("restart %s's PostgreSQL: %v", f.oldHome, err)
	}
	connect := func(pg *pglocal.Cluster) *pgx.Conn {
		conn, err := pg.Connect(cx, pglocal.Database)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	odb, ndb := connect(old), connect(nw)
	rows := func(c *pgx.Conn) map[int64]orderRow { return tenantOrders(t, cx, c, f.tenant) }
	// What the old home holds before its agent is back, against the new
	// home (which takes no write meanwhile): the quarantine to expect.
	before, theirs := rows(odb), rows(ndb)
	var want []string
	missing := 0
	for id, r := range before {
		switch n, ok := theirs[id]; {
		case !ok:
			want = append(want, fmt.Sprintf("%d:missing_at_new_home", id))
			missing++
		case n.amount != r.amount:
			want = append(want, fmt.Sprintf("%d:differs_from_new_home", id))
		}
	}
	sort.Strings(want)
	if missing == 0 {
		t.Fatalf("%s holds no row of %s that %s lacks: the failover lost nothing, so this proves nothing", f.oldHome, f.tenant, f.newHome)
	}
	// Its PostgreSQL is back, its agent is not: the home guard refuses the
	// tenant's writes there (not a second writable home), whatever the
	// superuser or application session writing.
	var held *pgconn.PgError
	if _, err := odb.Exec(cx, `INSERT INTO orders (tenant_id, id, amount) VALUES ($1, 987654321, 1)`, f.tenant); !errors.As(err, &held) ||
		held.Code != replication.UnconfirmedSQLState || !strings.Contains(held.Message, "is not confirmed since PostgreSQL started") {
		t.Fatalf("%s's PostgreSQL came back before its agent and took (or refused otherwise) a write of %s: %v", f.oldHome, f.tenant, err)
	}
	head := settled(t, f.c)
	if err := f.agents[f.oldHome].Restart(); err != nil {
		t.Fatalf("restart %s's agent: %v", f.oldHome, err)
	}
	back := time.Now()

	// The subscriber reports its resync through to streaming.
	var res fsm.SubscriberResult
	testutil.Eventually(t, 90*time.Second, func() error {
		tasks, _, err := f.api.Tasks(cx, f.oldHome, fsm.TaskTypeTenantSubscriber, "", nil)
		if err != nil {
			return err
		}
		for _, tk := range tasks {
			if tk.ID != fsm.TenantSubscriberTaskID(f.tenant, f.oldHome) {
				continue
			}
			res = fsm.SubscriberResult{}
			if len(tk.Result) > 0 {
				_ = json.Unmarshal(tk.Result, &res)
			}
			if res.Resync == nil || res.Resync.Phase != fsm.ResyncStreaming {
				return fmt.Errorf("%s's subscriber: %s %s %+v", f.oldHome, tk.Status, tk.Error, res.Resync)
			}
			return nil
		}
		return fmt.Errorf("no subscriber task of %s at %s", f.tenant, f.oldHome)
	})
	t.Logf("%s back: resync streaming %s after its agent restarted; %d rows quarantined (%d missing at %s), %d reconciled",
		f.oldHome, time.Since(back).Round(time.Millisecond), res.Resync.DivergentTotal, res.Resync.Missing, f.newHome, res.Resync.Reconciled)

	// Fenced: the application's write of the tenant there is refused.
	_, err := odb.Exec(cx, `INSERT INTO orders (tenant_id, amount, email) VALUES ($1, 1, 'late@example.com')`, f.tenant)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != replication.FencedSQLState || !strings.Contains(pe.Message, f.newHome) {
		t.Fatalf("an application write at the old home: %v, want %s naming %s", err, replication.FencedSQLState, f.newHome)
	}
	// Exactly the divergent rows are in quarantine, whole (PII included).
	var got []string
	qs, err := odb.Query(cx, `SELECT (row_key->>'id') || ':' || reason FROM atomfed_quarantine.divergent_rows WHERE tenant_id = $1`, f.tenant)
	if err != nil {
		t.Fatal(err)
	}
	got, err = pgx.CollectRows(qs, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("%s's quarantine holds\n%v\nwant\n%v", f.oldHome, got, want)
	}
	if int(res.Resync.DivergentTotal) != len(want) || int(res.Resync.Missing) != missing {
		t.Fatalf("the resync reports %+v, want %d rows (%d missing)", res.Resync, len(want), missing)
	}
	var noPII int
	if err := odb.QueryRow(cx, `SELECT count(*) FROM atomfed_quarantine.divergent_rows WHERE tenant_id = $1 AND home_row->>'email' IS NULL`, f.tenant).Scan(&noPII); err != nil || noPII != 0 {
		t.Fatalf("%d quarantined rows lack their PII (%v)", noPII, err)
	}

	// The leader records it: API, audit, metric on every server, CLI.
	testutil.Eventually(t, 30*time.Second, func() error {
		l, _, err := f.api.Divergence(cx, f.tenant, nil)
		if err != nil {
			return err
		}
		if len(l.Divergence) != 1 || l.Divergence[0].Region != f.oldHome || int(l.Divergence[0].Total) != len(want) || !l.Divergence[0].Open {
			return fmt.Errorf("divergence of %s: %+v", f.tenant, l.Divergence)
		}
		// Keys and reasons (the first 100), never a row's contents.
		d := l.Divergence[0]
		if len(d.Keys) != min(len(want), fsm.MaxDivergentKeys) {
			return fmt.Errorf("divergence of %s lists %d keys, want %d", f.tenant, len(d.Keys), min(len(want), fsm.MaxDivergentKeys))
		}
		for _, k := range d.Keys {
			var key struct {
				ID int64 `json:"id"`
			}
			if err := json.Unmarshal([]byte(k.Key), &key); err != nil || !slices.Contains(want, fmt.Sprintf("%d:%s", key.ID, k.Reason)) {
				return fmt.Errorf("divergence key %+v is not one of the quarantined rows (%v)", k, err)
			}
		}
		if b, _ := json.Marshal(l); strings.Contains(string(b), "@") {
			return fmt.Errorf("the divergence answer carries PII: %s", b)
		}
		return nil
	})
	metric := fmt.Sprintf(`atomfed_tenant_divergent_rows{region=%q,tenant=%q}`, f.oldHome, f.tenant)
	metricEverywhere := func(want float64) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, func() error {
			for _, s := range f.c.Running() {
				if v, err := s.Metric(cx, metric); err != nil || v != want {
					return fmt.Errorf("%s on %s: %v %v, want %v", metric, s.ID(), v, err, want)
				}
			}
			return nil
		})
	}
	metricEverywhere(float64(len(want)))
	noted := false
	for _, e := range auditNotesSince(t, f.c.Running()[0], head) {
		noted = noted || strings.Contains(e, fmt.Sprintf("divergence_record: %d rows of tenant %s committed at %s after the failover are in quarantine at %s", len(want), f.tenant, f.oldHome, f.oldHome))
	}
	if !noted {
		t.Fatalf("no audit entry of the quarantine after %s", head)
	}
	cli := newCLI(t, f.c).with("ATOMFED_ADDR=" + f.c.Running()[0].URL)
	mustContain(t, "atomfed tenant divergence", cli.ok("tenant", "divergence", f.tenant), f.oldHome, "open: reconcile them", "orders="+fmt.Sprint(len(want)))

	// The old home equals the new home, PII kept, and follows it.
	after, theirs := rows(odb), rows(ndb)
	for id, n := range theirs {
		o, ok := after[id]
		switch {
		case !ok || o.amount != n.amount:
			t.Fatalf("row %d: %s has %+v, %s has %+v", id, f.oldHome, o, f.newHome, n)
		case before[id].email != nil && (o.email == nil || *o.email != *before[id].email):
			t.Fatalf("row %d lost its PII at %s", id, f.oldHome)
		case before[id].email == nil && ok && o.email != nil:
			t.Fatalf("row %d came from %s with PII at %s", id, f.newHome, f.oldHome)
		}
	}
	if len(after) != len(theirs) {
		t.Fatalf("%s has %d rows of %s, %s has %d", f.oldHome, len(after), f.tenant, f.newHome, len(theirs))
	}
	var id int64
	if err := ndb.QueryRow(cx, `INSERT INTO orders (tenant_id, amount, email) VALUES ($1, 7, NULL) RETURNING id`, f.tenant).Scan(&id); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		var amount int
		var email *string
		if err := odb.QueryRow(cx, `SELECT amount, email FROM orders WHERE tenant_id = $1 AND id = $2`, f.tenant, id).Scan(&amount, &email); err != nil {
			return fmt.Errorf("%s's write %d at %s: %v", f.newHome, id, f.oldHome, err)
		}
		if amount != 7 || email != nil {
			return fmt.Errorf("row %d at %s: %d %v", id, f.oldHome, amount, email)
		}
		return nil
	})

	// An operator marks the quarantine reconciled.
	head = settled(t, f.c)
	out := cli.ok("tenant", "divergence-resolve", f.tenant, "--region", f.oldHome, "--note", "merged by hand")
	mustContain(t, "atomfed tenant divergence-resolve", out, "marked reconciled")
	mustContain(t, "atomfed tenant divergence-resolve without --region", cli.fails("tenant", "divergence-resolve", f.tenant), "--region")
	metricEverywhere(0)
	noted = false
	for _, e := range auditNotesSince(t, f.c.Running()[0], head) {
		noted = noted || strings.Contains(e, "reconciled: merged by hand")
	}
	if !noted {
		t.Fatal("no audit entry of the resolve")
	}
}

// auditNotesSince returns "type: note" of the audit entries after head on
// s.
func auditNotesSince(t *testing.T, s *procs.ServerProc, head string) []string {
	t.Helper()
	a, err := s.Client.Audit(ctx(t, 10*time.Second), &client.QueryOptions{Consistency: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := false
	for _, e := range a.Recent {
		if seen {
			out = append(out, e.Type+": "+e.Note)
		}
		seen = seen || e.Hash == head
	}
	return out
}

// checkFailBack moves tenant back from its temporary home away to home
// (its residency region, a former home streaming from away) with a planned
// switchover, and checks issue 17 items 5 and 6 after a failover: nothing
// written at either is lost, every PII value home held before the
// fail-back (those written before the failover among them) is intact, the
// rows written while away have NULL PII at home, and home's PII column
// takes values again (no temporary-home guard at the residency region).
func checkFailBack(t *testing.T, cx context.Context, api *client.Client, pgs map[string]*pglocal.Cluster, tenant, away, home string) {
	t.Helper()
	conn := func(r string) *pgx.Conn {
		c, err := pgs[r].Connect(cx, pglocal.Database)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	hdb, adb := conn(home), conn(away)
	// The failover test cut home's replication login before home was
	// lost; an operator restores it before failing back.
	execPG(t, cx, hdb, `ALTER ROLE `+pglocal.ReplicationUser+` LOGIN`)
	rows := func(c *pgx.Conn) map[int64]orderRow { return tenantOrders(t, cx, c, tenant) }
	// A last write while away, then the fail-back once home has it.
	var last int64
	if err := adb.QueryRow(cx, `INSERT INTO orders (tenant_id, amount, email) VALUES ($1, 99, NULL) RETURNING id`, tenant).Scan(&last); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if _, ok := rows(hdb)[last]; !ok {
			return fmt.Errorf("row %d not yet at %s", last, home)
		}
		return nil
	})
	before := rows(hdb)
	pii := 0
	for _, r := range before {
		if r.email != nil {
			pii++
		}
	}
	if pii == 0 {
		t.Fatalf("%s holds no PII of %s before the fail-back: nothing to check", home, tenant)
	}
	asked := time.Now()
	if _, err := api.StartSwitchover(cx, tenant, wire.SwitchoverRequest{To: home}); err != nil {
		t.Fatalf("fail-back of %s to %s: %v", tenant, home, err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		st, _, err := api.Switchover(cx, tenant, nil)
		if err != nil {
			return err
		}
		if st.Kind != fsm.SwitchoverKind || st.To != home || st.Phase != fsm.PhaseDone {
			var tasks []string
			for _, tk := range st.Tasks {
				tasks = append(tasks, fmt.Sprintf("%s %s %s %s", tk.ID, tk.Status, tk.Error, tk.Result))
			}
			return fmt.Errorf("fail-back: %s %s -> %s %s; tasks: %s", st.Kind, st.From, st.To, st.Phase, strings.Join(tasks, "; "))
		}
		return nil
	})
	t.Logf("fail-back %s -> %s done %s after the request", away, home, time.Since(asked).Round(time.Millisecond))
	after := rows(hdb)
	if len(after) != len(before) {
		t.Fatalf("%s has %d rows of %s after the fail-back, %d before", home, len(after), tenant, len(before))
	}
	for id, b := range before {
		a := after[id]
		if a.amount != b.amount || (b.email == nil) != (a.email == nil) || (b.email != nil && *a.email != *b.email) {
			t.Fatalf("row %d at %s changed by the fail-back: %+v -> %+v", id, home, b, a)
		}
	}
	if r := after[last]; r.email != nil {
		t.Fatalf("row %d written while away has PII %q at %s", last, *r.email, home)
	}
	// Home takes writes again, PII included, and away follows it.
	var id int64
	if err := hdb.QueryRow(cx, `INSERT INTO orders (tenant_id, amount, email) VALUES ($1, 5, 'home-again@example.com') RETURNING id`, tenant).Scan(&id); err != nil {
		t.Fatalf("a write with PII at %s after the fail-back: %v", home, err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		r, ok := rows(adb)[id]
		switch {
		case !ok:
			return fmt.Errorf("row %d not yet at %s", id, away)
		case r.amount != "5" || r.email != nil:
			return fmt.Errorf("row %d at %s: %+v (PII must stay at %s)", id, away, r, home)
		}
		return nil
	})
	if _, err := adb.Exec(cx, `INSERT INTO orders (tenant_id, amount) VALUES ($1, 1)`, tenant); err == nil {
		t.Fatalf("%s took a write of %s after the fail-back: two writable homes", away, tenant)
	}
}

// orderRow is a row of the failover tests' orders table: its amount and
// its PII column.
type orderRow struct {
	amount string
	email  *string
}

// tenantOrders reads tenant's rows of orders in one database, by id.
func tenantOrders(t *testing.T, cx context.Context, c *pgx.Conn, tenant string) map[int64]orderRow {
	t.Helper()
	rs, err := c.Query(cx, `SELECT id, amount::text, email FROM orders WHERE tenant_id = $1`, tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	out := map[int64]orderRow{}
	for rs.Next() {
		var id int64
		var r orderRow
		if err := rs.Scan(&id, &r.amount, &r.email); err != nil {
			t.Fatal(err)
		}
		out[id] = r
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
