package cluster_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/s3test"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/recovery/snaprepo"
)

// switchable is a repository whose backing store the test replaces, to
// give one cluster a good bucket, wrong credentials and a dead endpoint
// in turn.
type switchable struct {
	mu sync.Mutex
	st snaprepo.Store
}

func (s *switchable) cur() snaprepo.Store   { s.mu.Lock(); defer s.mu.Unlock(); return s.st }
func (s *switchable) set(st snaprepo.Store) { s.mu.Lock(); s.st = st; s.mu.Unlock() }
func (s *switchable) Put(ctx context.Context, n string, d []byte) error {
	return s.cur().Put(ctx, n, d)
}
func (s *switchable) Get(ctx context.Context, n string, max int64) ([]byte, error) {
	return s.cur().Get(ctx, n, max)
}
func (s *switchable) Delete(ctx context.Context, n string) error { return s.cur().Delete(ctx, n) }
func (s *switchable) Location(n string) string                   { return s.cur().Location(n) }
func (s *switchable) String() string                             { return s.cur().String() }

// TestSnapshotShippingToS3 ships control-plane snapshots to a real
// SeaweedFS bucket over TLS (S3_* settings as the servers read them):
// retention deletes the older object from the bucket, the newest reads back
// with its digest checked; wrong credentials and an endpoint nobody
// listens on are recorded as failures that say so, without the secret.
func TestSnapshotShippingToS3(t *testing.T) {
	srv := s3test.Start(t, "atomfed-snapshots")
	env := map[string]string{}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	store := func() snaprepo.Store {
		t.Helper()
		st, err := snaprepo.FromEnv(func(k string) string { return env[k] }, "/not/used/with/s3")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	good := store()
	if !strings.HasPrefix(good.Location("x.snap"), "s3://atomfed-snapshots/") {
		t.Fatalf("repository from S3_ENDPOINT: %s", good.Location("x.snap"))
	}
	repo := &switchable{st: good}
	c := testcluster.New(t, testcluster.Options{Configure: func(_ int, cfg *cluster.Config) { cfg.SnapshotRepo = repo }})
	l := c.WaitLeader()
	ctx := testcluster.Ctx(t, 2*time.Minute)
	// A long interval: only the shipments below (and the first one).
	if _, err := l.Server.Apply(ctx, fsm.SnapshotPolicySetType, fsm.SnapshotPolicySet{Policy: fsm.SnapshotPolicy{IntervalSeconds: 3600, Keep: 1}, At: 1}); err != nil {
		t.Fatal(err)
	}
	first, err := l.Server.ShipSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := l.Server.ShipSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Get(ctx, first.ID+".snap", 1<<20); !errors.Is(err, snaprepo.ErrNotFound) {
		t.Fatalf("retention (keep 1) left %s in the bucket: %v", first.ID, err)
	}
	data, err := l.Server.FetchShipped(ctx, second)
	if err != nil || int64(len(data)) != second.Size || !strings.HasPrefix(second.Location, "s3://atomfed-snapshots/atomfed/controlplane/") {
		t.Fatalf("read back %s (%s): %d bytes, %v", second.ID, second.Location, len(data), err)
	}

	catalog := func() (cat fsm.SnapshotCatalog) {
		l.Server.FSM().Read(func(s *fsm.State) { cat = s.Snapshots })
		return cat
	}
	env["S3_SECRET_ACCESS_KEY"] = "wrong-" + srv.Secret
	repo.set(store())
	if _, err := l.Server.ShipSnapshot(ctx); err == nil || !strings.Contains(err.Error(), "wrong S3 credentials") {
		t.Fatalf("shipment with a wrong secret: %v", err)
	}
	if f := catalog().LastFailure; f == nil || !strings.Contains(f.Error, "wrong S3 credentials") || strings.Contains(f.Error, srv.Secret) {
		t.Fatalf("recorded failure: %+v", f)
	}
	env["S3_SECRET_ACCESS_KEY"] = srv.Secret
	env["S3_ENDPOINT"] = "127.0.0.1:1"
	repo.set(store())
	if _, err := l.Server.ShipSnapshot(ctx); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("shipment to an endpoint nobody listens on: %v", err)
	}
	if cat := catalog(); cat.Failures != 2 || len(cat.Shipped) != 1 || cat.Shipped[0].ID != second.ID {
		t.Fatalf("catalog after two failures: %+v", cat)
	}
	repo.set(good)
	if _, err := l.Server.ShipSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if cat := catalog(); cat.LastFailure != nil || cat.Failures != 0 || len(cat.Shipped) != 1 {
		t.Fatalf("catalog after a success: %+v", cat)
	}
}
