package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/edge"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

func newEdgeCmd() *cobra.Command {
	var cf clientFlags
	var listen, metricsListen, from, tenantHeader, appCA, logLevel string
	var fromHost, preload bool
	var staleness time.Duration
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Proxy tenant requests to the region GET /v1/route names",
		Long: `Run a reverse proxy in front of the regions' applications. Each request's
tenant comes from a header (--tenant-header) or the first label of its host
name (--tenant-from-host); reads (GET, HEAD, OPTIONS without a body) go to
the tenant's read route, anything else to its home. Routes are kept fresh
with blocking queries on GET /v1/route, so a request waits for atomfed only
for its tenant's first route. A read whose region cannot be reached, or
answers 502, 503 or 504, is sent to the next eligible region; a write is
sent once and never retried elsewhere (502 upstream_outcome_unknown when
its answer is lost). Answers carry X-Atomfed-Region.

With REDIS_URL (redis://[:password@]host:port[/db]) the routing table is
also written to Redis: hash atomfed:routes, field "<tenant>:<op>", value
the route as JSON, and a PUBLISH on channel atomfed:routes whenever a route
is learnt or sends requests elsewhere;
then every tenant is watched (--preload), not only those seen.`,
		Example: `  atomfed edge --listen :8080 --from eu-west --max-staleness 500ms
  REDIS_URL=redis://127.0.0.1:6379 atomfed edge --listen :8080 --from eu-west`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			log := newLogger("edge", logLevel, false)
			tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: time.Minute}
			if appCA != "" {
				tc, err := tlsutil.ClientConfig(tlsutil.Files{CA: appCA}, "")
				if err != nil {
					return fmt.Errorf("--app-ca-cert: %w", err)
				}
				tr.TLSClientConfig = tc
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
			cfg := edge.Config{Source: c, From: from, TenantHeader: tenantHeader, TenantFromHost: fromHost, Transport: tr, Registerer: reg, Logger: log}
			if cmd.Flags().Changed("max-staleness") {
				if staleness < 0 || staleness%time.Millisecond != 0 {
					return fmt.Errorf("--max-staleness %s must be a whole number of milliseconds, 0 or more (0: the home only)", staleness)
				}
				ms := staleness.Milliseconds()
				cfg.MaxStalenessMS = &ms
			}
			if u := os.Getenv("REDIS_URL"); u != "" {
				pub, err := edge.NewRedisPublisher(u, log)
				if err != nil {
					return err
				}
				defer pub.Close()
				cfg.OnChange = pub.Publish
				if !cmd.Flags().Changed("preload") {
					preload = true
				}
			}
			e := edge.New(cfg)
			defer e.Close()
			if preload {
				e.Preload(c)
			}
			return serveEdge(log, e, listen, metricsListen, reg)
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8480", "address the proxy listens on")
	f.StringVar(&metricsListen, "metrics-listen", "127.0.0.1:9480", "address of the Prometheus /metrics endpoint (empty: none)")
	f.StringVar(&from, "from", "", "the edge's region or lat,lon, that reads are routed from (default: the region of the server asked)")
	f.DurationVar(&staleness, "max-staleness", 0, "reads' staleness budget (default: the servers' default, 1s; 0: the home only)")
	f.StringVar(&tenantHeader, "tenant-header", edge.DefaultTenantHeader, "request header that names the tenant")
	f.BoolVar(&fromHost, "tenant-from-host", false, "without the header, take the tenant from the first label of the host name")
	f.BoolVar(&preload, "preload", false, "watch every tenant's routes, not only those requests name (default: on with REDIS_URL)")
	f.StringVar(&appCA, "app-ca-cert", "", "CA certificate to verify the regions' applications with (default: the system's)")
	f.StringVar(&logLevel, "log-level", "info", "log level")
	return cmd
}

// serveEdge serves the proxy (and metrics) until SIGINT or SIGTERM.
func serveEdge(log interface{ Info(string, ...any) }, h http.Handler, listen, metricsListen string, reg *prometheus.Registry) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("edge proxy listening", "addr", ln.Addr().String())
	var msrv *http.Server
	if metricsListen != "" {
		mln, err := net.Listen("tcp", metricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- msrv.Serve(mln) }()
		log.Info("edge metrics listening", "addr", mln.Addr().String())
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if msrv != nil {
		_ = msrv.Shutdown(sctx)
	}
	return srv.Shutdown(sctx)
}
