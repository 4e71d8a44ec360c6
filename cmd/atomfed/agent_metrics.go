package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/metrics"
)

// newMetricsExecutor returns the executor of the region's metrics task. It
// scrapes the region's Prometheus (--prom-url) and the /metrics of the
// region's nodes that the federation knows (servers of the Raft
// configuration, agents of the registry, as a server says; never a member
// merely gossiping a URL), with no credential: nodes show their aggregate
// series to anyone. Under TLS it calls only https:// URLs whose
// certificate names the node (roots: the federation CA). It pushes to every
// server through the agent's pool, with its agent token (https to
// certificates naming server.atomfed only). self and pool are set once
// the agent exists.
func newMetricsExecutor(o agentOptions, reg prometheus.Registerer, roots *x509.CertPool, self *atomic.Pointer[agent.Agent], pool *atomic.Pointer[client.Pool]) *agent.MetricsExecutor {
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	plain := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2}, CheckRedirect: noRedirect}
	s := &metrics.Scraper{
		Region: o.Region, PromURL: o.PromURL, PromMatch: o.PromMatch,
		Client: plain, PromClient: plain,
		NodeClient: func(name, base string) (*http.Client, error) {
			if roots == nil {
				return plain, nil
			}
			if !strings.HasPrefix(base, "https://") {
				return nil, fmt.Errorf("refused: the node advertises %q, not an https:// URL, and the federation runs TLS", base)
			}
			cfg := &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12}
			return &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: cfg, DisableKeepAlives: true}, CheckRedirect: noRedirect}, nil
		},
		Nodes: func(ctx context.Context) []metrics.Target {
			a, p := self.Load(), pool.Load()
			if a == nil || p == nil {
				return nil
			}
			known, err := p.KnownMembers(ctx, o.Region)
			if err != nil {
				o.Logger.Debug("metrics: no server says which members it knows; scraping no node this time", "error", err)
				return nil
			}
			var out []metrics.Target
			for _, n := range a.RegionNodes() {
				if known[n.Name] {
					out = append(out, metrics.Target{Name: n.Name, URL: n.URL})
				}
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
