package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/httpapi"
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
	DeadServerCleanup       time.Duration
	Logger                  hclog.Logger
}

// serverNode is a running server with its HTTP API.
type serverNode struct {
	srv        *cluster.Server
	http       *http.Server
	cancelBase context.CancelFunc
	url        string
	log        hclog.Logger
	done       chan error
}

// startServer opens the HTTP listener first (so its real address can be
// gossiped), then starts the cluster member and serves the API.
func startServer(o serverOptions) (*serverNode, error) {
	ln, err := net.Listen("tcp", o.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on --http-addr %s: %w", o.HTTPAddr, err)
	}
	adv := o.HTTPAdvertise
	if adv == "" {
		a := ln.Addr().(*net.TCPAddr)
		if a.IP.IsUnspecified() {
			ln.Close()
			return nil, errors.New("--http-addr binds all interfaces: set --http-advertise to the address other servers should use")
		}
		adv = "http://" + a.String()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	cfg := cluster.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.DataDir = o.Node, o.Region, o.DataDir
	cfg.RaftBindAddr, cfg.RaftAdvertiseAddr = o.RaftAddr, o.RaftAdvertise
	cfg.SerfBindAddr, cfg.SerfAdvertiseAddr = o.SerfAddr, o.SerfAdvertise
	cfg.HTTPAdvertiseURL = adv
	cfg.BootstrapExpect, cfg.Join, cfg.NonVoter = o.BootstrapExpect, o.Join, o.NonVoter
	if o.RaftMultiplier > 0 {
		cfg.RaftMultiplier = o.RaftMultiplier
	}
	if o.DeadServerCleanup >= 0 {
		cfg.DeadServerCleanupAfter = o.DeadServerCleanup
	}
	cfg.Logger, cfg.Registerer = o.Logger, reg
	srv, err := cluster.New(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	api := httpapi.New(httpapi.Config{
		Cluster: srv, Logger: o.Logger, Registerer: reg, Gatherer: reg, Version: version,
		ForwardTransport: forwardTransport(ln.Addr().(*net.TCPAddr).IP),
	})
	baseCtx, cancelBase := context.WithCancel(context.Background())
	n := &serverNode{
		srv: srv,
		http: &http.Server{
			Handler:           api.Handler(),
			ReadHeaderTimeout: 10 * time.Second,
			// Blocking queries end when the server stops.
			BaseContext: func(net.Listener) context.Context { return baseCtx },
		},
		cancelBase: cancelBase,
		url:        adv,
		log:        o.Logger.Named("server"),
		done:       make(chan error, 1),
	}
	go func() {
		err := n.http.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		n.done <- err
	}()
	return n, nil
}

// leave leaves the cluster gracefully, then stops serving HTTP.
func (n *serverNode) leave(ctx context.Context) error {
	err := n.srv.Leave(ctx)
	return errors.Join(err, n.stopHTTP())
}

// shutdown stops without leaving (peers see a failure).
func (n *serverNode) shutdown() error {
	err := n.srv.Shutdown()
	return errors.Join(err, n.stopHTTP())
}

func (n *serverNode) stopHTTP() error {
	n.cancelBase()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.http.Shutdown(ctx)
}

// forwardTransport carries requests a follower forwards to the leader. When
// the HTTP API listens on one specific address, forwarded requests leave
// from it, as the Raft and gossip connections leave from theirs: a node's
// traffic to its peers then has one source address (firewall rules, and the
// chaos suite's per-link fault proxies, rely on that).
func forwardTransport(listen net.IP) http.RoundTripper {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if listen != nil && !listen.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: listen}
	}
	return &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
}
