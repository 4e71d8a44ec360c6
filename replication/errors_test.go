package replication_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// waitIssue waits until the tenant's mirror (or, with mirror "", its
// publisher) reports an issue of code whose message holds says, and
// returns the view.
func (f *fed) waitIssue(id, mirrorRegion, code, says string) *fsm.TenantReplication {
	f.t.Helper()
	var v *fsm.TenantReplication
	testutil.Eventually(f.t, 60*time.Second, func() error {
		var err error
		if v, err = f.replication(id); err != nil {
			return err
		}
		var issues []fsm.ReplicationIssue
		if mirrorRegion == "" {
			if v.Publisher != nil {
				issues = v.Publisher.Issues
			}
		} else if m := mirror(v, mirrorRegion); m != nil {
			issues = m.Issues
		}
		for _, is := range issues {
			if is.Code == code && strings.Contains(is.Message, says) {
				return nil
			}
		}
		return fmt.Errorf("no %s issue saying %q: %s", code, says, js(issues))
	})
	return v
}

// waitErrorMetric waits until both the region's agent and a server export
// the replication error series of code for the tenant.
func (f *fed) waitErrorMetric(tenant, region, code string) {
	f.t.Helper()
	testutil.Eventually(f.t, 30*time.Second, func() error {
		if v, err := agentMetric(f.agents[region], structs.MetricReplicationError, map[string]string{"name": tenant, "region": region, "code": code}); err != nil || v != 1 {
			return fmt.Errorf("agent %s: %v %v", region, v, err)
		}
		if m := f.serverMetrics(f.c.Nodes[1]); !metricLine(m, structs.MetricReplicationError, `name="`+tenant+`"`, `region="`+region+`"`, `code="`+code+`"`) {
			return fmt.Errorf("server /metrics has no %s error for %s in %s", code, tenant, region)
		}
		return nil
	})
}

// TestReplicationErrorsSurfaceInAPIAndMetrics provokes each kind of error
// the issue lists (a conflict, a missing table, a permission error, a
// subscription that is down) and checks that each shows in
// /v1/tenants/{id}/replication and in the metrics of the agent and of the
// servers, and that lag is exported per tenant and mirror.
func TestReplicationErrorsSurfaceInAPIAndMetrics(t *testing.T) {
	// Region c's agent logs in as a role that may do nothing.
	var f *fed
	pgs := map[string]string{}
	f = newFedWith(t, fedOptions{dsn: pgs, setup: func(f *fed) {
		pg := f.pg["c"]
		f.exec("c", `CREATE ROLE limited LOGIN PASSWORD 'limited-secret'`)
		pgs["c"] = fmt.Sprintf("host=%s port=%d user=limited password=limited-secret dbname=%s", pg.Host, pg.Port, pglocal.Database)
	}}, "a", "b", "c")
	f.exec("a", ordersDDL, `INSERT INTO orders SELECT 'acme', g, g, 'n', 'e@x' FROM generate_series(1, 50) g`)
	f.putTenant(acme("b", "c"))
	f.waitStreaming("acme", "b")

	t.Run("lag per tenant and mirror", func(t *testing.T) {
		f := f.with(t)
		testutil.Eventually(t, 30*time.Second, func() error {
			for _, name := range []string{structs.MetricReplicationLagSeconds, structs.MetricReplicationLagBytes} {
				if _, err := agentMetric(f.agents["b"], name, map[string]string{"tenant": "acme", "mirror": "b"}); err != nil {
					return err
				}
				if m := f.serverMetrics(f.c.Nodes[2]); !metricLine(m, name, `tenant="acme"`, `mirror="b"`) {
					return fmt.Errorf("server /metrics has no %s for acme in b", name)
				}
			}
			return nil
		})
	})

	t.Run("permission error", func(t *testing.T) {
		f := f.with(t)
		v := f.waitIssue("acme", "c", fsm.IssuePermissionDenied, "permission denied")
		t.Logf("the permission error in the API: %s", js(mirror(v, "c").Issues))
		if m := mirror(v, "c"); m.LastError == nil || m.LastError.Code != fsm.IssuePermissionDenied {
			t.Fatalf("mirror c's last error: %s", js(m))
		}
		f.waitErrorMetric("acme", "c", fsm.IssuePermissionDenied)
		if n := f.mustValue("c", `SELECT count(*)::text FROM pg_class WHERE relname = 'orders'`); n != "0" {
			t.Fatal("a table was created in c despite the permission error")
		}
	})

	t.Run("conflict", func(t *testing.T) {
		f := f.with(t)
		f.exec("b", `INSERT INTO orders (tenant_id, id, amount, note) VALUES ('acme', 5000, 1, 'written on the mirror')`)
		f.exec("a", `INSERT INTO orders (tenant_id, id, amount, note) VALUES ('acme', 5000, 2, 'written at home')`)
		v := f.waitIssue("acme", "b", fsm.IssueConflict, "duplicate key")
		if v.Status != fsm.ReplStatusDegraded {
			t.Fatalf("status %s with a conflict", v.Status)
		}
		t.Logf("the conflict in the API: %s", js(mirror(v, "b").Issues))
		f.waitErrorMetric("acme", "b", fsm.IssueConflict)
		// Resolving the conflict by hand lets replication resume.
		f.exec("b", `DELETE FROM orders WHERE tenant_id = 'acme' AND id = 5000`)
		f.waitStreaming("acme", "b")
		f.waitSame("orders", "acme", orderCols, "a", "b")
	})

	t.Run("missing table", func(t *testing.T) {
		f := f.with(t)
		tn := acme("b", "c")
		tn.Tables = append(tn.Tables, fsm.TenantTable{Name: "refunds"})
		f.putTenant(tn)
		f.waitIssue("acme", "", fsm.IssueTableNotFound, "refunds")
		f.waitErrorMetric("acme", "a", fsm.IssueTableNotFound)
		// The bad spec changed nothing: b still streams the old one.
		f.exec("a", `INSERT INTO orders (tenant_id, id, amount, note) VALUES ('acme', 6000, 1, 'still flowing')`)
		f.waitSame("orders", "acme", orderCols, "a", "b")
		f.putTenant(acme("b", "c"))
	})

	t.Run("subscription down", func(t *testing.T) {
		f := f.with(t)
		if err := f.pg["a"].Stop(); err != nil {
			t.Fatal(err)
		}
		f.waitIssue("acme", "b", fsm.IssueSubscriptionDown, "not running")
		f.waitIssue("acme", "b", fsm.IssuePublisherUnreachable, "region a")
		f.waitErrorMetric("acme", "b", fsm.IssueSubscriptionDown)
		testutil.Eventually(t, 30*time.Second, func() error {
			v, err := agentMetric(f.agents["b"], structs.MetricReplicationLagSeconds, map[string]string{"tenant": "acme", "mirror": "b"})
			if err != nil || v < 1 {
				return fmt.Errorf("lag while the home is down: %v %v", v, err)
			}
			return nil
		})
		if err := f.pg["a"].Restart(f.ctx(time.Minute)); err != nil {
			t.Fatal(err)
		}
		f.waitStreaming("acme", "b")
	})
}
