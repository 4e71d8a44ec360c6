package cluster

import (
	"encoding/json"

	"github.com/atomcloud/atomfed/fsm"
)

// desiredMetricsTasks adds one metrics task per registered region
// (metrics/<region>): an agent of the region scrapes the region's
// Prometheus and atomfed nodes and pushes the result to every server
// (internal/metrics). Like the probe, it is placed on one alive agent of
// the region that runs it, moved to a peer when that agent fails, and
// fenced by its generation: servers accept a region's snapshot only from
// the agent the task is assigned to, at its current generation.
func desiredMetricsTasks(s *fsm.State, out map[string]fsm.TaskSpec) {
	for _, r := range s.SortedRegions() {
		spec, _ := json.Marshal(fsm.MetricsSpec{Region: r.Name, IntervalMS: fsm.DefaultMetricsIntervalMS, TimeoutMS: fsm.DefaultMetricsTimeoutMS})
		id := fsm.MetricsTaskID(r.Name)
		out[id] = fsm.TaskSpec{ID: id, Type: fsm.TaskTypeMetrics, Region: r.Name, Spec: spec}
	}
}
