package httpapi_test

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestForwarding sends each kind of write to the leader and to a follower:
// both are applied, and the follower's answer has the same status, headers
// and shape as the leader's.
func TestForwarding(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	f := c.Followers()[0]
	mustWrite(t, l, http.MethodPut, "/v1/regions/home", regionJSON("home"), http.StatusCreated)

	type write struct {
		method, path string
		body         any
		status       int
	}
	for _, tc := range []struct {
		name             string
		viaLeader, viaFw write
	}{
		{"region register",
			write{http.MethodPost, "/region/register", regionJSON("lead-region"), http.StatusCreated},
			write{http.MethodPost, "/region/register", regionJSON("fwd-region"), http.StatusCreated}},
		{"tenant create",
			write{http.MethodPut, "/v1/tenants/lead", tenantJSON("lead", "home"), http.StatusCreated},
			write{http.MethodPut, "/v1/tenants/fwd", tenantJSON("fwd", "home"), http.StatusCreated}},
		{"tenant update",
			write{http.MethodPut, "/v1/tenants/lead", tenantJSON("lead", "home", "lead-region"), http.StatusOK},
			write{http.MethodPut, "/v1/tenants/fwd", tenantJSON("fwd", "home", "fwd-region"), http.StatusOK}},
		{"tenant delete",
			write{http.MethodDelete, "/v1/tenants/lead", nil, http.StatusOK},
			write{http.MethodDelete, "/v1/tenants/fwd", nil, http.StatusOK}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustWrite(t, l, tc.viaLeader.method, tc.viaLeader.path, tc.viaLeader.body, tc.viaLeader.status)
			b := mustWrite(t, f, tc.viaFw.method, tc.viaFw.path, tc.viaFw.body, tc.viaFw.status)
			for _, h := range []string{"Content-Type", "Retry-After"} {
				if a.Header.Get(h) != b.Header.Get(h) {
					t.Errorf("header %s: leader %q, via follower %q", h, a.Header.Get(h), b.Header.Get(h))
				}
			}
			if a.Index() == 0 || b.Index() <= a.Index() {
				t.Errorf("X-Atomfed-Index: leader %d, via follower %d; want both set and increasing", a.Index(), b.Index())
			}
			if ka, kb := keys(t, a.Body), keys(t, b.Body); !reflect.DeepEqual(ka, kb) {
				t.Errorf("response shapes differ: leader %v, via follower %v", ka, kb)
			}
			// The forwarded write is applied: the leader itself reads it.
			for _, w := range []write{tc.viaLeader, tc.viaFw} {
				got := do(t, l, http.MethodGet, readPath(w.path), nil, nil)
				want := http.StatusOK
				if w.method == http.MethodDelete {
					want = http.StatusNotFound
				}
				if got.Status != want {
					t.Errorf("after %s %s the leader answers %d for %s, want %d: %s", w.method, w.path, got.Status, readPath(w.path), want, got.Body)
				}
			}
		})
	}
}

// readPath maps a write path to where its object is read back.
func readPath(p string) string {
	if p == "/region/register" {
		return "/v1/regions" // checked for 200 only
	}
	return p
}

// TestForwardLoopRefused checks that a request already forwarded once over
// HTTP is never forwarded again: a follower refuses it with a retryable 503
// and applies nothing, while the leader serves the same request. (Writes go
// to the leader over the forwarding RPC, which has no loop to guard.)
func TestForwardLoopRefused(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	l := c.WaitLeader()
	mustWrite(t, l, http.MethodPut, "/v1/regions/home", regionJSON("home"), http.StatusCreated)
	// The region's probe task is planned asynchronously: let it land
	// before comparing states.
	c.Settle()
	l = c.WaitLeader()
	marked := http.Header{"X-Atomfed-Forwarded-By": {"s9"}}
	for _, f := range c.Followers() {
		before := stateOf(t, l, "")
		for _, req := range []struct {
			method, path string
			body         any
		}{
			{http.MethodGet, "/v1/tenants?consistency=default", nil},
			{http.MethodGet, "/v1/operator/raft/configuration", nil},
			{http.MethodDelete, "/v1/operator/raft/peer?id=s9", nil},
		} {
			r := f.Do(t, req.method, req.path, req.body, marked)
			wantError(t, r, http.StatusServiceUnavailable, "no_leader")
			if r.Header.Get("Retry-After") == "" {
				t.Errorf("%s %s on %s: 503 without Retry-After", req.method, req.path, f.ID)
			}
		}
		if after := stateOf(t, l, ""); !after.equal(before) {
			t.Fatalf("a refused forwarded request changed the state:\nbefore %v\nafter  %v", before, after)
		}
		// A marked write on a follower goes to the leader over the RPC
		// and is applied.
		r := mustWrite(t, f, http.MethodPut, "/v1/tenants/loop-"+f.ID, tenantJSON("loop-"+f.ID, "home"), http.StatusCreated)
		if got := do(t, l, http.MethodGet, "/v1/tenants/loop-"+f.ID, nil, nil); got.Status != http.StatusOK {
			t.Fatalf("marked write on %s answered %d but the leader cannot read it: %d %s", f.ID, r.Status, got.Status, got.Body)
		}
	}
	// The header alone is no reason to refuse: the leader serves it.
	r := doLeader(t, c, http.MethodGet, "/v1/tenants?consistency=default", nil, marked)
	if r.Status != http.StatusOK {
		t.Fatalf("leader answered a marked read with %d: %s", r.Status, r.Body)
	}
}
