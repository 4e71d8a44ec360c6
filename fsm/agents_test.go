package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func testAgent(node, region string, status string) Agent {
	return Agent{Node: node, Region: region, Addr: "127.0.0.1:1", Status: status, Capabilities: []string{"probe"}, Capacity: 2}
}

// agentRoundTrips exercises every agent and task command; called from
// TestCommandRoundTrip with us-east registered.
func agentRoundTrips(t *testing.T, check func(MessageType, any, func(*State, *ApplyResult))) {
	check(AgentUpsertType, AgentUpsert{Agent: testAgent("a1", "us-east", AgentAlive), At: 50}, func(s *State, res *ApplyResult) {
		a := s.Agents["a1"]
		if a == nil || a.Status != AgentAlive || a.LastContact != 50 || a.StatusSince != 50 || a.CreateIndex != res.Index {
			t.Fatalf("agent after upsert: %+v", a)
		}
	})
	check(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: "probe/us-east", Type: "probe", Region: "us-east", Spec: json.RawMessage(`{"target":"x"}`), Agent: "a1"}}, At: 51}, func(s *State, res *ApplyResult) {
		tk := s.Tasks["probe/us-east"]
		if tk == nil || tk.Agent != "a1" || tk.Status != TaskAssigned || tk.Generation != res.Index || tk.Term != 3 {
			t.Fatalf("task after plan: %+v", tk)
		}
		if s.TableIndex(AgentTasksTable("a1")) != res.Index {
			t.Fatal("the agent's task table did not move")
		}
	})
	var gen uint64
	check(AgentReportType, AgentReport{Node: "a1", At: 52}, func(s *State, res *ApplyResult) { gen = s.Tasks["probe/us-east"].Generation })
	check(AgentReportType, AgentReport{Node: "a1", At: 53, Tasks: []TaskReport{{ID: "probe/us-east", Generation: gen, Status: TaskRunning,
		Result: json.RawMessage(`{"target":"x","ok":true,"latency_ms":3}`)}}}, func(s *State, res *ApplyResult) {
		tk := s.Tasks["probe/us-east"]
		if tk.Status != TaskRunning || tk.ReportedAt != 53 || res.Value.(*ReportResult).Applied != 1 || s.Agents["a1"].LastContact != 53 {
			t.Fatalf("task after report: %+v", tk)
		}
		if h := s.RegionHealth("us-east"); h.Status != HealthHealthy || h.Probe == nil || h.Probe.LatencyMS != 3 {
			t.Fatalf("health after a good probe: %+v", h)
		}
	})
	check(TasksRefenceType, TasksRefence{At: 54, Reason: "test"}, func(s *State, res *ApplyResult) {
		tk := s.Tasks["probe/us-east"]
		if tk.Generation != res.Index || tk.Generation <= gen || tk.Agent != "a1" || tk.ModifyIndex != res.Index {
			t.Fatalf("task after refence (generation %d before): %+v", gen, tk)
		}
		if s.TableIndex(AgentTasksTable("a1")) != res.Index || s.RefencePending {
			t.Fatal("refence did not wake the agent's watch or left the restore mark")
		}
	})
	check(AgentLeaveType, AgentLeave{Node: "a1", At: 54}, func(s *State, res *ApplyResult) {
		tk := s.Tasks["probe/us-east"]
		if s.Agents["a1"].Status != AgentLeft || tk.Agent != "" || tk.Status != TaskPending || tk.Generation != res.Index {
			t.Fatalf("after leave: agent %+v task %+v", s.Agents["a1"], tk)
		}
	})
	check(AgentDeleteType, AgentDelete{Node: "a1", At: 55}, func(s *State, res *ApplyResult) {
		if s.Agents["a1"] != nil {
			t.Fatal("agent still there after delete")
		}
	})
	check(TaskPlanType, TaskPlan{Delete: []string{"probe/us-east"}, At: 56}, func(s *State, res *ApplyResult) {
		if s.Tasks["probe/us-east"] != nil {
			t.Fatal("task still there after delete")
		}
	})
}

func agentHarness(t *testing.T) *harness {
	h := newHarness(t)
	seed(h)
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("a1", "us-east", AgentAlive), At: 1})
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("a2", "us-east", AgentAlive), At: 1})
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("b1", "eu-west", AgentAlive), At: 1})
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("dead", "us-east", AgentFailed), At: 1})
	h.mustApply(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: "t1", Type: "probe", Region: "us-east", Agent: "a1"}, {ID: "t2", Type: "probe", Region: "us-east"}}})
	return h
}

func TestTaskPlanRejections(t *testing.T) {
	cases := []struct {
		name string
		plan func(gen uint64) TaskPlan
		code string
	}{
		{"empty", func(uint64) TaskPlan { return TaskPlan{} }, "empty_plan"},
		{"duplicate create", func(uint64) TaskPlan {
			return TaskPlan{Create: []TaskSpec{{ID: "t1", Type: "probe", Region: "us-east"}}}
		}, "stale_plan"},
		{"oversized spec", func(uint64) TaskPlan {
			big := json.RawMessage(`"` + strings.Repeat("x", MaxTaskSpecBytes) + `"`)
			return TaskPlan{Create: []TaskSpec{{ID: "x", Type: "probe", Region: "us-east", Spec: big}}}
		}, "invalid_task"},
		{"failed agent", func(g uint64) TaskPlan {
			return TaskPlan{Assign: []Assignment{{Task: "t2", Agent: "dead", Generation: g}}}
		}, "stale_plan"},
		{"unknown agent", func(g uint64) TaskPlan {
			return TaskPlan{Assign: []Assignment{{Task: "t2", Agent: "ghost", Generation: g}}}
		}, "stale_plan"},
		{"wrong region", func(g uint64) TaskPlan {
			return TaskPlan{Assign: []Assignment{{Task: "t2", Agent: "b1", Generation: g}}}
		}, "stale_plan"},
		{"stale generation", func(g uint64) TaskPlan {
			return TaskPlan{Assign: []Assignment{{Task: "t2", Agent: "a2", Generation: g - 1}}}
		}, "stale_plan"},
		{"assigned twice", func(g uint64) TaskPlan {
			return TaskPlan{Assign: []Assignment{{Task: "t2", Agent: "a2", Generation: g}, {Task: "t2", Agent: "a1", Generation: g}}}
		}, "invalid_plan"},
		{"over capacity", func(g uint64) TaskPlan {
			return TaskPlan{Create: []TaskSpec{{ID: "t3", Type: "probe", Region: "us-east", Agent: "a1"}, {ID: "t4", Type: "probe", Region: "us-east", Agent: "a1"}}}
		}, "stale_plan"},
		{"no capability", func(g uint64) TaskPlan {
			return TaskPlan{Create: []TaskSpec{{ID: "t5", Type: "backup", Region: "us-east", Agent: "a1"}}}
		}, "stale_plan"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := agentHarness(t)
			var gen uint64
			h.f.Read(func(s *State) { gen = s.Tasks["t2"].Generation })
			before := snapshotBytes(t, h.f)
			res := h.apply(TaskPlanType, tc.plan(gen))
			if res == nil || res.Err == nil || codeOf(res.Err) != tc.code {
				t.Fatalf("got %+v, want rejection %q", res, tc.code)
			}
			if string(before) != string(snapshotBytes(t, h.f)) {
				t.Fatal("a rejected plan changed the state")
			}
		})
	}
}

// TestReportFencing checks that a report with an old generation, or for a
// task that moved to another agent, is refused while the rest applies.
func TestReportFencing(t *testing.T) {
	h := agentHarness(t)
	var oldGen uint64
	h.f.Read(func(s *State) { oldGen = s.Tasks["t1"].Generation })
	h.mustApply(TaskPlanType, TaskPlan{Assign: []Assignment{{Task: "t1", Agent: "a2", Generation: oldGen}}})
	var newGen uint64
	h.f.Read(func(s *State) { newGen = s.Tasks["t1"].Generation })
	res := h.mustApply(AgentReportType, AgentReport{Node: "a1", At: 9, Tasks: []TaskReport{{ID: "t1", Generation: oldGen, Status: TaskRunning}}})
	if rr := res.Value.(*ReportResult); rr.Applied != 0 || len(rr.Fenced) != 1 {
		t.Fatalf("report from the old owner: %+v", rr)
	}
	res = h.mustApply(AgentReportType, AgentReport{Node: "a2", At: 10, Tasks: []TaskReport{{ID: "t1", Generation: oldGen, Status: TaskRunning}}})
	if rr := res.Value.(*ReportResult); rr.Applied != 0 {
		t.Fatalf("report with the old generation from the new owner applied: %+v", rr)
	}
	res = h.mustApply(AgentReportType, AgentReport{Node: "a2", At: 11, Tasks: []TaskReport{{ID: "t1", Generation: newGen, Status: TaskRunning}}})
	if rr := res.Value.(*ReportResult); rr.Applied != 1 {
		t.Fatalf("current report refused: %+v", rr)
	}
	bad := h.apply(AgentReportType, AgentReport{Node: "a2", Tasks: []TaskReport{{ID: "t1", Generation: newGen, Status: "exploded"}}})
	if bad.Err == nil || !errors.Is(bad.Err, ErrInvalid) {
		t.Fatalf("report with a bad status: %+v", bad)
	}
}

func TestRegionHealth(t *testing.T) {
	h := agentHarness(t)
	health := func(r string) RegionHealth {
		var out RegionHealth
		h.f.Read(func(s *State) { out = s.RegionHealth(r) })
		return out
	}
	if got := health("us-east"); got.Status != HealthDegraded || got.AgentsAlive != 2 || got.AgentsTotal != 3 {
		t.Fatalf("one failed agent of three: %+v", got)
	}
	if got := health("eu-west"); got.Status != HealthHealthy {
		t.Fatalf("all agents alive, no probe yet: %+v", got)
	}
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("b1", "eu-west", AgentFailed)})
	if got := health("eu-west"); got.Status != HealthDown {
		t.Fatalf("no agent alive: %+v", got)
	}
	h.mustApply(AgentLeaveType, AgentLeave{Node: "b1"})
	if got := health("eu-west"); got.Status != HealthDown {
		t.Fatalf("every agent left: %+v", got)
	}
	if got := health("nowhere"); got.Status != HealthUnknown {
		t.Fatalf("region without agents: %+v", got)
	}
	h.mustApply(AgentUpsertType, AgentUpsert{Agent: testAgent("dead", "us-east", AgentAlive)})
	h.mustApply(TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: ProbeTaskID("us-east"), Type: "probe", Region: "us-east", Agent: "a2"}}})
	var gen uint64
	h.f.Read(func(s *State) { gen = s.Tasks[ProbeTaskID("us-east")].Generation })
	report := func(result string) {
		h.mustApply(AgentReportType, AgentReport{Node: "a2", Tasks: []TaskReport{{ID: ProbeTaskID("us-east"), Generation: gen, Status: TaskRunning, Result: json.RawMessage(result)}}})
	}
	report(`{"ok":false,"error":"connection refused"}`)
	if got := health("us-east"); got.Status != HealthDegraded || got.Probe == nil {
		t.Fatalf("failing probe: %+v", got)
	}
	report(`{"ok":true,"latency_ms":900}`)
	if got := health("us-east"); got.Status != HealthDegraded {
		t.Fatalf("probe over the latency budget: %+v", got)
	}
	report(`{"ok":true,"latency_ms":2}`)
	if got := health("us-east"); got.Status != HealthHealthy {
		t.Fatalf("good probe, all alive: %+v", got)
	}
}

// TestRestoredSnapshotIsRefenced: a user's snapshot restored with
// MarkRestored carries the mark until TasksRefence raises every task's
// generation above what agents saw; a report fenced by the snapshot's
// generation is refused afterwards.
func TestRestoredSnapshotIsRefenced(t *testing.T) {
	h := agentHarness(t)
	var saved bytes.Buffer
	var oldGen uint64
	h.f.Read(func(s *State) {
		oldGen = s.Tasks["t1"].Generation
		if err := WriteSnapshot(&saved, s); err != nil {
			t.Fatal(err)
		}
	})
	marked, err := MarkRestored(saved.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(marked))); err != nil {
		t.Fatal(err)
	}
	h.f.Read(func(s *State) {
		if !s.RefencePending {
			t.Fatal("a restored user snapshot is not marked for refencing")
		}
	})
	res := h.mustApply(TasksRefenceType, TasksRefence{At: 2})
	h.f.Read(func(s *State) {
		for id, tk := range s.Tasks {
			if tk.Generation != res.Index || tk.Generation <= oldGen {
				t.Fatalf("task %s at generation %d after refence at %d", id, tk.Generation, res.Index)
			}
		}
		if s.RefencePending {
			t.Fatal("the mark stayed after the refence")
		}
	})
	rep := h.mustApply(AgentReportType, AgentReport{Node: "a1", At: 3, Tasks: []TaskReport{{ID: "t1", Generation: oldGen, Status: TaskRunning}}})
	if r := rep.Value.(*ReportResult); r.Applied != 0 {
		t.Fatalf("a report fenced by the pre-restore generation was applied: %+v", r)
	}
	var again bytes.Buffer
	h.f.Read(func(s *State) { _ = WriteSnapshot(&again, s) })
	back, err := ReadSnapshot(&again)
	if err != nil || back.RefencePending {
		t.Fatalf("a refenced state's snapshot: %v, pending %v", err, back != nil && back.RefencePending)
	}
}
