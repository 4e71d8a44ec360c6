package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/metrics"
	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// newMetricsExecutor returns the executor of the region's metrics task. It
// scrapes the region's Prometheus (--prom-url) and the /metrics of the
// region's nodes that the federation knows (servers of the Raft
// configuration, agents of the registry, as a server says; never a member
// merely gossiping a URL). Agents are scraped without a credential (their
// aggregate series); under TLS, servers with the agent's token, to a
// certificate naming server.atomfed, so that the view carries the
// tenant-labelled series they show to a token (the federation's
// replication lag). Under TLS it calls only https:// URLs, whose
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
		NodeClient: func(t metrics.Target) (*http.Client, error) {
			if roots == nil {
				return plain, nil
			}
			if !strings.HasPrefix(t.URL, "https://") {
				return nil, fmt.Errorf("refused: the node advertises %q, not an https:// URL, and the federation runs TLS", t.URL)
			}
			// The agent's token goes only to a certificate naming a
			// server, as all its calls to servers.
			name := t.Name
			if t.Token != "" {
				name = tlsutil.ServerName
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
				if !known[n.Name] {
					continue
				}
				t := metrics.Target{Name: n.Name, URL: n.URL}
				if n.Role == node.RoleServer && roots != nil {
					// Servers show the tenant-labelled series (the
					// federation's replication lag) to a token.
					t.Token = o.Security.Token
				}
				out = append(out, t)
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

// redactURL drops the credentials a URL may carry, for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	return u.Redacted()
}
