package bench

import (
	"strings"
	"testing"
	"time"
)

// TestDataPlaneReportVerdicts: each goal's verdict follows the medians
// (met below the goal, NOT met above), so a slow build cannot be reported
// as meeting them.
func TestDataPlaneReportVerdicts(t *testing.T) {
	s := time.Second
	rep := func(sw, fo time.Duration, atomfedBackup, handBackup, rebuild time.Duration) string {
		r := &DataPlaneReport{
			Switchover: &SwitchoverResult{Rounds: []SwitchoverRound{{From: "a", To: "b", ToFirstWrite: sw, ToDone: sw}, {From: "b", To: "a", ToFirstWrite: sw, ToDone: sw}}},
			Failover:   &TenantFailoverResult{Rounds: []TenantFailoverRound{{Tenant: "fo1", KillToWrite: fo}}},
			Backup: &BackupResult{Region: "r", Fill: &FillResult{Tables: 4, Rows: 1, Bytes: 1 << 30, Duration: s},
				Rounds: []BackupRound{{AtomfedBackup: atomfedBackup, HandBackup: handBackup, AtomfedRestore: 10 * s, HandRestore: 10 * s, Size: 1 << 30}}},
			Rebuild: &RebuildResult{Region: "r", Total: rebuild},
		}
		return r.Markdown()
	}
	good := rep(time.Second, 8*s, 20*s, 20*s, 15*s)
	for _, want := range []string{"goal < 2s: met", "goal < 10s: met", "overhead **1.00x** (goal ≤ 1.1x: met)", "= 20.000s: met"} {
		if !strings.Contains(good, want) {
			t.Errorf("good figures: %q missing from\n%s", want, good)
		}
	}
	bad := rep(3*time.Second, 12*s, 24*s, 20*s, 21*s)
	for _, want := range []string{"goal < 2s: NOT met", "goal < 10s: NOT met", "overhead **1.20x** (goal ≤ 1.1x: NOT met)", "= 20.000s: NOT met"} {
		if !strings.Contains(bad, want) {
			t.Errorf("bad figures: %q missing from\n%s", want, bad)
		}
	}
}
