// Package pgtest starts PostgreSQL clusters for tests and removes them
// when the test ends. The clusters themselves are internal/pglocal's, the
// production helper behind `atomfed dev`, which the bench tool and the
// chaos suite start directly; pgtest only ties one to a test's lifetime
// (for the replication tests, beside a testcluster). It fails the test
// when no PostgreSQL is installed: replication tests need the real thing
// (.ci/run installs it).
package pgtest

import (
	"context"
	"time"

	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// New starts a cluster for a test and removes it when the test ends.
func New(t testutil.TB, o pglocal.Options) *pglocal.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := pglocal.Start(ctx, o)
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
func NewFederation(t testutil.TB, names ...string) map[string]*pglocal.Cluster {
	t.Helper()
	pw := pglocal.NewSecret()
	out := make(map[string]*pglocal.Cluster, len(names))
	for _, n := range names {
		out[n] = New(t, pglocal.Options{Name: n, ReplicationPassword: pw})
	}
	return out
}
