package main

import (
	"context"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/metrics"
)

// newMetricsExecutor returns the executor of the region's metrics task. It
// scrapes the region's Prometheus (--prom-url) and the /metrics of the
// region's nodes as Serf lists them, with no credential (the aggregate
// series anyone may read; over TLS, certificates of the federation CA
// only), and pushes to every server through the agent's pool, with its
// agent token. self and pool are set once the agent exists.
func newMetricsExecutor(o agentOptions, reg prometheus.Registerer, tr http.RoundTripper, self *atomic.Pointer[agent.Agent], pool *atomic.Pointer[client.Pool]) *agent.MetricsExecutor {
	if tr == nil {
		tr = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4}
	}
	s := &metrics.Scraper{
		Region: o.Region, PromURL: o.PromURL, PromMatch: o.PromMatch,
		Client:     &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		PromClient: &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2}},
		Nodes: func() []metrics.Target {
			a := self.Load()
			if a == nil {
				return nil
			}
			var out []metrics.Target
			for _, n := range a.RegionNodes() {
				out = append(out, metrics.Target{Name: n.Name, URL: n.URL})
			}
			return out
		},
	}
	if o.PromURL != "" {
		o.Logger.Info("the region's metrics task federates its Prometheus", "match", s.PromMatch)
	}
	push := func(ctx context.Context, region string, gen uint64, st metrics.ScrapeStatus, b []byte) (int, error) {
		p := pool.Load()
		if p == nil {
			return 0, client.ErrNoServers
		}
		return p.PushMetrics(ctx, region, gen, st, b)
	}
	return agent.NewMetricsExecutor(s, push, o.Logger, reg)
}
