package edge

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests       *prometheus.CounterVec // op, region, code
	retries        *prometheus.CounterVec // op
	upstreamErrors *prometheus.CounterVec // op, region
	changes        prometheus.Counter
	watched        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atomfed_edge_requests_total",
			Help: "Requests the edge answered, by operation (read, write; none when it had no tenant), region that served it (empty when the edge answered itself) and status code."}, []string{"op", "region", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atomfed_edge_retries_total",
			Help: "Reads sent to the next region after one was unreachable or answered 502, 503 or 504."}, []string{"op"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atomfed_edge_upstream_errors_total",
			Help: "Requests a region's application could not be reached for, by operation and region."}, []string{"op", "region"}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "atomfed_edge_route_changes_total",
			Help: "Routes learnt or changed (region, app URL or eligible alternatives)."}),
		watched: prometheus.NewGauge(prometheus.GaugeOpts{Name: "atomfed_edge_watched_routes",
			Help: "Tenant routes (tenant and operation) the edge keeps with blocking queries."}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.retries, m.upstreamErrors, m.changes, m.watched)
	}
	return m
}
