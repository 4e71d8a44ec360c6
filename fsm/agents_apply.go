package fsm

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Limits on agent commands.
const (
	MaxTaskSpecBytes   = 16 << 10
	MaxTaskResultBytes = 16 << 10
	MaxTaskErrorLen    = 1024
)

var validAgentStatus = map[string]bool{AgentAlive: true, AgentFailed: true, AgentLeft: true}

var validReportStatus = map[string]bool{TaskRunning: true, TaskFailing: true, TaskSucceeded: true}

// ValidateAgent checks an agent record.
func ValidateAgent(a *Agent) error {
	switch {
	case !ValidRegionName(a.Node):
		return invalidf("invalid_agent", "agent node %q must be a DNS label", a.Node)
	case !ValidRegionName(a.Region):
		return invalidf("invalid_agent", "agent %q: region %q must be a DNS label", a.Node, a.Region)
	case !validAgentStatus[a.Status]:
		return invalidf("invalid_agent", "agent %q: status %q must be alive, failed or left", a.Node, a.Status)
	case a.Capacity < 0:
		return invalidf("invalid_agent", "agent %q: capacity cannot be negative", a.Node)
	}
	return nil
}

// AgentUpsert records what Serf says about an agent. Only the leader issues
// it, from Serf events.
type AgentUpsert struct {
	Agent Agent `json:"agent"`
	At    int64 `json:"at"`
}

func applyAgentUpsert(s *State, e *Entry) (any, error) {
	cmd := body[AgentUpsert](e)
	a := cmd.Agent
	if err := ValidateAgent(&a); err != nil {
		return nil, err
	}
	old := s.Agents[a.Node]
	a.ModifyIndex, a.LastContact = e.Index, cmd.At
	a.CreateIndex, a.StatusSince = e.Index, cmd.At
	if old != nil {
		a.CreateIndex = old.CreateIndex
		if old.Status == a.Status {
			a.StatusSince = old.StatusSince
		}
		if old.LastContact > a.LastContact {
			a.LastContact = old.LastContact
		}
	}
	// A failed or departed agent keeps its tasks until the scheduler moves
	// them, so a quick return of the agent costs nothing.
	s.Agents[a.Node] = &a
	s.touch(TableAgents, e.Index)
	return &a, nil
}

// AgentDelete forgets an agent Serf has reaped. Its tasks become pending.
type AgentDelete struct {
	Node string `json:"node"`
	At   int64  `json:"at"`
}

func applyAgentDelete(s *State, e *Entry) (any, error) {
	cmd := body[AgentDelete](e)
	if s.Agents[cmd.Node] == nil {
		return nil, notFoundf("agent_not_found", "agent %q is not registered", cmd.Node)
	}
	delete(s.Agents, cmd.Node)
	s.touch(TableAgents, e.Index)
	unassignAll(s, e, cmd.Node)
	return &Deleted{Kind: "agent", Name: cmd.Node, At: cmd.At}, nil
}

// AgentLeave is an agent's graceful leave: it hands back its tasks.
type AgentLeave struct {
	Node string      `json:"node"`
	At   int64       `json:"at"`
	Auth *SignedAuth `json:"auth,omitempty"`
}

func applyAgentLeave(s *State, e *Entry) (any, error) {
	cmd := body[AgentLeave](e)
	old := s.Agents[cmd.Node]
	if old == nil {
		return nil, notFoundf("agent_not_found", "agent %q is not registered", cmd.Node)
	}
	if err := agentSigner(s, cmd.Node, cmd.Auth, cmd.At); err != nil {
		return nil, err
	}
	recordNonce(s, cmd.Auth, cmd.At)
	a := *old
	a.Status, a.StatusSince, a.ModifyIndex = AgentLeft, cmd.At, e.Index
	s.Agents[a.Node] = &a
	s.touch(TableAgents, e.Index)
	n := unassignAll(s, e, cmd.Node)
	return map[string]any{"node": cmd.Node, "released_tasks": n}, nil
}

// unassignAll makes every task of node pending again, with a new
// generation so a late report from node is refused.
func unassignAll(s *State, e *Entry, node string) int {
	n := 0
	for _, t := range s.AgentTasks(node) {
		c := *t
		c.Agent, c.Status, c.Generation, c.Term, c.ModifyIndex = "", TaskPending, e.Index, e.Term, e.Index
		s.Tasks[c.ID] = &c
		n++
	}
	if n > 0 {
		s.touch(TableTasks, e.Index)
		s.touch(AgentTasksTable(node), e.Index)
	}
	return n
}

func placementErr(format string, args ...any) error {
	return preconditionf("stale_plan", format, args...)
}

// TaskPlan is one scheduling decision, applied atomically: tasks to create,
// (re)assignments, and tasks to delete. Apply re-checks every placement
// against the state and refuses the whole plan if any is stale.
type TaskPlan struct {
	Create  []TaskSpec   `json:"create,omitempty"`
	Assign  []Assignment `json:"assign,omitempty"`
	Delete  []string     `json:"delete,omitempty"`
	At      int64        `json:"at"`
	Message string       `json:"message,omitempty"` // why, for the audit trail
}

// TaskSpec is a task to create, optionally placed at once.
type TaskSpec struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Region string          `json:"region"`
	Spec   json.RawMessage `json:"spec,omitempty"`
	Agent  string          `json:"agent,omitempty"`
}

// Assignment places a task on an agent ("" unassigns it). Generation is the
// task's generation the scheduler saw; a mismatch means the plan is stale.
type Assignment struct {
	Task       string `json:"task"`
	Agent      string `json:"agent"`
	Generation uint64 `json:"generation"`
}

func applyTaskPlan(s *State, e *Entry) (any, error) {
	cmd := body[TaskPlan](e)
	if err := checkPlan(s, cmd); err != nil {
		return nil, err
	}
	touched := map[string]bool{}
	for _, id := range cmd.Delete {
		if t := s.Tasks[id]; t != nil {
			if t.Agent != "" {
				touched[t.Agent] = true
			}
			delete(s.Tasks, id)
		}
	}
	for _, c := range cmd.Create {
		t := &Task{ID: c.ID, Type: c.Type, Region: c.Region, Spec: c.Spec, Agent: c.Agent, Status: TaskPending,
			Generation: e.Index, Term: e.Term, CreateIndex: e.Index, ModifyIndex: e.Index}
		if c.Agent != "" {
			t.Status = TaskAssigned
			touched[c.Agent] = true
		}
		s.Tasks[c.ID] = t
	}
	for _, as := range cmd.Assign {
		t := *s.Tasks[as.Task]
		if t.Agent != "" {
			touched[t.Agent] = true
		}
		t.Agent, t.Generation, t.Term, t.ModifyIndex = as.Agent, e.Index, e.Term, e.Index
		t.Status, t.Result, t.Error, t.ReportedAt = TaskAssigned, nil, "", 0
		if as.Agent == "" {
			t.Status = TaskPending
		} else {
			touched[as.Agent] = true
		}
		s.Tasks[t.ID] = &t
	}
	s.touch(TableTasks, e.Index)
	nodes := make([]string, 0, len(touched))
	for n := range touched {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		s.touch(AgentTasksTable(n), e.Index)
	}
	return map[string]int{"created": len(cmd.Create), "assigned": len(cmd.Assign), "deleted": len(cmd.Delete)}, nil
}

// checkPlan validates a plan against the state without changing it, the way
// Nomad's plan applier re-checks a scheduler's optimistic plan.
func checkPlan(s *State, p *TaskPlan) error {
	if len(p.Create)+len(p.Assign)+len(p.Delete) == 0 {
		return invalidf("empty_plan", "the plan changes nothing")
	}
	deleted := map[string]bool{}
	for _, id := range p.Delete {
		if s.Tasks[id] == nil || deleted[id] {
			return placementErr("task %q to delete does not exist", id)
		}
		deleted[id] = true
	}
	load := map[string]int{}
	for _, t := range s.Tasks {
		if t.Agent != "" && !deleted[t.ID] {
			load[t.Agent]++
		}
	}
	created := map[string]bool{}
	for i := range p.Create {
		c := &p.Create[i]
		switch {
		case c.ID == "" || c.Type == "" || len(c.ID) > 256:
			return invalidf("invalid_task", "task id (at most 256 bytes) and type are required")
		case !ValidRegionName(c.Region):
			return invalidf("invalid_task", "task %q: region %q must be a DNS label", c.ID, c.Region)
		case len(c.Spec) > MaxTaskSpecBytes || (len(c.Spec) > 0 && !json.Valid(c.Spec)):
			return invalidf("invalid_task", "task %q: spec must be JSON of at most %d bytes", c.ID, MaxTaskSpecBytes)
		case (s.Tasks[c.ID] != nil && !deleted[c.ID]) || created[c.ID]:
			return placementErr("task %q already exists", c.ID)
		}
		created[c.ID] = true
		if c.Agent != "" {
			if err := checkPlacement(s, c.Agent, c.ID, c.Type, c.Region, load); err != nil {
				return err
			}
		}
	}
	seen := map[string]bool{}
	for _, as := range p.Assign {
		t := s.Tasks[as.Task]
		switch {
		case seen[as.Task] || created[as.Task]:
			return invalidf("invalid_plan", "task %q is placed twice in one plan", as.Task)
		case t == nil || deleted[as.Task]:
			return placementErr("task %q to assign does not exist", as.Task)
		case t.Generation != as.Generation:
			return placementErr("task %q is at generation %d, the plan expected %d", as.Task, t.Generation, as.Generation)
		}
		seen[as.Task] = true
		if t.Agent != "" {
			load[t.Agent]--
		}
		if as.Agent == "" {
			continue
		}
		if err := checkPlacement(s, as.Agent, t.ID, t.Type, t.Region, load); err != nil {
			return err
		}
	}
	return nil
}

// checkPlacement checks that agent can take task and counts it in load.
func checkPlacement(s *State, agent, task, typ, region string, load map[string]int) error {
	a := s.Agents[agent]
	switch {
	case a == nil:
		return placementErr("agent %q is not registered", agent)
	case a.Status != AgentAlive:
		return placementErr("agent %q is %s", agent, a.Status)
	case a.Region != region:
		return placementErr("agent %q is in region %s, task %q in %s", agent, a.Region, task, region)
	case !a.HasCapability(typ):
		return placementErr("agent %q cannot run %s tasks", agent, typ)
	}
	load[agent]++
	if a.Capacity > 0 && load[agent] > a.Capacity {
		return placementErr("agent %q is full (%d tasks)", agent, a.Capacity)
	}
	return nil
}

// AgentReport is an agent's heartbeat with the status of its tasks.
type AgentReport struct {
	Node  string       `json:"node"`
	Tasks []TaskReport `json:"tasks,omitempty"`
	At    int64        `json:"at"`
	// Auth is the agent's signature (agent-to-server writes are signed).
	Auth *SignedAuth `json:"auth,omitempty"`
}

// TaskReport is one task's status as its agent sees it.
type TaskReport struct {
	ID         string          `json:"id"`
	Generation uint64          `json:"generation"`
	Status     string          `json:"status"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
}

func applyAgentReport(s *State, e *Entry) (any, error) {
	cmd := body[AgentReport](e)
	old := s.Agents[cmd.Node]
	if old == nil {
		return nil, notFoundf("agent_not_found", "agent %q is not registered", cmd.Node)
	}
	if err := agentSigner(s, cmd.Node, cmd.Auth, cmd.At); err != nil {
		return nil, err
	}
	for _, r := range cmd.Tasks {
		if !validReportStatus[r.Status] || len(r.Result) > MaxTaskResultBytes || len(r.Error) > MaxTaskErrorLen {
			return nil, invalidf("invalid_report", "task %q: status %q must be running, failing or succeeded, with a result under %d bytes", r.ID, r.Status, MaxTaskResultBytes)
		}
		if len(r.Result) > 0 && !json.Valid(r.Result) {
			return nil, invalidf("invalid_report", "task %q: result is not JSON", r.ID)
		}
	}
	recordNonce(s, cmd.Auth, cmd.At)
	a := *old
	a.LastContact, a.ModifyIndex = cmd.At, e.Index
	s.Agents[a.Node] = &a
	s.touch(TableAgents, e.Index)
	var fenced []string
	applied := 0
	for _, r := range cmd.Tasks {
		t := s.Tasks[r.ID]
		if t == nil || t.Agent != cmd.Node || t.Generation != r.Generation {
			fenced = append(fenced, r.ID)
			continue
		}
		c := *t
		c.Status, c.Result, c.Error, c.ReportedAt, c.ModifyIndex = r.Status, r.Result, r.Error, cmd.At, e.Index
		s.Tasks[c.ID] = &c
		applied++
	}
	if applied > 0 {
		s.touch(TableTasks, e.Index)
	}
	return &ReportResult{Applied: applied, Fenced: fenced}, nil
}

// ReportResult tells an agent which of its reports were refused because the
// task is no longer its own at that generation.
type ReportResult struct {
	Applied int      `json:"applied"`
	Fenced  []string `json:"fenced,omitempty"`
}

// String summarises the result for logs.
func (r *ReportResult) String() string {
	return fmt.Sprintf("applied=%d fenced=%d", r.Applied, len(r.Fenced))
}

// agentSigner checks that an agent's write is signed by that agent's key.
func agentSigner(s *State, node string, auth *SignedAuth, at int64) error {
	signer, _, err := verifyAuth(s, auth, at, true, nil)
	if err != nil {
		return err
	}
	if signer.Kind != MemberAgent || signer.ID != node {
		return forbiddenf("wrong_signer", "agent %s's writes must be signed with its own key, not with %s", node, memberName(signer))
	}
	return nil
}

// TasksRefence gives every task a new generation, the entry's index: above
// every generation issued before it, so that no agent refuses an
// assignment as stale and no report fenced by an older generation is
// taken. The leader commits it after restoring a user's snapshot, whose
// tasks carry the generations of the day it was saved (fencing tokens must
// only grow), and clears State.RefencePending with it. Assignments stay as
// they are; each agent restarts its tasks under the new generation.
type TasksRefence struct {
	At     int64  `json:"at"`
	Reason string `json:"reason,omitempty"`
}

func applyTasksRefence(s *State, e *Entry) (any, error) {
	// The body (when, why) is for the audit chain; applying needs only
	// the entry's index.
	nodes := map[string]bool{}
	for id, t := range s.Tasks {
		c := *t
		c.Generation, c.Term, c.ModifyIndex = e.Index, e.Term, e.Index
		s.Tasks[id] = &c
		if c.Agent != "" {
			nodes[c.Agent] = true
		}
	}
	s.RefencePending = false
	s.touch(TableTasks, e.Index)
	for n := range nodes {
		s.touch(AgentTasksTable(n), e.Index)
	}
	return map[string]any{"tasks": len(s.Tasks), "generation": e.Index}, nil
}
