package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

var (
	descRegionMaintenance = prometheus.NewDesc("atomfed_region_maintenance",
		"1 while the region is in maintenance (no new tenant placement goes there), 0 otherwise.",
		[]string{"region"}, nil)
	descDrainRemaining = prometheus.NewDesc("atomfed_region_drain_remaining",
		"Tenants the region's running drain has still to move (pending or switching); absent when no drain runs.",
		[]string{"region"}, nil)
)

// regionOpsCollector exports the regions' maintenance flags and drains
// from the FSM, so every server's /metrics shows them.
type regionOpsCollector struct{ f *fsm.FSM }

func (c *regionOpsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRegionMaintenance
	ch <- descDrainRemaining
}

func (c *regionOpsCollector) Collect(ch chan<- prometheus.Metric) {
	var metrics []prometheus.Metric
	c.f.Read(func(s *fsm.State) { metrics = regionOpsMetrics(s) })
	for _, m := range metrics {
		ch <- m
	}
}

// regionOpsMetrics turns the regions' operational state into metrics: one
// maintenance gauge per registered region.
func regionOpsMetrics(s *fsm.State) []prometheus.Metric {
	var out []prometheus.Metric
	for _, r := range s.SortedRegions() {
		v := 0.0
		if s.InMaintenance(r.Name) {
			v = 1
		}
		out = append(out, prometheus.MustNewConstMetric(descRegionMaintenance, prometheus.GaugeValue, v, r.Name))
		if o := s.RegionOps[r.Name]; o != nil && o.Drain.Running() {
			out = append(out, prometheus.MustNewConstMetric(descDrainRemaining, prometheus.GaugeValue, float64(o.Drain.Remaining()), r.Name))
		}
	}
	return out
}
