package policy

import (
	"context"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Capability is one piece a policy needs, and whether it is in place.
type Capability struct {
	InPlace bool   `json:"in_place"`
	What    string `json:"what"`
	// Where names the code, endpoint or tests that provide it.
	Where []string `json:"where,omitempty"`
}

// SnapshotsEvidence is P7's evidence.
type SnapshotsEvidence struct {
	OnDemandSnapshots  Capability `json:"on_demand_snapshots"`
	RaftSnapshots      Capability `json:"raft_snapshots"`
	FailoverTests      Capability `json:"failover_tests"`
	ScheduledSnapshots Capability `json:"scheduled_snapshots"`
	RestoreDrills      Capability `json:"restore_drills"`
	RegionFailover     Capability `json:"region_failover"`
	// LastSnapshotIndex is this server's latest local Raft snapshot
	// ("0": none yet).
	LastSnapshotIndex string `json:"last_snapshot_index"`
	// RegionBackups is each region's newest verified backup against its
	// policy's bound (simulated regions, without a database, listed as
	// such).
	RegionBackups []fsm.BackupHealth `json:"region_backups"`
	// LastFailover is the newest failover that ran within
	// FailoverDrillWindow (the failover tests' evidence).
	LastFailover *fsm.FailoverRecord `json:"last_failover,omitempty"`
}

// SnapshotsAndFailover is P7. It states what is and is not in place: the
// control plane's state is snapshotted on demand and by Raft, each
// region's database is backed up on a schedule, verified, and restored in
// drills (the catalogs say whether every region has a verified backup
// younger than its policy's bound and a drill that passed within twice
// its drill interval), region failover is built, and the failover tests
// count only a failover that actually ran within FailoverDrillWindow
// (failover.go); control-plane snapshots shipped to the repository are
// not built yet, so P7 blocks, naming what is missing.
func SnapshotsAndFailover(ctx context.Context, in *Input) structs.PolicyResult {
	backups, stale, undrilled := regionBackups(in)
	ev := SnapshotsEvidence{
		OnDemandSnapshots: Capability{InPlace: true,
			What:  "the federation state is saved as a verified archive on demand and restored on every server",
			Where: []string{"GET /v1/snapshot", "PUT /v1/snapshot", "atomfed snapshot save|restore"}},
		RaftSnapshots: Capability{InPlace: true,
			What:  "each server compacts its Raft log into local snapshots (every 120 s when 8192 entries accumulated); a restarted or lagging server catches up from them",
			Where: []string{"cluster: SnapshotInterval, SnapshotThreshold"}},
		ScheduledSnapshots: Capability{InPlace: len(stale) == 0,
			What:  "every region with a database has a verified pgBackRest backup younger than its backup policy's max age",
			Where: []string{"GET /v1/backups", "atomfed backup list", "internal/e2e: TestBackupsEndToEnd"}},
		RestoreDrills: Capability{InPlace: len(undrilled) == 0,
			What:  "every region with a database has a restore drill of a verified backup that passed within twice its policy's drill interval (restore into a scratch PostgreSQL, every table read)",
			Where: []string{"GET /v1/regions/{name}/drills", "atomfed backup drills", "internal/e2e: TestBackupsEndToEnd"}},
		LastSnapshotIndex: in.Source.Stats()["last_snapshot_index"],
		RegionBackups:     backups,
	}
	// The failover parts (failover.go): a failover that actually ran.
	var lastFailover *fsm.FailoverRecord
	var missing []string
	ev.FailoverTests, ev.RegionFailover, lastFailover, missing = failoverCapabilities(in)
	ev.LastFailover = lastFailover
	reason := "shipped control-plane snapshots are not built yet; on-demand snapshots, scheduled verified region backups, region failover and restore drills are in place"
	if lastFailover != nil {
		reason += "; " + ev.FailoverTests.What
	}
	if len(stale) > 0 {
		ev.ScheduledSnapshots.What = "regions without a verified backup younger than their policy's max age: " + strings.Join(stale, "; ")
		missing = append(missing, stale...)
	}
	if len(undrilled) > 0 {
		ev.RestoreDrills.What = "regions without a restore drill passed within twice their drill interval: " + strings.Join(undrilled, ", ")
		missing = append(missing, "no recent passed restore drill in "+strings.Join(undrilled, ", "))
	}
	if len(missing) > 0 {
		reason = strings.Join(missing, "; ") + "; and " + reason
	}
	return structs.PolicyResult{Status: structs.PolicyBlock, Reason: reason, Evidence: ev}
}

// regionBackups returns every region's backup health and, among the
// regions with a database, why backups are stale and which have no
// recent passed drill.
func regionBackups(in *Input) ([]fsm.BackupHealth, []string, []string) {
	out := []fsm.BackupHealth{}
	var stale, undrilled []string
	in.Source.FSM().Read(func(s *fsm.State) {
		for _, r := range s.SortedRegions() {
			h := s.BackupHealthOf(r.Name, in.Now.UnixNano())
			h.Running = nil
			out = append(out, h)
			if h.Stale && !h.Simulated {
				stale = append(stale, h.Warning)
			}
			if h.DrillStale && !h.Simulated {
				undrilled = append(undrilled, r.Name)
			}
		}
	})
	return out, stale, undrilled
}
