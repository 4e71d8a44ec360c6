package httpapi

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Default caps on blocking queries held open on one server.
const (
	// DefaultMaxBlockingQueries bounds them in total.
	DefaultMaxBlockingQueries = 8192
	// DefaultMaxBlockingPerToken bounds them per token (per accessor; the
	// bootstrap token is one). An agent holds one or two and a console a
	// handful, so only a runaway client reaches it, and it cannot take the
	// whole server.
	DefaultMaxBlockingPerToken = 1024
)

// blockingRetryAfter is the Retry-After, in seconds, of a blocking query
// refused for a cap: slots free up as other queries return.
const blockingRetryAfter = "5"

// errTooManyRequests is a request refused by a concurrency cap. 429 with
// Retry-After.
var errTooManyRequests = errors.New("too many requests")

func tooManyRequests(code, msg string) error {
	return &apiError{kind: errTooManyRequests, code: code, message: msg}
}

// blockingLimiter counts the blocking queries a server holds, in total and
// per token accessor.
type blockingLimiter struct {
	total, perToken int
	refused         *prometheus.CounterVec
	held            prometheus.Gauge

	mu sync.Mutex
	n  int
	by map[string]int
}

func newBlockingLimiter(total, perToken int, reg prometheus.Registerer) *blockingLimiter {
	if total <= 0 {
		total = DefaultMaxBlockingQueries
	}
	if perToken <= 0 {
		perToken = DefaultMaxBlockingPerToken
	}
	l := &blockingLimiter{
		total: total, perToken: perToken, by: map[string]int{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atomfed_http_blocking_refused_total",
			Help: "Blocking queries refused with 429 because a cap was reached, by cap (token or total).",
		}, []string{"cap"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "atomfed_http_blocking_queries",
			Help: "Blocking queries this server holds open.",
		}),
	}
	l.refused.WithLabelValues("token")
	l.refused.WithLabelValues("total")
	if reg != nil {
		reg.MustRegister(l.refused, l.held)
	}
	return l
}

// acquire takes a slot for a blocking query of accessor; done gives it
// back. Over a cap it is a 429 error and takes nothing.
func (l *blockingLimiter) acquire(accessor string) (done func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.by[accessor] >= l.perToken:
		l.refused.WithLabelValues("token").Inc()
		return nil, tooManyRequests("too_many_blocking_queries",
			fmt.Sprintf("this token already holds %d blocking queries on this server (the limit, --max-blocking-per-token); wait for one to return, or retry without index", l.perToken))
	case l.n >= l.total:
		l.refused.WithLabelValues("total").Inc()
		return nil, tooManyRequests("server_blocking_queries_full",
			fmt.Sprintf("this server holds %d blocking queries (the limit, --max-blocking-queries); retry later or on another server", l.total))
	}
	l.n++
	l.by[accessor]++
	l.held.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.n--
			if l.by[accessor]--; l.by[accessor] <= 0 {
				delete(l.by, accessor)
			}
			l.held.Dec()
		})
	}, nil
}
