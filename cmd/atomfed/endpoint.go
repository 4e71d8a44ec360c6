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

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// What a server (node.go) and an agent (agent.go) share: the HTTP
// listener with its advertised URL and TLS sniffing, the metrics registry,
// the HTTP endpoint's life cycle, and the signal handling of `atomfed
// server` and `atomfed agent`.

// listenHTTP opens addr and works out the URL others reach it at
// (advertise, else the bound address when it is one specific IP). With TLS
// the listener sniffs each connection: TLS for the API, plain HTTP only
// for what guard lets through (/health, /metrics and the paths given).
func listenHTTP(addr, advertise string, sec *security, guard func(http.Handler) http.Handler) (net.Listener, string, func(http.Handler) http.Handler, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", nil, fmt.Errorf("listen on --http-addr %s: %w", addr, err)
	}
	if advertise == "" {
		a := ln.Addr().(*net.TCPAddr)
		if a.IP.IsUnspecified() {
			ln.Close()
			return nil, "", nil, errors.New("--http-addr binds all interfaces: set --http-advertise to the address other members should use")
		}
		advertise = sec.scheme + "://" + a.String()
	}
	wrap := func(h http.Handler) http.Handler { return h }
	if sec.httpServer != nil {
		ln = tlsutil.SniffListener(ln, sec.httpServer)
		wrap = guard
	}
	return ln, advertise, wrap, nil
}

// newRegistry is a node's metrics registry, with the Go runtime and
// process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// httpEndpoint is a node's HTTP server: done yields the error that ended
// Serve (nil after a clean stop).
type httpEndpoint struct {
	srv        *http.Server
	cancelBase context.CancelFunc
	done       chan error
}

// httpLimits are the timeouts and header limit of a node's HTTP server
// (a variable so that tests can shorten them). A client must send its
// request line and headers within ReadHeader and its whole request within
// Read (a snapshot restore moves its own deadline); an answer must be
// written within Write, which blocking queries move past their wait
// (httpapi, read); an idle keep-alive connection is closed after Idle. A
// slowloris client trickling its headers is dropped at ReadHeader.
var httpLimits = struct {
	ReadHeader, Read, Write, Idle time.Duration
	MaxHeaderBytes                int
}{
	ReadHeader:     10 * time.Second,
	Read:           time.Minute,
	Write:          2 * time.Minute,
	Idle:           2 * time.Minute,
	MaxHeaderBytes: 64 << 10,
}

// serveHTTP serves h on ln until stop. Requests' contexts end when stop
// begins (blocking queries return), and handshake failures of clients
// (scanners, closed connections) are logged at debug level only.
func serveHTTP(ln net.Listener, h http.Handler, log hclog.Logger) *httpEndpoint {
	baseCtx, cancelBase := context.WithCancel(context.Background())
	e := &httpEndpoint{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: httpLimits.ReadHeader,
			ReadTimeout:       httpLimits.Read,
			WriteTimeout:      httpLimits.Write,
			IdleTimeout:       httpLimits.Idle,
			MaxHeaderBytes:    httpLimits.MaxHeaderBytes,
			BaseContext:       func(net.Listener) context.Context { return baseCtx },
			ErrorLog:          log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
		},
		cancelBase: cancelBase,
		done:       make(chan error, 1),
	}
	go func() {
		err := e.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		e.done <- err
	}()
	return e
}

// stop ends open requests and closes the listener, waiting up to 5 s.
func (e *httpEndpoint) stop() error {
	e.cancelBase()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return e.srv.Shutdown(ctx)
}

// runUntilSignal runs a started node until SIGTERM or SIGINT, then leaves
// gracefully (bounded by 15 s; a second signal exits at once), or until
// its HTTP endpoint fails, then shuts down without leaving.
func runUntilSignal(log hclog.Logger, e *httpEndpoint, leave func(context.Context) error, shutdown func() error, leaving, left string) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		stopping.Store(true)
		log.Info(leaving, "signal", sig.String())
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		go func() {
			<-sigs
			log.Warn("second signal: stopping without leaving")
			os.Exit(1)
		}()
		if err := leave(ctx); err != nil {
			log.Warn("leave finished with errors", "error", err)
		}
		log.Info(left)
		return nil
	case err := <-e.done:
		_ = shutdown()
		return fmt.Errorf("HTTP server stopped: %w", err)
	}
}
