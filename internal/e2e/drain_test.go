package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// TestRegionDrain: three server processes (TLS), us-east and eu-west each
// with a real PostgreSQL and an agent process. acme (pii_while_away
// null_only, the default) and globex (keep_local) are at home in us-east,
// mirrored to eu-west, each with rows and PII. `atomfed region drain
// us-east` follows the drain until it ends: both tenants are at home in
// eu-west with every row, us-east (their residency region) mirrors them
// with its PII intact; at eu-west, a temporary home, acme's PII column
// refuses a value with the P1 message and takes NULL, globex's takes a
// value (keep_local); a placement into us-east is refused while it is in
// maintenance and accepted once maintenance is off. acme then fails back
// to us-east: every PII value written there before the drain is intact,
// and it takes PII values again.
func TestRegionDrain(t *testing.T) {
	if _, err := pglocal.Find(); err != nil {
		t.Fatalf("this test needs PostgreSQL: %v", err)
	}
	start := time.Now()
	regions := []string{"us-east", "eu-west"}
	c := startCluster(t)
	leader := waitLeader(t, c)
	cx := ctx(t, 3*time.Minute)
	pgs := pgtest.NewFederation(t, regions...)
	db := map[string]*pgx.Conn{}
	dir := t.TempDir()
	for _, r := range regions {
		conn, err := pgs[r].Connect(cx, pglocal.Database)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		db[r] = conn
		execPG(t, cx, conn, `CREATE TABLE orders (tenant_id text NOT NULL, id bigserial, amount int, email text, PRIMARY KEY (tenant_id, id))`)
		registerRegion(t, c, leader, r)
		a, err := procs.NewAgentProc(atomfedBin, procs.LogDir(t), dir, r+"-a1", r, func() (int, error) { return testutil.FreePort(t), nil }, c.SerfAddrs(), c.Sec,
			"--replication-passfile", pgs[r].Passfile, "--replication-ca", pgs[r].RootCert, "--replication-interval", "500ms")
		if err != nil {
			t.Fatal(err)
		}
		a.Env = append(a.Env, "POSTGRES_DSN="+pgs[r].DSN(pglocal.Database))
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("log of %s:\n%s", a.Node, a.LogTail(60))
			}
			a.Close()
		})
	}
	tenants := []string{"acme", "globex"}
	for _, id := range tenants {
		execPG(t, cx, db["us-east"], fmt.Sprintf(`INSERT INTO orders (tenant_id, amount, email) SELECT '%s', g, 'c' || g || '@%s.example' FROM generate_series(1, 100) g`, id, id))
	}
	api := leader.Client
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, r := range regions {
			if _, err := api.RegionDatabase(cx, r, nil); err != nil {
				return err
			}
		}
		return nil
	})
	for _, id := range tenants {
		tn := &fsm.Tenant{ID: id, HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
		if id == "globex" {
			tn.PIIWhileAway = fsm.PIIWhileAwayKeepLocal
		}
		if _, err := api.PutTenant(cx, tn, nil); err != nil {
			t.Fatal(err)
		}
	}
	rows := func(region, tenant string) map[int64]string {
		t.Helper()
		out := map[int64]string{}
		rs, err := db[region].Query(cx, `SELECT id, coalesce(email, '') FROM orders WHERE tenant_id = $1`, tenant)
		if err != nil {
			t.Fatalf("read %s's rows in %s: %v", tenant, region, err)
		}
		defer rs.Close()
		for rs.Next() {
			var id int64
			var email string
			if err := rs.Scan(&id, &email); err != nil {
				t.Fatal(err)
			}
			out[id] = email
		}
		return out
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, id := range tenants {
			if n := len(rows("eu-west", id)); n != 100 {
				return fmt.Errorf("eu-west has %d of %s's 100 rows", n, id)
			}
			v, _, err := api.TenantReplication(cx, id, nil)
			if err != nil {
				return err
			}
			if len(v.Mirrors) != 1 || v.Mirrors[0].State != fsm.ReplStreaming {
				return fmt.Errorf("%s's mirror does not stream yet: %+v", id, v.Mirrors)
			}
		}
		return nil
	})
	before := map[string]map[int64]string{}
	for _, id := range tenants {
		before[id] = rows("us-east", id)
	}
	t.Logf("federation up after %s", time.Since(start).Round(time.Millisecond))

	cliEnv := newCLI(t, c).with("ATOMFED_ADDR=" + leader.URL)
	drainStart := time.Now()
	out := cliEnv.ok("region", "drain", "us-east")
	t.Logf("atomfed region drain us-east (%s):\n%s", time.Since(drainStart).Round(time.Millisecond), out)
	mustContain(t, "the drain's output", out, "acme", "globex", "moved", "drain done", "2 of 2 tenants moved")

	for _, id := range tenants {
		tn, _, err := api.Tenant(cx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tn.HomeRegion != "eu-west" || tn.ResidencyRegion != "us-east" || len(tn.Mirrors) != 1 || tn.Mirrors[0] != "us-east" {
			t.Fatalf("%s after the drain: %+v", id, tn)
		}
		got := rows("eu-west", id)
		for rid := range before[id] {
			if _, ok := got[rid]; !ok {
				t.Fatalf("%s's row %d is lost at eu-west", id, rid)
			}
		}
		// us-east is a former home: its PII is intact.
		for rid, email := range rows("us-east", id) {
			if email != before[id][rid] {
				t.Fatalf("%s's row %d at us-east: email %q, was %q", id, rid, email, before[id][rid])
			}
		}
	}

	// The temporary home: acme's PII column takes only NULL, globex's a value.
	_, err := db["eu-west"].Exec(cx, `INSERT INTO orders (tenant_id, amount, email) VALUES ('acme', 1, 'new@acme.example')`)
	want := "P1: tenant acme is away from its residency region us-east; its PII column email accepts only NULL here (pii_while_away: null_only)"
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != replication.PIIGuardSQLState || pe.Message != want {
		t.Fatalf("acme's PII written at its temporary home: %v; want %s %q", err, replication.PIIGuardSQLState, want)
	}
	execPG(t, cx, db["eu-west"], `INSERT INTO orders (tenant_id, amount, email) VALUES ('acme', 1, NULL)`,
		`INSERT INTO orders (tenant_id, amount, email) VALUES ('globex', 1, 'kept@globex.example')`)
	// The new rows reach us-east, without PII.
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, id := range tenants {
			if n := len(rows("us-east", id)); n != 101 {
				return fmt.Errorf("us-east has %d of %s's 101 rows", n, id)
			}
		}
		return nil
	})
	for rid, email := range rows("us-east", "globex") {
		if _, old := before["globex"][rid]; !old && email != "" {
			t.Fatalf("globex's PII written at eu-west reached us-east: row %d %q", rid, email)
		}
	}

	// Fail-back of acme to its residency region: its PII there is intact,
	// and it takes PII again (no guard at the residency region).
	out = cliEnv.ok("tenant", "switchover", "acme", "--to", "us-east")
	mustContain(t, "the fail-back's output", out, "switchover done")
	got := rows("us-east", "acme")
	for rid, email := range before["acme"] {
		if got[rid] != email {
			t.Fatalf("acme's row %d at us-east after the fail-back: %q, was %q", rid, got[rid], email)
		}
	}
	execPG(t, cx, db["us-east"], `INSERT INTO orders (tenant_id, amount, email) VALUES ('acme', 1, 'back@acme.example')`)

	// Maintenance: placements into us-east are refused until it is off.
	mustContain(t, "region maintenance", cliEnv.ok("region", "maintenance", "us-east"), "maintenance on", "drain", "done")
	_, err = api.PutTenant(cx, &fsm.Tenant{ID: "newco", HomeRegion: "us-east"}, nil)
	if !client.IsCode(err, fsm.CodeRegionInMaintenance) || !strings.Contains(err.Error(), "region us-east is in maintenance") {
		t.Fatalf("a tenant placed into us-east in maintenance: %v", err)
	}
	if _, _, err := api.Tenant(cx, "newco", nil); client.StatusOf(err) != 404 {
		t.Fatalf("the refused tenant exists: %v", err)
	}
	cliEnv.ok("region", "maintenance", "us-east", "off")
	if _, err := api.PutTenant(cx, &fsm.Tenant{ID: "newco", HomeRegion: "us-east"}, nil); err != nil {
		t.Fatalf("a tenant placed into us-east after maintenance: %v", err)
	}
	t.Logf("drain test done after %s", time.Since(start).Round(time.Millisecond))
}
