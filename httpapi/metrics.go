package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	forwarded    *prometheus.CounterVec
	authFailures *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_http_requests_total",
			Help: "HTTP requests served, by method, route template and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atomfed_http_request_duration_seconds",
			Help:    "HTTP request latency, by method and route template (blocking queries included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method", "route"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_http_forwarded_total",
			Help: "Requests this server forwarded to the leader, by outcome.",
		}, []string{"outcome"}),
	}
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "atomfed_http_auth_failures_total",
		Help: "Requests refused by token authentication or role checks, by reason.",
	}, []string{"reason"})
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.forwarded, m.authFailures)
	}
	return m
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush lets streamed responses (snapshots) through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (blocking
// queries move their write deadline).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument counts and times every request by its route template, so that
// ids in paths do not explode the label space.
func (a *API) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := "unmatched"
		if cr := mux.CurrentRoute(r); cr != nil {
			if t, err := cr.GetPathTemplate(); err == nil {
				route = t
			}
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		a.metrics.requests.WithLabelValues(r.Method, route, strconv.Itoa(rec.status)).Inc()
		a.metrics.duration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
	})
}
