package cluster

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

var (
	descSnapshotLastSuccess = prometheus.NewDesc("atomfed_controlplane_snapshot_last_success_timestamp_seconds",
		"When the newest control-plane snapshot was shipped to the snapshot repository (unix seconds); absent until one is.", nil, nil)
	descSnapshotSize = prometheus.NewDesc("atomfed_controlplane_snapshot_size_bytes",
		"Size of the newest shipped control-plane snapshot archive.", nil, nil)
	descSnapshotStale = prometheus.NewDesc("atomfed_controlplane_snapshot_stale",
		"1 while no control-plane snapshot was shipped within twice the snapshot policy's interval.", nil, nil)
	descSnapshotFailures = prometheus.NewDesc("atomfed_controlplane_snapshot_failures",
		"Failed shipments since the last successful one.", nil, nil)
	descBackupLastSuccess = prometheus.NewDesc("atomfed_backup_last_success_timestamp_seconds",
		"When a region's newest verified backup was recorded (unix seconds, from the backup catalog); absent while it has none.", []string{"region"}, nil)
	descBackupLastDuration = prometheus.NewDesc("atomfed_backup_last_duration_seconds",
		"How long a region's newest verified backup took (pgBackRest's start to stop).", []string{"region"}, nil)
	descBackupLastSize = prometheus.NewDesc("atomfed_backup_last_size_bytes",
		"Database size of a region's newest verified backup.", []string{"region"}, nil)
	descDrillLastSuccess = prometheus.NewDesc("atomfed_restore_drill_last_success_timestamp_seconds",
		"When a region's newest passed restore drill was recorded (unix seconds, from the drill catalog); absent while it has none.", []string{"region"}, nil)
)

func describeSnapship(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSnapshotLastSuccess, descSnapshotSize, descSnapshotStale, descSnapshotFailures,
		descBackupLastSuccess, descBackupLastDuration, descBackupLastSize, descDrillLastSuccess} {
		ch <- d
	}
}

// snapshipMetrics is the shipped-snapshot health and every region's last
// good backup and drill at now, from the catalogs, on every server.
func snapshipMetrics(s *fsm.State, now int64) []prometheus.Metric {
	var out []prometheus.Metric
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	h := s.SnapshotShipHealthAt(now)
	if h.Last != nil {
		g(descSnapshotLastSuccess, float64(h.Last.At)/1e9)
		g(descSnapshotSize, float64(h.Last.Size))
	}
	stale := 0.0
	if h.Stale {
		stale = 1
	}
	g(descSnapshotStale, stale)
	g(descSnapshotFailures, float64(h.Failures))
	for _, r := range s.SortedRegions() {
		bh := s.BackupHealthOf(r.Name, now)
		if b := bh.LastVerified; b != nil {
			g(descBackupLastSuccess, float64(b.RecordedAt)/1e9, r.Name)
			if b.Stop >= b.Start && b.Start > 0 {
				g(descBackupLastDuration, float64(b.Stop-b.Start), r.Name)
			}
			g(descBackupLastSize, float64(b.Size), r.Name)
		}
		if d := bh.LastPassedDrill; d != nil {
			g(descDrillLastSuccess, float64(d.At)/1e9, r.Name)
		}
	}
	return out
}
