package replication_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// TestOldHomeComesBackAfterAFailover runs an unplanned failover of tenant
// acme by hand on two real PostgreSQL clusters and then the old home's
// tenant-subscriber with resync, as its agent runs it when it comes back:
// oldhome is acme's home (rows with PII), newhome mirrors it; newhome's
// subscription stops, oldhome takes more writes newhome never gets;
// newhome is promoted by hand and takes writes of its own (inserts,
// updates, deletes, one of a row oldhome changed too). The resync, cut
// short at each boundary between its steps and run again, fences oldhome
// first, quarantines exactly the rows that differ from newhome's, makes
// oldhome's published columns equal newhome's with its PII kept, and
// subscribes without a copy from the slot it reconciled at; newhome's
// later writes stream to oldhome once; a run again changes nothing; a
// fail-back's promotion at oldhome lifts the fence with the PII intact.
func TestOldHomeComesBackAfterAFailover(t *testing.T) {
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
			Region: mirror, Publication: pub, Subscription: fsm.TenantSubscription("acme", mirror), Tables: tables, TenantCreated: 7, Epoch: 1}
	}

	// 1. oldhome is acme's home; newhome mirrors it.
	exec(old, ordersDDL,
		`INSERT INTO orders SELECT 'acme', g, g, 'n' || g, 'u' || g || '@acme.test' FROM generate_series(1, 60) g`,
		`INSERT INTO orders SELECT 'initech', g, g, 'i' || g, 'i' || g || '@initech.test' FROM generate_series(1, 5) g`)
	oldPub := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantPublisher, pubSpec("oldhome", "newhome"))
	mirrorSub := runTask(t, pgs["newhome"], "newhome", fsm.TaskTypeTenantSubscriber, subSpec("oldhome", "newhome"))
	waitSame("initial copy", old, nw)

	// 2. newhome stops getting oldhome's changes; oldhome commits more:
	// new rows 61-65, updates of 1-3, a delete of 60.
	mirrorSub.stop()
	exec(nw, `ALTER SUBSCRIPTION `+fsm.TenantSubscription("acme", "newhome")+` DISABLE`)
	exec(old, `INSERT INTO orders SELECT 'acme', g, g, 'lost' || g, 'u' || g || '@acme.test' FROM generate_series(61, 65) g`,
		`UPDATE orders SET amount = amount + 100 WHERE tenant_id = 'acme' AND id <= 3`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id = 60`)

	// 3. The failover, by hand: newhome is promoted without oldhome (its
	// subscription detached, PII column back) and publishes acme, with
	// oldhome among its subscribers. oldhome's publisher is gone.
	exec(nw, `ALTER SUBSCRIPTION `+fsm.TenantSubscription("acme", "newhome")+` SET (slot_name = NONE)`,
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
	// newhome's own writes: inserts, updates (2 was updated at oldhome
	// too), deletes.
	exec(nw, `INSERT INTO orders SELECT 'acme', g, g, 'new' || g, NULL FROM generate_series(100, 104) g`,
		`UPDATE orders SET note = 'b' WHERE tenant_id = 'acme' AND id IN (2, 10, 11, 12)`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id IN (20, 21)`)
	piiBefore := value(old, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id < 60 AND id NOT IN (20, 21)`)
	oldBefore := sum(old)
	initechBefore := value(old, `SELECT string_agg(concat_ws('|', id, amount, note, email), ',' ORDER BY id) FROM orders WHERE tenant_id = 'initech'`)

	// 4. oldhome comes back: its subscriber with resync, cut short at
	// each boundary between its steps.
	spec := subSpec("newhome", "oldhome")
	spec.Epoch, spec.FormerHome, spec.Resync = 2, true, true
	slot := fsm.TenantSubscription("acme", "oldhome")
	refused := func() {
		t.Helper()
		_, err := old.Exec(ctx, `INSERT INTO orders VALUES ('acme', 500, 1, 'x', 'x@acme.test')`)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != replication.FencedSQLState || !strings.Contains(pe.Message, "newhome") {
			t.Fatalf("an application write of acme at the old home: %v, want SQLSTATE %s naming newhome", err, replication.FencedSQLState)
		}
	}
	quarantined := func() string {
		if value(old, `SELECT (to_regclass('atomfed_quarantine.divergent_rows') IS NULL)::text`) == "true" {
			return ""
		}
		return value(old, `SELECT coalesce(string_agg((row_key->>'id') || ':' || reason, ',' ORDER BY (row_key->>'id')::int), '') FROM atomfed_quarantine.divergent_rows`)
	}
	// cutShortAt runs the resync until it reaches point, where its
	// context is cancelled (an agent killed there), and waits for it to
	// end.
	cutShortAt := func(point string) {
		t.Helper()
		hit, cancelled := make(chan struct{}), make(chan struct{})
		var once sync.Once
		unset := replication.SetResyncPoint(func(p string) {
			if p == point {
				once.Do(func() {
					close(hit)
					<-cancelled // the step goes on with its context cancelled
				})
			}
		})
		defer unset()
		run := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantSubscriber, spec)
		select {
		case <-hit:
		case <-time.After(60 * time.Second):
			t.Fatalf("the resync never reached %s: %+v", point, run.status())
		}
		run.cancel()
		close(cancelled)
		run.stop()
	}
	// A subscription of the name oldhome will use, left from before (as
	// at a former home that followed the lost home): the resync detaches
	// it without reaching its source.
	exec(old, `CREATE SUBSCRIPTION `+slot+` CONNECTION 'host=lost.invalid dbname=x' PUBLICATION `+pub+` WITH (connect = false)`)
	for _, point := range []string{"fenced", "slot_created", "read", "quarantined"} {
		cutShortAt(point)
		// Cut short before its commit: fenced, and nothing else changed.
		refused()
		if got := sum(old); got != oldBefore {
			t.Fatalf("cut short at %s, the resync changed oldhome's rows: %s, had %s", point, got, oldBefore)
		}
		if q := quarantined(); q != "" {
			t.Fatalf("cut short at %s, the resync left rows in quarantine: %s", point, q)
		}
		if n := value(old, `SELECT count(*)::text FROM pg_subscription WHERE subconninfo NOT LIKE '%lost.invalid%'`); n != "0" {
			t.Fatalf("cut short at %s, the resync subscribed", point)
		}
	}
	// From here on newhome takes writes all the time (rows 1000 on: new
	// ones, updates and deletes of them), so that the slot's consistent
	// point and the rows the reconcile reads must be the same moment:
	// one row missed or read twice and the subscription's apply fails
	// or the rows differ at the end.
	wconn := connect("newhome")
	stopWriter, writerDone := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		defer func() { writerDone <- n }()
		for {
			select {
			case <-stopWriter:
				return
			case <-time.After(2 * time.Millisecond):
			}
			id := 1000 + n
			stmts := []string{fmt.Sprintf(`INSERT INTO orders VALUES ('acme', %d, %d, 'w', NULL)`, id, n)}
			if n%3 == 2 {
				stmts = append(stmts, fmt.Sprintf(`UPDATE orders SET note = 'w2' WHERE tenant_id = 'acme' AND id = %d`, id-1))
			}
			if n%5 == 4 {
				stmts = append(stmts, fmt.Sprintf(`DELETE FROM orders WHERE tenant_id = 'acme' AND id = %d`, id-3))
			}
			for _, st := range stmts {
				if _, err := wconn.Exec(ctx, st); err != nil {
					t.Errorf("writer at newhome: %s: %v", st, err)
					return
				}
			}
			n++
		}
	}()
	var writes int
	stop := func() {
		if stopWriter != nil {
			close(stopWriter)
			writes = <-writerDone
			stopWriter = nil
		}
	}
	t.Cleanup(stop)

	// Cut short after its commit, before the subscription.
	cutShortAt("reconciled")
	reconciledAt := value(old, `SELECT slot_lsn::text FROM atomfed.tenant_resyncs WHERE tenant_id = 'acme'`)
	if n := value(old, `SELECT count(*)::text FROM pg_subscription`); n != "0" {
		t.Fatalf("the resync left %s subscriptions before subscribing itself (the one to the lost home must go)", n)
	}
	if got := value(nw, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1`, slot); got != "1" {
		t.Fatalf("after the reconcile the slot %s is missing at newhome", slot)
	}

	// 5. Run to the end: it subscribes from the slot it reconciled at.
	sub := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantSubscriber, spec)
	var st *fsm.ResyncStatus
	testutil.Eventually(t, 60*time.Second, func() error {
		r, _ := sub.status().Result.(*fsm.SubscriberResult)
		if r == nil || r.Resync == nil || r.Resync.Phase != fsm.ResyncStreaming {
			return fmt.Errorf("the resync reports %+v", sub.status())
		}
		st = r.Resync
		return nil
	})
	// Quarantined: 61-65 (oldhome's own inserts) and 20, 21 (deleted at
	// newhome) are missing there; 1-3 (oldhome's updates, 2 at newhome
	// too) and 10-12 (newhome's updates) differ. 60, deleted at oldhome
	// only, is not (nothing of it is left here to keep).
	const want = "1:differs_from_new_home,2:differs_from_new_home,3:differs_from_new_home,10:differs_from_new_home,11:differs_from_new_home,12:differs_from_new_home," +
		"20:missing_at_new_home,21:missing_at_new_home,61:missing_at_new_home,62:missing_at_new_home,63:missing_at_new_home,64:missing_at_new_home,65:missing_at_new_home"
	if q := quarantined(); q != want {
		t.Fatalf("the quarantine holds\n%s\nwant\n%s", q, want)
	}
	if st.DivergentTotal != 13 || st.Missing != 7 || st.Divergent["public.orders"] != 13 || st.Reconciled < 19 || st.SlotLSN != reconciledAt {
		t.Fatalf("the resync reports %+v, want 13 divergent (7 missing), 19 reconciled (12 written, 7 deleted) and the writer's rows, slot at %s", st, reconciledAt)
	}
	// The report names each quarantined row's key and reason (no PII).
	var keys []string
	for _, k := range st.Keys {
		var key struct {
			ID     int64  `json:"id"`
			Tenant string `json:"tenant_id"`
		}
		if err := json.Unmarshal([]byte(k.Key), &key); err != nil || key.Tenant != "acme" || k.Table != "public.orders" {
			t.Fatalf("reported key %+v: %v", k, err)
		}
		keys = append(keys, fmt.Sprintf("%d:%s", key.ID, k.Reason))
	}
	sort.Slice(keys, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.Split(keys[i], ":")[0])
		b, _ := strconv.Atoi(strings.Split(keys[j], ":")[0])
		return a < b
	})
	if strings.Join(keys, ",") != want {
		t.Fatalf("the resync reports the keys\n%s\nwant\n%s", strings.Join(keys, ","), want)
	}
	if v := value(old, `SELECT concat_ws('|', (home_row->>'amount'), home_row->>'email', new_home_row->>'note') FROM atomfed_quarantine.divergent_rows WHERE row_key->>'id' = '2'`); v != "102.00|u2@acme.test|b" {
		t.Fatalf("the quarantined row 2: %s", v)
	}
	// 6. newhome writes more; it streams to oldhome once.
	time.Sleep(300 * time.Millisecond)
	stop()
	t.Logf("newhome's writer made %d inserts (and updates, deletes) during the reconcile and the subscription", writes)
	exec(nw, `INSERT INTO orders SELECT 'acme', g, g, 'later' || g, NULL FROM generate_series(105, 107) g`,
		`UPDATE orders SET amount = 1 WHERE tenant_id = 'acme' AND id IN (1, 100)`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id = 4`)
	waitSame("after newhome's later writes", nw, old)
	if n := value(old, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND id < 1000`); n != "65" {
		t.Fatalf("oldhome has %s of acme's rows, want 65 (newhome's 60 + 8 new - 3 deleted)", n)
	}
	if n := value(old, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND id >= 1000 AND email IS NULL`); n != fmt.Sprint(writes-writes/5) {
		t.Fatalf("oldhome has %s of the writer's %d rows (less %d deleted) with NULL PII", n, writes, writes/5)
	}
	piiAfter := value(old, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id < 60`)
	if want := strings.Replace(piiBefore, "4=u4@acme.test,", "", 1); piiAfter != want {
		t.Fatalf("oldhome's PII of its surviving rows:\n%s\nwant\n%s", piiAfter, want)
	}
	if n := value(old, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND (id = 60 OR id BETWEEN 100 AND 999) AND email IS NULL`); n != "9" {
		t.Fatalf("%s of the 9 rows oldhome got from newhome have NULL PII, want all", n)
	}
	if got := value(old, `SELECT string_agg(concat_ws('|', id, amount, note, email), ',' ORDER BY id) FROM orders WHERE tenant_id = 'initech'`); got != initechBefore {
		t.Fatalf("initech's rows at oldhome changed: %s", got)
	}
	if v := value(old, `SELECT coalesce(string_agg(DISTINCT srsubstate::text, ','), '') FROM pg_subscription_rel`); v != "r" {
		t.Fatalf("oldhome's subscription tables are in states %q, want only r (nothing copied)", v)
	}
	if v := value(old, `SELECT (apply_error_count + sync_error_count)::text FROM pg_stat_subscription_stats WHERE subname = $1`, slot); v != "0" {
		t.Fatalf("oldhome's subscription met %s errors", v)
	}
	refused()

	// 7. Run again: nothing changes (same subscription, rows, counts).
	oid := value(old, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, slot)
	versions := value(old, `SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`)
	sub.stop()
	// (At a later epoch with the same source, as a re-plan gives it.)
	later := spec
	later.Epoch = 3
	again := runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantSubscriber, later)
	testutil.Eventually(t, 60*time.Second, func() error {
		r, _ := again.status().Result.(*fsm.SubscriberResult)
		if r == nil || r.Resync == nil || r.Resync.Phase != fsm.ResyncStreaming {
			return fmt.Errorf("the resync run again reports %+v", again.status())
		}
		if r.Resync.DivergentTotal != 13 || r.Resync.Reconciled != st.Reconciled {
			return fmt.Errorf("the resync run again reports %+v", r.Resync)
		}
		return nil
	})
	if got := value(old, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, slot); got != oid {
		t.Fatalf("run again, the resync replaced the subscription")
	}
	if got := value(old, `SELECT string_agg(id || ':' || xmin::text, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`); got != versions {
		t.Fatal("run again, the resync wrote acme's rows again")
	}
	if q := quarantined(); q != want {
		t.Fatalf("run again, the quarantine holds %s", q)
	}

	// 8. A fail-back (a planned switchover back) lifts the resync's
	// fence: its promotion at oldhome lifts a fence of an older or the
	// same placement. (newhome takes no writes here, as if fenced.)
	again.stop()
	back := fsm.PromoteSpec{Tenant: "acme", Region: "oldhome", Subscription: slot, Source: "newhome", SourceDB: endpoint("newhome"),
		Publication: pub, Tables: tables, PII: []fsm.PIIColumnType{{Table: "public.orders", Column: "email", Type: "text", TypMod: -1}},
		HandOff: []string{"newhome"}, Switchover: 99, TenantCreated: 7, Epoch: 3}
	runTask(t, pgs["oldhome"], "oldhome", fsm.TaskTypeTenantPromote, back).waitDone(t, 60*time.Second)
	if _, err := old.Exec(ctx, `INSERT INTO orders VALUES ('acme', 5000, 1, 'after fail-back', 'fb@acme.test')`); err != nil {
		t.Fatalf("an application write at oldhome after the fail-back's promotion: %v", err)
	}
	if got := value(old, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id < 60`); got != piiAfter {
		t.Fatalf("oldhome's PII after the fail-back's promotion:\n%s\nwant\n%s", got, piiAfter)
	}
}
