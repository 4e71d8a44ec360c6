package fsm

import "fmt"

// TaskTypeMetrics is the task that scrapes a region's metrics from inside
// the region and pushes them to the servers (internal/metrics, run by an
// agent of the region). Its data never enters the log: the task only says
// which agent scrapes, at which generation.
const TaskTypeMetrics = "metrics"

// MetricsTaskID is the id of the metrics task of a region.
func MetricsTaskID(region string) string { return "metrics/" + region }

// Default cadence of the metrics task.
const (
	DefaultMetricsIntervalMS = 5000
	DefaultMetricsTimeoutMS  = 4000
)

// MetricsSpec is the spec of a metrics task: scrape Region every Interval,
// each scrape and push bounded by Timeout.
type MetricsSpec struct {
	Region     string `json:"region"`
	IntervalMS int    `json:"interval_ms"`
	TimeoutMS  int    `json:"timeout_ms"`
}

// Validate checks the region name and the bounds.
func (s *MetricsSpec) Validate() error {
	if !ValidRegionName(s.Region) {
		return fmt.Errorf("metrics spec: region %q is not a DNS label", s.Region)
	}
	if s.IntervalMS < 100 || s.TimeoutMS < 10 || s.TimeoutMS > s.IntervalMS {
		return fmt.Errorf("metrics spec: interval must be >= 100 ms and timeout between 10 ms and the interval")
	}
	return nil
}
