package replication_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

func (f *fed) waitSync(id, recorded, current string) *fsm.TenantReplication {
	f.t.Helper()
	var v *fsm.TenantReplication
	testutil.Eventually(f.t, 60*time.Second, func() error {
		var err error
		if v, err = f.replication(id); err != nil {
			return err
		}
		if v.Sync == nil || v.Sync.Recorded != recorded || v.Sync.Current != current {
			return fmt.Errorf("sync: %s", js(v.Sync))
		}
		return nil
	})
	return v
}

func (f *fed) audit() *wire.AuditStatus {
	f.t.Helper()
	var a *wire.AuditStatus
	testutil.Eventually(f.t, 30*time.Second, func() error {
		var err error
		a, err = f.api.Audit(f.ctx(10*time.Second), nil)
		return err
	})
	return a
}

func (f *fed) auditIndex() uint64 { return f.audit().Index }

// auditSince returns the recent audit entries after index.
func (f *fed) auditSince(index uint64) []fsm.AuditEntry {
	f.t.Helper()
	a := f.audit()
	var out []fsm.AuditEntry
	for _, e := range a.Recent {
		if e.Index > index {
			out = append(out, e)
		}
	}
	return out
}

// commit inserts one row in its own transaction and returns how long the
// commit took.
func commit(f *fed, region string, id int) (time.Duration, error) {
	c := f.conn(region)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Exec(ctx, `INSERT INTO orders (tenant_id, id, amount, note) VALUES ('acme', $1, 1, 'sync')`, id)
	return time.Since(start), err
}

// TestSyncCommitWaitsForMirrorAndDegradesWithinBound: with sync_mode sync,
// a commit in a returns only once a mirror has the row; with every mirror
// killed, the home degrades to async within the tenant's bound, and the
// degrade is on the audit chain; a mirror's return restores sync.
func TestSyncCommitWaitsForMirrorAndDegradesWithinBound(t *testing.T) {
	const bound = 2000 * time.Millisecond
	f := newFed(t, "a", "b", "c")
	f.exec("a", ordersDDL)
	tn := acme("b", "c")
	tn.SyncMode, tn.SyncDegradeAfterMS = fsm.SyncModeSync, int(bound/time.Millisecond)
	f.putTenant(tn)
	f.waitStreaming("acme", "b", "c")
	f.waitSync("acme", fsm.SyncStateSync, fsm.SyncStateSync)
	names := f.mustValue("a", "SHOW synchronous_standby_names")
	if !strings.HasPrefix(names, "ANY 1 (") || !strings.Contains(names, fsm.TenantSubscription("acme", "b")) || !strings.Contains(names, fsm.TenantSubscription("acme", "c")) {
		t.Fatalf("synchronous_standby_names on the home is %q", names)
	}

	b, c := f.conn("b"), f.conn("c")
	for i := 1; i <= 20; i++ {
		if _, err := commit(f, "a", i); err != nil {
			t.Fatal(err)
		}
		// The commit has returned: a mirror must hold the row now.
		var nb, nc int
		ctx := f.ctx(10 * time.Second)
		if err := b.QueryRow(ctx, `SELECT count(*) FROM orders WHERE tenant_id = 'acme' AND id = $1`, i).Scan(&nb); err != nil {
			t.Fatal(err)
		}
		if err := c.QueryRow(ctx, `SELECT count(*) FROM orders WHERE tenant_id = 'acme' AND id = $1`, i).Scan(&nc); err != nil {
			t.Fatal(err)
		}
		if nb+nc == 0 {
			t.Fatalf("commit %d returned before any mirror had the row", i)
		}
	}

	before := f.auditIndex()
	killed := time.Now()
	if err := f.pg["b"].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := f.pg["c"].Kill(); err != nil {
		t.Fatal(err)
	}
	took, err := commit(f, "a", 1000)
	if err != nil {
		t.Fatal(err)
	}
	sinceKill := time.Since(killed)
	t.Logf("with every mirror down the commit waited %s and returned %s after the kill (bound %s, documented: bound + 1s)", took, sinceKill, bound)
	if took < bound/2 {
		t.Fatalf("the commit returned after %s: it did not wait for a mirror", took)
	}
	if sinceKill > bound+time.Second {
		t.Fatalf("the degrade took %s after every mirror died, over the documented bound of %s + 1s", sinceKill, bound)
	}
	v := f.waitSync("acme", fsm.SyncStateDegraded, fsm.SyncStateDegraded)
	if !strings.Contains(v.Sync.RecordedReason, "down") {
		t.Fatalf("degrade reason %q", v.Sync.RecordedReason)
	}
	found := false
	for _, e := range f.auditSince(before) {
		found = found || (e.Type == "tenant_sync_state" && e.Index == v.Sync.RecordedIndex)
	}
	if !found {
		t.Fatalf("the degrade (index %d) is not on the audit chain", v.Sync.RecordedIndex)
	}
	if names := f.mustValue("a", "SHOW synchronous_standby_names"); names != "" {
		t.Fatalf("degraded, but synchronous_standby_names is %q", names)
	}

	if err := f.pg["b"].Restart(f.ctx(time.Minute)); err != nil {
		t.Fatal(err)
	}
	f.waitSync("acme", fsm.SyncStateSync, fsm.SyncStateSync)
	f.waitStreaming("acme", "b")
	f.waitSame("orders", "acme", orderCols, "a", "b")
}

// TestSyncWaitPolicyNeverDegrades: a tenant whose policy forbids degrading
// keeps its commits waiting while every mirror is down, and they complete
// when one returns; nothing is recorded as degraded.
func TestSyncWaitPolicyNeverDegrades(t *testing.T) {
	f := newFed(t, "a", "b")
	f.exec("a", ordersDDL)
	tn := acme("b")
	tn.SyncMode, tn.SyncFallback, tn.SyncDegradeAfterMS = fsm.SyncModeSync, fsm.SyncFallbackWait, 1000
	f.putTenant(tn)
	f.waitStreaming("acme", "b")
	f.waitSync("acme", fsm.SyncStateSync, fsm.SyncStateSync)
	if err := f.pg["b"].Kill(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := commit(f, "a", 1); done <- err }()
	f.waitSync("acme", fsm.SyncStateSync, "waiting")
	select {
	case err := <-done:
		t.Fatalf("a commit returned with every mirror down under the wait policy (err %v)", err)
	case <-time.After(3 * time.Second): // three times the bound a degrade tenant would have
	}
	if err := f.pg["b"].Restart(f.ctx(time.Minute)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiting commit did not complete after the mirror returned")
	}
	v := f.waitSync("acme", fsm.SyncStateSync, fsm.SyncStateSync)
	if v.Sync.Recorded != fsm.SyncStateSync {
		t.Fatalf("recorded %q", v.Sync.Recorded)
	}
	f.waitSame("orders", "acme", orderCols, "a", "b")
}
