package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

var (
	descSwitchoverPhase = prometheus.NewDesc("atomfed_tenant_switchover_phase",
		"1 while a tenant's switchover is in this phase (fencing, catching_up, promoting, committed, rolling_back); absent once it ended.",
		[]string{"tenant", "phase"}, nil)
	descSwitchoverSeconds = prometheus.NewDesc("atomfed_tenant_switchover_duration_seconds",
		"Duration of a tenant's last ended switchover, from the request to its end (done or aborted), by outcome.",
		[]string{"tenant", "outcome"}, nil)
)

// switchoverCollector exports the tenants' switchovers from the FSM, so
// every server's /metrics shows them, whichever server leads.
type switchoverCollector struct{ f *fsm.FSM }

func (c *switchoverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSwitchoverPhase
	ch <- descSwitchoverSeconds
	ch <- descDivergentRows
}

func (c *switchoverCollector) Collect(ch chan<- prometheus.Metric) {
	var metrics []prometheus.Metric
	c.f.Read(func(s *fsm.State) { metrics = append(switchoverMetrics(s), divergenceMetrics(s)...) })
	for _, m := range metrics {
		ch <- m
	}
}

// switchoverMetrics turns the switchovers into metrics.
func switchoverMetrics(s *fsm.State) []prometheus.Metric {
	var out []prometheus.Metric
	for _, w := range s.SortedSwitchovers() {
		if w.Active() {
			out = append(out, prometheus.MustNewConstMetric(descSwitchoverPhase, prometheus.GaugeValue, 1, w.Tenant, w.Phase))
			continue
		}
		out = append(out, prometheus.MustNewConstMetric(descSwitchoverSeconds, prometheus.GaugeValue,
			float64(w.EndedAt-w.StartedAt)/1e9, w.Tenant, w.Outcome))
	}
	return out
}
