package httpapi

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestBlockingLimiterCaps: a token over its cap and a server over its total
// are refused 429 too_many_blocking_queries / server_blocking_queries_full
// with Retry-After, counted by cap; a returned slot is free again.
func TestBlockingLimiterCaps(t *testing.T) {
	l := newBlockingLimiter(3, 2, prometheus.NewRegistry())
	a1, err := l.acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.acquire("a"); err != nil {
		t.Fatal(err)
	}
	_, err = l.acquire("a")
	if !errors.Is(err, errTooManyRequests) {
		t.Fatalf("third query of one token with a cap of 2: %v, want 429", err)
	}
	rec := httptest.NewRecorder()
	writeError(rec, err)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("answered %d Retry-After %q, want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if _, code := statusFor(err); code != "too_many_blocking_queries" {
		t.Fatalf("code %q", code)
	}
	if _, err := l.acquire("b"); err != nil {
		t.Fatalf("another token refused under the total cap: %v", err)
	}
	_, err = l.acquire("c")
	if _, code := statusFor(err); code != "server_blocking_queries_full" {
		t.Fatalf("query over the total cap: %v (code %q)", err, code)
	}
	if got := value(l.refused.WithLabelValues("token")); got != 1 {
		t.Fatalf("refused{cap=token} = %v, want 1", got)
	}
	if got := value(l.refused.WithLabelValues("total")); got != 1 {
		t.Fatalf("refused{cap=total} = %v, want 1", got)
	}
	a1()
	a1() // idempotent
	if got := value(l.held); got != 2 {
		t.Fatalf("held = %v, want 2", got)
	}
	if _, err := l.acquire("c"); err != nil {
		t.Fatalf("a freed slot was not reused: %v", err)
	}
}

func value(m prometheus.Collector) float64 {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
		return -1
	}
	d := mfs[0].GetMetric()[0]
	if d.GetCounter() != nil {
		return d.GetCounter().GetValue()
	}
	return d.GetGauge().GetValue()
}

// TestInstrumentedHandlersCanMoveTheirDeadline: behind the metrics
// middleware a handler still reaches the connection through
// http.ResponseController, as a blocking query must to outlive the
// server's WriteTimeout.
func TestInstrumentedHandlersCanMoveTheirDeadline(t *testing.T) {
	a := &API{metrics: newMetrics(nil)}
	h := a.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Errorf("SetWriteDeadline through the middleware: %v", err)
		}
		time.Sleep(600 * time.Millisecond)
		_, _ = w.Write([]byte("answered"))
	}))
	srv := httptest.NewUnstartedServer(h)
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "answered" {
		t.Fatalf("answer after the server's write timeout: %q %v", b, err)
	}
}
