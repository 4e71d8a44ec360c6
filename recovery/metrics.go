package recovery

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

type metrics struct {
	lastSuccess *prometheus.GaugeVec
	duration    *prometheus.HistogramVec
	size        *prometheus.GaugeVec
	failures    *prometheus.CounterVec
	drillOK     *prometheus.GaugeVec
	drillTime   *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "atomfed_backup_last_success_timestamp_seconds",
			Help: "When this agent last took a backup of its region, by region and whether it verified.",
		}, []string{"region", "verified"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atomfed_backup_duration_seconds",
			Help:    "Duration of backups this agent took (configure, backup, verify), by region and type.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 14),
		}, []string{"region", "type"}),
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "atomfed_backup_size_bytes",
			Help: "Size of the region's database in the last backup this agent took, by region and type.",
		}, []string{"region", "type"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_backup_failures_total",
			Help: "Backups this agent failed to take, by region.",
		}, []string{"region"}),
		drillOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "atomfed_restore_drill_last_success_timestamp_seconds",
			Help: "When this agent last passed a restore drill of its region, by region.",
		}, []string{"region"}),
		drillTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atomfed_restore_drill_duration_seconds",
			Help:    "Duration of passed restore drills (restore, start, read every table), by region.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 14),
		}, []string{"region"}),
	}
	if reg != nil {
		reg.MustRegister(m.lastSuccess, m.duration, m.size, m.failures, m.drillOK, m.drillTime)
	}
	return m
}

func (m *metrics) observe(spec fsm.BackupSpec, res *fsm.BackupResult, d time.Duration) {
	v := "false"
	if res.Verified {
		v = "true"
	}
	m.lastSuccess.WithLabelValues(spec.Region, v).Set(float64(time.Now().Unix()))
	m.duration.WithLabelValues(spec.Region, spec.Type).Observe(d.Seconds())
	m.size.WithLabelValues(spec.Region, spec.Type).Set(float64(res.Size))
}

func (m *metrics) drill(region string, d time.Duration) {
	m.drillOK.WithLabelValues(region).Set(float64(time.Now().Unix()))
	m.drillTime.WithLabelValues(region).Observe(d.Seconds())
}
