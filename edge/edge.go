// Package edge is a reverse proxy that sends each tenant request to the
// region GET /v1/route names (`atomfed edge`). It keeps a routing table of
// the tenants it has seen (or every tenant, with Preload), each entry kept
// fresh by a blocking query, so a request never waits for atomfed once its
// tenant's route is known. Reads (GET, HEAD, OPTIONS: idempotent, without
// a body) that fail to reach a region, or that it answers 502/503/504, are
// tried on the next eligible region; a write goes to the home once and is
// never retried: its outcome is unknown once it was sent. While a
// switchover holds a tenant's writes, they are answered 503 with
// Retry-After (switchover_in_progress) without reaching any region.
package edge

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// RouteSource is what the edge asks atomfed: a route, blocking with
// q.Index (client.Client implements it).
type RouteSource interface {
	Route(ctx context.Context, r client.RouteRequest, q *client.QueryOptions) (*wire.Route, *client.Meta, error)
}

// TenantSource lists the tenants, for Preload (client.Client implements it).
type TenantSource interface {
	Tenants(ctx context.Context, region string, q *client.QueryOptions) ([]*fsm.Tenant, *client.Meta, error)
}

// DefaultTenantHeader carries the tenant of a request.
const DefaultTenantHeader = "X-Atomfed-Tenant"

// Config configures an edge.
type Config struct {
	Source RouteSource
	// From is the edge's region (or "lat,lon") routes are ranked from;
	// empty: the region of the atomfed server asked.
	From string
	// MaxStalenessMS is the reads' staleness budget (nil: atomfed's default).
	MaxStalenessMS *int64
	// TenantHeader names the request header that carries the tenant
	// (default DefaultTenantHeader); with TenantFromHost the first label of
	// the Host is the tenant when the header is absent.
	TenantHeader   string
	TenantFromHost bool
	// Transport reaches the regions' applications (nil: a pooled one).
	Transport http.RoundTripper
	// FirstRouteWait bounds how long a request waits for its tenant's first
	// route (default 5 s).
	FirstRouteWait time.Duration
	// Wait is each blocking query's wait (default 5 min).
	Wait time.Duration
	// OnChange is called, from the watching goroutine, with every new
	// route of a tenant and operation (Redis publishing).
	OnChange   func(r *wire.Route)
	Registerer prometheus.Registerer
	Logger     hclog.Logger
}

// Edge is the proxy and its routing table.
type Edge struct {
	cfg     Config
	log     hclog.Logger
	metrics *metrics
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	watches map[key]*watch
}

type key struct{ tenant, op string }

// watch is one tenant and operation's route, kept by one goroutine.
type watch struct {
	ready chan struct{} // closed once route or err is set
	mu    sync.Mutex
	route *wire.Route
	err   error
}

// New starts an edge; Close stops its watches.
func New(cfg Config) *Edge {
	if cfg.TenantHeader == "" {
		cfg.TenantHeader = DefaultTenantHeader
	}
	if cfg.Transport == nil {
		cfg.Transport = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
			ResponseHeaderTimeout: time.Minute}
	}
	if cfg.FirstRouteWait <= 0 {
		cfg.FirstRouteWait = 5 * time.Second
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Edge{cfg: cfg, log: cfg.Logger.Named("edge"), metrics: newMetrics(cfg.Registerer), ctx: ctx, cancel: cancel, watches: map[key]*watch{}}
}

// Close stops every watch and waits for them.
func (e *Edge) Close() {
	e.cancel()
	e.wg.Wait()
}

// Preload watches every tenant's read and write routes, and keeps doing so
// as tenants are created, until the edge is closed.
func (e *Edge) Preload(src TenantSource) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		var idx uint64
		for e.ctx.Err() == nil {
			ts, m, err := src.Tenants(e.ctx, "", &client.QueryOptions{Consistency: "stale", Index: idx, Wait: e.cfg.Wait})
			if err != nil {
				e.log.Warn("list tenants failed; retrying", "error", err)
				e.sleep(time.Second)
				continue
			}
			for _, t := range ts {
				e.watch(t.ID, opRead)
				e.watch(t.ID, opWrite)
			}
			idx = nextIndex(idx, m.Index)
		}
	}()
}

const (
	opRead  = "read"
	opWrite = "write"
)

// watch returns the watch of tenant and op, starting it if needed.
func (e *Edge) watch(tenant, op string) *watch {
	e.mu.Lock()
	defer e.mu.Unlock()
	k := key{tenant, op}
	if w := e.watches[k]; w != nil {
		return w
	}
	w := &watch{ready: make(chan struct{})}
	e.watches[k] = w
	e.metrics.watched.Set(float64(len(e.watches)))
	e.wg.Add(1)
	go e.keep(k, w)
	return w
}

// keep follows one route with blocking queries until the edge closes, or
// until atomfed says the tenant does not exist (then the watch is dropped
// after a while, so that a later request asks again).
func (e *Edge) keep(k key, w *watch) {
	defer e.wg.Done()
	req := client.RouteRequest{Tenant: k.tenant, Op: k.op, From: e.cfg.From, MaxStalenessMS: e.cfg.MaxStalenessMS}
	var idx uint64
	var once sync.Once
	for e.ctx.Err() == nil {
		r, m, err := e.cfg.Source.Route(e.ctx, req, &client.QueryOptions{Consistency: "stale", Index: idx, Wait: e.cfg.Wait})
		var ce *client.Error
		switch {
		case e.ctx.Err() != nil:
			return
		case errors.As(err, &ce) && (ce.Status == http.StatusNotFound || ce.Status == http.StatusBadRequest):
			w.set(nil, err)
			once.Do(func() { close(w.ready) })
			e.sleep(5 * time.Second)
			e.mu.Lock()
			delete(e.watches, k)
			e.metrics.watched.Set(float64(len(e.watches)))
			e.mu.Unlock()
			return
		case errors.As(err, &ce) && ce.Code == codeSwitchoverInProgress:
			// The tenant's writes are held by a switchover: answer them
			// 503 until atomfed routes them again (at the commit, or when
			// a rollback lifts the fence), which this query waits for.
			if w.get() != nil || w.getErr() == nil {
				e.metrics.changes.Inc()
				e.log.Info("tenant writes held by a switchover", "tenant", k.tenant, "reason", ce.Message)
			}
			w.set(nil, err)
			once.Do(func() { close(w.ready) })
			if m != nil && m.Index > 0 {
				idx = nextIndex(idx, m.Index)
			} else {
				e.sleep(100 * time.Millisecond)
			}
			continue
		case err != nil:
			e.log.Warn("route watch failed; retrying", "tenant", k.tenant, "op", k.op, "error", err)
			if w.get() == nil {
				w.set(nil, err)
				once.Do(func() { close(w.ready) })
			}
			e.sleep(time.Second)
			continue
		}
		if old := w.get(); old == nil || changed(old, r) {
			w.set(r, nil)
			e.metrics.changes.Inc()
			if e.cfg.OnChange != nil {
				e.cfg.OnChange(r)
			}
		}
		once.Do(func() { close(w.ready) })
		idx = nextIndex(idx, m.Index)
	}
}

// nextIndex is the index of the next blocking query: the answer's, or 0
// when it went backwards (a snapshot was restored).
func nextIndex(prev, got uint64) uint64 {
	if got < prev {
		return 0
	}
	return got
}

func (e *Edge) sleep(d time.Duration) {
	select {
	case <-e.ctx.Done():
	case <-time.After(d):
	}
}

func (w *watch) set(r *wire.Route, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.route, w.err = r, err
}

func (w *watch) get() *wire.Route {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.route
}

func (w *watch) getErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// codeSwitchoverInProgress is atomfed's answer to a write route while a
// switchover holds the tenant's writes.
const codeSwitchoverInProgress = "switchover_in_progress"

// changed reports whether a route sends requests elsewhere than old: its
// region, app URL or the order of its eligible alternatives.
func changed(old, r *wire.Route) bool {
	return targetsKey(old) != targetsKey(r)
}

func targetsKey(r *wire.Route) string {
	b, _ := json.Marshal(targets(r))
	return r.Region + "|" + string(b)
}

// target is one region a request may be sent to.
type target struct{ Region, AppURL string }

// targets are where a request of r may go, in order: the answer, then (for
// a read) the eligible alternatives.
func targets(r *wire.Route) []target {
	out := []target{{r.Region, r.AppURL}}
	if r.Op == opRead {
		for _, a := range r.Alternatives {
			if a.Eligible {
				out = append(out, target{a.Region, a.AppURL})
			}
		}
	}
	return out
}

// route returns the current route of tenant and op, waiting for the first.
func (e *Edge) route(ctx context.Context, tenant, op string) (*wire.Route, error) {
	w := e.watch(tenant, op)
	t := time.NewTimer(e.cfg.FirstRouteWait)
	defer t.Stop()
	select {
	case <-w.ready:
	case <-t.C:
		return nil, errNoRouteYet
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.route != nil {
		return w.route, nil
	}
	return nil, w.err
}

var errNoRouteYet = errors.New("no route from atomfed yet")

// tenantOf returns the request's tenant, or "".
func (e *Edge) tenantOf(r *http.Request) string {
	if t := r.Header.Get(e.cfg.TenantHeader); t != "" {
		return t
	}
	if e.cfg.TenantFromHost {
		host := r.Host
		if i := strings.IndexByte(host, '.'); i > 0 {
			return host[:i]
		}
	}
	return ""
}
