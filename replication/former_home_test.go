package replication_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// taskRun is one replication executor running a task in the test's
// process, against a region's real PostgreSQL, as an agent would run it.
type taskRun struct {
	mu     sync.Mutex
	last   structs.TaskStatus
	cancel context.CancelFunc
	done   chan struct{}
}

func runTask(t *testing.T, pg *pglocal.Cluster, region, typ string, spec any) *taskRun {
	t.Helper()
	ex, err := replication.Executors(replication.Config{DSN: pg.DSN(pglocal.Database), ReplicationPassfile: pg.Passfile,
		ReplicationCA: pg.RootCert, Interval: 200 * time.Millisecond, Registerer: prometheus.NewRegistry(), Logger: testLogger(region)})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(spec)
	task := &fsm.Task{ID: typ + "/" + region, Type: typ, Region: region, Spec: raw}
	ctx, cancel := context.WithCancel(context.Background())
	r := &taskRun{cancel: cancel, done: make(chan struct{})}
	for _, e := range ex {
		if e.Type() != typ {
			continue
		}
		go func() {
			defer close(r.done)
			if err := e.Run(ctx, task, func(st structs.TaskStatus) { r.mu.Lock(); r.last = st; r.mu.Unlock() }); err != nil {
				t.Errorf("%s: %v", task.ID, err)
			}
		}()
		t.Cleanup(r.stop)
		return r
	}
	t.Fatalf("no executor of type %s", typ)
	return nil
}

func (r *taskRun) stop() {
	r.cancel()
	<-r.done
}

func (r *taskRun) status() structs.TaskStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// TestFormerHomeMirrorsTheNewHomeAndKeepsItsPII runs the database side of
// a switchover of tenant acme from oldhome to newhome on two real
// PostgreSQL clusters, with the real publisher and subscriber executors:
// oldhome publishes acme and newhome mirrors it; oldhome is fenced;
// newhome applies up to the fenced LSN, is promoted by hand and publishes
// acme; the former-home slot is made at newhome; oldhome's subscriber in
// former-home mode waits for that slot, then subscribes without a copy.
// Every row newhome writes (inserts, updates of rows that have PII at
// oldhome, deletes, before and after the subscription exists) reaches
// oldhome once; oldhome's PII of its rows is intact after newhome's
// updates, newhome's inserts have NULL PII there, other tenants' rows are
// untouched, the application's writes at oldhome are still refused by the
// fence, and a teardown of the former-home subscriber leaves every row.
// Each function runs twice (idempotent).
func TestFormerHomeMirrorsTheNewHomeAndKeepsItsPII(t *testing.T) {
	pgs := pgtest.NewFederation(t, "oldhome", "newhome")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	sql := pgSQL{t: t, ctx: ctx, pgs: pgs}
	connect, exec := sql.connect, sql.exec
	value := func(c *pgx.Conn, sql string, args ...any) string {
		t.Helper()
		var v *string
		if err := c.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if v == nil {
			return "<null>"
		}
		return *v
	}
	// sum is a count and digest of acme's published columns.
	const sumSQL = `SELECT count(*)::text || ':' || coalesce(md5(string_agg(concat_ws('|', ` + orderCols + `), ',' ORDER BY id)), '')
		FROM orders WHERE tenant_id = 'acme'`
	sum := func(c *pgx.Conn) string { return value(c, sumSQL) }
	waitSame := func(what string, a, b *pgx.Conn) {
		t.Helper()
		testutil.Eventually(t, 60*time.Second, func() error {
			var x, y string
			if err := a.QueryRow(ctx, sumSQL).Scan(&x); err != nil {
				return err
			}
			if err := b.QueryRow(ctx, sumSQL).Scan(&y); err != nil {
				return err
			}
			if x != y {
				return fmt.Errorf("%s: acme's rows differ: %s vs %s", what, x, y)
			}
			return nil
		})
	}
	endpoint := func(region string) *fsm.DatabaseEndpoint {
		h, p, d := pgs[region].Endpoint()
		return &fsm.DatabaseEndpoint{Host: h, Port: p, Database: d}
	}
	old, nw := connect("oldhome"), connect("newhome")
	tables := []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	pub := fsm.TenantPublication("acme")
	pubSpec := func(home, mirror string) fsm.PublisherSpec {
		return fsm.PublisherSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant, Tenant: "acme", Region: home, Publication: pub,
			Tables: tables, Subscriptions: []string{fsm.TenantSubscription("acme", mirror)}, SlotPrefix: fsm.TenantSlotPrefix("acme")}
	}
	subSpec := func(source, mirror string) fsm.SubscriberSpec {
		return fsm.SubscriberSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant, Tenant: "acme", Source: source, SourceDB: endpoint(source),
			Region: mirror, Publication: pub, Subscription: fsm.TenantSubscription("acme", mirror), Tables: tables}
	}

	// 1. oldhome is acme's home, with PII; newhome mirrors it the normal way.
	exec(old, ordersDDL,
		`INSERT INTO orders SELECT 'acme', g, g, 'n' || g, 'u' || g || '@acme.test' FROM generate_series(1, 60) g`,
		`INSERT INTO orders SELECT 'initech', g, g, 'i' || g, 'i' || g || '@initech.test' FROM generate_series(1, 5) g`)
	oldPub := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantPublisher, pubSpec("oldhome", "newhome"))
	mirrorSub := runTask(t, pgs["newhome"], "newhome", fsm.TaskTypeTenantSubscriber, subSpec("oldhome", "newhome"))
	waitSame("initial copy", old, nw)
	exec(old, `UPDATE orders SET amount = amount + 1000 WHERE tenant_id = 'acme' AND id <= 10`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id = 60`,
		`INSERT INTO orders SELECT 'acme', g, g, 'n' || g, 'u' || g || '@acme.test' FROM generate_series(61, 70) g`)

	// 2. Fence acme at oldhome; wait until newhome applied up to the fence.
	fence := replication.Fence{Tenant: "acme", Epoch: 2, WritesTo: "newhome", Tables: tables}
	fenced, err := replication.FenceTenant(ctx, old, fence)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if ok := value(old, `SELECT (confirmed_flush_lsn >= $1::pg_lsn)::text FROM pg_replication_slots WHERE slot_name = $2`,
			fenced, fsm.TenantSubscription("acme", "newhome")); ok != "true" {
			return fmt.Errorf("newhome has not confirmed the fenced LSN %s yet", fenced)
		}
		return nil
	})
	atFence := sum(old)
	if got := sum(nw); got != atFence {
		t.Fatalf("newhome caught up to the fence with %s of acme's rows, oldhome has %s", got, atFence)
	}
	piiBefore := value(old, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`)
	initechBefore := value(old, `SELECT string_agg(concat_ws('|', id, amount, note, email), ',' ORDER BY id) FROM orders WHERE tenant_id = 'initech'`)

	// 3. Promote newhome by hand: detach its subscription, bring back the
	// PII column as nullable; oldhome's publisher is torn down (it drops
	// the publication and the detached slot); newhome publishes acme.
	mirrorSub.stop()
	exec(nw, `ALTER SUBSCRIPTION `+fsm.TenantSubscription("acme", "newhome")+` DISABLE`,
		`ALTER SUBSCRIPTION `+fsm.TenantSubscription("acme", "newhome")+` SET (slot_name = NONE)`,
		`DROP SUBSCRIPTION `+fsm.TenantSubscription("acme", "newhome"),
		`ALTER TABLE orders ADD COLUMN email text`)
	oldPub.stop()
	gone := pubSpec("oldhome", "newhome")
	gone.Ensure = fsm.EnsureAbsent
	teardown := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantPublisher, gone)
	select {
	case <-teardown.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("oldhome's publisher teardown did not finish: %+v", teardown.status())
	}
	// No slot before the publication: decoding a change needs it.
	if _, err := replication.CreateFormerHomeSlot(ctx, nw, "acme", "oldhome"); err == nil || !strings.Contains(err.Error(), "publish the tenant here first") {
		t.Fatalf("CreateFormerHomeSlot before the publication: %v", err)
	}
	if n := value(nw, `SELECT count(*)::text FROM pg_replication_slots`); n != "0" {
		t.Fatalf("a refused CreateFormerHomeSlot left %s slots", n)
	}
	runTask(t, pgs["newhome"], "newhome", fsm.TaskTypeTenantPublisher, pubSpec("newhome", "oldhome"))
	testutil.Eventually(t, 60*time.Second, func() error {
		var cols string
		if err := nw.QueryRow(ctx, `SELECT attnames::text FROM pg_publication_tables WHERE pubname = $1`, pub).Scan(&cols); err != nil {
			return err
		}
		if cols != "{tenant_id,id,amount,note}" {
			return fmt.Errorf("newhome publishes %s of orders", cols)
		}
		return nil
	})

	// The old home's agent reads the new home as the replication role,
	// with the old home's passfile and CA, limited to what is published.
	host, port, db := pgs["newhome"].Endpoint()
	repl, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d dbname=%s user=%s passfile=%s sslmode=verify-full sslrootcert=%s",
		host, port, db, pglocal.ReplicationUser, pgs["oldhome"].Passfile, pgs["oldhome"].RootCert))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { repl.Close(context.Background()) })

	// 4. oldhome's subscriber in former-home mode waits for the slot and
	// changes nothing meanwhile.
	former := subSpec("newhome", "oldhome")
	former.FormerHome = true
	formerSub := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantSubscriber, former)
	testutil.Eventually(t, 60*time.Second, func() error {
		if st := formerSub.status(); !strings.Contains(st.Error, "no former-home slot") {
			return fmt.Errorf("the former home's subscriber reports %q, want it to wait for the slot", st.Error)
		}
		return nil
	})
	if n := value(old, `SELECT count(*)::text FROM pg_subscription`); n != "0" {
		t.Fatalf("the former home subscribed before the slot existed (%s subscriptions)", n)
	}
	if got := sum(old); got != atFence {
		t.Fatalf("waiting for the slot, the former home's acme rows changed: %s, had %s", got, atFence)
	}
	err = replication.SubscribeFormerHome(ctx, old, repl, replication.Config{ReplicationPassfile: pgs["oldhome"].Passfile, ReplicationCA: pgs["oldhome"].RootCert}, former)
	if !errors.Is(err, replication.ErrNoFormerHomeSlot) {
		t.Fatalf("SubscribeFormerHome without the slot: %v, want ErrNoFormerHomeSlot", err)
	}

	// A planned switchover leaves nothing to quarantine.
	if n, err := replication.QuarantineDivergence(ctx, old, repl, "acme", tables); err != nil || n != 0 {
		t.Fatalf("QuarantineDivergence after a planned switchover: %d %v, want 0", n, err)
	}

	// 5. The slot at newhome, before it takes acme's writes (twice).
	slotLSN, err := replication.CreateFormerHomeSlot(ctx, nw, "acme", "oldhome")
	if err != nil || slotLSN == "" {
		t.Fatalf("CreateFormerHomeSlot: %q %v", slotLSN, err)
	}
	if again, err := replication.CreateFormerHomeSlot(ctx, nw, "acme", "oldhome"); err != nil || again != slotLSN {
		t.Fatalf("CreateFormerHomeSlot again: %q %v, want %s", again, err, slotLSN)
	}

	// 6. newhome takes acme's writes: inserts, updates of rows that have
	// PII at oldhome, deletes; some before oldhome subscribes.
	write := func(stmts ...string) {
		t.Helper()
		exec(nw, stmts...)
	}
	write(`INSERT INTO orders SELECT 'acme', g, g, 'new' || g, NULL FROM generate_series(100, 109) g`,
		`UPDATE orders SET amount = amount + 5000, note = 'moved' WHERE tenant_id = 'acme' AND id BETWEEN 1 AND 20`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id BETWEEN 21 AND 25`)
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := value(old, `SELECT count(*)::text FROM pg_subscription WHERE subname = $1`, former.Subscription); n != "1" {
			return fmt.Errorf("the former home has not subscribed yet: %+v", formerSub.status())
		}
		return nil
	})
	write(`INSERT INTO orders SELECT 'acme', g, g, 'new' || g, NULL FROM generate_series(110, 114) g`,
		`UPDATE orders SET note = 'again' WHERE tenant_id = 'acme' AND id IN (2, 30, 61, 100)`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id IN (3, 62, 101)`)
	waitSame("after newhome's writes", nw, old)

	// Every row once, the same values; PII intact where oldhome had it.
	if want := "76:"; !strings.HasPrefix(sum(old), want) {
		t.Fatalf("oldhome has %s of acme's rows, want 76 (69 + 15 inserted - 8 deleted at newhome)", sum(old))
	}
	piiAfter := value(old, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id < 100`)
	var kept []string
	for _, kv := range strings.Split(piiBefore, ",") {
		id := strings.SplitN(kv, "=", 2)[0]
		if id == "3" || id == "62" || (len(id) == 2 && id >= "21" && id <= "25") {
			continue // deleted at newhome
		}
		kept = append(kept, kv)
	}
	if piiAfter != strings.Join(kept, ",") {
		t.Fatalf("oldhome's PII of acme after newhome's updates:\n%s\nwant\n%s", piiAfter, strings.Join(kept, ","))
	}
	if n := value(old, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND id < 100 AND email IS NULL`); n != "0" {
		t.Fatalf("%s of oldhome's acme rows lost their PII", n)
	}
	if n := value(old, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND id >= 100 AND email IS NULL`); n != "14" {
		t.Fatalf("%s of newhome's 14 inserted rows have NULL PII at oldhome, want all", n)
	}
	if v := value(old, `SELECT concat_ws('|', amount, note, email) FROM orders WHERE tenant_id = 'acme' AND id = 2`); v != "6002.00|again|u2@acme.test" {
		t.Fatalf("acme's row 2 at oldhome after two updates at newhome: %s", v)
	}
	if got := value(old, `SELECT string_agg(concat_ws('|', id, amount, note, email), ',' ORDER BY id) FROM orders WHERE tenant_id = 'initech'`); got != initechBefore {
		t.Fatalf("initech's rows at oldhome changed: %s, had %s", got, initechBefore)
	}
	if v := value(old, `SELECT coalesce(string_agg(DISTINCT srsubstate::text, ','), '') FROM pg_subscription_rel`); v != "r" {
		t.Fatalf("the former home's subscription tables are in states %q, want only r (ready, nothing copied)", v)
	}
	if v := value(old, `SELECT (apply_error_count + sync_error_count)::text FROM pg_stat_subscription_stats WHERE subname = $1`, former.Subscription); v != "0" {
		t.Fatalf("the former home's subscription met %s errors", v)
	}

	// The application's writes at oldhome are still refused by the fence.
	_, err = old.Exec(ctx, `INSERT INTO orders VALUES ('acme', 500, 1, 'x', 'x@acme.test')`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != replication.FencedSQLState {
		t.Fatalf("an application write of acme at the former home: %v, want SQLSTATE %s", err, replication.FencedSQLState)
	}

	// SubscribeFormerHome on the existing subscription changes nothing.
	oid := value(old, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, former.Subscription)
	for i := 0; i < 2; i++ {
		if err := replication.SubscribeFormerHome(ctx, old, repl, replication.Config{ReplicationPassfile: pgs["oldhome"].Passfile,
			ReplicationCA: pgs["oldhome"].RootCert}, former); err != nil {
			t.Fatalf("SubscribeFormerHome again: %v", err)
		}
	}
	if again := value(old, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, former.Subscription); again != oid {
		t.Fatalf("SubscribeFormerHome replaced the subscription (%s, was %s)", again, oid)
	}

	// A teardown of the former-home subscriber keeps acme's rows and PII.
	formerSub.stop()
	before := sum(old)
	former.Ensure = fsm.EnsureAbsent
	down := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantSubscriber, former)
	select {
	case <-down.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the former home's teardown did not finish: %+v", down.status())
	}
	if got := sum(old); got != before {
		t.Fatalf("the former home's teardown changed acme's rows: %s, had %s", got, before)
	}
	if got := value(old, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id < 100`); got != piiAfter {
		t.Fatalf("the former home's teardown changed acme's PII: %s", got)
	}
}

// TestQuarantineKeepsTheFormerHomesDivergentRows gives the old home
// (real PostgreSQL) rows of acme that the new home lacks or holds with
// other values, as an unplanned failover leaves them: QuarantineDivergence
// copies exactly those into atomfed_quarantine.divergent_rows, with the
// whole row (PII included, in the old home's database) and the new home's
// row, and counts them; run again, it counts the same and duplicates
// nothing; the old home's table and another tenant's rows are untouched.
func TestQuarantineKeepsTheFormerHomesDivergentRows(t *testing.T) {
	pgs := pgtest.NewFederation(t, "oldhome", "newhome")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	sql := pgSQL{t: t, ctx: ctx, pgs: pgs}
	old, nw, exec := sql.connect("oldhome"), sql.connect("newhome"), sql.exec
	value := func(c *pgx.Conn, sql string) string {
		t.Helper()
		var v string
		if err := c.QueryRow(ctx, sql).Scan(&v); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return v
	}
	tables := []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	exec(old, ordersDDL,
		`INSERT INTO orders SELECT 'acme', g, g, 'n' || g, 'u' || g || '@acme.test' FROM generate_series(1, 12) g`,
		`INSERT INTO orders SELECT 'initech', g, g, 'i', 'x@initech.test' FROM generate_series(1, 3) g`)
	// The new home: no 5 and no 12 (never streamed), 7 with another
	// amount, 3 with another PII value only (not compared), 11 missing at
	// the old home (its own insert), and no initech.
	exec(nw, `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount numeric(12,2) NOT NULL, note text, email text, PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO orders SELECT 'acme', g, g, 'n' || g, NULL FROM generate_series(1, 11) g WHERE g <> 5`,
		`UPDATE orders SET amount = 700 WHERE id = 7`,
		`UPDATE orders SET email = 'other@acme.test' WHERE id = 3`,
		`CREATE PUBLICATION `+fsm.TenantPublication("acme")+` FOR TABLE orders (tenant_id, id, amount, note) WHERE (tenant_id = 'acme')`)
	exec(old, `DELETE FROM orders WHERE tenant_id = 'acme' AND id = 11`)
	table := value(old, `SELECT md5(string_agg(concat_ws('|', tenant_id, id, amount, note, email), ',' ORDER BY tenant_id, id)) FROM orders`)

	for i := 0; i < 2; i++ {
		n, err := replication.QuarantineDivergence(ctx, old, nw, "acme", tables)
		if err != nil || n != 3 {
			t.Fatalf("QuarantineDivergence (run %d): %d %v, want 3 rows (5, 7, 12)", i+1, n, err)
		}
	}
	got := value(old, `SELECT string_agg(concat_ws('|', tenant_id, table_name, row_key->>'id', reason, home_row->>'email', home_row->>'amount', new_home_row->>'amount'), ',' ORDER BY (row_key->>'id')::int)
		FROM atomfed_quarantine.divergent_rows`)
	want := "acme|public.orders|5|missing_at_new_home|u5@acme.test|5.00," +
		"acme|public.orders|7|differs_from_new_home|u7@acme.test|7.00|700.00," +
		"acme|public.orders|12|missing_at_new_home|u12@acme.test|12.00"
	if got != want {
		t.Fatalf("the quarantine holds\n%s\nwant\n%s", got, want)
	}
	if after := value(old, `SELECT md5(string_agg(concat_ws('|', tenant_id, id, amount, note, email), ',' ORDER BY tenant_id, id)) FROM orders`); after != table {
		t.Fatal("QuarantineDivergence changed the old home's table")
	}
	// Nothing to compare with: the new home must publish the tenant.
	if _, err := replication.QuarantineDivergence(ctx, old, nw, "initech", tables); err == nil || !strings.Contains(err.Error(), "no publication") {
		t.Fatalf("QuarantineDivergence of a tenant the new home does not publish: %v", err)
	}
}
