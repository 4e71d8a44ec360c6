package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

// ProbeExecutor runs probe tasks: an HTTP(S) GET (2xx is healthy) or, for a
// tcp://host:port target, a TCP connect, with the latency measured.
type ProbeExecutor struct {
	client  *http.Client
	latency *prometheus.HistogramVec
	failed  *prometheus.CounterVec
}

// NewProbeExecutor returns a probe executor whose metrics go to reg. tr
// carries the HTTP probes (nil: a plain transport without keep-alives, so
// each probe measures a fresh connection as a client would see it).
func NewProbeExecutor(reg prometheus.Registerer, tr http.RoundTripper) *ProbeExecutor {
	if tr == nil {
		tr = &http.Transport{DisableKeepAlives: true, Proxy: nil}
	}
	p := &ProbeExecutor{
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atomfed_probe_latency_seconds",
			Help:    "Latency of successful probes, by task.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"task"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_probe_failures_total",
			Help: "Failed probes, by task.",
		}, []string{"task"}),
	}
	if reg != nil {
		reg.MustRegister(p.latency, p.failed)
	}
	return p
}

// Type is "probe".
func (p *ProbeExecutor) Type() string { return fsm.TaskTypeProbe }

// Run probes the target every interval until ctx ends, reporting each
// result.
func (p *ProbeExecutor) Run(ctx context.Context, t *fsm.Task, report func(TaskStatus)) error {
	var spec fsm.ProbeSpec
	if err := json.Unmarshal(t.Spec, &spec); err != nil {
		return fmt.Errorf("probe spec: %w", err)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	interval := time.Duration(spec.IntervalMS) * time.Millisecond
	timeout := time.Duration(spec.TimeoutMS) * time.Millisecond
	for {
		res := p.probe(ctx, spec.Target, timeout)
		if ctx.Err() != nil {
			return nil
		}
		if res.OK {
			p.latency.WithLabelValues(t.ID).Observe(res.LatencyMS / 1000)
			report(TaskStatus{Status: fsm.TaskRunning, Result: res})
		} else {
			p.failed.WithLabelValues(t.ID).Inc()
			report(TaskStatus{Status: fsm.TaskFailing, Result: res, Error: res.Error})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// probe runs one check.
func (p *ProbeExecutor) probe(ctx context.Context, target string, timeout time.Duration) fsm.ProbeResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := fsm.ProbeResult{Target: target}
	start := time.Now()
	var err error
	if strings.HasPrefix(target, "tcp://") {
		var c net.Conn
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", strings.TrimPrefix(target, "tcp://"))
		if err == nil {
			c.Close()
		}
	} else {
		err = p.httpGet(ctx, target)
	}
	res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	res.At = time.Now().UnixNano()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.OK = true
	return res
}

func (p *ProbeExecutor) httpGet(ctx context.Context, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
