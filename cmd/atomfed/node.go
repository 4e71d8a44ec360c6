package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi"
	"github.com/atomcloud/atomfed/internal/metrics"
	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// serverOptions are a server's settings, from flags or from dev.
type serverOptions struct {
	Node, Region, DataDir   string
	HTTPAddr, HTTPAdvertise string
	RaftAddr, RaftAdvertise string
	SerfAddr, SerfAdvertise string
	BootstrapExpect         int
	Join                    []string
	NonVoter                bool
	RaftMultiplier          int
	RaftLogStore            string
	DeadServerCleanup       time.Duration
	FailoverDetect          time.Duration
	Security                securityOptions
	EnableDebug             bool
	// AnonymousRegionList: see httpapi.Config.AnonymousRegionList.
	AnonymousRegionList bool
	// MaxBlockingQueries, MaxBlockingPerToken: see httpapi.Config.
	MaxBlockingQueries  int
	MaxBlockingPerToken int
	// RemoteWriteURL, when set, receives the global metrics view by
	// Prometheus remote write (internal/metrics.RemoteWriter).
	RemoteWriteURL string
	Logger         hclog.Logger
	// Simulation is the server's SIMULATION_MODE evaluation; nil makes
	// startServer evaluate it from the environment and announce it.
	Simulation *structs.Simulation
}

// serverNode is a running server with its HTTP API.
type serverNode struct {
	srv  *cluster.Server
	http *httpEndpoint
	url  string
	log  hclog.Logger
	// stopWrite ends the remote writer, if any.
	stopWrite context.CancelFunc
}

// startServer opens the HTTP listener first (so its real address can be
// gossiped), then starts the cluster member and serves the API.
func startServer(o serverOptions) (*serverNode, error) {
	tuneGC()
	if o.Security.Token == "" {
		return nil, errors.New("FEDERATION_TOKEN is not set: every server needs the same bootstrap management token (e.g. export FEDERATION_TOKEN=$(openssl rand -hex 32))")
	}
	if o.MaxBlockingQueries < 0 || o.MaxBlockingPerToken < 0 {
		return nil, errors.New("--max-blocking-queries and --max-blocking-per-token must be positive (0 takes the default)")
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil && o.DataDir != "" {
		return nil, err
	}
	sec, err := o.Security.resolve(o.DataDir, "server.key", true, o.Logger)
	if err != nil {
		return nil, err
	}
	quiet := o.Simulation != nil
	if o.Simulation == nil {
		sim, err := evaluateSimulation(precheck.RoleServer)
		if err != nil {
			return nil, err
		}
		o.Simulation = sim
	}
	announceSimulation(o.Logger.Named("server"), o.Simulation, quiet)
	var anonymous []string
	if o.AnonymousRegionList {
		anonymous = httpapi.AnonymousPaths
	}
	// One port for both: TLS for the API, plain HTTP for /health and
	// /metrics only (load balancers, scrapers, the precheck).
	ln, adv, handlerWrap, err := listenHTTP(o.HTTPAddr, o.HTTPAdvertise, sec, httpapi.PlaintextGuardWith(anonymous...))
	if err != nil {
		return nil, err
	}
	reg := newRegistry()

	cfg := cluster.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.DataDir = o.Node, o.Region, o.DataDir
	cfg.RaftBindAddr, cfg.RaftAdvertiseAddr = o.RaftAddr, o.RaftAdvertise
	cfg.SerfBindAddr, cfg.SerfAdvertiseAddr = o.SerfAddr, o.SerfAdvertise
	cfg.HTTPAdvertiseURL = adv
	cfg.BootstrapExpect, cfg.Join, cfg.NonVoter = o.BootstrapExpect, o.Join, o.NonVoter
	if o.RaftMultiplier > 0 {
		cfg.RaftMultiplier = o.RaftMultiplier
	}
	if o.RaftLogStore != "" {
		cfg.LogStore = o.RaftLogStore
	}
	cfg.FailoverDetect = o.FailoverDetect
	if o.DeadServerCleanup >= 0 {
		cfg.DeadServerCleanupAfter = o.DeadServerCleanup
	}
	cfg.Logger, cfg.Registerer = o.Logger, reg
	cfg.Signer, cfg.GossipKey, cfg.TLS = sec.signer, sec.gossipKey, sec.raft
	srv, err := cluster.New(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	api := httpapi.New(httpapi.Config{
		Cluster: srv, Logger: o.Logger, Registerer: reg, Gatherer: reg, Version: version,
		BootstrapToken: o.Security.Token, Signer: sec.signer,
		Simulation: o.Simulation, ProbeTLS: sec.client, EnableDebug: o.EnableDebug, AnonymousRegionList: o.AnonymousRegionList,
		MaxBlockingQueries: o.MaxBlockingQueries, MaxBlockingPerToken: o.MaxBlockingPerToken,
		ForwardTransport: forwardTransport(ln.Addr().(*net.TCPAddr).IP, serverPinned(sec.client)),
	})
	srv.SetForwardAuthorizer(api.AuthorizeForwarded)
	n := &serverNode{
		srv:       srv,
		http:      serveHTTP(ln, handlerWrap(api.Handler()), o.Logger),
		url:       adv,
		log:       o.Logger.Named("server"),
		stopWrite: func() {},
	}
	if o.RemoteWriteURL != "" {
		n.stopWrite = startRemoteWrite(o.RemoteWriteURL, api, srv, o.Logger)
	}
	return n, nil
}

// startRemoteWrite sends the global metrics view this server holds to url
// by Prometheus remote write, every metrics interval.
func startRemoteWrite(url string, api *httpapi.API, srv *cluster.Server, log hclog.Logger) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	w := &metrics.RemoteWriter{
		URL: url, Store: api.MetricsStore(), Interval: fsm.DefaultMetricsIntervalMS * time.Millisecond,
		MaxAge: 3 * fsm.DefaultMetricsIntervalMS * time.Millisecond, Logger: log.Named("remote-write"),
		Client: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2}},
		Regions: func() []string {
			var out []string
			srv.FSM().Read(func(s *fsm.State) {
				for _, r := range s.SortedRegions() {
					out = append(out, r.Name)
				}
			})
			return out
		},
	}
	go w.Run(ctx)
	log.Info("remote-writing the global metrics view", "url", redactURL(url))
	return cancel
}

// leave leaves the cluster gracefully, then stops serving HTTP.
func (n *serverNode) leave(ctx context.Context) error {
	n.stopWrite()
	err := n.srv.Leave(ctx)
	return errors.Join(err, n.http.stop())
}

// shutdown stops without leaving (peers see a failure).
func (n *serverNode) shutdown() error {
	n.stopWrite()
	err := n.srv.Shutdown()
	return errors.Join(err, n.http.stop())
}

// forwardTransport carries the requests a follower forwards to the leader
// over HTTP (the reads it does not serve itself), with TLS unless the node
// runs plaintext (tlsConf nil). When the HTTP API listens on one specific
// address, forwarded requests leave from it, as the Raft and gossip
// connections leave from theirs: a node's traffic to its peers then has one
// source address (firewall rules, and the chaos suite's per-link fault
// proxies, rely on that).
func forwardTransport(listen net.IP, tlsConf *tls.Config) http.RoundTripper {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if listen != nil && !listen.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: listen}
	}
	return &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tlsConf,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
}

// serverPinned returns a copy of a client config that accepts only a
// server's certificate: a forwarded request carries its caller's token, and
// goes to a URL a Serf member gossiped.
func serverPinned(c *tls.Config) *tls.Config {
	if c == nil {
		return nil
	}
	p := c.Clone()
	p.ServerName = tlsutil.ServerName
	return p
}

// defaultGCPercent is the garbage collector's target when GOGC is not set.
// A server's live heap is small (the federation state and raft's caches,
// megabytes) and almost everything it allocates dies with the request
// that allocated it, so collecting at 4x the live heap rather than Go's 2x
// saves CPU on every write for a few extra megabytes.
const defaultGCPercent = 400

var gcOnce sync.Once

// tuneGC applies defaultGCPercent unless the operator set GOGC.
func tuneGC() {
	gcOnce.Do(func() {
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(defaultGCPercent)
		}
	})
}
