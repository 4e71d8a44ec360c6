// Package bench measures atomfed the way a user sees it: real server
// processes on loopback with fsync on, driven over HTTP by a closed-loop
// load generator. The generator knows nothing of atomfed (an operation is a
// function), so the same code can drive etcd's HTTP/JSON gateway for a
// comparison; the atomfed operations, the failover and replication
// measurements and the report are in this package too. It starts nothing
// itself: its process clusters come from procs (the same as internal/e2e's
// and the chaos suite's), the in-process scale test's servers and agents
// from testcluster (the same as the in-process tests', run through
// testutil.RunTB), and its report's machine facts from machine, which the
// chaos suite shares. cmd/atomfed-bench is the entry point; internal/e2e's
// failover tests reuse its writer.
package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"
)

// Op performs one operation for client clientIdx (0..Concurrency-1); seq
// counts that client's operations from 0. It returns nil on success.
// Ops run concurrently for different clients, never for the same client.
type Op func(ctx context.Context, clientIdx int, seq uint64) error

// Step is one closed-loop load step: Concurrency clients each issue the
// next operation as soon as the previous one returns.
type Step struct {
	Name        string
	Concurrency int
	// Warmup runs the load without recording it (connections are opened,
	// caches and the Go runtime settle).
	Warmup time.Duration
	// Duration is the measured window.
	Duration time.Duration
	Op       Op
}

// Result is what a step measured. Latencies and throughput count
// successful operations started inside the measured window.
type Result struct {
	Name        string
	Concurrency int
	OK          int
	Errors      int
	Window      time.Duration
	Throughput  float64 // successful operations per second
	P50, P99    time.Duration
	Max, Mean   time.Duration
	// FirstError is the first error seen in the window, for the report.
	FirstError string
}

// Run runs a step and returns its result. It returns early, with what it
// measured, when ctx ends.
func Run(ctx context.Context, s Step) Result {
	if s.Concurrency < 1 {
		s.Concurrency = 1
	}
	start := time.Now().Add(s.Warmup)
	end := start.Add(s.Duration)
	// Operations get a little longer than the window to finish.
	opCtx, cancel := context.WithDeadline(ctx, end.Add(30*time.Second))
	defer cancel()

	type clientStats struct {
		lats     []time.Duration
		errors   int
		firstErr error
	}
	stats := make([]clientStats, s.Concurrency)
	var wg sync.WaitGroup
	for i := 0; i < s.Concurrency; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st := &stats[i]
			st.lats = make([]time.Duration, 0, 4096)
			for seq := uint64(0); ; seq++ {
				t0 := time.Now()
				if !t0.Before(end) || opCtx.Err() != nil {
					return
				}
				err := s.Op(opCtx, i, seq)
				if t0.Before(start) {
					continue
				}
				if err != nil {
					st.errors++
					if st.firstErr == nil {
						st.firstErr = err
					}
					continue
				}
				st.lats = append(st.lats, time.Since(t0))
			}
		}(i)
	}
	wg.Wait()
	window := s.Duration
	if now := time.Now(); now.Before(end) { // ctx ended early
		window = now.Sub(start)
	}

	r := Result{Name: s.Name, Concurrency: s.Concurrency, Window: window}
	var all []time.Duration
	for _, st := range stats {
		all = append(all, st.lats...)
		r.Errors += st.errors
		if st.firstErr != nil && r.FirstError == "" {
			r.FirstError = st.firstErr.Error()
		}
	}
	r.OK = len(all)
	if window > 0 {
		r.Throughput = float64(r.OK) / window.Seconds()
	}
	summarize(all, &r)
	return r
}

func summarize(lats []time.Duration, r *Result) {
	if len(lats) == 0 {
		return
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	var sum time.Duration
	for _, l := range lats {
		sum += l
	}
	r.P50 = Percentile(lats, 50)
	r.P99 = Percentile(lats, 99)
	r.Max = lats[len(lats)-1]
	r.Mean = sum / time.Duration(len(lats))
}

// Percentile returns the p-th percentile (nearest rank) of sorted
// durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}

// Median returns the median of durations (not necessarily sorted).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// String is a one-line summary of a result.
func (r Result) String() string {
	s := fmt.Sprintf("%-40s c=%-3d %9.0f ops/s  p50 %-9s p99 %-9s max %-9s ok %d errors %d",
		r.Name, r.Concurrency, r.Throughput, fmtDur(r.P50), fmtDur(r.P99), fmtDur(r.Max), r.OK, r.Errors)
	if r.FirstError != "" {
		s += " (first: " + r.FirstError + ")"
	}
	return s
}

// fmtDur prints a duration with three significant digits in a unit that
// suits it.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3fs", d.Seconds())
	}
}
