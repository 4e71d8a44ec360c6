package cluster_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	tu "github.com/atomcloud/atomfed/internal/testing/testutil"
)

var stale = &client.QueryOptions{Consistency: "stale"}

// registerRegion registers a region through any running server, retrying
// while there is no leader, as a client would.
func registerRegion(t *testing.T, c *testcluster.Cluster, name, url string) {
	t.Helper()
	tu.Eventually(t, 20*time.Second, func() error {
		ctx := testcluster.Ctx(t, 10*time.Second)
		_, err := c.Running()[0].RegionClient(name).RegisterRegion(ctx, &fsm.Region{Name: name, URL: url}, nil)
		if err != nil && client.StatusOf(err) != 503 && client.StatusOf(err) != 0 {
			t.Fatalf("register %s: %v", name, err)
		}
		return err
	})
}

// probeTask waits until region's probe runs and reports on an agent, and
// returns the task as the leader sees it.
func probeTask(t *testing.T, c *testcluster.Cluster, region string, notOn string) *fsm.Task {
	t.Helper()
	var task *fsm.Task
	tu.Eventually(t, 15*time.Second, func() error {
		ctx := testcluster.Ctx(t, 5*time.Second)
		tasks, _, err := c.WaitLeader().Client.Tasks(ctx, region, "probe", "", nil)
		if err != nil {
			return err
		}
		if len(tasks) != 1 {
			return fmt.Errorf("%d probe tasks in %s, want 1", len(tasks), region)
		}
		task = tasks[0]
		if task.Agent == "" || task.Agent == notOn || task.Status != fsm.TaskRunning {
			return fmt.Errorf("probe task %+v not running yet (not on %q)", task, notOn)
		}
		return nil
	})
	return task
}

func agentByID(c *testcluster.Cluster, id string) *testcluster.AgentNode {
	for _, a := range c.Agents {
		if a.ID == id {
			return a
		}
	}
	return nil
}

// healthEverywhere waits until every running server derives want for region.
func healthEverywhere(t *testing.T, c *testcluster.Cluster, region, want string, within time.Duration) {
	t.Helper()
	tu.Eventually(t, within, func() error {
		for _, n := range c.Running() {
			ctx := testcluster.Ctx(t, 5*time.Second)
			views, _, err := n.Client.RegionViews(ctx, stale)
			if err != nil {
				return err
			}
			found := false
			for _, v := range views {
				if v.Name == region {
					found = true
					if v.Health.Status != want {
						return fmt.Errorf("%s: %s is %s (%s), want %s", n.ID, region, v.Health.Status, v.Health.Reason, want)
					}
				}
			}
			if !found {
				return fmt.Errorf("%s: region %s missing", n.ID, region)
			}
		}
		return nil
	})
}

func TestAgentsRunProbesAndFeedHealth(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	registerRegion(t, c, "r1", c.Nodes[1].URL)
	c.AddAgent("r1-a1", "r1")
	c.AddAgent("r1-a2", "r1")
	task := probeTask(t, c, "r1", "")
	var res fsm.ProbeResult
	if err := json.Unmarshal(task.Result, &res); err != nil || !res.OK || res.Target != c.Nodes[1].URL+"/health" || res.LatencyMS <= 0 {
		t.Fatalf("probe result %s (%v)", task.Result, err)
	}
	healthEverywhere(t, c, "r1", fsm.HealthHealthy, 10*time.Second)
	agents, _, err := c.WaitLeader().Client.Agents(testcluster.Ctx(t, 5*time.Second), "r1", nil)
	if err != nil || len(agents) != 2 || agents[0].Status != fsm.AgentAlive || agents[0].LastContact == 0 {
		t.Fatalf("agent registry: %+v (%v)", agents, err)
	}
}

// TestFailedAgentTasksMoveToPeer crashes the agent running a probe: it is
// marked failed and the probe runs on its peer, with a new generation,
// within the documented bound (failure detection plus one scheduling pass).
func TestFailedAgentTasksMoveToPeer(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	registerRegion(t, c, "r1", c.Nodes[1].URL)
	c.AddAgent("r1-a1", "r1")
	c.AddAgent("r1-a2", "r1")
	before := probeTask(t, c, "r1", "")
	victim := agentByID(c, before.Agent)
	killed := time.Now()
	c.StopAgent(victim)
	after := probeTask(t, c, "r1", victim.ID)
	moved := time.Since(killed)
	t.Logf("probe moved from %s to %s in %s", victim.ID, after.Agent, moved)
	if after.Generation <= before.Generation {
		t.Fatalf("moved task kept generation %d (was %d)", after.Generation, before.Generation)
	}
	if moved > 10*time.Second {
		t.Fatalf("task took %s to move, over the bound", moved)
	}
	a, _, err := c.WaitLeader().Client.Agents(testcluster.Ctx(t, 5*time.Second), "r1", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ag := range a {
		if ag.Node == victim.ID && ag.Status != fsm.AgentFailed {
			t.Fatalf("crashed agent is %s, want failed", ag.Status)
		}
	}
}

// TestGracefulAgentLeaveHandsBackTasks checks that a leaving agent's task
// moves at once, without waiting for failure detection.
func TestGracefulAgentLeaveHandsBackTasks(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	registerRegion(t, c, "r1", c.Nodes[1].URL)
	c.AddAgent("r1-a1", "r1")
	c.AddAgent("r1-a2", "r1")
	before := probeTask(t, c, "r1", "")
	c.LeaveAgent(agentByID(c, before.Agent))
	after := probeTask(t, c, "r1", before.Agent)
	if after.Generation <= before.Generation {
		t.Fatal("task did not get a new generation")
	}
	tu.Eventually(t, 10*time.Second, func() error {
		ag, _, err := c.WaitLeader().Client.Agents(testcluster.Ctx(t, 5*time.Second), "r1", nil)
		if err != nil {
			return err
		}
		for _, a := range ag {
			if a.Node == before.Agent && a.Status != fsm.AgentLeft {
				return fmt.Errorf("left agent is %s", a.Status)
			}
		}
		return nil
	})
}

// TestRegionDownAndBack stops every agent of a region: it turns down on
// every server, and healthy again when they return.
func TestRegionDownAndBack(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	registerRegion(t, c, "r1", c.Nodes[1].URL)
	a1, a2 := c.AddAgent("r1-a1", "r1"), c.AddAgent("r1-a2", "r1")
	probeTask(t, c, "r1", "")
	healthEverywhere(t, c, "r1", fsm.HealthHealthy, 10*time.Second)
	c.StopAgent(a1)
	c.StopAgent(a2)
	healthEverywhere(t, c, "r1", fsm.HealthDown, 15*time.Second)
	c.RestartAgent(a1)
	c.RestartAgent(a2)
	probeTask(t, c, "r1", "")
	healthEverywhere(t, c, "r1", fsm.HealthHealthy, 15*time.Second)
}

// TestLeaderLossDuringScheduling kills the leader while it places tasks:
// afterwards every task is placed exactly once, none is lost, and tasks
// whose agent stayed alive did not move. Gossip runs with several seconds
// of failure detection: with the usual sub-second test settings, 19
// in-process members on a starved machine see live agents declared failed
// (and their tasks rightly moved), which is not what this test is about.
func TestLeaderLossDuringScheduling(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{
		Configure: func(_ int, cfg *cluster.Config) { cfg.Memberlist = testcluster.SteadyMemberlist() },
	})
	const regions = 8
	steady := testcluster.AgentOptions{Memberlist: testcluster.SteadyMemberlist()}
	for i := 0; i < regions; i++ {
		r := fmt.Sprintf("g%d", i)
		c.AddAgentWith(r+"-a1", r, steady)
		c.AddAgentWith(r+"-a2", r, steady)
	}
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(target.Close)
	leader := c.WaitLeader()
	for i := 0; i < regions; i++ {
		registerRegion(t, c, fmt.Sprintf("g%d", i), target.URL)
	}
	c.Stop(leader) // mid-scheduling: plans for some regions may not be committed
	assignments := func() map[string]string {
		out := map[string]string{}
		tu.Eventually(t, 20*time.Second, func() error {
			tasks, _, err := c.WaitLeader().Client.Tasks(testcluster.Ctx(t, 5*time.Second), "", "", "", nil)
			if err != nil {
				return err
			}
			out = map[string]string{}
			for _, tk := range tasks {
				if _, dup := out[tk.ID]; dup {
					return fmt.Errorf("task %s listed twice", tk.ID)
				}
				if tk.Agent == "" || tk.Status != fsm.TaskRunning {
					return fmt.Errorf("task %s not running yet: %+v", tk.ID, tk)
				}
				out[tk.ID] = tk.Agent
			}
			if len(out) != 2*regions {
				return fmt.Errorf("%d tasks, want a probe and a metrics task for each of %d regions", len(out), regions)
			}
			return nil
		})
		return out
	}
	first := assignments()
	// A second leader change must not reshuffle anything.
	c.Stop(c.WaitLeader())
	c.Restart(leader)
	second := assignments()
	for id, agent := range first {
		if second[id] != agent {
			t.Fatalf("task %s moved from %s to %s though its agent stayed alive", id, agent, second[id])
		}
	}
	// No agent runs a task that is not assigned to it.
	for _, a := range c.Agents {
		for _, rt := range a.Agent.Status().Tasks {
			if first[rt.ID] != a.ID {
				t.Fatalf("agent %s runs %s, assigned to %s", a.ID, rt.ID, first[rt.ID])
			}
		}
	}
}

// TestStaleGenerationRefused gives an agent a memory of a newer generation
// than the one the servers now assign (as a lagging server's answer would
// look): it refuses to run the older assignment.
func TestStaleGenerationRefused(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	registerRegion(t, c, "r1", c.Nodes[1].URL)
	a := c.AddAgent("r1-a1", "r1")
	task := probeTask(t, c, "r1", "")
	c.StopAgent(a)
	state := map[string]map[string]uint64{"generations": {task.ID: task.Generation + 1000}}
	b, _ := json.Marshal(state)
	if err := os.WriteFile(filepath.Join(a.Dir, "agent-state.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c.RestartAgent(a)
	tu.Eventually(t, 10*time.Second, func() error {
		if n := metricValue(t, a.Reg, "atomfed_agent_stale_assignments_refused_total"); n < 1 {
			return fmt.Errorf("no refusal yet")
		}
		return nil
	})
	for _, rt := range a.Agent.Status().Tasks {
		if rt.ID == task.ID {
			t.Fatalf("agent runs %+v despite the stale generation", rt)
		}
	}
}

// metricValue reads an unlabelled metric from a registry: a counter's or
// gauge's value, a histogram's sample count; 0 when it is missing.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			m := mf.GetMetric()[0]
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func TestCoordinatesAndNearest(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	registerRegion(t, c, "r1", c.Nodes[0].URL)
	registerRegion(t, c, "r2", c.Nodes[1].URL)
	c.AddAgent("r1-a1", "r1")
	c.AddAgent("r2-a1", "r2")
	ctx := testcluster.Ctx(t, 10*time.Second)
	tu.Eventually(t, 10*time.Second, func() error {
		coords, err := c.Nodes[0].Client.Coordinates(ctx)
		if err != nil {
			return err
		}
		if len(coords) != 5 {
			return fmt.Errorf("%d coordinates, want 5 (3 servers, 2 agents)", len(coords))
		}
		return nil
	})
	near, err := c.Nodes[0].Client.NearestRegions(ctx, "r2-a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(near) != 2 || near[0].Region != "r2" || near[0].RTTMillis != 0 || near[1].RTTMillis < 0 {
		t.Fatalf("nearest from r2-a1: %+v", near)
	}
	if _, err := c.Nodes[0].Client.NearestRegions(ctx, "nowhere"); client.StatusOf(err) != 404 {
		t.Fatalf("unknown source: %v", err)
	}
}

// ComputePlan is pure: check its decisions on hand-built states.
func TestComputePlan(t *testing.T) {
	st := &fsm.State{Regions: map[string]*fsm.Region{}, Agents: map[string]*fsm.Agent{}, Tasks: map[string]*fsm.Task{}}
	st.Regions["r1"] = &fsm.Region{Name: "r1", URL: "http://x"}
	st.Agents["a1"] = &fsm.Agent{Node: "a1", Region: "r1", Status: fsm.AgentAlive, Capabilities: []string{"probe"}}
	st.Agents["a2"] = &fsm.Agent{Node: "a2", Region: "r1", Status: fsm.AgentFailed, Capabilities: []string{"probe"}}
	p := probePlan(st)
	if p == nil || len(p.Create) != 1 || p.Create[0].Agent != "a1" || p.Create[0].ID != "probe/r1" {
		t.Fatalf("plan for a new region: %+v", p)
	}
	spec := p.Create[0].Spec
	st.Tasks["probe/r1"] = &fsm.Task{ID: "probe/r1", Type: "probe", Region: "r1", Spec: spec, Agent: "a2", Generation: 7}
	p = probePlan(st)
	if p == nil || len(p.Assign) != 1 || p.Assign[0].Agent != "a1" || p.Assign[0].Generation != 7 {
		t.Fatalf("plan for a task on a failed agent: %+v", p)
	}
	st.Tasks["probe/r1"].Agent = "a1"
	if p := probePlan(st); p != nil {
		t.Fatalf("a settled state produced a plan: %+v", p)
	}
	st.Regions["r1"] = &fsm.Region{Name: "r1", URL: "http://y"}
	if p := probePlan(st); p == nil || len(p.Delete) != 1 || len(p.Create) != 1 {
		t.Fatalf("a changed URL must re-create the probe: %+v", p)
	}
	delete(st.Regions, "r1")
	if p := probePlan(st); p == nil || len(p.Delete) != 1 || len(p.Create) != 0 {
		t.Fatalf("a deleted region must delete its probe: %+v", p)
	}
}

// probePlan is ComputePlan's plan for the probe tasks alone (every region
// also has a metrics task, which these agents do not run).
func probePlan(st *fsm.State) *fsm.TaskPlan {
	p := cluster.ComputePlan(st)
	if p == nil {
		return nil
	}
	out := &fsm.TaskPlan{}
	for _, c := range p.Create {
		if c.Type == fsm.TaskTypeProbe {
			out.Create = append(out.Create, c)
		}
	}
	for _, a := range p.Assign {
		if strings.HasPrefix(a.Task, "probe/") {
			out.Assign = append(out.Assign, a)
		}
	}
	for _, id := range p.Delete {
		if strings.HasPrefix(id, "probe/") {
			out.Delete = append(out.Delete, id)
		}
	}
	if len(out.Create)+len(out.Assign)+len(out.Delete) == 0 {
		return nil
	}
	return out
}

// TestRestoreRaisesTaskGenerations: a snapshot saved while an agent runs
// a task at generation G0 is restored after the agent has seen a later
// generation of that task. Fencing tokens only grow: the restore gives
// every task a generation above anything issued before it, and the agent,
// alive throughout, runs the restored task again instead of refusing it as
// stale.
func TestRestoreRaisesTaskGenerations(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	registerRegion(t, c, "r1", c.Nodes[1].URL)
	c.AddAgent("r1-a1", "r1")
	saved := probeTask(t, c, "r1", "")
	ctx := testcluster.Ctx(t, time.Minute)
	var archive bytes.Buffer
	tu.Eventually(t, 20*time.Second, func() error {
		archive.Reset()
		_, err := c.WaitLeader().Client.SnapshotSave(ctx, &archive)
		return err
	})

	// The task is deleted and made again: the agent sees a later generation.
	if err := c.WaitLeader().Client.DeleteRegion(ctx, "r1", nil); err != nil {
		t.Fatal(err)
	}
	tu.Eventually(t, 15*time.Second, func() error {
		tasks, _, err := c.WaitLeader().Client.Tasks(ctx, "r1", "probe", "", nil)
		if err != nil || len(tasks) != 0 {
			return fmt.Errorf("probe task of a deleted region: %d (%v)", len(tasks), err)
		}
		return nil
	})
	registerRegion(t, c, "r1", c.Nodes[1].URL)
	later := probeTask(t, c, "r1", "")
	if later.Generation <= saved.Generation {
		t.Fatalf("the re-made task is at generation %d, not past %d", later.Generation, saved.Generation)
	}

	tu.Eventually(t, 20*time.Second, func() error {
		_, err := c.WaitLeader().Client.SnapshotRestore(ctx, bytes.NewReader(archive.Bytes()))
		return err
	})
	tu.Eventually(t, 15*time.Second, func() error {
		tasks, _, err := c.WaitLeader().Client.Tasks(ctx, "", "", "", nil)
		if err != nil {
			return err
		}
		for _, tk := range tasks {
			if tk.Generation <= later.Generation {
				return fmt.Errorf("task %s at generation %d after the restore, not past %d", tk.ID, tk.Generation, later.Generation)
			}
			if tk.Agent != "r1-a1" || tk.Status != fsm.TaskRunning {
				return fmt.Errorf("task %s on %q is %s after the restore", tk.ID, tk.Agent, tk.Status)
			}
		}
		if len(tasks) == 0 {
			return fmt.Errorf("no task after the restore")
		}
		return nil
	})
	ag, _, err := c.WaitLeader().Client.Agents(ctx, "r1", nil)
	if err != nil || len(ag) != 1 || ag[0].Status != fsm.AgentAlive {
		t.Fatalf("agents after the restore: %+v (%v)", ag, err)
	}
}
