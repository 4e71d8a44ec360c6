package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/atomcloud/atomfed/fsm"
)

// TestSnapshipMetrics: the last shipped snapshot's time and size, its
// staleness, and each region's last verified backup and passed drill from
// the catalogs; nothing for a region that has neither.
func TestSnapshipMetrics(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := replState("a", "b")
	s.Backups = map[string]*fsm.Backup{"b-10": {ID: "b-10", Region: "b", Status: fsm.BackupSucceeded, CreateIndex: 10,
		RecordedAt: now.Add(-90 * time.Second).UnixNano(), BackupResult: &fsm.BackupResult{Label: "x", Verified: true, Start: 100, Stop: 130, Size: 4096}}}
	s.Drills = map[string]*fsm.Drill{"b-d11": {ID: "b-d11", Region: "b", Status: fsm.DrillPassed, CreateIndex: 11, RecordedAt: now.Add(-60 * time.Second).UnixNano()}}
	s.Snapshots.Shipped = []*fsm.ShippedSnapshot{{ID: "s", Index: 3, Digest: strings.Repeat("a", 64), StateDigest: strings.Repeat("b", 64),
		Size: 2048, At: now.Add(-10 * time.Second).UnixNano(), Location: "/r/s.snap"}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(constMetrics(snapshipMetrics(s, now.UnixNano())))
	want := `
# HELP atomfed_backup_last_duration_seconds How long a region's newest verified backup took (pgBackRest's start to stop).
# TYPE atomfed_backup_last_duration_seconds gauge
atomfed_backup_last_duration_seconds{region="b"} 30
# HELP atomfed_backup_last_size_bytes Database size of a region's newest verified backup.
# TYPE atomfed_backup_last_size_bytes gauge
atomfed_backup_last_size_bytes{region="b"} 4096
# HELP atomfed_backup_last_success_timestamp_seconds When a region's newest verified backup was recorded (unix seconds, from the backup catalog); absent while it has none.
# TYPE atomfed_backup_last_success_timestamp_seconds gauge
atomfed_backup_last_success_timestamp_seconds{region="b"} 999910
# HELP atomfed_controlplane_snapshot_last_success_timestamp_seconds When the newest control-plane snapshot was shipped to the snapshot repository (unix seconds); absent until one is.
# TYPE atomfed_controlplane_snapshot_last_success_timestamp_seconds gauge
atomfed_controlplane_snapshot_last_success_timestamp_seconds 999990
# HELP atomfed_controlplane_snapshot_size_bytes Size of the newest shipped control-plane snapshot archive.
# TYPE atomfed_controlplane_snapshot_size_bytes gauge
atomfed_controlplane_snapshot_size_bytes 2048
# HELP atomfed_controlplane_snapshot_stale 1 while no control-plane snapshot was shipped within twice the snapshot policy's interval.
# TYPE atomfed_controlplane_snapshot_stale gauge
atomfed_controlplane_snapshot_stale 0
# HELP atomfed_restore_drill_last_success_timestamp_seconds When a region's newest passed restore drill was recorded (unix seconds, from the drill catalog); absent while it has none.
# TYPE atomfed_restore_drill_last_success_timestamp_seconds gauge
atomfed_restore_drill_last_success_timestamp_seconds{region="b"} 999940
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "atomfed_backup_last_duration_seconds", "atomfed_backup_last_size_bytes",
		"atomfed_backup_last_success_timestamp_seconds", "atomfed_controlplane_snapshot_last_success_timestamp_seconds",
		"atomfed_controlplane_snapshot_size_bytes", "atomfed_controlplane_snapshot_stale", "atomfed_restore_drill_last_success_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
	s.Snapshots.Shipped = nil
	reg = prometheus.NewPedanticRegistry()
	reg.MustRegister(constMetrics(snapshipMetrics(s, now.UnixNano())))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP atomfed_controlplane_snapshot_stale 1 while no control-plane snapshot was shipped within twice the snapshot policy's interval.
# TYPE atomfed_controlplane_snapshot_stale gauge
atomfed_controlplane_snapshot_stale 1
`), "atomfed_controlplane_snapshot_stale", "atomfed_controlplane_snapshot_last_success_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
}
