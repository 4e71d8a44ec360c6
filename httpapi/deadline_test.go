package httpapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testcluster"
)

// TestBlockingQueryOutlivesWriteTimeout: a blocking query moves its
// connection's write deadline past its wait through every middleware, so a
// server's WriteTimeout (shorter than any wait) cuts slow answers but not
// blocking queries.
func TestBlockingQueryOutlivesWriteTimeout(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Servers: 1, HTTPWriteTimeout: 300 * time.Millisecond})
	n := c.WaitLeader()
	first, err := n.DoCtx(context.Background(), http.MethodGet, "/v1/tenants", nil, nil)
	if err != nil || first.Status != http.StatusOK {
		t.Fatalf("GET /v1/tenants: %v %+v", err, first)
	}
	idx := first.Header.Get("X-Atomfed-Index")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := n.DoCtx(ctx, http.MethodGet, "/v1/tenants?wait=1s&index="+idx, nil, nil)
	if err != nil {
		t.Fatalf("a blocking query longer than the write timeout was cut: %v", err)
	}
	if resp.Status != http.StatusOK || time.Since(start) < time.Second {
		t.Fatalf("blocking query: %d after %s, want 200 after its 1 s wait", resp.Status, time.Since(start))
	}
}

// TestForwardedBlockingQueriesCountOnTheFollower: a blocking query a
// follower forwards to the leader (consistency=default) holds a slot on the
// follower too, which keeps the client's connection open: over the cap the
// follower refuses it itself, 429 with Retry-After, before forwarding.
func TestForwardedBlockingQueriesCountOnTheFollower(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Servers: 3, MaxBlockingPerToken: 1})
	c.WaitLeader()
	f := c.Followers()[0]
	path := "/v1/agents/nobody/tasks?consistency=default&wait=30s&index=1"
	// The first is held on the leader, through the follower.
	block(t, f, c.WaitLeader(), path)
	refused := func() float64 {
		mfs, err := f.Reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "atomfed_http_blocking_refused_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "cap" && l.GetValue() == "token" {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	before := refused()
	resp, err := f.DoCtx(context.Background(), http.MethodGet, path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second forwarded blocking query of a token with a cap of 1: %d %s", resp.Status, resp.Body)
	}
	if got := refused(); got != before+1 {
		t.Fatalf("the follower counted %v refusals, want %v: the 429 did not come from it", got, before+1)
	}
}
