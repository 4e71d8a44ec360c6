package replication_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// waitDone waits until a task run has returned, and returns its last
// status.
func (r *taskRun) waitDone(t *testing.T, d time.Duration) structs.TaskStatus {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(d):
		t.Fatalf("the task did not finish within %s: %+v", d, r.status())
	}
	return r.status()
}

// crashMidway starts a step task and cancels it, as a crash of its agent
// would, once after each of the moments (plus a random part of the
// first), so that the runs stop at different points of its work.
func crashMidway(t *testing.T, after []time.Duration, run func() *taskRun) {
	t.Helper()
	jitter := time.Duration(rand.Int63n(int64(after[0])))
	for _, d := range after {
		r := run()
		time.Sleep(d + jitter)
		r.stop()
	}
}

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, m := range v {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

// TestSwitchoverStepsMoveATenantUnderWrites runs the database side of a
// whole switchover of tenant acme through the step executors, in the
// order the leader runs them, on three real PostgreSQL clusters: oldhome
// (the home, written to until the fence), newhome (the target mirror) and
// other (another mirror). Each step is cut short once at a random moment
// and run again, and run once more after it succeeded. Meanwhile the
// tenant-subscriber tasks of the ended placement keep running at newhome
// and other, as a peer agent's may for a moment. Then the commit's tasks
// run: oldhome's publisher is torn down, newhome's publisher finds the
// promotion's publication and slots as it wants them, oldhome follows as
// the former home and other as a hand-off mirror, and newhome takes
// writes. At the end every acknowledged row is everywhere once with the
// same values, sequences continue at newhome, oldhome's PII is intact,
// nothing was copied twice (no table sync, the untouched rows are the
// same row versions), and a plain subscriber that replaces the hand-off
// one leaves the subscription and rows alone. Then a fail-back runs the
// same steps from newhome to oldhome: oldhome, a former home, is promoted
// (its fence lifted, its sequence past newhome's ids), newhome follows it
// as a former home and other as a hand-off mirror, and oldhome's PII is
// still intact. A fence with ensure absent lifts a fence.
func TestSwitchoverStepsMoveATenantUnderWrites(t *testing.T) {
	const oldhome, newhome, other = "oldhome", "newhome", "other"
	pgs := pgtest.NewFederation(t, oldhome, newhome, other)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	sql := pgSQL{t: t, ctx: ctx, pgs: pgs}
	start, last := time.Now(), time.Now()
	took := func(what string) {
		t.Logf("%-40s %6.2fs (at %5.2fs)", what, time.Since(last).Seconds(), time.Since(start).Seconds())
		last = time.Now()
	}
	db := map[string]*pgx.Conn{}
	for _, r := range []string{oldhome, newhome, other} {
		db[r] = sql.connect(r)
	}
	query := func(region, q string, args ...any) (string, error) {
		var v *string
		if err := db[region].QueryRow(ctx, q, args...).Scan(&v); err != nil {
			return "", fmt.Errorf("%s: %s: %w", region, q, err)
		}
		if v == nil {
			return "<null>", nil
		}
		return *v, nil
	}
	value := func(region, q string, args ...any) string {
		t.Helper()
		v, err := query(region, q, args...)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	endpoint := func(region string) *fsm.DatabaseEndpoint {
		h, p, d := pgs[region].Endpoint()
		return &fsm.DatabaseEndpoint{Host: h, Port: p, Database: d}
	}
	const created, epoch, switchover = 7, 1, 42
	tables := []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}, {Name: "tickets", PIIColumns: []string{"phone"}}}
	pub := fsm.TenantPublication("acme")
	sub := func(region string) string { return fsm.TenantSubscription("acme", region) }
	subSpec := func(source, region string, ep uint64) fsm.SubscriberSpec {
		return fsm.SubscriberSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant, Tenant: "acme", Source: source, SourceDB: endpoint(source),
			Region: region, Publication: pub, Subscription: sub(region), Tables: tables, TenantCreated: created, Epoch: ep}
	}
	// sums are a count and digest of acme's published columns per table.
	trySums := func(region string) (string, error) {
		return query(region, `SELECT (SELECT count(*) || ':' || coalesce(md5(string_agg(concat_ws('|', tenant_id, id, amount, note), ',' ORDER BY id)), '')
			FROM orders WHERE tenant_id = 'acme') || ' ' || (SELECT count(*) || ':' || coalesce(md5(string_agg(concat_ws('|', tenant_id, id, subject), ',' ORDER BY id)), '')
			FROM tickets WHERE tenant_id = 'acme')`)
	}
	sums := func(region string) string {
		t.Helper()
		v, err := trySums(region)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	waitSame := func(what string, regions ...string) string {
		t.Helper()
		var want string
		testutil.Eventually(t, 60*time.Second, func() error {
			var err error
			if want, err = trySums(regions[0]); err != nil {
				return err
			}
			for _, r := range regions[1:] {
				if got, err := trySums(r); err != nil || got != want {
					return fmt.Errorf("%s: acme's rows at %s are %s, at %s %s", what, r, got, regions[0], want)
				}
			}
			return nil
		})
		return want
	}
	// versions are the row versions (xmin) of acme's orders that newhome
	// will not touch: a copy or a purge would make new ones.
	versions := func(region string) string {
		return value(region, `SELECT string_agg(id || '@' || xmin, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id <= 40`)
	}

	// orders exists in every region (the application's migrations), with
	// its own sequence; tickets only at oldhome, so the mirrors' subscriber
	// creates it without its PII column.
	const ordersDDL = `CREATE TABLE orders (tenant_id text NOT NULL, id bigserial, amount numeric(12,2) NOT NULL, note text, email text,
		PRIMARY KEY (tenant_id, id))`
	for _, r := range []string{oldhome, newhome, other} {
		sql.exec(db[r], ordersDDL)
	}
	sql.exec(db[oldhome], `CREATE TABLE tickets (tenant_id text NOT NULL, id bigint NOT NULL, subject text, phone varchar(32), PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO orders (tenant_id, amount, note, email) SELECT 'acme', g, 'n' || g, 'u' || g || '@acme.test' FROM generate_series(1, 100) g`,
		`INSERT INTO tickets SELECT 'acme', g, 's' || g, '555-' || g FROM generate_series(1, 20) g`,
		`INSERT INTO orders (tenant_id, amount, note, email) SELECT 'initech', g, 'i' || g, 'i' || g || '@initech.test' FROM generate_series(1, 10) g`)

	// newhome was acme's home before epoch 1, and was fenced when acme
	// left it: the promotion lifts that fence.
	if _, err := replication.FenceTenant(ctx, db[newhome], replication.Fence{Tenant: "acme", Epoch: epoch, WritesTo: oldhome, Tables: tables}); err != nil {
		t.Fatal(err)
	}
	// acme at home in oldhome, mirrored to newhome and other by the real
	// executors.
	oldPub := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantPublisher, fsm.PublisherSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant,
		Tenant: "acme", Region: oldhome, Publication: pub, Tables: tables, Subscriptions: []string{sub(newhome), sub(other)},
		SlotPrefix: fsm.TenantSlotPrefix("acme"), TenantCreated: created, Epoch: epoch})
	// A hand-off subscriber waits while its slot does not exist at the
	// source, changing nothing: no subscription, no slot, no row purged.
	sql.exec(db[other], `INSERT INTO orders (tenant_id, id, amount, note) VALUES ('acme', 999999, 1, 'before the hand-off')`)
	early := subSpec(oldhome, other, epoch)
	early.HandOff = true
	waitSlot := runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, early)
	testutil.Eventually(t, 30*time.Second, func() error {
		st := waitSlot.status()
		if res, _ := st.Result.(*fsm.SubscriberResult); res == nil || res.State != fsm.ReplWaiting || !strings.Contains(st.Error, "no hand-off slot") {
			return fmt.Errorf("the hand-off subscriber without its slot reports %s", js(st))
		}
		return nil
	})
	waitSlot.stop()
	if n := value(other, `SELECT count(*)::text FROM pg_subscription`); n != "0" {
		t.Fatalf("the hand-off subscriber subscribed without its slot (%s subscriptions)", n)
	}
	if n := value(oldhome, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1`, sub(other)); n != "0" {
		t.Fatal("the hand-off subscriber made its slot itself")
	}
	if n := value(other, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme'`); n != "1" {
		t.Fatalf("the waiting hand-off subscriber purged acme's rows at other (%s left)", n)
	}
	newSub := runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantSubscriber, subSpec(oldhome, newhome, epoch))
	otherSub := runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, subSpec(oldhome, other, epoch))
	waitSame("initial copy", oldhome, newhome, other) // the ordinary mirror purged row 999999 first
	took("initial copy")

	t.Run("a fence with ensure absent lifts it", func(t *testing.T) {
		spec := fsm.FenceSpec{Ensure: fsm.EnsurePresent, Tenant: "initech", Region: oldhome, Tables: tables, NewHome: newhome, NewEpoch: 5, Switchover: 9}
		if st := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantFence, spec).waitDone(t, 30*time.Second); st.Status != fsm.TaskSucceeded {
			t.Fatalf("fence initech: %+v", st)
		}
		_, err := db[oldhome].Exec(ctx, `INSERT INTO orders (tenant_id, amount) VALUES ('initech', 1)`)
		if sqlStateOf(err) != replication.FencedSQLState {
			t.Fatalf("a write of the fenced tenant: %v", err)
		}
		spec.Ensure = fsm.EnsureAbsent
		for i := 0; i < 2; i++ {
			st := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantFence, spec).waitDone(t, 30*time.Second)
			if res, _ := st.Result.(*fsm.FenceResult); st.Status != fsm.TaskSucceeded || res == nil || res.State != fsm.StepUnfenced {
				t.Fatalf("unfence initech (run %d): %+v", i+1, st)
			}
		}
		sql.exec(db[oldhome], `INSERT INTO orders (tenant_id, amount) VALUES ('initech', 1)`, `DELETE FROM orders WHERE tenant_id = 'initech' AND amount = 1 AND note IS NULL`)
		// A run of the rolled-back switchover's fence step that comes
		// late (an agent that lost the task) leaves no fence behind.
		spec.Ensure = fsm.EnsurePresent
		late := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantFence, spec)
		testutil.Eventually(t, 30*time.Second, func() error {
			if st := late.status(); st.Status != fsm.TaskFailing || !strings.Contains(st.Error, "rolled back") {
				return fmt.Errorf("a late fence of a rolled-back switchover reports %s", js(st))
			}
			return nil
		})
		late.stop()
		if f, err := replication.ReadFence(ctx, db[oldhome], "initech"); err != nil || f != nil {
			t.Fatalf("a late fence of a rolled-back switchover stayed: %+v %v", f, err)
		}
		// The next switchover fences as usual.
		spec.Switchover = 10
		if st := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantFence, spec).waitDone(t, 30*time.Second); st.Status != fsm.TaskSucceeded {
			t.Fatalf("fence initech for the next switchover: %s", js(st))
		}
		spec.Ensure = fsm.EnsureAbsent
		if st := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantFence, spec).waitDone(t, 30*time.Second); st.Status != fsm.TaskSucceeded {
			t.Fatalf("unfence initech: %s", js(st))
		}
		sql.exec(db[oldhome], `INSERT INTO orders (tenant_id, amount) VALUES ('initech', 1)`, `DELETE FROM orders WHERE tenant_id = 'initech' AND amount = 1 AND note IS NULL`)
	})

	// other's subscription stops applying before the fence, so that its
	// catch-up has to wait (its subscriber is stopped with it, or it would
	// enable it again).
	otherSub.stop()
	sql.exec(db[other], `ALTER SUBSCRIPTION `+sub(other)+` DISABLE`)
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := value(other, `SELECT count(*)::text FROM pg_stat_subscription WHERE subname = $1 AND pid IS NOT NULL`, sub(other)); n != "0" {
			return fmt.Errorf("%s workers of the disabled subscription still run", n)
		}
		return nil
	})

	// The application writes acme at oldhome until the fence refuses it.
	w := startAcmeWriter(t, ctx, pgs[oldhome].DSN(pglocal.Database))
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := w.inserted(); n < 300 {
			return fmt.Errorf("the writer has inserted %d rows", n)
		}
		return nil
	})

	// 1. Fence at oldhome: cut short, then to the end, then again.
	fenceSpec := fsm.FenceSpec{Ensure: fsm.EnsurePresent, Tenant: "acme", Region: oldhome, Tables: tables, NewHome: newhome,
		NewEpoch: epoch + 1, Switchover: switchover, TenantCreated: created, Epoch: epoch}
	crashMidway(t, ms(5, 15, 30), func() *taskRun { return runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantFence, fenceSpec) })
	var fenced *fsm.FenceResult
	for i := 0; i < 2; i++ {
		st := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantFence, fenceSpec).waitDone(t, 30*time.Second)
		res, _ := st.Result.(*fsm.FenceResult)
		if st.Status != fsm.TaskSucceeded || res == nil || res.State != fsm.StepFenced || res.FencedLSN == "" {
			t.Fatalf("fence (run %d): %+v", i+1, st)
		}
		if fenced != nil && res.FencedLSN != fenced.FencedLSN {
			t.Fatalf("the fence run again reports LSN %s, the first run %s", res.FencedLSN, fenced.FencedLSN)
		}
		fenced = res
	}
	wantPII := []fsm.PIIColumnType{{Table: "public.orders", Column: "email", Type: "text", TypMod: -1},
		{Table: "public.tickets", Column: "phone", Type: "character varying(32)", TypMod: 36}}
	if !slices.Equal(fenced.PII, wantPII) {
		t.Fatalf("the fence reports PII %+v, want %+v", fenced.PII, wantPII)
	}
	acked := w.wait(t)
	atFence := sums(oldhome)
	piiAtFence := value(oldhome, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`)
	phonesAtFence := value(oldhome, `SELECT string_agg(id || '=' || phone, ',' ORDER BY id) FROM tickets WHERE tenant_id = 'acme'`)
	if got, want := value(oldhome, `SELECT string_agg(id::text, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`), acked; got != want {
		t.Fatalf("acme's orders at the fence are not the acknowledged ones:\n%s\nwant\n%s", got, want)
	}
	took("writes and fence")
	maxAtFence, _ := strconv.ParseInt(value(oldhome, `SELECT max(id)::text FROM orders WHERE tenant_id = 'acme'`), 10, 64)

	// 2. Catch-up at other, disabled: it waits, saying how far behind it
	// is, until its agent crashes; its subscriber comes back and the
	// catch-up run again ends caught up.
	catchUp := func(region string) fsm.CatchUpSpec {
		return fsm.CatchUpSpec{Tenant: "acme", Region: region, Subscription: sub(region), Source: oldhome, SourceDB: endpoint(oldhome),
			Target: fenced.FencedLSN, Switchover: switchover, TenantCreated: created, Epoch: epoch}
	}
	waiting := runTask(t, pgs[other], other, fsm.TaskTypeTenantCatchUp, catchUp(other))
	testutil.Eventually(t, 30*time.Second, func() error {
		st := waiting.status()
		res, _ := st.Result.(*fsm.CatchUpResult)
		if st.Status != fsm.TaskRunning || res == nil || res.State != fsm.StepBehind || res.BytesBehind <= 0 || !strings.Contains(res.Message, "disabled") {
			return fmt.Errorf("the catch-up of a disabled subscription reports %+v", st)
		}
		return nil
	})
	time.Sleep(time.Second) // it keeps waiting, it does not give up
	if st := waiting.status(); st.Status != fsm.TaskRunning {
		t.Fatalf("the catch-up gave up: %+v", st)
	}
	waiting.stop()
	otherSub = runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, subSpec(oldhome, other, epoch))
	crashMidway(t, ms(50, 200), func() *taskRun { return runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantCatchUp, catchUp(newhome)) })
	for _, r := range []string{newhome, other, newhome} {
		st := runTask(t, pgs[r], r, fsm.TaskTypeTenantCatchUp, catchUp(r)).waitDone(t, 60*time.Second)
		res, _ := st.Result.(*fsm.CatchUpResult)
		if st.Status != fsm.TaskSucceeded || res == nil || res.State != fsm.StepCaughtUp || res.BytesBehind != 0 || res.Target != fenced.FencedLSN {
			t.Fatalf("catch-up at %s: %+v", r, st)
		}
		// At once: caught up means the rows are there.
		if got := sums(r); got != atFence {
			t.Fatalf("%s reported caught up with acme's rows %s, oldhome has %s", r, got, atFence)
		}
	}
	took("catch-up")
	versionsAt := map[string]string{oldhome: versions(oldhome), other: versions(other)}

	// 3. Promote newhome, with its subscriber of the ended placement still
	// running (a peer agent that has not seen the change yet).
	promote := fsm.PromoteSpec{Tenant: "acme", Region: newhome, Subscription: sub(newhome), Source: oldhome, SourceDB: endpoint(oldhome),
		Publication: pub, Tables: tables, PII: fenced.PII, HandOff: []string{oldhome, other}, Switchover: switchover, TenantCreated: created, Epoch: epoch}
	crashMidway(t, ms(10, 40, 80, 150, 300), func() *taskRun { return runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantPromote, promote) })
	var promoted *fsm.PromoteResult
	for i := 0; i < 2; i++ {
		st := runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantPromote, promote).waitDone(t, 60*time.Second)
		res, _ := st.Result.(*fsm.PromoteResult)
		if st.Status != fsm.TaskSucceeded || res == nil || res.State != fsm.StepPromoted || len(res.Slots) != 2 || res.HomeSlotError != "" {
			t.Fatalf("promote (run %d): %+v", i+1, js(st))
		}
		if promoted != nil && (res.Slots[oldhome] != promoted.Slots[oldhome] || res.Slots[other] != promoted.Slots[other]) {
			t.Fatalf("promote run again reports slots %v, the first run %v", res.Slots, promoted.Slots)
		}
		promoted = res
	}
	took("promote")
	// 4. Detach other, with its subscriber of the ended placement running.
	detach := fsm.DetachSpec{Tenant: "acme", Region: other, Subscription: sub(other), Switchover: switchover, TenantCreated: created, Epoch: epoch}
	crashMidway(t, ms(5, 20), func() *taskRun { return runTask(t, pgs[other], other, fsm.TaskTypeTenantDetach, detach) })
	for i := 0; i < 2; i++ {
		st := runTask(t, pgs[other], other, fsm.TaskTypeTenantDetach, detach).waitDone(t, 30*time.Second)
		if res, _ := st.Result.(*fsm.DetachResult); st.Status != fsm.TaskSucceeded || res == nil || res.State != fsm.StepDetached {
			t.Fatalf("detach (run %d): %+v", i+1, js(st))
		}
	}
	took("detach")
	// A catch-up run again after the promotion or detach finds it done.
	for _, r := range []string{newhome, other} {
		st := runTask(t, pgs[r], r, fsm.TaskTypeTenantCatchUp, catchUp(r)).waitDone(t, 30*time.Second)
		if res, _ := st.Result.(*fsm.CatchUpResult); st.Status != fsm.TaskSucceeded || res == nil || res.State != fsm.StepCaughtUp {
			t.Fatalf("catch-up at %s after the hand-off: %s", r, js(st))
		}
	}
	// The subscribers of the ended placement changed nothing since, and
	// say why.
	for _, s := range []struct {
		region string
		run    *taskRun
	}{{newhome, newSub}, {other, otherSub}} {
		testutil.Eventually(t, 30*time.Second, func() error {
			st := s.run.status()
			if res, _ := st.Result.(*fsm.SubscriberResult); res == nil || res.State != fsm.ReplStaleEpoch || !strings.Contains(st.Error, "switchover 42") {
				return fmt.Errorf("the ended subscriber at %s reports %s", s.region, js(st))
			}
			return nil
		})
		time.Sleep(500 * time.Millisecond) // two more of its steps
		s.run.stop()
		if n := value(s.region, `SELECT count(*)::text FROM pg_subscription`); n != "0" {
			t.Fatalf("%s has %s subscriptions after the promotion and detach", s.region, n)
		}
		if got := sums(s.region); got != atFence {
			t.Fatalf("acme's rows at %s changed after the promotion and detach: %s, had %s", s.region, got, atFence)
		}
	}
	// A teardown of the ended placement (a kept task turned absent) only
	// drops the subscription: the rows stay for the hand-off subscriber.
	ended := subSpec(oldhome, other, epoch)
	ended.Ensure = fsm.EnsureAbsent
	if st := runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, ended).waitDone(t, 30*time.Second); st.Status != fsm.TaskSucceeded {
		t.Fatalf("the teardown of the ended subscriber at other: %s", js(st))
	}
	if got := sums(other); got != atFence {
		t.Fatalf("the teardown of the ended subscriber changed acme's rows at other: %s, had %s", got, atFence)
	}
	if v := versions(other); v != versionsAt[other] {
		t.Fatal("acme's rows at other were written again by the detach")
	}
	took("ended subscribers")
	// newhome is a home now: PII columns back (nullable, NULL in mirrored
	// rows), sequences past every row, the old home's slot dropped, the
	// hand-off slots made.
	if v := value(newhome, `SELECT format_type(atttypid, atttypmod) || ' ' || attnotnull FROM pg_attribute WHERE attrelid = 'tickets'::regclass AND attname = 'phone'`); v != "character varying(32) false" {
		t.Fatalf("tickets.phone at newhome: %s", v)
	}
	if f, err := replication.ReadFence(ctx, db[newhome], "acme"); err != nil || f != nil {
		t.Fatalf("acme's fence of an earlier placement at newhome after the promotion: %+v %v", f, err)
	}
	if n := value(newhome, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND email IS NOT NULL`); n != "0" {
		t.Fatalf("%s of acme's orders at newhome hold PII", n)
	}
	if n := value(oldhome, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1`, sub(newhome)); n != "0" {
		t.Fatal("the promotion left newhome's slot at oldhome")
	}
	if v := value(newhome, `SELECT string_agg(slot_name::text, ',' ORDER BY slot_name) FROM pg_replication_slots`); v != sub(oldhome)+","+sub(other) {
		t.Fatalf("slots at newhome: %s", v)
	}

	// 5. The commit's tasks. oldhome's publisher is torn down; newhome's
	// publisher finds the publication and slots as it wants them.
	pubOID := value(newhome, `SELECT oid::text FROM pg_publication WHERE pubname = $1`, pub)
	published := value(newhome, `SELECT string_agg(tablename || '(' || array_to_string(attnames, ',') || ') ' || rowfilter, '; ' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = $1`, pub)
	if published != `orders(tenant_id,id,amount,note) (tenant_id = 'acme'::text); tickets(tenant_id,id,subject) (tenant_id = 'acme'::text)` {
		t.Fatalf("newhome publishes %s", published)
	}
	gone := fsm.PublisherSpec{Ensure: fsm.EnsureAbsent, Kind: fsm.KindTenant, Tenant: "acme", Region: oldhome, Publication: pub, Tables: tables,
		SlotPrefix: fsm.TenantSlotPrefix("acme"), TenantCreated: created, Epoch: epoch + 1}
	oldPub.stop()
	if st := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantPublisher, gone).waitDone(t, 60*time.Second); st.Status != fsm.TaskSucceeded {
		t.Fatalf("oldhome's publisher teardown: %s", js(st))
	}
	// A slot of other's name at oldhome, as a teardown that never ran
	// would have left it: the fail-back below must not hand it off.
	sql.exec(db[oldhome], `SELECT pg_create_logical_replication_slot('`+sub(other)+`', 'pgoutput')`)
	newPub := runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantPublisher, fsm.PublisherSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant,
		Tenant: "acme", Region: newhome, Publication: pub, Tables: tables, Subscriptions: []string{sub(oldhome), sub(other)},
		SlotPrefix: fsm.TenantSlotPrefix("acme"), TenantCreated: created, Epoch: epoch + 1})
	testutil.Eventually(t, 30*time.Second, func() error {
		if res, _ := newPub.status().Result.(*fsm.PublisherResult); res == nil || res.State != fsm.ReplReady || len(res.Slots) != 2 {
			return fmt.Errorf("newhome's publisher: %s", js(newPub.status()))
		}
		return nil
	})
	if oid := value(newhome, `SELECT oid::text FROM pg_publication WHERE pubname = $1`, pub); oid != pubOID {
		t.Fatalf("newhome's publisher re-created the promotion's publication")
	}
	if again := value(newhome, `SELECT string_agg(tablename || '(' || array_to_string(attnames, ',') || ') ' || rowfilter, '; ' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = $1`, pub); again != published {
		t.Fatalf("newhome's publisher changed the publication: %s", again)
	}
	took("old publisher torn down, new publisher")
	former := subSpec(newhome, oldhome, epoch+1)
	former.FormerHome = true
	handOff := subSpec(newhome, other, epoch+1)
	handOff.HandOff = true
	formerSub := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantSubscriber, former)
	handOffSub := runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, handOff)

	// 6. newhome takes acme's writes: inserts with the sequence, updates
	// and deletes of rows from before the fence.
	var firstNew int64
	if err := db[newhome].QueryRow(ctx, `INSERT INTO orders (tenant_id, amount, note) SELECT 'acme', g, 'new' || g FROM generate_series(1, 30) g RETURNING id`).Scan(&firstNew); err != nil {
		t.Fatal(err)
	}
	sql.exec(db[newhome], `INSERT INTO tickets VALUES ('acme', 1000, 'at newhome', '555-1000')`,
		`UPDATE orders SET amount = amount + 5000, note = 'moved' WHERE tenant_id = 'acme' AND id BETWEEN 41 AND 60`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id BETWEEN 61 AND 65`,
		`UPDATE tickets SET subject = 'moved' WHERE tenant_id = 'acme' AND id <= 5`)
	if firstNew <= maxAtFence {
		t.Fatalf("newhome's sequence gave id %d, not past the highest id %d", firstNew, maxAtFence)
	}
	for _, s := range []*taskRun{formerSub, handOffSub} {
		testutil.Eventually(t, 30*time.Second, func() error {
			if res, _ := s.status().Result.(*fsm.SubscriberResult); res == nil || res.State != fsm.ReplStreaming || len(res.Issues) > 0 {
				return fmt.Errorf("subscriber: %s", js(s.status()))
			}
			return nil
		})
	}
	final := waitSame("after newhome's writes", newhome, oldhome, other)

	took("hand-off subscribers stream, rows equal")
	// Every row once.
	if n := value(newhome, `SELECT (count(*) - count(DISTINCT id))::text FROM orders WHERE tenant_id = 'acme'`); n != "0" {
		t.Fatalf("%s duplicated ids", n)
	}
	wantOrders := len(strings.Split(acked, ",")) + 30 - 5
	if !strings.HasPrefix(final, strconv.Itoa(wantOrders)+":") {
		t.Fatalf("acme's rows everywhere: %s, want %d orders", final, wantOrders)
	}
	// Nothing copied twice: no table was synchronized, the rows newhome
	// did not touch are the same row versions.
	for _, r := range []string{oldhome, other} {
		if v := value(r, `SELECT coalesce(string_agg(DISTINCT srsubstate::text, ','), '') FROM pg_subscription_rel`); v != "r" {
			t.Fatalf("%s's subscription tables are in states %q, want only r (nothing copied)", r, v)
		}
		if v := value(r, `SELECT (apply_error_count + sync_error_count)::text FROM pg_stat_subscription_stats WHERE subname = $1`, sub(r)); v != "0" {
			t.Fatalf("%s's subscription met %s errors", r, v)
		}
		if v := versions(r); v != versionsAt[r] {
			t.Fatalf("acme's untouched rows at %s were written again (copied or purged)", r)
		}
	}
	// PII at oldhome intact; other stays a mirror without it.
	var keep []string
	for _, kv := range strings.Split(piiAtFence, ",") {
		id, _ := strconv.Atoi(strings.SplitN(kv, "=", 2)[0])
		if id < 61 || id > 65 {
			keep = append(keep, kv)
		}
	}
	if got := value(oldhome, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id <= $1`, maxAtFence); got != strings.Join(keep, ",") {
		t.Fatalf("acme's PII at oldhome changed:\n%s\nwant\n%s", got, strings.Join(keep, ","))
	}
	if got := value(oldhome, `SELECT string_agg(id || '=' || phone, ',' ORDER BY id) FROM tickets WHERE tenant_id = 'acme' AND id <> 1000`); got != phonesAtFence {
		t.Fatalf("acme's phones at oldhome changed: %s", got)
	}
	if v := value(other, `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme' AND email IS NOT NULL`); v != "0" {
		t.Fatalf("%s of acme's orders at other hold PII", v)
	}
	if hasCol := value(other, `SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'tickets' AND column_name = 'phone'`); hasCol != "0" {
		t.Fatal("other's mirror table tickets has the PII column phone")
	}
	// The application's writes at oldhome are still refused.
	if _, err := db[oldhome].Exec(ctx, `INSERT INTO orders (tenant_id, amount) VALUES ('acme', 1)`); sqlStateOf(err) != replication.FencedSQLState {
		t.Fatalf("a write of acme at the former home: %v", err)
	}
	if got := value(oldhome, `SELECT count(*)::text FROM orders WHERE tenant_id = 'initech'`); got != "10" {
		t.Fatalf("initech has %s orders at oldhome, want 10", got)
	}

	took("checks")
	// 7. The scheduler drops HandOff after the switchover: the plain
	// subscriber keeps the subscription and every row.
	subOID := value(other, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, sub(other))
	otherVersions := value(other, `SELECT string_agg(id || '@' || xmin, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`)
	// A teardown of the ended placement that comes late leaves the
	// hand-off subscription alone: it follows newhome, not the old home.
	if st := runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, ended).waitDone(t, 30*time.Second); st.Status != fsm.TaskSucceeded {
		t.Fatalf("a late teardown of the ended subscriber at other: %s", js(st))
	}
	if oid := value(other, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, sub(other)); oid != subOID {
		t.Fatal("a late teardown of the ended placement dropped the hand-off subscription")
	}
	// So does the detach run again late (a peer agent that has not seen
	// the commit yet).
	if st := runTask(t, pgs[other], other, fsm.TaskTypeTenantDetach, detach).waitDone(t, 30*time.Second); st.Status != fsm.TaskSucceeded {
		t.Fatalf("a late detach at other: %s", js(st))
	}
	if oid := value(other, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, sub(other)); oid != subOID {
		t.Fatal("a late detach dropped the hand-off subscription")
	}
	handOffSub.stop()
	plain := runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, subSpec(newhome, other, epoch+1))
	testutil.Eventually(t, 30*time.Second, func() error {
		if res, _ := plain.status().Result.(*fsm.SubscriberResult); res == nil || res.State != fsm.ReplStreaming || len(res.Issues) > 0 {
			return fmt.Errorf("the plain subscriber at other: %s", js(plain.status()))
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond)
	if oid := value(other, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, sub(other)); oid != subOID {
		t.Fatal("the plain subscriber re-created the hand-off subscription")
	}
	if v := value(other, `SELECT string_agg(id || '@' || xmin, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`); v != otherVersions {
		t.Fatal("the plain subscriber wrote acme's rows at other again")
	}
	sql.exec(db[newhome], `UPDATE orders SET note = 'last' WHERE tenant_id = 'acme' AND id = 1`)
	waitSame("after the hand-off flag is dropped", newhome, oldhome, other)
	took("plain subscriber")

	// 8. Fail-back: the same steps move acme from newhome back to oldhome,
	// a former home (its PII, its fence), with other a mirror again.
	const switchback = 43
	runStep := func(region, typ string, spec any) any {
		t.Helper()
		var res any
		for i := 0; i < 2; i++ {
			st := runTask(t, pgs[region], region, typ, spec).waitDone(t, 60*time.Second)
			if st.Status != fsm.TaskSucceeded {
				t.Fatalf("%s at %s (run %d): %s", typ, region, i+1, js(st))
			}
			res = st.Result
		}
		return res
	}
	fencedBack := runStep(newhome, fsm.TaskTypeTenantFence, fsm.FenceSpec{Ensure: fsm.EnsurePresent, Tenant: "acme", Region: newhome,
		Tables: tables, NewHome: oldhome, NewEpoch: epoch + 2, Switchover: switchback, TenantCreated: created, Epoch: epoch + 1}).(*fsm.FenceResult)
	if !slices.Equal(fencedBack.PII, wantPII) {
		t.Fatalf("the fence at newhome reports PII %+v, want %+v", fencedBack.PII, wantPII)
	}
	for _, r := range []string{oldhome, other} {
		res := runStep(r, fsm.TaskTypeTenantCatchUp, fsm.CatchUpSpec{Tenant: "acme", Region: r, Subscription: sub(r), Source: newhome,
			SourceDB: endpoint(newhome), Target: fencedBack.FencedLSN, Switchover: switchback, TenantCreated: created, Epoch: epoch + 1}).(*fsm.CatchUpResult)
		if res.State != fsm.StepCaughtUp || sums(r) != sums(newhome) {
			t.Fatalf("catch-up at %s: %s with rows %s, newhome has %s", r, js(res), sums(r), sums(newhome))
		}
	}
	otherBack := value(other, `SELECT string_agg(id || '@' || xmin, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme'`)
	maxAtNewhome, _ := strconv.ParseInt(value(newhome, `SELECT max(id)::text FROM orders`), 10, 64)
	back := fsm.PromoteSpec{Tenant: "acme", Region: oldhome, Subscription: sub(oldhome), Source: newhome, SourceDB: endpoint(newhome),
		Publication: pub, Tables: tables, PII: fencedBack.PII, HandOff: []string{newhome, other}, Switchover: switchback,
		TenantCreated: created, Epoch: epoch + 1}
	crashMidway(t, ms(20, 60), func() *taskRun { return runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantPromote, back) })
	if res := runStep(oldhome, fsm.TaskTypeTenantPromote, back).(*fsm.PromoteResult); len(res.Slots) != 2 || res.HomeSlotError != "" || len(res.PIIColumnsAdded) != 0 {
		t.Fatalf("promote oldhome: %s", js(res))
	}
	// oldhome's publisher teardown from the first switchover, run only
	// now, leaves the promotion's publication and slots alone.
	backPubOID := value(oldhome, `SELECT oid::text FROM pg_publication WHERE pubname = $1`, pub)
	gone.Epoch = epoch + 1
	if st := runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantPublisher, gone).waitDone(t, 30*time.Second); st.Status != fsm.TaskSucceeded {
		t.Fatalf("oldhome's late publisher teardown: %s", js(st))
	}
	if oid := value(oldhome, `SELECT coalesce((SELECT oid::text FROM pg_publication WHERE pubname = $1), 'none')`, pub); oid != backPubOID {
		t.Fatal("a late teardown of oldhome's publisher dropped the promotion's publication")
	}
	if v := value(oldhome, `SELECT string_agg(slot_name::text, ',' ORDER BY slot_name) FROM pg_replication_slots`); v != sub(newhome)+","+sub(other) {
		t.Fatalf("slots at oldhome after a late publisher teardown: %s", v)
	}
	runStep(other, fsm.TaskTypeTenantDetach, fsm.DetachSpec{Tenant: "acme", Region: other, Subscription: sub(other), Switchover: switchback,
		TenantCreated: created, Epoch: epoch + 1})
	for region, run := range map[string]*taskRun{oldhome: formerSub, other: plain} {
		testutil.Eventually(t, 30*time.Second, func() error {
			if st := run.status(); !strings.Contains(st.Error, "switchover 43") {
				return fmt.Errorf("the ended subscriber at %s reports %s", region, js(st))
			}
			return nil
		})
		run.stop()
	}
	newPub.stop()
	if st := runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantPublisher, fsm.PublisherSpec{Ensure: fsm.EnsureAbsent, Kind: fsm.KindTenant,
		Tenant: "acme", Region: newhome, Publication: pub, Tables: tables, SlotPrefix: fsm.TenantSlotPrefix("acme"), TenantCreated: created,
		Epoch: epoch + 2}).waitDone(t, 60*time.Second); st.Status != fsm.TaskSucceeded {
		t.Fatalf("newhome's publisher teardown: %s", js(st))
	}
	runTask(t, pgs[oldhome], oldhome, fsm.TaskTypeTenantPublisher, fsm.PublisherSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant,
		Tenant: "acme", Region: oldhome, Publication: pub, Tables: tables, Subscriptions: []string{sub(newhome), sub(other)},
		SlotPrefix: fsm.TenantSlotPrefix("acme"), TenantCreated: created, Epoch: epoch + 2})
	formerBack := subSpec(oldhome, newhome, epoch+2)
	formerBack.FormerHome = true
	handBack := subSpec(oldhome, other, epoch+2)
	handBack.HandOff = true
	for _, s := range []*taskRun{
		runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantSubscriber, formerBack),
		runTask(t, pgs[other], other, fsm.TaskTypeTenantSubscriber, handBack),
	} {
		testutil.Eventually(t, 30*time.Second, func() error {
			if res, _ := s.status().Result.(*fsm.SubscriberResult); res == nil || res.State != fsm.ReplStreaming || len(res.Issues) > 0 {
				return fmt.Errorf("subscriber after the fail-back: %s", js(s.status()))
			}
			return nil
		})
	}
	// oldhome takes the application's writes again, ids past newhome's.
	var firstBack int64
	if err := db[oldhome].QueryRow(ctx, `INSERT INTO orders (tenant_id, amount, note, email) SELECT 'acme', g, 'back', 'back@acme.test'
		FROM generate_series(1, 10) g RETURNING id`).Scan(&firstBack); err != nil {
		t.Fatalf("a write of acme at oldhome after the fail-back: %v", err)
	}
	if firstBack <= maxAtNewhome {
		t.Fatalf("oldhome's sequence gave id %d, not past newhome's highest id %d", firstBack, maxAtNewhome)
	}
	sql.exec(db[oldhome], `UPDATE orders SET note = 'back' WHERE tenant_id = 'acme' AND id BETWEEN 66 AND 70`)
	waitSame("after the fail-back", oldhome, newhome, other)
	if got := value(oldhome, `SELECT string_agg(id || '=' || email, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND id <= $1`, maxAtFence); got != strings.Join(keep, ",") {
		t.Fatalf("acme's PII at oldhome changed by the fail-back:\n%s\nwant\n%s", got, strings.Join(keep, ","))
	}
	if _, err := db[newhome].Exec(ctx, `INSERT INTO orders (tenant_id, amount) VALUES ('acme', 1)`); sqlStateOf(err) != replication.FencedSQLState {
		t.Fatalf("a write of acme at newhome after the fail-back: %v", err)
	}
	for _, r := range []string{newhome, other} {
		if v := value(r, `SELECT coalesce(string_agg(DISTINCT srsubstate::text, ','), '') FROM pg_subscription_rel`); v != "r" {
			t.Fatalf("%s's subscription tables after the fail-back are in states %q, want only r", r, v)
		}
	}
	if v := value(other, `SELECT string_agg(id || '@' || xmin, ',' ORDER BY id) FROM orders WHERE tenant_id = 'acme' AND note <> 'back'`); v != filterVersions(otherBack, 66, 70) {
		t.Fatal("acme's rows at other were written again by the fail-back")
	}
	// A late run of the first promotion at newhome (a former home again,
	// subscribed to oldhome under the same name) is refused and leaves
	// that subscription alone.
	newSubOID := value(newhome, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, sub(newhome))
	late := runTask(t, pgs[newhome], newhome, fsm.TaskTypeTenantPromote, promote)
	testutil.Eventually(t, 30*time.Second, func() error {
		if st := late.status(); st.Status != fsm.TaskFailing || !strings.Contains(st.Error, "is not the one switchover 42 found") {
			return fmt.Errorf("a late promotion at newhome reports %s", js(st))
		}
		return nil
	})
	late.stop()
	if oid := value(newhome, `SELECT oid::text FROM pg_subscription WHERE subname = $1`, sub(newhome)); oid != newSubOID {
		t.Fatal("a late promotion took newhome's former-home subscription away")
	}
	took("fail-back")
}

// filterVersions drops the ids from..to from a list of id@xmin.
func filterVersions(list string, from, to int) string {
	var out []string
	for _, v := range strings.Split(list, ",") {
		id, _ := strconv.Atoi(strings.SplitN(v, "@", 2)[0])
		if id < from || id > to {
			out = append(out, v)
		}
	}
	return strings.Join(out, ",")
}

// acmeWriter writes acme's rows at its home as an application does: inserts
// (ids from the sequence), updates and deletes, one transaction each,
// until the tenant's fence refuses a write.
type acmeWriter struct {
	mu    sync.Mutex
	ids   map[int64]bool // acknowledged, not deleted
	n     int
	done  chan struct{}
	err   error
	fence bool
}

func startAcmeWriter(t *testing.T, ctx context.Context, dsn string) *acmeWriter {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	w := &acmeWriter{ids: map[int64]bool{}, done: make(chan struct{})}
	for i := int64(1); i <= 100; i++ {
		w.ids[i] = true
	}
	go func() {
		defer close(w.done)
		for i := 0; ctx.Err() == nil; i++ {
			var err error
			switch {
			case i%7 == 3:
				_, err = conn.Exec(ctx, `UPDATE orders SET amount = amount + 1, note = 'w' WHERE tenant_id = 'acme' AND id = $1`, int64(i%100+1))
			case i%11 == 5:
				var id int64
				if err = conn.QueryRow(ctx, `DELETE FROM orders WHERE tenant_id = 'acme' AND id = (SELECT max(id) FROM orders WHERE tenant_id = 'acme' AND id > 100) RETURNING id`).Scan(&id); err == nil {
					w.mu.Lock()
					delete(w.ids, id)
					w.mu.Unlock()
				} else if errors.Is(err, pgx.ErrNoRows) {
					err = nil
				}
			case i%13 == 6:
				_, err = conn.Exec(ctx, `INSERT INTO tickets VALUES ('acme', $1, 'w', '555-w')`, int64(1000000+i))
			default:
				var id int64
				if err = conn.QueryRow(ctx, `INSERT INTO orders (tenant_id, amount, note, email) VALUES ('acme', $1, 'w', 'w@acme.test') RETURNING id`, i).Scan(&id); err == nil {
					w.mu.Lock()
					w.ids[id] = true
					w.n++
					w.mu.Unlock()
				}
			}
			if err != nil {
				w.err = err
				w.fence = sqlStateOf(err) == replication.FencedSQLState
				return
			}
		}
	}()
	return w
}

func (w *acmeWriter) inserted() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// wait waits until the fence stopped the writer and returns the ids of
// the acknowledged rows, in order.
func (w *acmeWriter) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the writer still writes 30 s after the fence")
	}
	if !w.fence {
		t.Fatalf("the writer stopped with %v, not the fence's error", w.err)
	}
	ids := make([]int64, 0, len(w.ids))
	for id := range w.ids {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, ",")
}

func sqlStateOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
