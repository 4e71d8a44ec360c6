package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// drState is a federation at now with two regions with databases
// (us-east, eu-west) and a simulated one (ap-sim): each database region
// has a verified backup an hour old and a drill passed an hour ago, and a
// control-plane snapshot was shipped a minute ago on a 15-minute policy.
func drState(now int64) *fsm.State {
	hour := int64(time.Hour)
	s := &fsm.State{Regions: map[string]*fsm.Region{}, Databases: map[string]*fsm.RegionDatabase{}, Backups: map[string]*fsm.Backup{},
		Drills: map[string]*fsm.Drill{}, BackupPolicies: map[string]*fsm.BackupPolicy{}, BackupRuns: map[string]*fsm.Backup{}, DrillRuns: map[string]*fsm.Drill{}}
	for i, r := range []string{"us-east", "eu-west", "ap-sim"} {
		s.Regions[r] = &fsm.Region{Name: r}
		if r == "ap-sim" {
			continue
		}
		s.Databases[r] = &fsm.RegionDatabase{Region: r}
		s.Backups[r+"-1"] = &fsm.Backup{ID: r + "-1", Region: r, Type: fsm.BackupFull, Status: fsm.BackupSucceeded, RecordedAt: now - hour,
			CreateIndex: uint64(i + 1), BackupResult: &fsm.BackupResult{Label: "L", Verified: true}}
		s.Drills[r+"-d2"] = &fsm.Drill{ID: r + "-d2", Region: r, Status: fsm.DrillPassed, RecordedAt: now - hour, CreateIndex: uint64(i + 10)}
	}
	s.Snapshots.Shipped = []*fsm.ShippedSnapshot{{ID: "s1", Index: 5, Digest: strings.Repeat("a", 64), StateDigest: strings.Repeat("b", 64),
		Size: 10, At: now - int64(time.Minute), Location: "/r/s1.snap"}}
	return s
}

func TestP7NamesWhatIsMissing(t *testing.T) {
	now := int64(10_000 * time.Hour)
	// Everything in place but a failover that actually ran: P7 blocks on
	// that alone, and lists the simulated region as such.
	res := snapshotsAndFailover(drState(now), now, "3")
	ev := res.Evidence.(SnapshotsEvidence)
	if res.Status != structs.PolicyBlock || !strings.HasPrefix(res.Reason, "no failover ran within 720h0m0s: run a failover drill") ||
		!strings.Contains(res.Reason, "; on-demand snapshots, region failover, shipped control-plane snapshots, scheduled verified region backups and restore drills are in place; simulated regions (no database, nothing to back up): ap-sim") ||
		!ev.ScheduledSnapshots.InPlace || !ev.RestoreDrills.InPlace || !ev.ShippedSnapshots.InPlace ||
		len(ev.SimulatedRegions) != 1 || ev.SimulatedRegions[0] != "ap-sim" || ev.ControlPlaneSnapshots.Last.ID != "s1" {
		t.Fatalf("P7 with backups, drills and shipments in place: %s %q %+v", res.Status, res.Reason, ev)
	}
	// With a failover drill that ran within the window, P7 passes and
	// names the drill as its evidence; one older than the window does not
	// count.
	drilled := drState(now)
	drilled.FailoverHistory = []*fsm.FailoverRecord{{ID: 40, Tenant: "drill", From: "us-east", To: "eu-west", Mode: "manual", Forced: true,
		StartedAt: now - int64(2*time.Hour), CommittedAt: now - int64(2*time.Hour) + 1e9, EndedAt: now - int64(2*time.Hour) + 2e9, RTOMS: 1000, RPOLagMS: 40}}
	if res := snapshotsAndFailover(drilled, now, "3"); res.Status != structs.PolicyPass ||
		res.Evidence.(SnapshotsEvidence).LastFailover == nil || !strings.Contains(res.Evidence.(SnapshotsEvidence).FailoverTests.What, "tenant drill us-east -> eu-west") {
		t.Fatalf("P7 with everything in place and a failover drill 2 h ago: %s %q", res.Status, res.Reason)
	}
	drilled.FailoverHistory[0].EndedAt = now - int64(31*24*time.Hour)
	if res := snapshotsAndFailover(drilled, now, "3"); res.Status != structs.PolicyBlock || !strings.Contains(res.Reason, "no failover ran within") {
		t.Fatalf("P7 with a failover drill 31 days ago: %s %q", res.Status, res.Reason)
	}
	var ev2 SnapshotsEvidence
	if m := append(backupsPart(drState(now), now, &ev2), shippedPart(drState(now), now, &ev2)...); len(m) != 0 {
		t.Fatalf("the backup and shipment parts miss %v with everything in place", m)
	}

	cases := map[string]struct {
		change func(*fsm.State)
		want   []string
	}{
		"stale backup": {func(s *fsm.State) { s.Backups["eu-west-1"].RecordedAt = now - 27*int64(time.Hour) }, // default bound 26 h
			[]string{"eu-west", "over the policy's max age"}},
		"unverified backup": {func(s *fsm.State) { s.Backups["us-east-1"].Verified = false },
			[]string{"region us-east has no verified backup"}},
		"failed drill": {func(s *fsm.State) {
			s.Drills["us-east-d2"].RecordedAt = now - 49*int64(time.Hour) // window: twice a day
			s.Drills["us-east-d3"] = &fsm.Drill{ID: "us-east-d3", Region: "us-east", Status: fsm.DrillFailed, RecordedAt: now, CreateIndex: 20}
		}, []string{"no restore drill passed within its window in us-east"}},
		"nothing shipped": {func(s *fsm.State) { s.Snapshots.Shipped = nil },
			[]string{"control plane: no control-plane snapshot shipped"}},
		"shipment late and failing": {func(s *fsm.State) {
			s.Snapshots.Policy = &fsm.SnapshotPolicy{IntervalSeconds: 20, Keep: 2}
			s.Snapshots.LastFailure = &fsm.SnapshotShipFailure{At: now, Error: "the repository is read-only"}
		}, []string{"control plane: the last control-plane snapshot (s1) was shipped 60s ago, not within twice the interval (40s)", "read-only"}},
	}
	for name, c := range cases {
		s := drState(now)
		c.change(s)
		res := snapshotsAndFailover(s, now, "3")
		if res.Status != structs.PolicyBlock {
			t.Errorf("%s: P7 %s", name, res.Status)
		}
		for _, w := range c.want {
			if !strings.Contains(res.Reason, w) {
				t.Errorf("%s: P7's reason %q does not say %q", name, res.Reason, w)
			}
		}
	}
}
