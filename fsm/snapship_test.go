package fsm

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func shippedTest(id string, at int64) *ShippedSnapshot {
	return &ShippedSnapshot{ID: id, Index: 7, Digest: strings.Repeat("a", 64), StateDigest: strings.Repeat("b", 64),
		Size: 100, At: at, Location: "/repo/" + id + ".snap", Node: "s1"}
}

// snapshipRoundTrips exercises the shipped-snapshot commands; called from
// TestCommandRoundTrip.
func snapshipRoundTrips(t *testing.T, check func(MessageType, any, func(*State, *ApplyResult))) {
	check(SnapshotPolicySetType, SnapshotPolicySet{Policy: SnapshotPolicy{IntervalSeconds: 60, Keep: 2, Default: true}, At: 1},
		func(s *State, res *ApplyResult) {
			p := s.SnapshotPolicyOf()
			if p.IntervalSeconds != 60 || p.Keep != 2 || p.Default || p.ModifyIndex != res.Index || s.TableIndex(TableSnapshots) != res.Index {
				t.Fatalf("policy after set: %+v", p)
			}
		})
	check(SnapshotShippedType, SnapshotShipped{Snapshot: shippedTest("s1", 10), At: 10}, func(s *State, res *ApplyResult) {
		if l := s.LatestShipped(); l == nil || l.ID != "s1" || s.ShippedByID("latest") != l || s.ShippedByID("s1") != l {
			t.Fatalf("catalog after a shipment: %+v", s.Snapshots)
		}
	})
	check(SnapshotShippedType, SnapshotShipped{Error: "repository unreachable", Location: "/repo", Node: "s1", At: 20}, func(s *State, res *ApplyResult) {
		f := s.Snapshots.LastFailure
		if f == nil || f.Error != "repository unreachable" || s.Snapshots.Failures != 1 || len(s.Snapshots.Shipped) != 1 {
			t.Fatalf("catalog after a failure: %+v", s.Snapshots)
		}
	})
	check(SnapshotShippedType, SnapshotShipped{Snapshot: shippedTest("s2", 30), Removed: []string{"s1"}, At: 30}, func(s *State, res *ApplyResult) {
		c := s.Snapshots
		if len(c.Shipped) != 1 || c.Shipped[0].ID != "s2" || c.LastFailure != nil || c.Failures != 0 || c.Removed != 1 {
			t.Fatalf("catalog after a shipment with retention: %+v", c)
		}
	})
}

func TestSnapshotShippedRefusals(t *testing.T) {
	h := agentHarness(t)
	apply := func(cmd SnapshotShipped) error { return h.apply(SnapshotShippedType, cmd).Err }
	catalog := func() (c SnapshotCatalog) {
		h.f.Read(func(s *State) { c = s.Snapshots })
		return c
	}
	bad := shippedTest("../x", 5)
	noDigest := shippedTest("ok", 5)
	noDigest.Digest = "zz"
	for name, cmd := range map[string]SnapshotShipped{
		"neither":       {At: 5},
		"both":          {Snapshot: shippedTest("a", 5), Error: "x", At: 5},
		"path id":       {Snapshot: bad, At: 5},
		"latest id":     {Snapshot: shippedTest("latest", 5), At: 5},
		"bad digest":    {Snapshot: noDigest, At: 5},
		"no time":       {Error: "x"},
		"error too big": {Error: strings.Repeat("x", MaxShipErrorLen+1), At: 5},
	} {
		if err := apply(cmd); codeOf(err) == "" {
			t.Errorf("%s: applied (%v)", name, err)
		}
	}
	if c := catalog(); !c.empty() {
		t.Fatalf("a refused shipment changed the catalog: %+v", c)
	}
	if err := apply(SnapshotShipped{Snapshot: shippedTest("a", 5), At: 5}); err != nil {
		t.Fatal(err)
	}
	if err := apply(SnapshotShipped{Snapshot: shippedTest("a", 6), At: 6}); err == nil {
		t.Fatal("a duplicate id was recorded")
	}
	for _, p := range []SnapshotPolicy{{IntervalSeconds: 0, Keep: 1}, {IntervalSeconds: 60, Keep: 0}, {IntervalSeconds: 60, Keep: MaxSnapshotKeep + 1}} {
		if ValidateSnapshotPolicy(&p) == nil {
			t.Errorf("policy %+v accepted", p)
		}
	}
}

func TestSnapshotShipDueAndHealth(t *testing.T) {
	s := newState()
	now := int64(1000 * time.Hour)
	if !s.SnapshotShipDue(now) {
		t.Fatal("nothing shipped yet, and no shipment is due")
	}
	h := s.SnapshotShipHealthAt(now)
	if !h.Stale || h.Policy.IntervalSeconds != DefaultSnapshotIntervalSeconds || !h.Policy.Default || h.Policy.Keep != DefaultSnapshotKeep {
		t.Fatalf("health with nothing shipped: %+v", h)
	}
	s.Snapshots.Policy = &SnapshotPolicy{IntervalSeconds: 60, Keep: 3}
	s.Snapshots.Shipped = []*ShippedSnapshot{shippedTest("a", now-int64(30*time.Second))}
	if s.SnapshotShipDue(now) || s.SnapshotShipHealthAt(now).Stale {
		t.Fatal("a shipment 30s old with a 60s interval is due or stale")
	}
	if !s.SnapshotShipDue(now + int64(30*time.Second)) {
		t.Fatal("no shipment due once the interval passed")
	}
	s.Snapshots.LastFailure = &SnapshotShipFailure{At: now + int64(40*time.Second), Error: "unreachable"}
	if s.SnapshotShipDue(now + int64(50*time.Second)) {
		t.Fatal("a failure 10s ago is retried before the next tick")
	}
	h = s.SnapshotShipHealthAt(now + int64(91*time.Second))
	if !h.Stale || !strings.Contains(h.Warning, "unreachable") || !strings.Contains(h.Warning, "a") {
		t.Fatalf("a shipment 121s old with a 60s interval and a failure since: %+v", h)
	}
	h = s.SnapshotShipHealthAt(now + int64(80*time.Second))
	if h.Stale {
		t.Fatalf("a shipment 110s old with a 60s interval is stale: %+v", h)
	}
}

func TestSnapshotCatalogSnapshotAndRestore(t *testing.T) {
	s := newState()
	s.Snapshots = SnapshotCatalog{Policy: &SnapshotPolicy{IntervalSeconds: 5, Keep: 2}, Shipped: []*ShippedSnapshot{shippedTest("a", 1), shippedTest("b", 2)},
		LastFailure: &SnapshotShipFailure{At: 3, Error: "full"}, Failures: 1, Removed: 4}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, s); err != nil {
		t.Fatal(err)
	}
	back, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if c := back.Snapshots; c.Policy.Keep != 2 || len(c.Shipped) != 2 || c.Shipped[1].ID != "b" || c.LastFailure.Error != "full" || c.Removed != 4 {
		t.Fatalf("catalog after a snapshot round trip: %+v", c)
	}
	for name, bad := range map[string]string{
		"bad policy":   strings.Replace(buf.String(), `"keep":2`, `"keep":0`, 1),
		"duplicate id": strings.Replace(buf.String(), `"id":"b"`, `"id":"a"`, 1),
		"path id":      strings.Replace(buf.String(), `"id":"b"`, `"id":"../b"`, 1),
		"bad digest":   strings.Replace(buf.String(), strings.Repeat("a", 64), "nope", 1),
	} {
		if _, err := ReadSnapshot(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: a snapshot with an invalid catalog was read", name)
		}
	}
	// An empty catalog leaves no trace in a snapshot.
	buf.Reset()
	if err := WriteSnapshot(&buf, newState()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "snapshot_catalog") {
		t.Fatal("an empty catalog is written into snapshots")
	}
	// A restore keeps the live catalog: the repository still holds it.
	old := newState()
	old.Index, old.AuditHead = 3, strings.Repeat("0", 64)
	var ob bytes.Buffer
	if err := WriteSnapshot(&ob, old); err != nil {
		t.Fatal(err)
	}
	s.Index, s.AuditHead = 10, strings.Repeat("1", 64)
	prepared, err := PrepareRestore(ob.Bytes(), s, RestoreRecord{Digest: strings.Repeat("c", 64), RequestedBy: "x", At: 5})
	if err != nil {
		t.Fatal(err)
	}
	after, err := ReadSnapshot(bytes.NewReader(prepared))
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Snapshots.Shipped) != 2 || after.Snapshots.Policy.IntervalSeconds != 5 {
		t.Fatalf("a restore dropped the live catalog: %+v", after.Snapshots)
	}
}

func TestDRStatus(t *testing.T) {
	now := int64(1000 * time.Hour)
	s := newState()
	for _, r := range []string{"us-east", "sim"} {
		s.Regions[r] = &Region{Name: r}
	}
	s.Databases["us-east"] = &RegionDatabase{Region: "us-east"}
	s.Backups["us-east-1"] = &Backup{ID: "us-east-1", Region: "us-east", Type: BackupFull, Status: BackupSucceeded, RecordedAt: now - int64(time.Hour),
		CreateIndex: 1, BackupResult: &BackupResult{Label: "L", Verified: true}}
	s.DrillRuns["us-east"] = &Drill{ID: "us-east-d2", Region: "us-east", Status: DrillPending}
	s.Rebuilds["us-east"] = &Rebuild{ID: "us-east-r3", Region: "us-east", Status: RebuildPending}
	st := s.DRStatusAt(now)
	if !st.Stale || len(st.Regions) != 2 || len(st.Simulated) != 1 || st.Simulated[0] != "sim" {
		t.Fatalf("status: %+v", st)
	}
	var us DRRegionStatus
	for _, r := range st.Regions {
		if r.Region == "us-east" {
			us = r
		}
	}
	if us.BackupStale || !us.DrillStale || *us.BackupAgeSeconds != 3600 || us.RunningDrill == nil || us.LastRebuild == nil || us.LastRebuild.ID != "us-east-r3" || us.DrillWindowSeconds != 2*DefaultDrillEverySeconds {
		t.Fatalf("us-east: %+v", us)
	}
	want := []string{"region us-east has no restore drill passed within 48h0m0s (twice its drill interval)", "control plane: no control-plane snapshot shipped to the repository yet"}
	if strings.Join(st.Missing, "|") != strings.Join(want, "|") {
		t.Fatalf("missing %q, want %q", st.Missing, want)
	}
	s.Drills["us-east-d2"] = &Drill{ID: "us-east-d2", Region: "us-east", Status: DrillPassed, RecordedAt: now - int64(time.Hour), CreateIndex: 2}
	s.Snapshots.Shipped = []*ShippedSnapshot{shippedTest("a", now-int64(time.Minute))}
	if st := s.DRStatusAt(now); st.Stale || len(st.Missing) != 0 {
		t.Fatalf("status with everything fresh: %+v", st)
	}
}
