package fsm

import (
	"fmt"
	"time"
)

// DRRegionStatus is one region's disaster-recovery readiness: its newest
// verified backup against the policy's bound, its newest passed drill
// against the drill window (twice the drill interval), and what runs.
type DRRegionStatus struct {
	Region string `json:"region"`
	// Simulated: no agent reported the region's database; nothing of it
	// is backed up, and nothing of it is stale.
	Simulated bool `json:"simulated,omitempty"`

	LastBackup          *Backup `json:"last_backup,omitempty"`
	BackupAgeSeconds    *int64  `json:"backup_age_seconds,omitempty"`
	BackupMaxAgeSeconds int64   `json:"backup_max_age_seconds"`
	BackupStale         bool    `json:"backup_stale"`

	LastDrill          *DrillSummary `json:"last_drill,omitempty"`
	LastPassedDrill    *DrillSummary `json:"last_passed_drill,omitempty"`
	DrillAgeSeconds    *int64        `json:"drill_age_seconds,omitempty"`
	DrillWindowSeconds int64         `json:"drill_window_seconds"`
	DrillStale         bool          `json:"drill_stale"`

	RunningBackup *Backup `json:"running_backup,omitempty"`
	RunningDrill  *Drill  `json:"running_drill,omitempty"`
	// LastRebuild is the region's newest rebuild (atomfed dr rebuild),
	// running or ended.
	LastRebuild *Rebuild `json:"last_rebuild,omitempty"`
	// Missing says what the region lacks, in words (empty: ready).
	Missing []string `json:"missing,omitempty"`
}

// DRStatus is the federation's disaster-recovery readiness: every region
// and the control plane's shipped snapshots. Stale is set when anything
// is missing; Missing names each item ("<region>: what").
type DRStatus struct {
	Regions      []DRRegionStatus   `json:"regions"`
	ControlPlane SnapshotShipHealth `json:"control_plane"`
	Stale        bool               `json:"stale"`
	Missing      []string           `json:"missing,omitempty"`
	// Simulated names the regions whose databases are simulated.
	Simulated []string `json:"simulated,omitempty"`
	At        int64    `json:"at"`
}

// DRStatusAt evaluates the readiness at now (unix ns).
func (s *State) DRStatusAt(now int64) DRStatus {
	out := DRStatus{Regions: []DRRegionStatus{}, ControlPlane: s.SnapshotShipHealthAt(now), At: now}
	for _, r := range s.SortedRegions() {
		h := s.BackupHealthOf(r.Name, now)
		p := s.BackupPolicyOf(r.Name)
		window := 2 * int64(p.DrillEvery()/time.Second)
		rs := DRRegionStatus{Region: r.Name, Simulated: h.Simulated, LastBackup: h.LastVerified, BackupMaxAgeSeconds: p.MaxAgeSeconds,
			BackupStale: h.Stale && !h.Simulated, LastDrill: h.LastDrill, LastPassedDrill: h.LastPassedDrill, DrillWindowSeconds: window,
			DrillStale: h.DrillStale && !h.Simulated, RunningBackup: h.Running, RunningDrill: s.DrillRuns[r.Name], LastRebuild: s.Rebuilds[r.Name]}
		if h.LastVerified != nil {
			age := h.AgeSeconds
			rs.BackupAgeSeconds = &age
		}
		if d := h.LastPassedDrill; d != nil {
			age := max(0, (now-d.At)/int64(time.Second))
			rs.DrillAgeSeconds = &age
		}
		if h.Simulated {
			out.Simulated = append(out.Simulated, r.Name)
		}
		if rs.BackupStale {
			rs.Missing = append(rs.Missing, h.Warning)
		}
		if rs.DrillStale {
			what := fmt.Sprintf("region %s has no restore drill passed within %s (twice its drill interval)", r.Name, time.Duration(window)*time.Second)
			if d := h.LastDrill; d != nil && d.Verdict != DrillPassed {
				what += "; its last drill " + d.ID + " " + d.Verdict
			}
			rs.Missing = append(rs.Missing, what)
		}
		out.Missing = append(out.Missing, rs.Missing...)
		out.Regions = append(out.Regions, rs)
	}
	if out.ControlPlane.Stale {
		out.Missing = append(out.Missing, "control plane: "+out.ControlPlane.Warning)
	}
	out.Stale = len(out.Missing) > 0
	return out
}
