package edge

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	tu "github.com/atomcloud/atomfed/internal/testing/testutil"
)

// fakeSource answers routes the test sets, with blocking-query semantics:
// a query with an index waits until the table's index passes it.
type fakeSource struct {
	mu      sync.Mutex
	routes  map[string]*wire.Route
	index   uint64
	changed chan struct{}
	calls   atomic.Int64
	// held are the tenant:op routes answered 503 switchover_in_progress.
	held map[string]bool
}

func newFakeSource() *fakeSource {
	return &fakeSource{routes: map[string]*wire.Route{}, index: 1, changed: make(chan struct{})}
}

func (f *fakeSource) Route(ctx context.Context, req client.RouteRequest, q *client.QueryOptions) (*wire.Route, *client.Meta, error) {
	f.calls.Add(1)
	for {
		f.mu.Lock()
		r, idx, ch, held := f.routes[req.Tenant+":"+req.Op], f.index, f.changed, f.held[req.Tenant+":"+req.Op]
		f.mu.Unlock()
		if held && (q == nil || q.Index == 0 || idx > q.Index) {
			return nil, &client.Meta{Index: idx, Status: http.StatusServiceUnavailable},
				&client.Error{Status: http.StatusServiceUnavailable, Code: "switchover_in_progress", Message: "tenant acme is switching over"}
		}
		if r == nil {
			return nil, nil, &client.Error{Status: http.StatusNotFound, Code: "tenant_not_found", Message: "no such tenant"}
		}
		if q == nil || q.Index == 0 || idx > q.Index {
			c := *r
			return &c, &client.Meta{Index: idx}, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

func (f *fakeSource) set(tenant, op string, r *wire.Route) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r.Tenant, r.Op = tenant, op
	f.routes[tenant+":"+op] = r
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

// app is a region's application: it names its region and counts requests.
type app struct {
	*httptest.Server
	hits   atomic.Int64
	status atomic.Int64 // answered status; 0: 200
}

func newApp(t *testing.T, region string) *app {
	a := &app{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		if s := a.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		fmt.Fprintf(w, "%s %s %s tenant=%s", region, r.Method, r.URL.Path, r.Header.Get(DefaultTenantHeader))
	}))
	t.Cleanup(a.Close)
	return a
}

// deadURL is an address nothing listens on.
func deadURL(t *testing.T) string {
	s := httptest.NewServer(http.NotFoundHandler())
	u := s.URL
	s.Close()
	return u
}

func route(region, app string, alts ...wire.RouteChoice) *wire.Route {
	return &wire.Route{RouteDecision: wire.RouteDecision{Region: region, AppURL: app, Alternatives: alts}}
}

func alt(region, app string, eligible bool) wire.RouteChoice {
	return wire.RouteChoice{Region: region, AppURL: app, Eligible: eligible}
}

type harness struct {
	t   *testing.T
	e   *Edge
	reg *prometheus.Registry
	srv *httptest.Server
}

func newHarness(t *testing.T, src *fakeSource, cfg Config) *harness {
	reg := prometheus.NewRegistry()
	cfg.Source, cfg.Registerer = src, reg
	if cfg.Wait == 0 {
		cfg.Wait = time.Minute
	}
	e := New(cfg)
	srv := httptest.NewServer(e)
	t.Cleanup(func() { srv.Close(); e.Close() })
	return &harness{t: t, e: e, reg: reg, srv: srv}
}

func (h *harness) do(method, tenant, path string) (int, string, http.Header) {
	h.t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"x":1}`)
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, body)
	if tenant != "" {
		req.Header.Set(DefaultTenantHeader, tenant)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestEdgeRoutesReadsAndWrites: reads go to the route's read region,
// writes to the home, each answer says which region served it.
func TestEdgeRoutesReadsAndWrites(t *testing.T) {
	eu, us := newApp(t, "eu-west"), newApp(t, "us-east")
	src := newFakeSource()
	src.set("acme", opRead, route("eu-west", eu.URL, alt("us-east", us.URL, true)))
	src.set("acme", opWrite, route("us-east", us.URL))
	h := newHarness(t, src, Config{})
	code, body, hdr := h.do(http.MethodGet, "acme", "/orders/7?x=1")
	if code != 200 || body != "eu-west GET /orders/7 tenant=acme" || hdr.Get(HeaderRegion) != "eu-west" {
		t.Fatalf("read: %d %q %v", code, body, hdr)
	}
	code, body, hdr = h.do(http.MethodPost, "acme", "/orders")
	if code != 200 || body != "us-east POST /orders tenant=acme" || hdr.Get(HeaderRegion) != "us-east" {
		t.Fatalf("write: %d %q", code, body)
	}
	if n := value(h.e.metrics.requests.WithLabelValues(opRead, "eu-west", "200")); n != 1 {
		t.Fatalf("atomfed_edge_requests_total{read,eu-west,200} = %v", n)
	}
	// The route is kept by a blocking query: more requests ask atomfed no
	// more. Each of the two watches asks once, then parks in its blocking
	// query; count from there, or the second ask of a watch that had not
	// parked yet would be taken for a request's.
	tu.Eventually(t, 5*time.Second, func() error {
		if n := src.calls.Load(); n < 4 {
			return fmt.Errorf("%d asks so far, want the 2 watches' first answers and their 2 blocking queries", n)
		}
		return nil
	})
	calls := src.calls.Load()
	for i := 0; i < 5; i++ {
		h.do(http.MethodGet, "acme", "/")
	}
	if got := src.calls.Load(); got != calls {
		t.Fatalf("requests asked atomfed %d more times; the route is watched, not asked per request", got-calls)
	}
}

// TestEdgeRetriesReadsNeverWrites: a read that cannot reach its region, or
// that it answers 503, goes to the next eligible one; a write whose region
// cannot be reached is answered 502 upstream_outcome_unknown and sent
// nowhere else.
func TestEdgeRetriesReadsNeverWrites(t *testing.T) {
	eu, us, ap := newApp(t, "eu-west"), newApp(t, "us-east"), newApp(t, "ap-south")
	src := newFakeSource()
	src.set("acme", opRead, route("eu-west", deadURL(t), alt("ap-south", ap.URL, false), alt("us-east", us.URL, true)))
	src.set("acme", opWrite, route("us-east", deadURL(t)))
	h := newHarness(t, src, Config{})
	code, body, hdr := h.do(http.MethodGet, "acme", "/r")
	if code != 200 || hdr.Get(HeaderRegion) != "us-east" || !strings.HasPrefix(body, "us-east GET") {
		t.Fatalf("a read whose region is down goes to the next eligible one: %d %q", code, body)
	}
	if ap.hits.Load() != 0 {
		t.Fatal("a read was sent to a region that is not eligible")
	}
	if n := value(h.e.metrics.retries.WithLabelValues(opRead)); n != 1 {
		t.Fatalf("retries %v, want 1", n)
	}
	code, body, _ = h.do(http.MethodPost, "acme", "/w")
	if code != http.StatusBadGateway || !strings.Contains(body, "upstream_outcome_unknown") {
		t.Fatalf("a write whose region is unreachable: %d %s", code, body)
	}
	if n := eu.hits.Load() + us.hits.Load() + ap.hits.Load(); n != 1 {
		t.Fatalf("the write was sent elsewhere: %d requests reached the applications, want only the earlier read", n)
	}

	src.set("acme", opRead, route("eu-west", eu.URL, alt("us-east", us.URL, true)))
	tu.Eventually(t, 5*time.Second, func() error {
		if _, _, hdr := h.do(http.MethodGet, "acme", "/"); hdr.Get(HeaderRegion) != "eu-west" {
			return fmt.Errorf("reads still go to %s", hdr.Get(HeaderRegion))
		}
		return nil
	})
	eu.status.Store(http.StatusServiceUnavailable)
	if code, _, hdr := h.do(http.MethodGet, "acme", "/"); code != 200 || hdr.Get(HeaderRegion) != "us-east" {
		t.Fatalf("a read answered 503 is tried on the next region: %d %s", code, hdr.Get(HeaderRegion))
	}
	us.status.Store(http.StatusServiceUnavailable)
	if code, _, hdr := h.do(http.MethodGet, "acme", "/"); code != 503 || hdr.Get(HeaderRegion) != "us-east" {
		t.Fatalf("the last region's answer is passed on: %d %s", code, hdr.Get(HeaderRegion))
	}
}

// TestEdgeFollowsRouteChanges: when atomfed's answer changes, the blocking
// query wakes and the next requests go to the new region.
func TestEdgeFollowsRouteChanges(t *testing.T) {
	eu, us := newApp(t, "eu-west"), newApp(t, "us-east")
	src := newFakeSource()
	src.set("acme", opRead, route("eu-west", eu.URL, alt("us-east", us.URL, true)))
	var changes []string
	var mu sync.Mutex
	h := newHarness(t, src, Config{OnChange: func(r *wire.Route) { mu.Lock(); changes = append(changes, r.Region); mu.Unlock() }})
	if _, _, hdr := h.do(http.MethodGet, "acme", "/"); hdr.Get(HeaderRegion) != "eu-west" {
		t.Fatalf("first read went to %s", hdr.Get(HeaderRegion))
	}
	src.set("acme", opRead, route("us-east", us.URL, alt("eu-west", eu.URL, false)))
	tu.Eventually(t, 5*time.Second, func() error {
		if _, _, hdr := h.do(http.MethodGet, "acme", "/"); hdr.Get(HeaderRegion) != "us-east" {
			return fmt.Errorf("reads still go to %s", hdr.Get(HeaderRegion))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(changes, ",") != "eu-west,us-east" || value(h.e.metrics.changes) != 2 {
		t.Fatalf("changes %v, metric %v", changes, value(h.e.metrics.changes))
	}
}

// TestEdgeTenantOfRequest: the tenant comes from the header or, when
// configured, the host name; a request without one or for an unknown
// tenant is refused in atomfed's error envelope.
func TestEdgeTenantOfRequest(t *testing.T) {
	eu := newApp(t, "eu-west")
	src := newFakeSource()
	src.set("acme", opRead, route("eu-west", eu.URL))
	h := newHarness(t, src, Config{})
	if code, body, _ := h.do(http.MethodGet, "", "/"); code != 400 || !strings.Contains(body, `"no_tenant"`) {
		t.Fatalf("no tenant: %d %s", code, body)
	}
	if code, body, _ := h.do(http.MethodGet, "Bad!", "/"); code != 400 || !strings.Contains(body, `"no_tenant"`) {
		t.Fatalf("bad tenant: %d %s", code, body)
	}
	if code, body, _ := h.do(http.MethodGet, "nobody", "/"); code != 404 || !strings.Contains(body, `"tenant_not_found"`) {
		t.Fatalf("unknown tenant: %d %s", code, body)
	}
	h = newHarness(t, src, Config{TenantFromHost: true})
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/x", nil)
	req.Host = "acme.app.example.com"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(HeaderRegion) != "eu-west" {
		t.Fatalf("tenant from the host name: %d %v", resp.StatusCode, resp.Header)
	}
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
