package httpapi_test

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestReadConsistency checks each consistency mode on a follower:
// linearizable (the default) reads are answered by the follower after a
// read-index round (or by the leader when the follower is behind) and
// default reads by the leader, and both see the latest write at once;
// stale reads are answered by the follower itself, converge, and keep
// working without a leader. The X-Atomfed-Index of successive reads never
// goes back.
func TestReadConsistency(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	mustWrite(t, l, http.MethodPut, "/v1/regions/home", regionJSON("home"), http.StatusCreated)

	for _, mode := range []string{"", "linearizable", "default"} {
		t.Run("mode="+mode, func(t *testing.T) {
			id := "t-" + mode
			if mode == "" {
				id = "t-unset"
			}
			var last uint64
			for v := 0; v < 3; v++ {
				body := tenantJSON(id, "home")
				body["labels"] = map[string]string{"v": strconv.Itoa(v)}
				var wrote fsm.Tenant
				mustWrite(t, l, http.MethodPut, "/v1/tenants/"+id, body, map[bool]int{true: 201, false: 200}[v == 0]).JSON(t, &wrote)

				path := "/v1/tenants/" + id
				if mode != "" {
					path += "?consistency=" + mode
				}
				r := do(t, f, http.MethodGet, path, nil, nil)
				if r.Status != http.StatusOK {
					t.Fatalf("read on follower: %d %s", r.Status, r.Body)
				}
				var got fsm.Tenant
				r.JSON(t, &got)
				if got.ModifyIndex != wrote.ModifyIndex || got.Labels["v"] != strconv.Itoa(v) {
					t.Fatalf("read right after the write saw modify_index %d labels %v, want %d v=%d", got.ModifyIndex, got.Labels, wrote.ModifyIndex, v)
				}
				// A linearizable read (the default mode) is served by the
				// follower itself after a read-index round with the
				// leader, unless the follower has not learnt of the commit
				// yet: then the leader answers rather than hold the read.
				// A default read is answered by the leader.
				by := r.ServedBy()
				if mode == "default" && by != l.ID {
					t.Fatalf("X-Atomfed-Served-By %q: a default read sent to follower %s must be served by the leader %s", by, f.ID, l.ID)
				}
				if mode != "default" && by != f.ID && by != l.ID {
					t.Fatalf("X-Atomfed-Served-By %q: a %q read sent to follower %s must be served by it or the leader", by, mode, f.ID)
				}
				if r.Index() < wrote.ModifyIndex || r.Index() <= last {
					t.Fatalf("X-Atomfed-Index %d after write %d (previous read %d): not current or not monotonic", r.Index(), wrote.ModifyIndex, last)
				}
				last = r.Index()
			}
		})
	}

	t.Run("linearizable on a follower that caught up", func(t *testing.T) {
		var wrote fsm.Tenant
		mustWrite(t, l, http.MethodPut, "/v1/tenants/caught-up", tenantJSON("caught-up", "home"), http.StatusCreated).JSON(t, &wrote)
		testutil.Eventually(t, 5*time.Second, func() error {
			if r := f.Do(t, http.MethodGet, "/v1/tenants/caught-up?stale", nil, nil); r.Status != http.StatusOK {
				return fmt.Errorf("follower has not applied the write yet: %d", r.Status)
			}
			return nil
		})
		// Nothing is written meanwhile: the follower has applied the
		// leader's commit index and serves the read itself.
		r := do(t, f, http.MethodGet, "/v1/tenants/caught-up", nil, nil)
		if r.Status != http.StatusOK || r.ServedBy() != f.ID {
			t.Fatalf("linearizable read on caught-up follower %s: %d served by %q", f.ID, r.Status, r.ServedBy())
		}
	})

	t.Run("stale", func(t *testing.T) {
		var wrote fsm.Tenant
		mustWrite(t, l, http.MethodPut, "/v1/tenants/stale", tenantJSON("stale", "home"), http.StatusCreated).JSON(t, &wrote)
		for _, q := range []string{"?consistency=stale", "?stale"} {
			var last uint64
			testutil.Eventually(t, 5*time.Second, func() error {
				r := f.Do(t, http.MethodGet, "/v1/tenants"+q, nil, nil)
				if r.Status != http.StatusOK {
					return fmt.Errorf("stale read: %d %s", r.Status, r.Body)
				}
				if r.ServedBy() != f.ID {
					t.Fatalf("stale read on %s was served by %q", f.ID, r.ServedBy())
				}
				if r.Header.Get("X-Atomfed-Last-Contact") == "" {
					t.Fatalf("stale read without X-Atomfed-Last-Contact")
				}
				if r.Index() < last {
					t.Fatalf("X-Atomfed-Index went back from %d to %d", last, r.Index())
				}
				last = r.Index()
				if !slices.Contains(tenantIDs(t, r), "stale") || r.Index() < wrote.ModifyIndex {
					return fmt.Errorf("follower has not applied index %d yet (at %d)", wrote.ModifyIndex, r.Index())
				}
				return nil
			})
		}
	})

	t.Run("invalid", func(t *testing.T) {
		for _, n := range []*testcluster.Node{l, f} {
			for _, p := range []string{"/v1/tenants?consistency=strong", "/v1/regions/home?consistency=STALE", "/v1/status/audit?consistency=1"} {
				wantError(t, n.Do(t, http.MethodGet, p, nil, nil), http.StatusBadRequest, "invalid_consistency")
			}
		}
	})

	t.Run("stale without a leader", func(t *testing.T) {
		before := stateOf(t, f, "stale")
		for _, n := range c.Running() {
			if n != f {
				c.Stop(n)
			}
		}
		r := f.Do(t, http.MethodGet, "/v1/tenants?consistency=stale", nil, nil)
		if r.Status != http.StatusOK || r.ServedBy() != f.ID || string(r.Body) != string(before.Tenants) {
			t.Fatalf("stale read on a follower without quorum: %d served by %q: %s", r.Status, r.ServedBy(), r.Body)
		}
		wantError(t, f.Do(t, http.MethodGet, "/v1/tenants", nil, nil), http.StatusServiceUnavailable, "no_leader")
	})
}
