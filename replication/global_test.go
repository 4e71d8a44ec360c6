package replication_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// globalStatus reads /global-status through a follower; it returns an
// empty status while the answer is not a 200 (a leader election), so that
// polls go on.
func (f *fed) globalStatus() *wire.GlobalStatus {
	f.t.Helper()
	var gs wire.GlobalStatus
	r := f.do(f.c.Nodes[1], http.MethodGet, "/global-status", nil)
	if r.Status != http.StatusOK {
		return &gs
	}
	r.JSON(f.t, &gs)
	return &gs
}

func globalView(gs *wire.GlobalStatus, name string) *fsm.GlobalTableView {
	if gs.Replication == nil {
		return nil
	}
	for i := range gs.Replication.GlobalTables {
		if gs.Replication.GlobalTables[i].Name == name {
			return &gs.Replication.GlobalTables[i]
		}
	}
	return nil
}

// TestGlobalTableReplicatesFromWriterAndDriftIsDetectedWithinOneInterval
// replicates a global table from its writer to every region, then drifts
// its schema in one region and checks that /global-status shows the drift
// and marks the table degraded within one probe interval.
func TestGlobalTableReplicatesFromWriterAndDriftIsDetectedWithinOneInterval(t *testing.T) {
	f := newFed(t, "a", "b", "c")
	f.exec("a", `CREATE TABLE currencies (code text PRIMARY KEY, name text NOT NULL, rate numeric(12,6))`,
		`INSERT INTO currencies VALUES ('EUR', 'Euro', 1), ('USD', 'US dollar', 1.08), ('INR', 'Indian rupee', 90.1)`)
	f.write("put global table", func(ctx context.Context) error {
		_, err := f.api.PutGlobalTable(ctx, &fsm.GlobalTable{Name: "currencies", WriterRegion: "a"}, nil)
		return err
	})
	sum := func(r string) (string, error) {
		return f.value(r, `SELECT count(*)::text || ':' || md5(string_agg(concat_ws('|', code, name, rate), ',' ORDER BY code)) FROM currencies`)
	}
	same := func() {
		t.Helper()
		testutil.Eventually(t, 60*time.Second, func() error {
			want, err := sum("a")
			if err != nil {
				return err
			}
			for _, r := range []string{"b", "c"} {
				if got, err := sum(r); err != nil || got != want {
					return fmt.Errorf("%s: %s (%v), writer: %s", r, got, err, want)
				}
			}
			return nil
		})
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		g := globalView(f.globalStatus(), "currencies")
		if g == nil || g.Status != fsm.ReplStatusOK || len(g.Regions) != 2 || g.WriterDigest == "" {
			return fmt.Errorf("global table: %s", js(g))
		}
		for _, r := range g.Regions {
			if r.State != fsm.ReplStreaming || r.Digest != g.WriterDigest {
				return fmt.Errorf("region %s: %s", r.Region, js(r))
			}
		}
		return nil
	})
	same()
	f.exec("a", `INSERT INTO currencies VALUES ('JPY', 'Yen', 160)`, `UPDATE currencies SET rate = 1.09 WHERE code = 'USD'`, `DELETE FROM currencies WHERE code = 'INR'`)
	same()

	f.exec("c", `ALTER TABLE currencies ADD COLUMN rogue int`)
	// The drift exists from the ALTER's commit (it may first wait for a
	// lock an apply or a probe holds).
	drifted := time.Now()
	var seen time.Time
	var g *fsm.GlobalTableView
	var gs *wire.GlobalStatus
	testutil.Eventually(t, 30*time.Second, func() error {
		gs = f.globalStatus()
		g = globalView(gs, "currencies")
		if g == nil || g.Status != fsm.ReplStatusDegraded {
			return fmt.Errorf("global table: %s", js(g))
		}
		seen = time.Now()
		return nil
	})
	var d *fsm.DriftView
	for i := range gs.Replication.Drift { // gs answered 200: globalView found the table
		if gs.Replication.Drift[i].Table == "currencies" && gs.Replication.Drift[i].Region == "c" {
			d = &gs.Replication.Drift[i]
		}
	}
	if d == nil || d.Digest == d.SourceDigest || d.Source != "a" || d.Since == 0 {
		t.Fatalf("drift list: %s", js(gs.Replication.Drift))
	}
	probe := time.Unix(0, d.Since).Sub(drifted)
	t.Logf("drift seen by the probe %s after the ALTER (interval %s), visible in /global-status after %s", probe, interval, seen.Sub(drifted))
	// The probe runs at the end of each converge step, so the drift is
	// seen at most one interval plus one step after it happened; a step is
	// a few catalog queries, given up to another interval and a half on a
	// loaded machine under the race detector.
	if probe > 2*interval+500*time.Millisecond {
		t.Fatalf("the probe saw the drift %s after it happened, more than one interval (%s)", probe, interval)
	}
	reason := strings.Join(g.Reasons, "; ")
	if !strings.Contains(reason, "rogue") || !strings.Contains(reason, "c") {
		t.Fatalf("the degraded reason does not name the drift: %q", reason)
	}
	for _, r := range g.Regions {
		if r.Region == "b" && (r.Digest != g.WriterDigest || r.Drift != "") {
			t.Fatalf("region b did not drift but shows %s", js(r))
		}
	}
	// Another server applies the drift report a moment after the one that
	// answered /global-status.
	testutil.Eventually(t, 5*time.Second, func() error {
		if m := f.serverMetrics(f.c.Nodes[2]); !metricLine(m, "atomfed_replication_schema_drift", `region="c"`, `table="currencies"`) {
			return errors.New("the server's /metrics has no drift series for c")
		}
		return nil
	})

	f.exec("c", `ALTER TABLE currencies DROP COLUMN rogue`)
	testutil.Eventually(t, 30*time.Second, func() error {
		if g := globalView(f.globalStatus(), "currencies"); g == nil || g.Status != fsm.ReplStatusOK {
			return fmt.Errorf("after the repair: %s", js(g))
		}
		return nil
	})

	// No longer global: publication, subscriptions and slots go, the
	// regions keep their copies.
	copyB := f.mustValue("b", `SELECT count(*)::text FROM currencies`)
	f.write("delete global table", func(ctx context.Context) error { return f.api.DeleteGlobalTable(ctx, "currencies", nil) })
	testutil.Eventually(t, 60*time.Second, func() error {
		for _, c := range []struct{ region, sql, want string }{
			{"a", `SELECT count(*)::text FROM pg_publication`, "0"},
			{"a", `SELECT count(*)::text FROM pg_replication_slots`, "0"},
			{"b", `SELECT count(*)::text FROM pg_subscription`, "0"},
			{"c", `SELECT count(*)::text FROM pg_subscription`, "0"},
			{"b", `SELECT count(*)::text FROM currencies`, copyB},
		} {
			if got := f.mustValue(c.region, c.sql); got != c.want {
				return fmt.Errorf("%s: %s = %s, want %s", c.region, c.sql, got, c.want)
			}
		}
		return nil
	})
}
