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
