package cluster_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/recovery/snaprepo"
)

// TestSnapshotShippingAndRetention: every server has the repository; the
// leader ships on a one-second policy, keeps two, and a shipped archive
// reads back through FetchShipped (digest checked) and verifies as an
// archive; a changed object is refused; a repository that went away is
// recorded as a failure, and the schedule recovers once it is back.
func TestSnapshotShippingAndRetention(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	repo, err := snaprepo.NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *cluster.Config) { cfg.SnapshotRepo = repo }})
	l := c.WaitLeader()
	ctx := testcluster.Ctx(t, time.Minute)
	if _, err := l.Server.Apply(ctx, fsm.SnapshotPolicySetType, fsm.SnapshotPolicySet{Policy: fsm.SnapshotPolicy{IntervalSeconds: 1, Keep: 2}, At: 1}); err != nil {
		t.Fatal(err)
	}
	catalog := func() (cat fsm.SnapshotCatalog) {
		l.Server.FSM().Read(func(s *fsm.State) { cat = s.Snapshots })
		return cat
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if cat := catalog(); cat.Removed < 1 || len(cat.Shipped) != 2 {
			return errors.New("no retention yet")
		}
		return nil
	})
	sn := catalog().Shipped[1]
	data, err := l.Server.FetchShipped(ctx, sn)
	if err != nil {
		t.Fatal(err)
	}
	if meta, _, err := cluster.ReadArchive(bytes.NewReader(data)); err != nil || meta.Index != sn.Index {
		t.Fatalf("shipped archive: %+v %v", meta, err)
	}
	bad := *sn
	bad.Digest = sn.StateDigest // not the object's
	if _, err := l.Server.FetchShipped(ctx, &bad); !hasCode(err, "snapshot_digest_mismatch") {
		t.Fatalf("fetch with another digest: %v", err)
	}

	if _, err := l.Server.Apply(ctx, fsm.SnapshotPolicySetType, fsm.SnapshotPolicySet{Policy: fsm.SnapshotPolicy{IntervalSeconds: 3600, Keep: 2}, At: 2}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a shipment in flight ends
	if err := os.Rename(dir, dir+".gone"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Server.ShipSnapshot(ctx); err == nil {
		t.Fatal("shipped to a repository that is a file")
	}
	if f := catalog().LastFailure; f == nil || f.Location != dir {
		t.Fatalf("failure not recorded: %+v", catalog())
	}
	os.Remove(dir)
	if err := os.Rename(dir+".gone", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Server.ShipSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if cat := catalog(); cat.LastFailure != nil || len(cat.Shipped) != 2 {
		t.Fatalf("after a success: %+v", cat)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("repository holds %d objects, want 2", len(ents))
	}
}

func hasCode(err error, code string) bool {
	var fe *fsm.Error
	return errors.As(err, &fe) && fe.Code == code
}
