package fsm

import (
	"encoding/json"
	"sort"
)

// Agent statuses. Serf is the authority on alive, failed and left; the
// leader commits what Serf reports.
const (
	AgentAlive  = "alive"
	AgentFailed = "failed"
	AgentLeft   = "left"
)

// Task statuses.
const (
	TaskPending   = "pending"   // wanted, not placed on an agent
	TaskAssigned  = "assigned"  // placed; the agent has not reported yet
	TaskRunning   = "running"   // the agent runs it and reports healthy progress
	TaskFailing   = "failing"   // the agent runs it and reports errors
	TaskSucceeded = "succeeded" // a one-shot task finished
)

// Table names of the agent registry and the task list. A per-agent table
// "tasks/<node>" moves only when that agent's assignments change, so an
// agent's blocking query wakes only for its own work.
const (
	TableAgents = "agents"
	TableTasks  = "tasks"
)

// AgentTasksTable returns the per-agent task table name.
func AgentTasksTable(node string) string { return TableTasks + "/" + node }

// Agent is a region agent as the leader last saw it.
type Agent struct {
	Node         string   `json:"node"`
	Region       string   `json:"region"`
	Addr         string   `json:"addr"` // serf address
	HTTP         string   `json:"http,omitempty"`
	Version      string   `json:"version,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
	Capacity     int      `json:"capacity"`
	Status       string   `json:"status"`
	StatusSince  int64    `json:"status_since"` // leader clock, unix ns
	LastContact  int64    `json:"last_contact"` // leader clock, unix ns
	CreateIndex  uint64   `json:"create_index"`
	ModifyIndex  uint64   `json:"modify_index"`
}

// HasCapability reports whether the agent runs tasks of type t.
func (a *Agent) HasCapability(t string) bool {
	for _, c := range a.Capabilities {
		if c == t {
			return true
		}
	}
	return false
}

// Task is a unit of work the leader places on an agent.
type Task struct {
	ID     string          `json:"id"` // "<type>/<subject>", e.g. probe/us-east
	Type   string          `json:"type"`
	Region string          `json:"region"`
	Spec   json.RawMessage `json:"spec,omitempty"`
	// Agent is the node the task is assigned to; empty while pending.
	Agent string `json:"agent,omitempty"`
	// Generation is the raft index of the entry that made the current
	// assignment, and Term that entry's term: together the fencing token.
	// An agent refuses an assignment older than one it has seen, and the
	// FSM refuses reports carrying an old generation.
	Generation  uint64          `json:"generation"`
	Term        uint64          `json:"term"`
	Status      string          `json:"status"`
	Result      json.RawMessage `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
	ReportedAt  int64           `json:"reported_at,omitempty"`
	CreateIndex uint64          `json:"create_index"`
	ModifyIndex uint64          `json:"modify_index"`
}

// ProbeResult is the result a probe task reports.
type ProbeResult struct {
	Target    string  `json:"target"`
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
	At        int64   `json:"at"` // agent clock, unix ns
}

// SortedAgents returns the agents ordered by node name.
func (s *State) SortedAgents() []*Agent {
	out := make([]*Agent, 0, len(s.Agents))
	for _, a := range s.Agents {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// SortedTasks returns the tasks ordered by id.
func (s *State) SortedTasks() []*Task {
	out := make([]*Task, 0, len(s.Tasks))
	for _, t := range s.Tasks {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AgentTasks returns the tasks assigned to node, ordered by id.
func (s *State) AgentTasks(node string) []*Task {
	var out []*Task
	for _, t := range s.SortedTasks() {
		if t.Agent == node {
			out = append(out, t)
		}
	}
	return out
}

// Region health values.
const (
	HealthHealthy  = "healthy"
	HealthDegraded = "degraded"
	HealthDown     = "down"
	HealthUnknown  = "unknown" // no agent has ever reported for the region
)

// LatencyBudgetIntraRegion is P6's intra-region budget: a probe slower than
// this degrades its region.
const LatencyBudgetIntraRegion = 500 // milliseconds

// RegionHealth is a region's derived health.
type RegionHealth struct {
	Status      string       `json:"status"`
	Reason      string       `json:"reason,omitempty"`
	AgentsAlive int          `json:"agents_alive"`
	AgentsTotal int          `json:"agents_total"`
	Probe       *ProbeResult `json:"probe,omitempty"`
}

// RegionHealth derives a region's health from its agents and its probe: down
// when no agent of the region is alive, degraded when some are not or the
// probe fails or is over the latency budget, healthy otherwise. It is a pure
// function of the state, so every server derives the same answer.
func (s *State) RegionHealth(region string) RegionHealth {
	var h RegionHealth
	for _, a := range s.Agents {
		if a.Region != region || a.Status == AgentLeft {
			continue
		}
		h.AgentsTotal++
		if a.Status == AgentAlive {
			h.AgentsAlive++
		}
	}
	if t := s.Tasks[ProbeTaskID(region)]; t != nil && len(t.Result) > 0 {
		var p ProbeResult
		if json.Unmarshal(t.Result, &p) == nil {
			h.Probe = &p
		}
	}
	switch {
	case h.AgentsTotal == 0:
		h.Status, h.Reason = HealthUnknown, "no agents in the region"
		if s.everHadAgents(region) {
			h.Status, h.Reason = HealthDown, "every agent of the region has left"
		}
	case h.AgentsAlive == 0:
		h.Status, h.Reason = HealthDown, "no agent of the region is alive"
	case h.AgentsAlive < h.AgentsTotal:
		h.Status, h.Reason = HealthDegraded, "some agents of the region have failed"
	case h.Probe != nil && !h.Probe.OK:
		h.Status, h.Reason = HealthDegraded, "the region's probe fails: "+h.Probe.Error
	case h.Probe != nil && h.Probe.LatencyMS > LatencyBudgetIntraRegion:
		h.Status, h.Reason = HealthDegraded, "the region's probe is over the 500 ms latency budget"
	default:
		h.Status = HealthHealthy
	}
	return h
}

// everHadAgents reports whether a region has agents recorded as left.
func (s *State) everHadAgents(region string) bool {
	for _, a := range s.Agents {
		if a.Region == region {
			return true
		}
	}
	return false
}

// ProbeTaskID is the id of the probe task of a region.
func ProbeTaskID(region string) string { return "probe/" + region }
