package fsm

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applied  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	persist  prometheus.Histogram
	restore  prometheus.Histogram
	refused  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_fsm_apply_total",
			Help: "Commands applied to the FSM, by type and result (ok, or the rejection code).",
		}, []string{"type", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atomfed_fsm_apply_duration_seconds",
			Help:    "Time to apply one command to the FSM, by type.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}, []string{"type"}),
		persist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "atomfed_fsm_snapshot_persist_seconds",
			Help: "Time to write an FSM snapshot.",
		}),
		restore: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "atomfed_fsm_restore_seconds",
			Help: "Time to restore the FSM from a snapshot.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "atomfed_fsm_refused_total",
			Help: "Committed entries the FSM refused because they do not decode (recorded in the audit chain as refused:<type>); a leader never logs one.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.applied, m.duration, m.persist, m.restore, m.refused)
	}
	return m
}

func (m *metrics) observe(t MessageType, err error, start time.Time) {
	result := "ok"
	var ferr *Error
	if errors.As(err, &ferr) {
		result = ferr.Code
	}
	m.applied.WithLabelValues(t.String(), result).Inc()
	m.duration.WithLabelValues(t.String()).Observe(time.Since(start).Seconds())
}
