package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// blockedQuery is a GET running in the background.
type blockedQuery struct {
	start time.Time
	done  chan struct{}
	resp  *testcluster.Response
	err   error
	end   time.Time
}

// block starts GET path on n and waits until waitOn is serving it, so that
// anything the test does next happens while the query is blocked.
func block(t *testing.T, n, waitOn *testcluster.Node, path string) *blockedQuery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	q := &blockedQuery{start: time.Now(), done: make(chan struct{})}
	go func() {
		defer close(q.done)
		q.resp, q.err = n.DoCtx(ctx, http.MethodGet, path, nil, nil)
		q.end = time.Now()
	}()
	bare := path
	for i, ch := range path {
		if ch == '?' {
			bare = path[:i]
			break
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		select {
		case <-q.done:
			t.Fatalf("GET %s returned at once instead of blocking: %v %s", path, q.err, body(q.resp))
		default:
		}
		if waitOn.InFlight(bare) == 0 {
			return fmt.Errorf("%s is not serving GET %s yet", waitOn.ID, bare)
		}
		return nil
	})
	return q
}

// stillBlocked asserts that q has not returned within d. It is an
// assertion about time passing, not a synchronisation.
func (q *blockedQuery) stillBlocked(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case <-q.done:
		t.Fatalf("blocking query returned %s: %v %s", why, q.err, body(q.resp))
	case <-time.After(d):
	}
}

// wait returns q's answer, failing the test if it takes longer than d.
func (q *blockedQuery) wait(t *testing.T, d time.Duration) *testcluster.Response {
	t.Helper()
	select {
	case <-q.done:
	case <-time.After(d):
		t.Fatalf("blocking query still blocked after %s", d)
	}
	if q.err != nil {
		t.Fatalf("blocking query: %v", q.err)
	}
	return q.resp
}

func body(r *testcluster.Response) string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf("%d %s", r.Status, r.Body)
}

func tenantsIndex(t *testing.T, n *testcluster.Node, q string) uint64 {
	t.Helper()
	r := do(t, n, http.MethodGet, "/v1/tenants"+q, nil, nil)
	if r.Status != http.StatusOK || r.Index() == 0 {
		t.Fatalf("GET /v1/tenants%s: %d, index %d: %s", q, r.Status, r.Index(), r.Body)
	}
	return r.Index()
}

// TestBlockingQuery checks ?index=N&wait=D on the tenants list: it returns
// because a tenant write moved the index past N, long before the wait; with
// no write it returns after the wait with the same index; and a region write
// does not wake it, because indexes are per table.
func TestBlockingQuery(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	mustWrite(t, l, http.MethodPut, "/v1/regions/home", regionJSON("home"), http.StatusCreated)

	// First with a tenants table that has never been written.
	t.Run("region write does not wake an empty table", func(t *testing.T) {
		n := tenantsIndex(t, l, "")
		q := block(t, l, l, "/v1/tenants?index="+strconv.FormatUint(n, 10)+"&wait=30s")
		mustWrite(t, l, http.MethodPut, "/v1/regions/other", regionJSON("other"), http.StatusCreated)
		q.stillBlocked(t, 500*time.Millisecond, "on a region write")
		w := mustWrite(t, l, http.MethodPut, "/v1/tenants/first", tenantJSON("first", "home"), http.StatusCreated)
		r := q.wait(t, 10*time.Second)
		if r.Status != http.StatusOK || r.Index() < w.Index() || !slices.Contains(tenantIDs(t, r), "first") {
			t.Fatalf("woken query: index %d (write at %d): %s", r.Index(), w.Index(), body(r))
		}
	})

	t.Run("returns on a write, served by a follower", func(t *testing.T) {
		n := tenantsIndex(t, f, "")
		q := block(t, f, f, "/v1/tenants?index="+strconv.FormatUint(n, 10)+"&wait=30s")
		q.stillBlocked(t, 200*time.Millisecond, "before any write")
		written := time.Now()
		w := mustWrite(t, l, http.MethodPut, "/v1/tenants/woke", tenantJSON("woke", "home"), http.StatusCreated)
		r := q.wait(t, 10*time.Second)
		if r.Status != http.StatusOK {
			t.Fatalf("blocking query answered %s", body(r))
		}
		if took := q.end.Sub(q.start); took > 10*time.Second || q.end.Before(written) {
			t.Fatalf("returned after %s (wait was 30s): not because of the write", took)
		}
		if r.Index() <= n || r.Index() < w.Index() || !slices.Contains(tenantIDs(t, r), "woke") {
			t.Fatalf("woken query: index %d (blocked on %d, write at %d), tenants %v", r.Index(), n, w.Index(), tenantIDs(t, r))
		}
	})

	t.Run("times out with the same index", func(t *testing.T) {
		n := tenantsIndex(t, l, "")
		const wait = time.Second
		q := block(t, l, l, "/v1/tenants?index="+strconv.FormatUint(n, 10)+"&wait="+wait.String())
		r := q.wait(t, 10*time.Second)
		if took := q.end.Sub(q.start); took < wait {
			t.Fatalf("returned after %s, before the %s wait", took, wait)
		}
		if r.Status != http.StatusOK || r.Index() != n {
			t.Fatalf("timed-out query: index %d, want %d: %s", r.Index(), n, body(r))
		}
	})

	t.Run("region write does not wake a tenant query", func(t *testing.T) {
		n := tenantsIndex(t, l, "")
		q := block(t, l, l, "/v1/tenants?index="+strconv.FormatUint(n, 10)+"&wait=30s")
		rw := mustWrite(t, l, http.MethodPut, "/v1/regions/noise", regionJSON("noise"), http.StatusCreated)
		if rw.Index() <= n {
			t.Fatalf("region write at %d did not move past %d", rw.Index(), n)
		}
		q.stillBlocked(t, 500*time.Millisecond, "on a region write")
		w := mustWrite(t, l, http.MethodPut, "/v1/tenants/late", tenantJSON("late", "home"), http.StatusCreated)
		r := q.wait(t, 10*time.Second)
		if r.Status != http.StatusOK || r.Index() < w.Index() || !slices.Contains(tenantIDs(t, r), "late") {
			t.Fatalf("woken query: index %d (write at %d): %s", r.Index(), w.Index(), body(r))
		}
	})

	t.Run("stale on a follower", func(t *testing.T) {
		want := tenantsIndex(t, l, "")
		var n uint64
		testutil.Eventually(t, 5*time.Second, func() error {
			if n = tenantsIndex(t, f, "?consistency=stale"); n != want {
				return fmt.Errorf("follower at tenants index %d, leader at %d", n, want)
			}
			return nil
		})
		q := block(t, f, f, "/v1/tenants?consistency=stale&index="+strconv.FormatUint(n, 10)+"&wait=30s")
		mustWrite(t, l, http.MethodPut, "/v1/regions/noise2", regionJSON("noise2"), http.StatusCreated)
		q.stillBlocked(t, 500*time.Millisecond, "on a region write")
		w := mustWrite(t, l, http.MethodPut, "/v1/tenants/stale", tenantJSON("stale", "home"), http.StatusCreated)
		r := q.wait(t, 10*time.Second)
		if r.Status != http.StatusOK || r.ServedBy() != f.ID || r.Index() < w.Index() || !slices.Contains(tenantIDs(t, r), "stale") {
			t.Fatalf("woken stale query on %s: served by %q, index %d (write at %d): %s", f.ID, r.ServedBy(), r.Index(), w.Index(), body(r))
		}
	})
}
