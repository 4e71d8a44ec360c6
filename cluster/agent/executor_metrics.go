package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/metrics"
)

// MetricsPush sends a region's snapshot to the servers (every one of them)
// and returns how many accepted it; err says why the others did not.
type MetricsPush func(ctx context.Context, region string, generation uint64, st metrics.ScrapeStatus, snapshot []byte) (accepted int, err error)

// MetricsExecutor runs the region's metrics task: every interval it
// scrapes the region (internal/metrics.Scraper) and pushes the snapshot to
// every server with the task's generation. The data goes to the servers'
// memory only; the task's reports carry its status and error, never data.
type MetricsExecutor struct {
	scraper *metrics.Scraper
	push    MetricsPush
	log     hclog.Logger
	scrapes *prometheus.CounterVec
	bytes   prometheus.Gauge
}

// NewMetricsExecutor returns the executor of the region's metrics task;
// its own metrics go to reg.
func NewMetricsExecutor(s *metrics.Scraper, push MetricsPush, log hclog.Logger, reg prometheus.Registerer) *MetricsExecutor {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	e := &MetricsExecutor{scraper: s, push: push, log: log.Named("metrics"),
		scrapes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_metrics_pushes_total",
			Help: "Region metrics snapshots this agent pushed, by result (ok: at least one server accepted it).",
		}, []string{"result"}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "atomfed_metrics_snapshot_bytes",
			Help: "Compressed size of the last region metrics snapshot this agent pushed.",
		}),
	}
	if reg != nil {
		reg.MustRegister(e.scrapes, e.bytes)
	}
	return e
}

// Type is "metrics".
func (e *MetricsExecutor) Type() string { return fsm.TaskTypeMetrics }

// Run scrapes and pushes every interval until ctx ends.
func (e *MetricsExecutor) Run(ctx context.Context, t *fsm.Task, report func(TaskStatus)) error {
	var spec fsm.MetricsSpec
	if err := json.Unmarshal(t.Spec, &spec); err != nil {
		return fmt.Errorf("metrics spec: %w", err)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Region != e.scraper.Region {
		return fmt.Errorf("metrics task of region %s placed on an agent of region %s", spec.Region, e.scraper.Region)
	}
	interval := time.Duration(spec.IntervalMS) * time.Millisecond
	timeout := time.Duration(spec.TimeoutMS) * time.Millisecond
	last := ""
	for {
		next := time.Now().Add(interval)
		status, msg := e.once(ctx, t.Generation, timeout)
		if ctx.Err() != nil {
			return nil
		}
		if key := status + msg; key != last {
			last = key
			report(TaskStatus{Status: status, Error: msg})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(next)):
		}
	}
}

// once scrapes and pushes one snapshot; the status is failing when no
// server took it. A source that is down is not a failure of the task: it
// is data about the region, in the snapshot's atomfed_scrape_up and in
// GET /v1/metrics/regions (and a flapping source costs no Raft entry).
func (e *MetricsExecutor) once(ctx context.Context, gen uint64, timeout time.Duration) (string, string) {
	// The scrape has three quarters of the timeout, the push half of it
	// of its own: a source that hangs or streams without end is cut and
	// marked down, and the rest still reaches the servers.
	sctx, cancel := context.WithTimeout(ctx, timeout*3/4)
	fams, st := e.scraper.Scrape(sctx)
	cancel()
	ctx, cancel = context.WithTimeout(ctx, timeout/2)
	defer cancel()
	var buf bytes.Buffer
	if err := metrics.Encode(&buf, fams); err != nil {
		return fsm.TaskFailing, "encode: " + err.Error()
	}
	e.bytes.Set(float64(buf.Len()))
	n, err := e.push(ctx, e.scraper.Region, gen, st, buf.Bytes())
	if n == 0 {
		e.scrapes.WithLabelValues("error").Inc()
		e.log.Debug("metrics snapshot not pushed", "error", err)
		return fsm.TaskFailing, fmt.Sprintf("no server took the snapshot: %v", err)
	}
	e.scrapes.WithLabelValues("ok").Inc()
	return fsm.TaskRunning, ""
}
