package replication_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/replication"
)

// interval is the executors' probe interval in these tests.
const interval = 500 * time.Millisecond

// fed is a federation under test: three in-process servers, one agent per
// region with the replication executors, and one real PostgreSQL per
// region.
type fed struct {
	t      *testing.T
	c      *testcluster.Cluster
	pg     map[string]*pglocal.Cluster
	agents map[string]*testcluster.AgentNode
	api    *client.Client
}

type fedOptions struct {
	// dsn overrides the DSN an agent uses (default: the superuser's).
	dsn map[string]string
	// setup runs once the databases are up, before the agents start.
	setup func(f *fed)
}

func newFed(t *testing.T, regions ...string) *fed {
	return newFedWith(t, fedOptions{}, regions...)
}

func newFedWith(t *testing.T, o fedOptions, regions ...string) *fed {
	t.Helper()
	f := &fed{t: t, pg: pgtest.NewFederation(t, regions...), agents: map[string]*testcluster.AgentNode{}}
	if o.setup != nil {
		o.setup(f)
	}
	f.c = testcluster.New(t, testcluster.Options{})
	f.api = f.c.Nodes[0].Client
	ctx := f.ctx(30 * time.Second)
	for i, r := range regions {
		f.c.RegisterRegion(&fsm.Region{Name: r, URL: f.c.Nodes[i%len(f.c.Nodes)].URL})
	}
	for _, r := range regions {
		pg := f.pg[r]
		dsn := pg.DSN(pglocal.Database)
		if d, ok := o.dsn[r]; ok {
			dsn = d
		}
		host, port, db := pg.Endpoint()
		f.agents[r] = f.c.AddAgentWith(r+"-a1", r, testcluster.AgentOptions{
			Database: &fsm.DatabaseEndpoint{Host: host, Port: port, Database: db},
			Executors: func(reg prometheus.Registerer) ([]agent.Executor, error) {
				ex, err := replication.Executors(replication.Config{DSN: dsn, ReplicationPassfile: pg.Passfile, ReplicationCA: pg.RootCert,
					Interval: interval, Registerer: reg, Logger: testLogger(r)})
				out := make([]agent.Executor, len(ex))
				for i, e := range ex {
					out[i] = e
				}
				return out, err
			},
		})
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, r := range regions {
			if _, err := f.api.RegionDatabase(ctx, r, nil); err != nil {
				return fmt.Errorf("region %s database endpoint: %w", r, err)
			}
		}
		return nil
	})
	return f
}

// with returns the fixture bound to a subtest, so that its helpers fail
// the subtest and not its parent from the subtest's goroutine.
func (f *fed) with(t *testing.T) *fed {
	c := *f
	c.t = t
	return &c
}

func testLogger(name string) hclog.Logger {
	level := os.Getenv("ATOMFED_TEST_LOG")
	if level == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.LevelFromString(level)})
}

func (f *fed) ctx(d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	f.t.Cleanup(cancel)
	return ctx
}

// conn opens a superuser connection to a region's database.
func (f *fed) conn(region string) *pgx.Conn {
	f.t.Helper()
	c, err := f.pg[region].Connect(f.ctx(time.Minute), pglocal.Database)
	if err != nil {
		f.t.Fatalf("connect to %s: %v", region, err)
	}
	f.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// exec runs statements in a region.
func (f *fed) exec(region string, stmts ...string) {
	f.t.Helper()
	c, err := f.pg[region].Connect(f.ctx(time.Minute), pglocal.Database)
	if err != nil {
		f.t.Fatalf("connect to %s: %v", region, err)
	}
	defer c.Close(context.Background())
	for _, s := range stmts {
		if _, err := c.Exec(f.ctx(time.Minute), s); err != nil {
			f.t.Fatalf("%s: %s: %v", region, s, err)
		}
	}
}

// value runs a query returning one value in a region, or returns its error.
func (f *fed) value(region, sql string, args ...any) (string, error) {
	c, err := f.pg[region].Connect(f.ctx(time.Minute), pglocal.Database)
	if err != nil {
		return "", err
	}
	defer c.Close(context.Background())
	var v *string
	if err := c.QueryRow(f.ctx(time.Minute), sql, args...).Scan(&v); err != nil {
		return "", err
	}
	if v == nil {
		return "<null>", nil
	}
	return *v, nil
}

func (f *fed) mustValue(region, sql string, args ...any) string {
	f.t.Helper()
	v, err := f.value(region, sql, args...)
	if err != nil {
		f.t.Fatalf("%s: %s: %v", region, sql, err)
	}
	return v
}

// write runs a write through the API, again while it meets a leader
// election (a 503 that says nothing was applied), and fails the test on
// any other error.
func (f *fed) write(what string, op func(ctx context.Context) error) {
	f.t.Helper()
	testutil.Eventually(f.t, 30*time.Second, func() error {
		err := op(f.ctx(30 * time.Second))
		if err != nil && !client.IsCode(err, "no_leader") && !client.IsCode(err, "busy") {
			f.t.Fatalf("%s: %v", what, err)
		}
		return err
	})
}

func (f *fed) putTenant(tn *fsm.Tenant) {
	f.t.Helper()
	f.write("put tenant "+tn.ID, func(ctx context.Context) error { _, err := f.api.PutTenant(ctx, tn, nil); return err })
}

func (f *fed) deleteTenant(id string) {
	f.t.Helper()
	f.write("delete tenant "+id, func(ctx context.Context) error { return f.api.DeleteTenant(ctx, id, nil) })
}

// do sends a raw request to a server until the answer is not a retryable
// 503.
func (f *fed) do(n *testcluster.Node, method, path string, body any) *testcluster.Response {
	f.t.Helper()
	var r *testcluster.Response
	testutil.Eventually(f.t, 30*time.Second, func() error {
		r = n.Do(f.t, method, path, body, nil)
		if d, ok := r.ErrorDetail(); ok && r.Status == http.StatusServiceUnavailable && d.Code != "outcome_unknown" {
			return fmt.Errorf("%d %s", r.Status, r.Body)
		}
		return nil
	})
	return r
}

func (f *fed) replication(id string) (*fsm.TenantReplication, error) {
	v, _, err := f.api.TenantReplication(f.ctx(30*time.Second), id, nil)
	return v, err
}

// waitStreaming waits until every listed mirror of the tenant streams with
// every table ready and no issue.
func (f *fed) waitStreaming(id string, mirrors ...string) *fsm.TenantReplication {
	f.t.Helper()
	var v *fsm.TenantReplication
	testutil.Eventually(f.t, 60*time.Second, func() error {
		var err error
		if v, err = f.replication(id); err != nil {
			return err
		}
		if v.Publisher == nil || v.Publisher.State != fsm.ReplReady {
			return fmt.Errorf("publisher: %s", js(v.Publisher))
		}
		for _, m := range mirrors {
			mv := mirror(v, m)
			if mv == nil || mv.State != fsm.ReplStreaming || len(mv.Issues) > 0 || mv.Ensure != fsm.EnsurePresent {
				return fmt.Errorf("mirror %s: %s", m, js(mv))
			}
			for _, tb := range mv.Tables {
				if tb.State != "ready" {
					return fmt.Errorf("mirror %s table %s is %s", m, tb.Name, tb.State)
				}
			}
		}
		return nil
	})
	return v
}

func mirror(v *fsm.TenantReplication, region string) *fsm.MirrorView {
	for i := range v.Mirrors {
		if v.Mirrors[i].Region == region {
			return &v.Mirrors[i]
		}
	}
	return nil
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// checksum is a count and md5 over a tenant's rows of a table, ordered by
// key, of the given columns.
func (f *fed) checksum(region, table, tenant, cols string) (string, error) {
	return f.value(region, fmt.Sprintf(`SELECT count(*)::text || ':' || coalesce(md5(string_agg(concat_ws('|', %s), ',' ORDER BY id)), '')
		FROM %s WHERE tenant_id = $1`, cols, table), tenant)
}

// waitSame waits until the tenant's rows of table agree in every region.
func (f *fed) waitSame(table, tenant, cols string, home string, mirrors ...string) string {
	f.t.Helper()
	var want string
	testutil.Eventually(f.t, 60*time.Second, func() error {
		var err error
		if want, err = f.checksum(home, table, tenant, cols); err != nil {
			return err
		}
		for _, m := range mirrors {
			got, err := f.checksum(m, table, tenant, cols)
			if err != nil {
				return fmt.Errorf("%s: %w", m, err)
			}
			if got != want {
				return fmt.Errorf("%s has %s of %s, home %s has %s", m, got, table, home, want)
			}
		}
		return nil
	})
	return want
}

func hasColumn(f *fed, region, table, col string) bool {
	f.t.Helper()
	n := f.mustValue(region, `SELECT count(*)::text FROM information_schema.columns WHERE table_name = $1 AND column_name = $2`, table, col)
	return n != "0"
}

// serverMetrics returns a server's /metrics text.
func (f *fed) serverMetrics(n *testcluster.Node) string {
	f.t.Helper()
	resp := f.do(n, http.MethodGet, "/metrics", nil)
	return string(resp.Body)
}

// agentMetric returns the value of a gauge on an agent with the labels,
// or an error when there is none.
func agentMetric(a *testcluster.AgentNode, name string, labels map[string]string) (float64, error) {
	mfs, err := a.Reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			return m.GetGauge().GetValue(), nil
		}
	}
	return 0, errors.New("no " + name + " series with " + js(labels))
}

// metricLine reports whether the exposition text has a series of name
// with all the given label pairs.
func metricLine(text, name string, labels ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			return true
		}
	}
	return false
}

const ordersDDL = `CREATE TABLE orders (
	tenant_id text NOT NULL,
	id bigint NOT NULL,
	amount numeric(12,2) NOT NULL,
	note text,
	email text,
	PRIMARY KEY (tenant_id, id))`

const orderCols = "tenant_id, id, amount, note"
