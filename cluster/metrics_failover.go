package cluster

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

var (
	descFailoverTotal = prometheus.NewDesc("atomfed_tenant_failover_total",
		"Finished failovers of a tenant in the kept history (the last 100 of the federation), by mode (manual: approved, auto: the automatic policy).",
		[]string{"tenant", "mode"}, nil)
	descFailoverRTO = prometheus.NewDesc("atomfed_tenant_failover_last_rto_seconds",
		"RTO of a tenant's last finished failover: from its start (the approving vote, or the leader's decision) to the commit of the new home.",
		[]string{"tenant"}, nil)
	descFailoverRPO = prometheus.NewDesc("atomfed_tenant_failover_last_rpo_seconds",
		"RPO of a tenant's last finished failover as its target last reported it: its replication lag at the start (0 for a sync tenant).",
		[]string{"tenant"}, nil)
	descFailoverBlocked = prometheus.NewDesc("atomfed_tenant_failover_blocked",
		"1 while a tenant with an automatic failover policy has its home region down and does not fail over, by reason (detecting, no_mirror_ready, over_rpo_budget, drill_not_passed, switchover_in_progress, refused).",
		[]string{"tenant", "reason"}, nil)
)

// failoverCollector exports the failover history and the automatic
// policies' decisions from the FSM, on every server.
type failoverCollector struct {
	f        *fsm.FSM
	now      func() time.Time
	detectMS int64
}

func (c *failoverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descFailoverTotal
	ch <- descFailoverRTO
	ch <- descFailoverRPO
	ch <- descFailoverBlocked
}

func (c *failoverCollector) Collect(ch chan<- prometheus.Metric) {
	var metrics []prometheus.Metric
	c.f.Read(func(s *fsm.State) { metrics = failoverMetrics(s, c.now().UnixNano(), c.detectMS) })
	for _, m := range metrics {
		ch <- m
	}
}

// failoverMetrics turns the history and the decisions into metrics.
func failoverMetrics(s *fsm.State, now, detectMS int64) []prometheus.Metric {
	var out []prometheus.Metric
	type key struct{ tenant, mode string }
	counts := map[key]int{}
	last := map[string]*fsm.FailoverRecord{}
	for _, r := range s.FailoverHistory {
		counts[key{r.Tenant, r.Mode}]++
		last[r.Tenant] = r
	}
	for k, n := range counts {
		out = append(out, prometheus.MustNewConstMetric(descFailoverTotal, prometheus.CounterValue, float64(n), k.tenant, k.mode))
	}
	for t, r := range last {
		out = append(out, prometheus.MustNewConstMetric(descFailoverRTO, prometheus.GaugeValue, float64(r.RTOMS)/1000, t),
			prometheus.MustNewConstMetric(descFailoverRPO, prometheus.GaugeValue, float64(r.RPOLagMS)/1000, t))
	}
	for _, d := range fsm.AutoFailoverDecisions(s, now, detectMS) {
		if !d.Start && d.Wait != fsm.AutoWaitHomeUp && d.Wait != fsm.AutoWaitNotAuto {
			out = append(out, prometheus.MustNewConstMetric(descFailoverBlocked, prometheus.GaugeValue, 1, d.Tenant, d.Wait))
		}
	}
	return out
}
