package httpapi_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// lagSubscriber is a subscriber executor that streams and reports the lag
// the test sets, as a mirror's agent reports what it measures.
type lagSubscriber struct {
	lagMS   atomic.Int64
	changed chan struct{}
}

func (l *lagSubscriber) Type() string { return fsm.TaskTypeTenantSubscriber }

func (l *lagSubscriber) Run(ctx context.Context, t *fsm.Task, report func(agent.TaskStatus)) error {
	for {
		report(agent.TaskStatus{Status: fsm.TaskRunning, Result: fsm.SubscriberResult{State: fsm.ReplStreaming,
			Subscription: "sub", LagSeconds: float64(l.lagMS.Load()) / 1000, Tables: []fsm.TableState{{Name: "orders", State: "ready"}}}})
		select {
		case <-ctx.Done():
			return nil
		case <-l.changed:
		}
	}
}

func (l *lagSubscriber) set(ms int64) {
	l.lagMS.Store(ms)
	l.changed <- struct{}{}
}

// TestRoute: GET /v1/route sends writes to the home and reads to the
// nearest region within the staleness budget, from local state by
// default; a blocking route wakes when a mirror's reported lag or the
// tenant's placement changes; bad parameters are refused with their codes
// and change nothing.
func TestRoute(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	region := func(name string, lat, lon float64, app string) map[string]any {
		r := regionJSON(name)
		r["location"] = map[string]any{"lat": lat, "lon": lon}
		if app != "" {
			r["app_url"] = app
		}
		return r
	}
	mustWrite(t, l, http.MethodPost, "/region/register", region("us-east", 39.04, -77.49, "https://app.us-east.example.com"), http.StatusCreated)
	mustWrite(t, l, http.MethodPost, "/region/register", region("eu-west", 53.35, -6.26, "https://app.eu-west.example.com"), http.StatusCreated)
	mustWrite(t, l, http.MethodPost, "/region/register", region("ap-south", 19.08, 72.88, ""), http.StatusCreated)
	var rv wire.RegionView
	do(t, f, http.MethodGet, "/v1/regions/eu-west", nil, nil).JSON(t, &rv)
	if rv.AppURL != "https://app.eu-west.example.com" {
		t.Fatalf("region view without its app_url: %+v", rv.Region)
	}

	sub := &lagSubscriber{changed: make(chan struct{}, 16)}
	sub.lagMS.Store(40)
	c.AddAgent("us-east-a1", "us-east")
	c.AddAgentWith("eu-west-a1", "eu-west", testcluster.AgentOptions{
		Executors: func(prometheus.Registerer) ([]agent.Executor, error) { return []agent.Executor{sub}, nil },
	})
	acme := func(mirrors ...string) map[string]any {
		tj := tenantJSON("acme", "us-east", mirrors...)
		tj["tables"] = []map[string]any{{"name": "orders"}}
		return tj
	}
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", acme("eu-west"), http.StatusCreated)

	const dublin = "&from=53.35,-6.26"
	route := func(n *testcluster.Node, q string) (wire.Route, *testcluster.Response) {
		t.Helper()
		r := do(t, n, http.MethodGet, "/v1/route?tenant=acme"+q, nil, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("route %s: %d %s", q, r.Status, r.Body)
		}
		var out wire.Route
		r.JSON(t, &out)
		return out, r
	}
	var rt wire.Route
	var resp *testcluster.Response
	testutil.Eventually(t, 30*time.Second, func() error {
		if r := do(t, f, http.MethodGet, "/v1/route?tenant=acme&op=read", nil, nil); r.Status != http.StatusOK {
			return fmt.Errorf("the follower has not applied the tenant yet: %d %s", r.Status, r.Body)
		}
		rt, resp = route(f, "&op=read"+dublin)
		if rt.Region != "eu-west" {
			return fmt.Errorf("a read from Dublin goes to %s (%s), want the eu-west mirror", rt.Region, rt.Reason)
		}
		return nil
	})
	if rt.AppURL != "https://app.eu-west.example.com" || rt.MaxStalenessMS != 1000 || rt.HomeRegion != "us-east" || rt.Epoch != 1 || rt.From != "53.35,-6.26" ||
		!strings.Contains(rt.Reason, "nearest mirror within staleness budget (lag 40 ms ≤ 1000 ms)") {
		t.Fatalf("read route: %+v", rt)
	}
	if len(rt.Alternatives) != 1 || rt.Alternatives[0].Region != "us-east" || !rt.Alternatives[0].Eligible ||
		rt.Alternatives[0].AppURL != "https://app.us-east.example.com" || rt.Alternatives[0].DistanceKM == nil {
		t.Fatalf("read alternatives: %+v", rt.Alternatives)
	}
	// Answered from the follower's own state: a stale read says how long
	// since it heard from the leader.
	if resp.Header.Get(httpapi.HeaderLastContact) == "" || resp.Header.Get(httpapi.HeaderServedBy) != f.ID {
		t.Fatalf("a route is answered locally (consistency stale) by default; headers %v", resp.Header)
	}
	if _, r := route(f, "&op=read&consistency=linearizable"+dublin); r.Header.Get(httpapi.HeaderLastContact) != "" {
		t.Fatal("consistency=linearizable is still honoured")
	}
	if w, _ := route(f, "&op=write"+dublin); w.Region != "us-east" || w.AppURL != "https://app.us-east.example.com" ||
		w.Reason != "home (the only writable copy)" || len(w.Alternatives) != 0 {
		t.Fatalf("a write goes home: %+v", w)
	}
	if h, _ := route(f, "&op=read&max_staleness_ms=0"+dublin); h.Region != "us-east" || !strings.Contains(h.Reason, "staleness budget 0 ms") {
		t.Fatalf("budget 0 reads from the home only: %+v", h)
	}

	// The mirror falls behind: a blocking route wakes and sends reads home.
	_, resp = route(f, "&op=read"+dublin)
	idx := resp.Index()
	done := make(chan *testcluster.Response, 1)
	go func() {
		done <- f.Do(t, http.MethodGet, fmt.Sprintf("/v1/route?tenant=acme&op=read%s&index=%d&wait=20s", dublin, idx), nil, nil)
	}()
	sub.set(2500)
	testutil.Eventually(t, 30*time.Second, func() error {
		rt, resp = route(f, "&op=read"+dublin)
		if rt.Region != "us-east" {
			return fmt.Errorf("read still goes to %s: %s", rt.Region, rt.Reason)
		}
		return nil
	})
	if want := "home; nearer skipped: eu-west: lag 2500 ms > budget 1000 ms"; rt.Reason != want {
		t.Fatalf("reason %q, want %q", rt.Reason, want)
	}
	if a := rt.Alternatives; len(a) != 1 || a[0].Eligible || a[0].LagMS == nil || math.Abs(*a[0].LagMS-2500) > 1e-6 {
		t.Fatalf("the lagging mirror is listed with its lag: %+v", a)
	}
	select {
	case r := <-done:
		if r.Status != http.StatusOK || r.Index() <= idx {
			t.Fatalf("blocking route: %d index %d (was %d): %s", r.Status, r.Index(), idx, r.Body)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a blocking route did not wake when the mirror's lag changed")
	}
	if g, _ := route(f, "&op=read&max_staleness_ms=5000"+dublin); g.Region != "eu-west" {
		t.Fatalf("a generous budget still reads from the mirror: %+v", g)
	}

	// A change of placement wakes a blocking route too.
	_, resp = route(f, "&op=read"+dublin)
	idx = resp.Index()
	go func() {
		done <- f.Do(t, http.MethodGet, fmt.Sprintf("/v1/route?tenant=acme&op=read%s&index=%d&wait=20s", dublin, idx), nil, nil)
	}()
	mustWrite(t, l, http.MethodPut, "/v1/tenants/acme", acme("ap-south", "eu-west"), http.StatusOK)
	select {
	case r := <-done:
		var out wire.Route
		r.JSON(t, &out)
		if r.Index() <= idx || len(out.Alternatives) != 2 {
			t.Fatalf("blocking route after the placement change: index %d (was %d): %+v", r.Index(), idx, out)
		}
		for _, a := range out.Alternatives {
			if a.Region == "ap-south" && (a.Eligible || !strings.Contains(a.Reason, "no app_url registered")) {
				t.Fatalf("ap-south has no agent and no app_url: %+v", a)
			}
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a blocking route did not wake when the tenant's mirrors changed")
	}

	// A reader may route; bad parameters are refused and change nothing.
	tok, err := l.Client.CreateToken(testcluster.Ctx(t, time.Minute), fsm.RoleReader, "route test")
	if err != nil {
		t.Fatal(err)
	}
	c.Settle()
	if r := do(t, f, http.MethodGet, "/v1/route?tenant=acme&op=write", nil, http.Header{"Authorization": {"Bearer " + tok.Secret}}); r.Status != http.StatusOK {
		t.Fatalf("a reader routes: %d %s", r.Status, r.Body)
	}
	for _, tc := range []struct {
		name, query string
		status      int
		code        string
	}{
		{"no tenant", "op=read", 400, "missing_tenant"},
		{"bad tenant id", "tenant=Bad!&op=read", 400, "invalid_tenant"},
		{"no op", "tenant=acme", 400, "missing_op"},
		{"bad op", "tenant=acme&op=delete", 400, "invalid_op"},
		{"bad budget", "tenant=acme&op=read&max_staleness_ms=-1", 400, "invalid_max_staleness"},
		{"budget not a number", "tenant=acme&op=read&max_staleness_ms=1s", 400, "invalid_max_staleness"},
		{"bad location", "tenant=acme&op=read&from=91,0", 400, "invalid_from"},
		{"bad from", "tenant=acme&op=read&from=Not_A_Region", 400, "invalid_from"},
		{"unknown from region", "tenant=acme&op=read&from=mars", 400, "unknown_from_region"},
		{"unknown tenant", "tenant=nobody&op=read", 404, "tenant_not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stateOf(t, l, "")
			wantError(t, do(t, f, http.MethodGet, "/v1/route?"+tc.query, nil, nil), tc.status, tc.code)
			if after := stateOf(t, l, ""); !bytesEqualViews(before, after) {
				t.Fatal("a refused route changed the state")
			}
		})
	}
}

// bytesEqualViews compares what the operators wrote (regions, tenants):
// the agents keep reporting, so the audit head moves on its own.
func bytesEqualViews(a, b view) bool {
	return string(a.Regions) == string(b.Regions) && string(a.Tenants) == string(b.Tenants)
}

// TestRegionAppURLRefusals: a region's app_url is validated before it is
// logged, and a refused one changes nothing.
func TestRegionAppURLRefusals(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	mustWrite(t, l, http.MethodPost, "/region/register", regionJSON("us-east"), http.StatusCreated)
	c.Settle()
	for _, tc := range []struct{ name, app string }{
		{"http beside an https API", "http://app.us-east.example.com"},
		{"credentials in the URL", "https://user:pw@app.us-east.example.com"},
		{"not absolute", "app.us-east.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stateOf(t, l, "")
			r := regionJSON("us-east")
			r["app_url"] = tc.app
			wantError(t, do(t, l, http.MethodPut, "/v1/regions/us-east", r, nil), 400, "invalid_app_url")
			if after := stateOf(t, l, ""); !after.equal(before) {
				t.Fatal("a refused app_url changed the state")
			}
		})
	}
	r := regionJSON("us-east")
	r["app_url"] = "https://app.us-east.example.com"
	out := mustWrite(t, l, http.MethodPut, "/v1/regions/us-east", r, http.StatusOK)
	if !strings.Contains(string(out.Body), `"app_url":"https://app.us-east.example.com"`) {
		t.Fatalf("app_url not stored: %s", out.Body)
	}
}
