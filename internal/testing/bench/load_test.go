package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentileAndMedian(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		out := make([]time.Duration, len(ns))
		for i, n := range ns {
			out[i] = time.Duration(n) * time.Millisecond
		}
		return out
	}
	sorted := ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 5 * time.Millisecond}, {99, 10 * time.Millisecond}, {10, time.Millisecond}, {0, time.Millisecond}, {100, 10 * time.Millisecond}} {
		if got := Percentile(sorted, tc.p); got != tc.want {
			t.Errorf("Percentile(1..10 ms, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v", got)
	}
	if got := Median(ms(9, 1, 5)); got != 5*time.Millisecond {
		t.Errorf("Median(9,1,5) = %v", got)
	}
	if got := Median(ms(4, 1, 3, 2)); got != 2500*time.Microsecond {
		t.Errorf("Median(4,1,3,2) = %v", got)
	}
}

// TestRunCountsOnlyTheWindow: Run drives every client in a closed loop,
// hands each client its own increasing seq, counts successes and errors
// started in the measured window only, and computes throughput from them.
func TestRunCountsOnlyTheWindow(t *testing.T) {
	var mu sync.Mutex
	lastSeq := map[int]int64{}
	var calls atomic.Int64
	op := func(ctx context.Context, client int, seq uint64) error {
		mu.Lock()
		prev, ok := lastSeq[client]
		if ok && int64(seq) != prev+1 || !ok && seq != 0 {
			mu.Unlock()
			t.Errorf("client %d: seq %d after %d", client, seq, prev)
			return nil
		}
		lastSeq[client] = int64(seq)
		mu.Unlock()
		calls.Add(1)
		time.Sleep(time.Millisecond) // the operation's own duration
		if seq%4 == 3 {
			return errors.New("every fourth fails")
		}
		return nil
	}
	r := Run(context.Background(), Step{Name: "fake", Concurrency: 4, Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, Op: op})
	if len(lastSeq) != 4 {
		t.Fatalf("%d clients ran, want 4", len(lastSeq))
	}
	if r.OK == 0 || r.Errors == 0 {
		t.Fatalf("ok %d errors %d: want both", r.OK, r.Errors)
	}
	if total := int64(r.OK + r.Errors); total >= calls.Load() {
		t.Errorf("counted %d operations of %d: the warm-up ones must not count", total, calls.Load())
	}
	// One in four fails; allow for the window's edges.
	if frac := float64(r.Errors) / float64(r.OK+r.Errors); frac < 0.15 || frac > 0.35 {
		t.Errorf("error fraction %.2f, want about 0.25", frac)
	}
	if want := float64(r.OK) / 0.3; r.Throughput < want*0.99 || r.Throughput > want*1.01 {
		t.Errorf("throughput %.1f, want ok/window = %.1f", r.Throughput, want)
	}
	if r.P50 < time.Millisecond || r.P99 < r.P50 || r.Max < r.P99 {
		t.Errorf("latencies p50 %v p99 %v max %v are not ordered or below the 1ms op time", r.P50, r.P99, r.Max)
	}
	if !strings.Contains(r.FirstError, "every fourth") {
		t.Errorf("first error %q", r.FirstError)
	}
}

// TestHTTPReusesConnections: the HTTP client keeps connections alive across
// requests and reports non-2xx answers as *StatusError.
func TestHTTPReusesConnections(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, `{"error":{"code":"no_leader"}}`, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(strings.Repeat("x", 10000)))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	h := NewHTTP(4)
	r := Run(context.Background(), Step{Concurrency: 4, Duration: 200 * time.Millisecond, Op: func(ctx context.Context, _ int, _ uint64) error {
		return h.Do(ctx, http.MethodPut, srv.URL+"/ok", []byte(`{}`))
	}})
	if r.OK < 20 || r.Errors != 0 {
		t.Fatalf("ok %d errors %d (%s)", r.OK, r.Errors, r.FirstError)
	}
	if n := conns.Load(); n > 8 { // a connection may be re-dialled while the last answer is still being returned to the pool
		t.Errorf("%d connections for %d requests from 4 clients: keep-alive is not working", n, r.OK)
	}
	err := h.Do(context.Background(), http.MethodGet, srv.URL+"/fail", nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable || !strings.Contains(se.Body, "no_leader") {
		t.Errorf("Do(/fail) = %v, want a 503 StatusError with the body", err)
	}
}
