package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/atomcloud/atomfed/fsm"
)

// TestBackupMetrics: a region with a database and no verified backup is
// stale; one with a fresh verified backup is not and has its age; a
// region whose database is simulated is never stale.
func TestBackupMetrics(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := replState("a", "b", "c")
	delete(s.Databases, "c")
	s.Backups = map[string]*fsm.Backup{"b-10": {ID: "b-10", Region: "b", Status: fsm.BackupSucceeded, CreateIndex: 10,
		RecordedAt: now.Add(-90 * time.Second).UnixNano(), BackupResult: &fsm.BackupResult{Label: "x", Verified: true}}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(constMetrics(backupMetrics(s, now.UnixNano())))
	want := `
# HELP atomfed_region_backup_age_seconds Age of a region's newest verified backup, from when it was recorded; absent while the region has none.
# TYPE atomfed_region_backup_age_seconds gauge
atomfed_region_backup_age_seconds{region="b"} 90
# HELP atomfed_region_backup_stale 1 while a region with a database has no verified backup younger than its backup policy's max_age_seconds (0 otherwise, and for a region whose database is simulated).
# TYPE atomfed_region_backup_stale gauge
atomfed_region_backup_stale{region="a"} 1
atomfed_region_backup_stale{region="b"} 0
atomfed_region_backup_stale{region="c"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "atomfed_region_backup_stale", "atomfed_region_backup_age_seconds"); err != nil {
		t.Fatal(err)
	}
}

// constMetrics is a collector of fixed metrics.
type constMetrics []prometheus.Metric

func (c constMetrics) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c constMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c {
		ch <- m
	}
}
