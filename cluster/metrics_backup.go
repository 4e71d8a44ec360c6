package cluster

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

var (
	descBackupStale = prometheus.NewDesc("atomfed_region_backup_stale",
		"1 while a region with a database has no verified backup younger than its backup policy's max_age_seconds (0 otherwise, and for a region whose database is simulated).",
		[]string{"region"}, nil)
	descBackupAge = prometheus.NewDesc("atomfed_region_backup_age_seconds",
		"Age of a region's newest verified backup, from when it was recorded; absent while the region has none.", []string{"region"}, nil)
	descDrillStale = prometheus.NewDesc("atomfed_region_drill_stale",
		"1 while no restore drill of a region with a database passed within twice its policy's drill interval.", []string{"region"}, nil)
)

// backupCollector exports every region's backup health from the backup
// catalog (fsm.BackupHealthOf), on every server, so that an alert on stale
// backups needs no agent.
type backupCollector struct {
	f   *fsm.FSM
	now func() time.Time
}

func (c *backupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBackupStale
	ch <- descBackupAge
	ch <- descDrillStale
	describeSnapship(ch)
}

func (c *backupCollector) Collect(ch chan<- prometheus.Metric) {
	var out []prometheus.Metric
	now := c.now().UnixNano()
	c.f.Read(func(s *fsm.State) { out = append(backupMetrics(s, now), snapshipMetrics(s, now)...) })
	for _, m := range out {
		ch <- m
	}
}

// backupMetrics is every registered region's backup health at now.
func backupMetrics(s *fsm.State, now int64) []prometheus.Metric {
	var out []prometheus.Metric
	flag := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, r := range s.SortedRegions() {
		h := s.BackupHealthOf(r.Name, now)
		out = append(out, prometheus.MustNewConstMetric(descBackupStale, prometheus.GaugeValue, flag(h.Stale && !h.Simulated), r.Name),
			prometheus.MustNewConstMetric(descDrillStale, prometheus.GaugeValue, flag(h.DrillStale && !h.Simulated), r.Name))
		if h.LastVerified != nil {
			out = append(out, prometheus.MustNewConstMetric(descBackupAge, prometheus.GaugeValue, float64(h.AgeSeconds), r.Name))
		}
	}
	return out
}
