package fsm

import (
	"fmt"
	"net/url"
)

// TaskTypeProbe is the task that probes a region's endpoint from inside the
// region (cluster/agent's probe executor runs it).
const TaskTypeProbe = "probe"

// ProbeSpec is the spec of a probe task: an HTTP(S) GET or a TCP connect to
// Target every Interval, each bounded by Timeout.
type ProbeSpec struct {
	Target     string `json:"target"`
	IntervalMS int    `json:"interval_ms"`
	TimeoutMS  int    `json:"timeout_ms"`
}

// Validate checks the target's scheme and the interval and timeout bounds.
func (s *ProbeSpec) Validate() error {
	u, err := url.Parse(s.Target)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "tcp") {
		return fmt.Errorf("probe target %q must be an http, https or tcp URL", s.Target)
	}
	if s.IntervalMS < 100 || s.TimeoutMS < 10 {
		return fmt.Errorf("probe interval must be >= 100 ms and timeout >= 10 ms")
	}
	return nil
}
