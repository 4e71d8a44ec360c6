package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// devRegionDB is one region's PostgreSQL of `atomfed dev`, as its banner
// names it: the superuser's connection, and the files of its replication
// credential (passfile and CA), which sit beside the superuser's passfile.
type devRegionDB struct {
	host, port, user, db string
	superPassfile        string
}

// devRegionDBs reads the three region databases from atomfed dev's
// banner (its psql lines), by region.
func devRegionDBs(t *testing.T, banner string) map[string]devRegionDB {
	t.Helper()
	dbs := map[string]devRegionDB{}
	for _, m := range regexp.MustCompile(`postgres\s+region (\S+)\s+\S+\s+PGPASSFILE=(\S+) psql -h (\S+) -p (\d+) -U (\S+) (\S+)`).FindAllStringSubmatch(banner, -1) {
		dbs[m[1]] = devRegionDB{host: m[3], port: m[4], user: m[5], db: m[6], superPassfile: m[2]}
	}
	if len(dbs) != 3 {
		t.Fatalf("dev printed %d psql lines, want 3:\n%s", len(dbs), banner)
	}
	return dbs
}

func (d devRegionDB) dir() string { return filepath.Dir(d.superPassfile) }

func (d devRegionDB) superDSN() string {
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s passfile=%s", d.host, d.port, d.user, d.db, d.superPassfile)
}

// replicatorDSN logs in to d as the replication role with region from's
// credentials, the way from's subscriptions do.
func (d devRegionDB) replicatorDSN(from devRegionDB, ssl string) string {
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s passfile=%s %s", d.host, d.port, pglocal.ReplicationUser, d.db,
		filepath.Join(from.dir(), "replication.pgpass"), ssl)
}

// TestSecurityReplicationAttacks attacks the region databases of a real
// `atomfed dev` federation (TLS servers and agents, one PostgreSQL per
// region) the way issue 16 describes: with eu-west's replication
// credential, read us-east's PII and unreplicated tenants (item 5); as
// us-east's database superuser, feed eu-west's mirror a type name that
// is SQL (item 4). Each is refused, and the control plane's state, its
// audit head, and the other regions stay as they were.
func TestSecurityReplicationAttacks(t *testing.T) {
	_, base, banner := startDevWithPostgres(t, "this test")
	dbs := devRegionDBs(t, banner)
	caPath := regexp.MustCompile(`ATOMFED_CACERT=(\S+)`).FindStringSubmatch(banner)[1]
	token := regexp.MustCompile(`FEDERATION_TOKEN=(\S+)`).FindStringSubmatch(banner)[1]
	tlsConf, err := tlsutil.ClientConfig(tlsutil.Files{CA: caPath}, "")
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.New(fmt.Sprintf("https://127.0.0.1:%d", base), client.WithToken(token), client.WithTLS(tlsConf))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctx(t, 5*time.Minute)
	connect := func(dsn string) *pgx.Conn {
		t.Helper()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	usEast, euWest := connect(dbs["us-east"].superDSN()), connect(dbs["eu-west"].superDSN())
	exec := func(c *pgx.Conn, stmts ...string) {
		t.Helper()
		for _, s := range stmts {
			if _, err := c.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	value := func(c *pgx.Conn, sql string) string {
		t.Helper()
		var v *string
		if err := c.QueryRow(ctx, sql).Scan(&v); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if v == nil {
			return ""
		}
		return *v
	}
	exec(usEast, `CREATE TABLE orders (tenant_id text NOT NULL, id bigint NOT NULL, amount int, email text, PRIMARY KEY (tenant_id, id))`,
		`INSERT INTO orders SELECT 'acme', g, g, 'ann' || g || '@acme.example' FROM generate_series(1, 10) g`,
		`INSERT INTO orders SELECT 'initech', g, g, 'bob@initech.example' FROM generate_series(1, 5) g`)
	exec(euWest, `CREATE TABLE victim (id int PRIMARY KEY)`, `INSERT INTO victim VALUES (1), (2), (3)`)
	if _, err := api.PutTenant(ctx, &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}, nil); err != nil {
		t.Fatal(err)
	}
	acmeAt := func(c *pgx.Conn) string {
		return value(c, `SELECT count(*)::text || ':' || coalesce(sum(amount), 0)::text FROM orders WHERE tenant_id = 'acme'`)
	}
	waitAcme := func() {
		t.Helper()
		testutil.Eventually(t, 90*time.Second, func() error {
			var n int
			if err := euWest.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relname = 'orders'`).Scan(&n); err != nil || n == 0 {
				return fmt.Errorf("no orders table in eu-west yet (%v)", err)
			}
			if got, want := acmeAt(euWest), acmeAt(usEast); got != want {
				return fmt.Errorf("eu-west has acme %s, us-east %s", got, want)
			}
			return nil
		})
	}
	waitAcme()

	t.Run("eu-west's replication credential reads only what us-east publishes", func(t *testing.T) {
		tasksBefore := nonDRTasks(t, api)
		before, err := api.Audit(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		thief, err := pgx.Connect(ctx, dbs["us-east"].replicatorDSN(dbs["eu-west"], "sslmode=verify-full sslrootcert="+filepath.Join(dbs["eu-west"].dir(), pglocal.RootCertName)))
		if err != nil {
			t.Fatalf("log in to us-east with eu-west's replication credential: %v", err)
		}
		defer thief.Close(context.Background())
		for _, sql := range []string{`SELECT email FROM orders`, `SELECT * FROM orders WHERE tenant_id = 'initech'`, `SELECT email FROM orders WHERE tenant_id = 'acme'`} {
			rows, err := thief.Query(ctx, sql)
			if err == nil {
				for rows.Next() {
				}
				rows.Close()
				err = rows.Err()
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42501" {
				t.Fatalf("%s with eu-west's credential: %v, want permission denied", sql, err)
			}
		}
		var seen string
		if err := thief.QueryRow(ctx, `SELECT coalesce(string_agg(DISTINCT tenant_id, ','), '') FROM orders`).Scan(&seen); err != nil {
			t.Fatalf("the published columns: %v", err)
		}
		if seen != "acme" {
			t.Fatalf("eu-west's credential reads the rows of %q in us-east, want acme's only", seen)
		}
		var initech int
		if err := thief.QueryRow(ctx, `SELECT count(*) FROM orders WHERE tenant_id = 'initech'`).Scan(&initech); err != nil || initech != 0 {
			t.Fatalf("eu-west's credential counts %d rows of initech (not replicated) (%v)", initech, err)
		}
		if c, err := pgx.Connect(ctx, dbs["us-east"].replicatorDSN(dbs["eu-west"], "sslmode=disable")); err == nil {
			c.Close(context.Background())
			t.Fatal("the replication role logged in to us-east without TLS")
		}
		// Replication goes on, and nothing else moved.
		exec(usEast, `INSERT INTO orders VALUES ('acme', 11, 11, 'new@acme.example')`)
		waitAcme()
		onlyReports(t, api, before, tasksBefore)
	})

	t.Run("a type name that is SQL from us-east's database is refused by eu-west", func(t *testing.T) {
		catalog := func(c *pgx.Conn) string {
			return value(c, `SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) || ' subs:' ||
				coalesce((SELECT string_agg(subname, ',' ORDER BY subname) FROM pg_subscription), '')
				FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace`)
		}
		euBefore := catalog(euWest)
		apSouth := connect(dbs["ap-south"].superDSN())
		apBefore := catalog(apSouth)
		exec(usEast, `CREATE DOMAIN evil_t AS integer`,
			`CREATE TABLE evil (tenant_id text NOT NULL, id bigint NOT NULL, v evil_t, PRIMARY KEY (tenant_id, id))`,
			`INSERT INTO evil VALUES ('mallory', 1, 1)`,
			`CREATE FUNCTION public.format_type(oid, integer) RETURNS text LANGUAGE sql STABLE AS
			 $$ SELECT CASE WHEN $1 = 'evil_t'::regtype THEN 'integer); DROP TABLE victim; --' ELSE pg_catalog.format_type($1, $2) END $$`,
			`ALTER ROLE `+pglocal.ReplicationUser+` SET search_path = public, pg_catalog`)
		if _, err := api.PutTenant(ctx, &fsm.Tenant{ID: "mallory", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
			Tables: []fsm.TenantTable{{Name: "evil"}}}, nil); err != nil {
			t.Fatal(err)
		}
		var refusal string
		var refusedAt int64
		testutil.Eventually(t, 90*time.Second, func() error {
			v, _, err := api.TenantReplication(ctx, "mallory", nil)
			if err != nil {
				return err
			}
			for _, m := range v.Mirrors {
				for _, is := range m.Issues {
					if m.Region == "eu-west" && is.Code == fsm.IssueUnsafeType {
						refusal, refusedAt = is.Message, is.At
						return nil
					}
				}
			}
			return fmt.Errorf("no unsafe_type refusal at eu-west yet: %+v", v.Mirrors)
		})
		for _, want := range []string{"region us-east reports column v of evil", "is not a type name here", "nothing is changed here"} {
			if !strings.Contains(refusal, want) {
				t.Fatalf("the refusal %q does not say %q", refusal, want)
			}
		}
		tasksBefore := nonDRTasks(t, api)
		head, err := api.Audit(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Look once the mirror has tried (and refused) again.
		testutil.Eventually(t, 30*time.Second, func() error {
			v, _, err := api.TenantReplication(ctx, "mallory", nil)
			if err != nil {
				return err
			}
			for _, m := range v.Mirrors {
				for _, is := range m.Issues {
					if m.Region == "eu-west" && is.Code == fsm.IssueUnsafeType && is.At > refusedAt {
						return nil
					}
				}
			}
			return fmt.Errorf("eu-west has not tried again yet")
		})
		if got := catalog(euWest); got != euBefore {
			t.Fatalf("eu-west's database changed: %s, was %s", got, euBefore)
		}
		if got := value(euWest, `SELECT count(*)::text FROM victim`); got != "3" {
			t.Fatalf("victim holds %s rows, want 3", got)
		}
		if got := catalog(apSouth); got != apBefore {
			t.Fatalf("ap-south's database changed: %s, was %s", got, apBefore)
		}
		// acme, already mirrored from the same source, keeps replicating.
		exec(usEast, `INSERT INTO orders VALUES ('acme', 12, 12, 'later@acme.example')`)
		waitAcme()
		onlyReports(t, api, head, tasksBefore)
	})
}

// onlyReports checks that the audit chain has grown since before by
// agents' status reports only (the agents keep reporting their tasks), and
// by the disaster recovery coordinator's own schedule (dev backs up and
// drills every region after it starts: backup and drill requests and
// records, and the task plans that place them) as long as no other task
// changed since tasksBefore.
func onlyReports(t *testing.T, api *client.Client, before *wire.AuditStatus, tasksBefore map[string]string) {
	t.Helper()
	after, err := api.Audit(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	if after.Index < before.Index {
		t.Fatalf("the audit chain went back from %d to %d", before.Index, after.Index)
	}
	dr := map[string]bool{"backup_request": true, "backup_record": true, "drill_request": true, "drill_record": true, "task_plan": true}
	for _, e := range after.Recent {
		if e.Index > before.Index && e.Type != "agent_report" && !dr[e.Type] {
			t.Fatalf("the audit chain has a %s entry (%d) since %d", e.Type, e.Index, before.Index)
		}
	}
	if len(after.Recent) > 0 && after.Recent[0].Index > before.Index+1 {
		t.Fatalf("the audit window (from %d) does not reach back to %d", after.Recent[0].Index, before.Index)
	}
	if got := nonDRTasks(t, api); fmt.Sprint(got) != fmt.Sprint(tasksBefore) {
		t.Fatalf("tasks other than backups and drills changed:\n%v\nwas\n%v", got, tasksBefore)
	}
}

// nonDRTasks are the federation's tasks but backups and drills, each with
// its spec, agent and generation.
func nonDRTasks(t *testing.T, api *client.Client) map[string]string {
	t.Helper()
	tasks, _, err := api.Tasks(ctx(t, 10*time.Second), "", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range tasks {
		if k.Type == fsm.TaskTypeBackup || k.Type == fsm.TaskTypeDrill {
			continue
		}
		out[k.ID] = fmt.Sprintf("%s@%s/%d", k.Spec, k.Agent, k.Generation)
	}
	return out
}
