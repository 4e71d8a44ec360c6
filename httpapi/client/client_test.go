package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
)

// TestRetryOnNoLeader: with WithRetry, a request answered 503 no_leader is
// sent again, body and all, until it succeeds; other errors, and clients
// without WithRetry, give up at once.
func TestRetryOnNoLeader(t *testing.T) {
	var calls atomic.Int32
	var bodies []string
	failFirst := int32(2)
	code := "no_leader"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		if calls.Add(1) <= failFirst {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":{"code":"` + code + `","message":"election in progress"}}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	ctx := context.Background()
	tenant := &fsm.Tenant{ID: "acme", HomeRegion: "us-east"}

	c, err := New(srv.URL, WithRetry(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.PutTenant(ctx, tenant, nil)
	if err != nil || got.ID != "acme" {
		t.Fatalf("with retry: %+v, %v", got, err)
	}
	if calls.Load() != 3 || bodies[0] != bodies[2] || bodies[0] == "" {
		t.Fatalf("%d calls, bodies %q: want 3 identical", calls.Load(), bodies)
	}

	for _, tc := range []struct {
		name string
		opts []Option
		code string
	}{
		{"no retry configured", nil, "no_leader"},
		{"outcome unknown is never retried", []Option{WithRetry(5 * time.Second)}, "outcome_unknown"},
	} {
		calls.Store(0)
		bodies, code = nil, tc.code
		c, _ := New(srv.URL, tc.opts...)
		_, err := c.PutTenant(ctx, tenant, nil)
		var e *Error
		if !errors.As(err, &e) || e.Code != tc.code || calls.Load() != 1 {
			t.Fatalf("%s: %v after %d calls, want %s after 1", tc.name, err, calls.Load(), tc.code)
		}
	}
}
