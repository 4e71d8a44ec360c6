package pgtest

import (
	"context"
	"time"
)

// TB is the part of testing.TB that New needs (so this package does not
// import testing into the atomfed binary).
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// New starts a cluster for a test and removes it when the test ends. It
// fails the test when no PostgreSQL is installed: replication tests need
// the real thing (.ci/run installs it).
func New(t TB, o Options) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start PostgreSQL %s: %v", o.Name, err)
	}
	t.Cleanup(func() {
		if err := c.Remove(); err != nil {
			t.Logf("remove PostgreSQL %s: %v", c.Name, err)
		}
	})
	return c
}

// NewFederation starts one cluster per name, sharing a replication
// password so that each cluster's passfile opens every other one.
func NewFederation(t TB, names ...string) map[string]*Cluster {
	t.Helper()
	pw := randomSecret()
	out := make(map[string]*Cluster, len(names))
	for _, n := range names {
		out[n] = New(t, Options{Name: n, ReplicationPassword: pw})
	}
	return out
}
