package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestMovingAReplicatedTenantOntoItsMirrorIsRefused is the regression
// test of the data loss of issue 17: tenant acme, at home in us-east with
// 200 rows and mirrored to eu-west by real agents and PostgreSQL, under
// continuous writes at home. Moving its home onto its mirror (PUT, PATCH,
// through a follower, and with the CLI) is refused with
// home_change_needs_switchover and a message that names the switchover;
// afterwards no row is lost at home, every row acknowledged at home
// arrives at the mirror, and the tenant's placement (and epoch 1) is the
// same on every server, with no tenant write in the audit chain. A tenant
// without mirrors still moves, and its epoch moves with it.
func TestMovingAReplicatedTenantOntoItsMirrorIsRefused(t *testing.T) {
	if _, err := pglocal.Find(); err != nil {
		t.Fatalf("this test needs PostgreSQL: %v", err)
	}
	c := startCluster(t)
	leader := waitLeader(t, c)
	ctx := ctx(t, 3*time.Minute)
	pgs := pgtest.NewFederation(t, "us-east", "eu-west")
	dir := t.TempDir()
	for _, r := range []string{"us-east", "eu-west"} {
		registerRegion(t, c, leader, r)
		pg := pgs[r]
		a, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), dir, r+"-a1", r, func() (int, error) { return testutil.FreePort(t), nil }, c.SerfAddrs(), c.Sec,
			"--replication-passfile", pg.Passfile, "--replication-ca", pg.RootCert, "--replication-interval", "500ms")
		if err != nil {
			t.Fatal(err)
		}
		a.Env = append(a.Env, "POSTGRES_DSN="+pg.DSN(pglocal.Database)) // a secret: never on the command line
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log of %s:\n%s", a.Node, a.LogTail(40))
			}
			a.Close()
		})
	}
	connect := func(region string) *pgx.Conn {
		t.Helper()
		conn, err := pgs[region].Connect(ctx, pglocal.Database)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	home, mirror := connect("us-east"), connect("eu-west")
	for _, s := range []string{
		`CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount int, email text, PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO orders SELECT 'acme', g, g, 'c' || g || '@acme.example' FROM generate_series(1, 200) g`,
	} {
		if _, err := home.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	api := leader.Client
	tables := []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}
	testutil.Eventually(t, 30*time.Second, func() error { // once both agents have reported their databases
		for _, r := range []string{"us-east", "eu-west"} {
			if _, err := api.RegionDatabase(ctx, r, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if _, err := api.PutTenant(ctx, &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: tables}, nil); err != nil {
		t.Fatal(err)
	}
	// rows is acme's row count and id sum in a region's database.
	rows := func(conn *pgx.Conn) (n, sum int64) {
		t.Helper()
		if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(sum(id), 0) FROM orders WHERE tenant_id = 'acme'`).Scan(&n, &sum); err != nil {
			t.Fatalf("count acme's rows: %v", err)
		}
		return n, sum
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		var exists bool
		if err := mirror.QueryRow(ctx, `SELECT to_regclass('orders') IS NOT NULL`).Scan(&exists); err != nil || !exists {
			return fmt.Errorf("no orders table in eu-west yet (%v)", err)
		}
		if n, _ := rows(mirror); n != 200 {
			return fmt.Errorf("eu-west has %d of acme's 200 rows", n)
		}
		return nil
	})

	// Continuous writes at home, each recorded once PostgreSQL acknowledged it.
	w := &homeWriter{next: 1000}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.run(ctx, pgs["us-east"], stop) }()
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := w.count(); n < 20 {
			return fmt.Errorf("%d writes acknowledged so far", n)
		}
		return nil
	})

	before, _, err := api.Tenant(ctx, "acme", nil)
	if err != nil {
		t.Fatal(err)
	}
	if before.Epoch != 1 {
		t.Fatalf("a tenant created through the API has epoch %d, want 1", before.Epoch)
	}
	head, err := api.Audit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(how string, err error) {
		t.Helper()
		if !client.IsCode(err, fsm.CodeHomeChangeNeedsSwitchover) || client.StatusOf(err) != 409 {
			t.Fatalf("%s: %v, want 409 %s", how, err, fsm.CodeHomeChangeNeedsSwitchover)
		}
		for _, want := range []string{"would lose its data", "atomfed tenant switchover acme --to eu-west", "POST /v1/tenants/acme/switchover", "keep home_region us-east"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: the refusal %q does not say %q", how, err, want)
			}
		}
	}
	_, err = api.PutTenant(ctx, &fsm.Tenant{ID: "acme", HomeRegion: "eu-west", Mirrors: []string{"us-east"}, Tables: tables}, nil)
	refused("PUT onto its mirror", err)
	_, err = api.PutTenant(ctx, &fsm.Tenant{ID: "acme", HomeRegion: "eu-west", Tables: tables}, nil)
	refused("PUT onto its mirror, dropping the mirrors", err)
	_, err = c.Others(leader)[0].Client.PatchTenant(ctx, "acme", map[string]any{"home_region": "eu-west", "mirrors": []string{"us-east"}}, nil)
	refused("PATCH through a follower", err)
	cliOut := newCLI(t, c).with("ATOMFED_ADDR="+leader.URL).fails("tenant", "patch", "acme", "--home", "eu-west")
	mustContain(t, "the CLI's refusal", cliOut, "atomfed tenant switchover acme --to eu-west", fsm.CodeHomeChangeNeedsSwitchover)
	get := newCLI(t, c).with("ATOMFED_ADDR="+leader.URL).ok("tenant", "get", "acme")
	mustContain(t, "tenant get", get, "Epoch")
	if !strings.Contains(strings.Join(strings.Fields(get), " "), "Epoch 1") {
		t.Fatalf("tenant get does not show epoch 1:\n%s", get)
	}

	// Writes go on a little after the refusals, then stop.
	acked := w.count()
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := w.count(); n < acked+20 {
			return fmt.Errorf("%d writes acknowledged, waiting for %d", n, acked+20)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if w.err != nil {
		t.Fatalf("the writer at home failed: %v", w.err)
	}
	n, sum := w.totals()
	wantN, wantSum := 200+n, int64(200*201/2)+sum
	if gotN, gotSum := rows(home); gotN != wantN || gotSum != wantSum {
		t.Fatalf("us-east holds %d rows of acme (id sum %d), want the 200 and the %d acknowledged: %d (id sum %d)", gotN, gotSum, n, wantN, wantSum)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if gotN, gotSum := rows(mirror); gotN != wantN || gotSum != wantSum {
			return fmt.Errorf("eu-west holds %d rows of acme (id sum %d), want %d (id sum %d)", gotN, gotSum, wantN, wantSum)
		}
		return nil
	})
	t.Logf("%d writes acknowledged at home during the test; all %d rows at home and at the mirror", n, wantN)

	// The placement is the same on every server, and no tenant write was
	// committed.
	for _, s := range c.Servers {
		got, _, err := s.Client.Tenant(ctx, "acme", &client.QueryOptions{Consistency: "stale"})
		if err != nil {
			t.Fatalf("%s: %v", s.ID(), err)
		}
		if got.HomeRegion != "us-east" || strings.Join(got.Mirrors, ",") != "eu-west" || got.Epoch != 1 || got.ModifyIndex != before.ModifyIndex {
			t.Fatalf("%s holds acme as %+v, want it unchanged: %+v", s.ID(), got, before)
		}
	}
	after, err := api.Audit(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Recent) > 0 && after.Recent[0].Index > head.Index+1 {
		t.Fatalf("the audit window (from %d) does not reach back to %d", after.Recent[0].Index, head.Index)
	}
	for _, e := range after.Recent {
		if e.Index > head.Index && strings.HasPrefix(e.Type, "tenant_") {
			t.Fatalf("the audit chain has a %s entry (%d) after the refusals", e.Type, e.Index)
		}
	}

	// A tenant without mirrors may change its home: its epoch moves with it.
	if _, err := api.PutTenant(ctx, &fsm.Tenant{ID: "globex", HomeRegion: "us-east"}, nil); err != nil {
		t.Fatal(err)
	}
	moved, err := c.Others(leader)[0].Client.PatchTenant(ctx, "globex", map[string]any{"home_region": "eu-west"}, nil)
	if err != nil || moved.Epoch != 2 || moved.HomeRegion != "eu-west" {
		t.Fatalf("moving an unreplicated tenant: %+v %v, want home eu-west at epoch 2", moved, err)
	}
}

// homeWriter inserts acme's rows at home one statement at a time, until
// stopped between two statements, and records the ids PostgreSQL
// acknowledged (an error stops it: every statement's outcome is known).
type homeWriter struct {
	mu   sync.Mutex
	next int64
	ids  []int64
	err  error
}

func (w *homeWriter) run(ctx context.Context, pg *pglocal.Cluster, stop <-chan struct{}) {
	conn, err := pg.Connect(ctx, pglocal.Database)
	if err != nil {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
		return
	}
	defer conn.Close(context.Background())
	for {
		select {
		case <-stop:
			return
		default:
		}
		id := w.next
		_, err := conn.Exec(ctx, `INSERT INTO orders VALUES ('acme', $1, 1, $2)`, id, fmt.Sprintf("w%d@acme.example", id))
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		w.ids = append(w.ids, id)
		w.next++
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a steady stream, not a flood: the machine is shared
	}
}

func (w *homeWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ids)
}

func (w *homeWriter) totals() (n, sum int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range w.ids {
		sum += id
	}
	return int64(len(w.ids)), sum
}
