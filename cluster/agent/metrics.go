package agent

import "github.com/prometheus/client_golang/prometheus"

type agentMetrics struct {
	reg     prometheus.Registerer
	running prometheus.Gauge
	refused prometheus.Counter
	// staleEpoch counts tasks not run because their tenant epoch ended.
	staleEpoch prometheus.Counter
	reports    *prometheus.CounterVec
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		reg: reg,
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "atomfed_agent_tasks_running",
			Help: "Tasks this agent runs.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atomfed_agent_stale_assignments_refused_total",
			Help: "Assignments refused because their generation was older than one already run (fencing).",
		}),
		staleEpoch: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atomfed_agent_stale_epoch_tasks_total",
			Help: "Tasks not run because their tenant's placement epoch is older than one this agent has seen.",
		}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_agent_reports_total",
			Help: "Heartbeat reports sent to the servers, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.running, m.refused, m.staleEpoch, m.reports)
	}
	return m
}

func (m *agentMetrics) unregister() {
	if m.reg == nil {
		return
	}
	m.reg.Unregister(m.running)
	m.reg.Unregister(m.refused)
	m.reg.Unregister(m.staleEpoch)
	m.reg.Unregister(m.reports)
}
