package replication_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

func acme(mirrors ...string) *fsm.Tenant {
	return &fsm.Tenant{ID: "acme", HomeRegion: "a", Mirrors: mirrors,
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
}

// TestTenantMirrorsConvergeFilteredWithoutPIIUnderRLS is the tenant
// replicator's contract: acme at home in a, mirrored to b and c.
func TestTenantMirrorsConvergeFilteredWithoutPIIUnderRLS(t *testing.T) {
	f := newFed(t, "a", "b", "c")
	f.exec("a", ordersDDL,
		`INSERT INTO orders SELECT 'acme', g, g * 1.5, 'n' || g, 'x' || g || '@acme.test' FROM generate_series(1, 200) g`,
		`INSERT INTO orders SELECT 'globex', g, g, 'g', 'y@globex.test' FROM generate_series(1, 100) g`)
	f.putTenant(acme("b", "c"))
	f.waitStreaming("acme", "b", "c")
	f.waitSame("orders", "acme", orderCols, "a", "b", "c")

	// From here on, any row of another tenant that reached a mirror would
	// be caught by a trigger that fires for replicated rows too.
	for _, m := range []string{"b", "c"} {
		if n := f.mustValue(m, `SELECT count(*)::text FROM orders WHERE tenant_id <> 'acme'`); n != "0" {
			t.Fatalf("mirror %s got %s rows of other tenants in the initial copy", m, n)
		}
		f.exec(m, `CREATE TABLE leaked (tenant_id text, id bigint)`,
			`CREATE FUNCTION catch_leak() RETURNS trigger LANGUAGE plpgsql AS $$
			 BEGIN IF NEW.tenant_id <> 'acme' THEN INSERT INTO leaked VALUES (NEW.tenant_id, NEW.id); END IF; RETURN NEW; END $$`,
			`CREATE TRIGGER catch_leak AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION catch_leak()`,
			`ALTER TABLE orders ENABLE ALWAYS TRIGGER catch_leak`)
	}
	f.exec("a",
		`UPDATE orders SET amount = amount + 1, note = 'upd' WHERE tenant_id = 'acme' AND id % 3 = 0`,
		`DELETE FROM orders WHERE tenant_id = 'acme' AND id % 7 = 0`,
		`INSERT INTO orders SELECT 'globex', g, g, 'late', 'z@globex.test' FROM generate_series(101, 150) g`,
		`UPDATE orders SET note = 'globex-upd' WHERE tenant_id = 'globex'`,
		`DELETE FROM orders WHERE tenant_id = 'globex' AND id < 10`,
		`INSERT INTO orders SELECT 'acme', g, g, 'new', 'n' || g || '@acme.test' FROM generate_series(201, 260) g`)
	sum := f.waitSame("orders", "acme", orderCols, "a", "b", "c")
	if want := strconv.Itoa(200 - 200/7 + 60); !strings.HasPrefix(sum, want+":") {
		t.Fatalf("acme has %s rows, want %s", sum, want)
	}
	for _, m := range []string{"b", "c"} {
		if n := f.mustValue(m, `SELECT count(*)::text FROM orders WHERE tenant_id <> 'acme'`); n != "0" {
			t.Fatalf("mirror %s holds %s rows of other tenants", m, n)
		}
		if n := f.mustValue(m, `SELECT count(*)::text FROM leaked`); n != "0" {
			t.Fatalf("%s rows of other tenants reached mirror %s", n, m)
		}
		if hasColumn(f, m, "orders", "email") {
			t.Fatalf("PII column email exists in mirror %s", m)
		}
	}
	cols := f.mustValue("a", `SELECT array_to_string(attnames, ',') FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'orders'`,
		fsm.TenantPublication("acme"))
	if cols != "tenant_id,id,amount,note" {
		t.Fatalf("the publication's column list is %q; it must hold every column but the PII one", cols)
	}
	if filter := f.mustValue("a", `SELECT rowfilter FROM pg_publication_tables WHERE pubname = $1`, fsm.TenantPublication("acme")); !strings.Contains(filter, "'acme'") {
		t.Fatalf("row filter %q does not select acme", filter)
	}

	// Row-level security on the mirror: an application role sees acme's
	// rows with app.tenant_id = acme, another tenant's with its id, and
	// nothing without it.
	f.exec("b", `INSERT INTO orders (tenant_id, id, amount, note) VALUES ('initech', 1, 1, 'local')`,
		`CREATE ROLE app LOGIN PASSWORD 'app-secret'`, `GRANT SELECT ON orders TO app`)
	pg := f.pg["b"]
	app, err := pgx.Connect(f.ctx(time.Minute), fmt.Sprintf("host=%s port=%d dbname=%s user=app password=app-secret", pg.Host, pg.Port, pglocal.Database))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())
	count := func(setting string) string {
		t.Helper()
		ctx := f.ctx(time.Minute)
		if setting != "" {
			if _, err := app.Exec(ctx, "SET app.tenant_id = "+setting); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := app.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		var other int
		if err := app.QueryRow(ctx, `SELECT count(*) FROM orders WHERE tenant_id <> coalesce(current_setting('app.tenant_id', true), '')`).Scan(&other); err != nil {
			t.Fatal(err)
		}
		if other != 0 {
			t.Fatalf("with app.tenant_id %q the application sees %d rows of other tenants", setting, other)
		}
		return strconv.Itoa(n)
	}
	if n := count(""); n != "0" {
		t.Fatalf("without app.tenant_id the application sees %s rows", n)
	}
	if n, want := count("'acme'"), strings.Split(sum, ":")[0]; n != want {
		t.Fatalf("with app.tenant_id = acme the application sees %s rows, want acme's %s", n, want)
	}
	if n := count("'initech'"); n != "1" {
		t.Fatalf("with app.tenant_id = initech the application sees %s rows, want 1", n)
	}
}

// TestSpecChangesConverge changes acme's spec in every way the issue
// lists and checks each change reaches the databases.
func TestSpecChangesConverge(t *testing.T) {
	f := newFed(t, "a", "b", "c")
	f.exec("a", ordersDDL, `ALTER TABLE orders ADD COLUMN phone text`,
		`CREATE TABLE invoices (tenant_id text NOT NULL, id bigint NOT NULL, total numeric NOT NULL, PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO orders SELECT 'acme', g, g, 'n', 'e@x', '555-' || g FROM generate_series(1, 50) g`,
		`INSERT INTO invoices SELECT 'acme', g, g * 10 FROM generate_series(1, 30) g`,
		`INSERT INTO invoices SELECT 'globex', g, g FROM generate_series(1, 30) g`)
	tn := acme("b")
	f.putTenant(tn)
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols+", phone", "a", "b")
	if !hasColumn(f, "b", "orders", "phone") {
		t.Fatal("phone is not PII yet, but it is missing in the mirror")
	}

	t.Log("add mirror c and table invoices")
	tn.Mirrors = []string{"b", "c"}
	tn.Tables = append(tn.Tables, fsm.TenantTable{Name: "invoices"})
	f.putTenant(tn)
	f.waitStreaming("acme", "b", "c")
	f.waitSame("orders", "acme", orderCols+", phone", "a", "b", "c")
	f.waitSame("invoices", "acme", "tenant_id, id, total", "a", "b", "c")

	t.Log("mark phone as PII")
	f.exec("a", `UPDATE orders SET note = 'before-pii' WHERE id = 1`)
	tn.Tables[0].PIIColumns = []string{"email", "phone"}
	f.putTenant(tn)
	testutil.Eventually(t, 60*time.Second, func() error {
		if cols := f.mustValue("a", `SELECT array_to_string(attnames, ',') FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'orders'`,
			fsm.TenantPublication("acme")); strings.Contains(cols, "phone") {
			return fmt.Errorf("the publication still lists phone: %s", cols)
		}
		for _, m := range []string{"b", "c"} {
			if hasColumn(f, m, "orders", "phone") {
				return fmt.Errorf("phone still exists in mirror %s", m)
			}
		}
		return nil
	})
	f.exec("a", `INSERT INTO orders VALUES ('acme', 51, 51, 'after-pii', 'e@x', '555-51')`, `UPDATE orders SET note = 'again' WHERE id = 2`)
	f.waitStreaming("acme", "b", "c")
	f.waitSame("orders", "acme", orderCols, "a", "b", "c")

	t.Log("remove table invoices and mirror c")
	tn.Mirrors, tn.Tables = []string{"b"}, tn.Tables[:1]
	f.putTenant(tn)
	sub := fsm.TenantSubscription("acme", "c")
	testutil.Eventually(t, 60*time.Second, func() error {
		v, err := f.replication("acme")
		if err != nil {
			return err
		}
		if m := mirror(v, "c"); m != nil {
			return fmt.Errorf("mirror c is still listed: %s", js(m))
		}
		checks := []struct{ region, sql, want string }{
			{"c", `SELECT count(*)::text FROM pg_subscription WHERE subname = '` + sub + `'`, "0"},
			{"c", `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme'`, "0"},
			{"c", `SELECT count(*)::text FROM invoices WHERE tenant_id = 'acme'`, "0"},
			{"b", `SELECT count(*)::text FROM invoices WHERE tenant_id = 'acme'`, "0"},
			{"a", `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '` + sub + `'`, "0"},
			{"a", `SELECT count(*)::text FROM pg_publication_tables WHERE pubname = '` + fsm.TenantPublication("acme") + `' AND tablename = 'invoices'`, "0"},
		}
		for _, c := range checks {
			if got := f.mustValue(c.region, c.sql); got != c.want {
				return fmt.Errorf("%s: %s = %s, want %s", c.region, c.sql, got, c.want)
			}
		}
		return nil
	})
	f.exec("a", `INSERT INTO orders VALUES ('acme', 52, 52, 'after-removal', 'e@x', '555-52')`)
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
}

// TestDeletingTenantLeavesNoPublicationSubscriptionOrSlot deletes acme and
// checks that nothing of its replication is left, while another tenant's
// goes on.
func TestDeletingTenantLeavesNoPublicationSubscriptionOrSlot(t *testing.T) {
	f := newFed(t, "a", "b", "c")
	f.exec("a", ordersDDL,
		`INSERT INTO orders SELECT 'acme', g, g, 'n', 'e@x' FROM generate_series(1, 100) g`,
		`INSERT INTO orders SELECT 'globex', g, g, 'n', 'e@x' FROM generate_series(1, 100) g`)
	f.putTenant(acme("b", "c"))
	f.putTenant(&fsm.Tenant{ID: "globex", HomeRegion: "a", Mirrors: []string{"b"}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}})
	f.waitStreaming("acme", "b", "c")
	f.waitStreaming("globex", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b", "c")
	f.waitConfirmed("a", "acme")

	f.deleteTenant("acme")
	testutil.Eventually(t, 60*time.Second, func() error {
		checks := []struct{ region, sql, want string }{
			// The home guard forgets a deleted tenant: nothing holds its
			// rows' writes after a later restart; globex stays guarded.
			{"a", `SELECT string_agg(tenant_id, ',') FROM atomfed.home_confirmations`, "globex"},
			{"a", `SELECT count(*)::text FROM pg_publication WHERE pubname = '` + fsm.TenantPublication("acme") + `'`, "0"},
			{"a", `SELECT count(*)::text FROM pg_replication_slots WHERE starts_with(slot_name::text, '` + fsm.TenantSlotPrefix("acme") + `')`, "0"},
			// No orphan of any kind: only globex's slot is left.
			{"a", `SELECT string_agg(slot_name, ',') FROM pg_replication_slots`, fsm.TenantSubscription("globex", "b")},
			{"b", `SELECT count(*)::text FROM pg_subscription WHERE subname = '` + fsm.TenantSubscription("acme", "b") + `'`, "0"},
			{"c", `SELECT count(*)::text FROM pg_subscription`, "0"},
			{"b", `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme'`, "0"},
			{"c", `SELECT count(*)::text FROM orders WHERE tenant_id = 'acme'`, "0"},
		}
		for _, c := range checks {
			if got := f.mustValue(c.region, c.sql); got != c.want {
				return fmt.Errorf("%s: %s = %s, want %s", c.region, c.sql, got, c.want)
			}
		}
		tasks, _, err := f.api.Tasks(f.ctx(10*time.Second), "", "", "", nil)
		if err != nil {
			return err
		}
		for _, tk := range tasks {
			if strings.Contains(tk.ID, "/acme") {
				return fmt.Errorf("task %s is still there: %s", tk.ID, js(tk))
			}
		}
		return nil
	})
	if _, err := f.replication("acme"); err == nil || !strings.Contains(err.Error(), "tenant_not_found") {
		t.Fatalf("replication of a deleted tenant: %v", err)
	}
	f.exec("a", `INSERT INTO orders VALUES ('globex', 101, 1, 'after', 'e@x')`)
	f.waitStreaming("globex", "b")
	f.waitSame("orders", "globex", orderCols, "a", "b")
	resp := f.do(f.c.Nodes[0], http.MethodGet, "/v1/tenants/acme/replication", nil)
	if d, ok := resp.ErrorDetail(); resp.Status != http.StatusNotFound || !ok || d.Code != "tenant_not_found" {
		t.Fatalf("GET replication of a deleted tenant: %d %s", resp.Status, resp.Body)
	}
}

// TestRestoreConvergesReplication restores a snapshot saved while acme was
// mirrored to b, after acme moved its mirror to c: with every agent alive
// throughout, b streams again (its tasks get generations above the ones
// the agents saw) and c's subscription and its slot at the home are torn
// down, not abandoned.
func TestRestoreConvergesReplication(t *testing.T) {
	f := newFed(t, "a", "b", "c")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'e@x' FROM generate_series(1, 20) g`)
	tn := acme("b")
	f.putTenant(tn)
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
	var archive bytes.Buffer
	f.write("save a snapshot", func(ctx context.Context) error {
		archive.Reset()
		_, err := f.c.WaitLeader().Client.SnapshotSave(ctx, &archive)
		return err
	})

	t.Log("move the mirror from b to c")
	tn.Mirrors = []string{"c"}
	f.putTenant(tn)
	f.waitStreaming("acme", "c")
	subC := fsm.TenantSubscription("acme", "c")
	testutil.Eventually(t, 60*time.Second, func() error {
		if v, err := f.replication("acme"); err != nil || mirror(v, "b") != nil {
			return fmt.Errorf("mirror b is still listed (%v)", err)
		}
		return nil
	})

	t.Log("restore the snapshot")
	f.write("restore the snapshot", func(ctx context.Context) error {
		_, err := f.c.WaitLeader().Client.SnapshotRestore(ctx, bytes.NewReader(archive.Bytes()))
		return err
	})
	f.exec("a", `INSERT INTO orders VALUES ('acme', 21, 21, 'after-restore', 'e@x')`)
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, c := range []struct{ region, sql, want string }{
			{"c", `SELECT count(*)::text FROM pg_subscription WHERE subname = '` + subC + `'`, "0"},
			{"a", `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '` + subC + `'`, "0"},
		} {
			if got := f.mustValue(c.region, c.sql); got != c.want {
				return fmt.Errorf("%s: %s = %s, want %s", c.region, c.sql, got, c.want)
			}
		}
		if v, err := f.replication("acme"); err != nil || mirror(v, "c") != nil {
			return fmt.Errorf("mirror c is still listed after its teardown (%v)", err)
		}
		return nil
	})
	agents, _, err := f.c.WaitLeader().Client.Agents(f.ctx(10*time.Second), "", nil)
	if err != nil || len(agents) != len(f.agents) {
		t.Fatalf("agents after the restore: %d of %d (%v)", len(agents), len(f.agents), err)
	}
	for _, ag := range agents {
		if ag.Status != fsm.AgentAlive {
			t.Fatalf("agent %s is %s after the restore", ag.Node, ag.Status)
		}
	}
}
