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
	// ShippedSnapshots: control-plane snapshots shipped to the
	// repository on the snapshot policy's schedule.
	ShippedSnapshots Capability `json:"shipped_snapshots"`
	RegionFailover   Capability `json:"region_failover"`
	// LastSnapshotIndex is this server's latest local Raft snapshot
	// ("0": none yet).
	LastSnapshotIndex string `json:"last_snapshot_index"`
	// RegionBackups is each region's newest verified backup against its
	// policy's bound (simulated regions, without a database, listed as
	// such).
	RegionBackups []fsm.BackupHealth `json:"region_backups"`
	// ControlPlaneSnapshots is the last shipped control-plane snapshot
	// against the schedule.
	ControlPlaneSnapshots fsm.SnapshotShipHealth `json:"controlplane_snapshots"`
	// SimulatedRegions have no database: nothing of them is backed up,
	// and they are listed instead of blocking.
	SimulatedRegions []string `json:"simulated_regions,omitempty"`
	// LastFailover is the newest failover that ran within
	// FailoverDrillWindow (the failover tests' evidence).
	LastFailover *fsm.FailoverRecord `json:"last_failover,omitempty"`
}

// SnapshotsAndFailover is P7. It passes only when every part is in place,
// each part appending what it misses: every region with a database has a
// verified backup younger than its policy's bound and a restore drill
// passed within twice its drill interval (backupsPart), the control
// plane's Raft snapshot is shipped to the repository on schedule, the last
// shipment younger than twice the policy's interval (shippedPart), and
// region failover is in place (failoverPart). Otherwise it blocks, naming
// each region and what it misses.
func SnapshotsAndFailover(ctx context.Context, in *Input) structs.PolicyResult {
	lastIndex := in.Source.Stats()["last_snapshot_index"]
	var res structs.PolicyResult
	in.Source.FSM().Read(func(s *fsm.State) { res = snapshotsAndFailover(s, in.Now.UnixNano(), lastIndex) })
	return res
}

// snapshotsAndFailover evaluates P7 on a state at now (unix ns).
func snapshotsAndFailover(s *fsm.State, now int64, lastIndex string) structs.PolicyResult {
	ev := SnapshotsEvidence{
		OnDemandSnapshots: Capability{InPlace: true,
			What:  "the federation state is saved as a verified archive on demand and restored on every server",
			Where: []string{"GET /v1/snapshot", "PUT /v1/snapshot", "atomfed snapshot save|restore"}},
		RaftSnapshots: Capability{InPlace: true,
			What:  "each server compacts its Raft log into local snapshots (every 120 s when 8192 entries accumulated); a restarted or lagging server catches up from them",
			Where: []string{"cluster: SnapshotInterval, SnapshotThreshold"}},
		LastSnapshotIndex: lastIndex,
	}
	var missing []string
	missing = append(missing, backupsPart(s, now, &ev)...)
	missing = append(missing, shippedPart(s, now, &ev)...)
	missing = append(missing, failoverPart(s, now, &ev)...)
	if len(missing) > 0 {
		reason := strings.Join(missing, "; ")
		if in := inPlace(&ev); len(in) > 0 {
			reason += "; " + andList(in) + " are in place"
		}
		if len(ev.SimulatedRegions) > 0 {
			reason += "; simulated regions (no database, nothing to back up): " + strings.Join(ev.SimulatedRegions, ", ")
		}
		return structs.PolicyResult{Status: structs.PolicyBlock, Reason: reason, Evidence: ev}
	}
	reason := "every region has a verified backup within its bound and a passed restore drill within its window, control-plane snapshots are shipped on schedule, and region failover is in place"
	if len(ev.SimulatedRegions) > 0 {
		reason += "; simulated regions (no database, nothing to back up): " + strings.Join(ev.SimulatedRegions, ", ")
	}
	return structs.PolicyResult{Status: structs.PolicyPass, Reason: reason, Evidence: ev}
}

// backupsPart judges every region's backups and drills from the catalogs.
func backupsPart(s *fsm.State, now int64, ev *SnapshotsEvidence) []string {
	ev.RegionBackups = []fsm.BackupHealth{}
	var stale, undrilled []string
	for _, r := range s.SortedRegions() {
		h := s.BackupHealthOf(r.Name, now)
		h.Running = nil
		ev.RegionBackups = append(ev.RegionBackups, h)
		switch {
		case h.Simulated:
			ev.SimulatedRegions = append(ev.SimulatedRegions, r.Name)
		case h.Stale:
			stale = append(stale, h.Warning)
		}
		if h.DrillStale && !h.Simulated {
			undrilled = append(undrilled, r.Name)
		}
	}
	ev.ScheduledSnapshots = Capability{InPlace: len(stale) == 0,
		What:  "every region with a database has a verified pgBackRest backup younger than its backup policy's max age",
		Where: []string{"GET /v1/backups", "atomfed backup list", "atomfed dr status", "internal/e2e: TestBackupsEndToEnd"}}
	ev.RestoreDrills = Capability{InPlace: len(undrilled) == 0,
		What:  "every region with a database has a restore drill of a verified backup that passed within twice its policy's drill interval (restore into a scratch PostgreSQL, every table read)",
		Where: []string{"GET /v1/regions/{name}/drills", "atomfed backup drills", "atomfed dr status", "internal/e2e: TestBackupsEndToEnd"}}
	var missing []string
	if len(stale) > 0 {
		ev.ScheduledSnapshots.What = "regions without a verified backup younger than their policy's max age: " + strings.Join(stale, "; ")
		missing = append(missing, stale...)
	}
	if len(undrilled) > 0 {
		ev.RestoreDrills.What = "regions without a restore drill passed within twice their drill interval: " + strings.Join(undrilled, ", ")
		missing = append(missing, "no restore drill passed within its window in "+strings.Join(undrilled, ", "))
	}
	return missing
}

// shippedPart judges the control plane's shipped snapshots: the last one
// must be younger than twice the snapshot policy's interval.
func shippedPart(s *fsm.State, now int64, ev *SnapshotsEvidence) []string {
	ev.ControlPlaneSnapshots = s.SnapshotShipHealthAt(now)
	h := ev.ControlPlaneSnapshots
	ev.ShippedSnapshots = Capability{InPlace: !h.Stale,
		What:  "the leader ships the Raft state archive to the snapshot repository on the snapshot policy's schedule, with retention; the last shipment is younger than twice the interval",
		Where: []string{"GET /v1/snapshots", "atomfed snapshot list|ship|restore --from-repo", "internal/e2e: TestShippedSnapshots"}}
	if h.Stale {
		ev.ShippedSnapshots.What = "control-plane snapshots are not shipped on schedule: " + h.Warning
		return []string{"control plane: " + h.Warning}
	}
	return nil
}

// failoverPart judges region failover.
func failoverPart(s *fsm.State, now int64, ev *SnapshotsEvidence) []string {
	var missing []string
	ev.FailoverTests, ev.RegionFailover, ev.LastFailover, missing = failoverCapabilities(s, now)
	return missing
}

// inPlace names the parts in place, restore drills last.
func inPlace(ev *SnapshotsEvidence) []string {
	var out []string
	for _, c := range []struct {
		ok   bool
		name string
	}{{ev.OnDemandSnapshots.InPlace, "on-demand snapshots"}, {ev.FailoverTests.InPlace, "failover tests"},
		{ev.RegionFailover.InPlace, "region failover"}, {ev.ShippedSnapshots.InPlace, "shipped control-plane snapshots"},
		{ev.ScheduledSnapshots.InPlace, "scheduled verified region backups"}, {ev.RestoreDrills.InPlace, "restore drills"}} {
		if c.ok {
			out = append(out, c.name)
		}
	}
	return out
}

func andList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}
