package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	tu "github.com/atomcloud/atomfed/internal/testing/testutil"
)

// fenceAPI is a server API whose assignments the test sets, and which
// can hold a report in flight.
type fenceAPI struct {
	mu      sync.Mutex
	tasks   []*fsm.Task
	index   uint64
	changed chan struct{}
	hold    chan struct{} // while set, AgentReport waits for it to close
	held    chan struct{} // closed when a report is being held
	reports []fsm.AgentReport
}

func (f *fenceAPI) set(tasks ...*fsm.Task) {
	f.mu.Lock()
	f.tasks, f.index = tasks, f.index+1
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fenceAPI) AgentTasks(ctx context.Context, node string, index uint64, wait time.Duration) ([]*fsm.Task, uint64, error) {
	for {
		f.mu.Lock()
		tasks, idx, ch := f.tasks, f.index, f.changed
		f.mu.Unlock()
		if idx > index {
			return tasks, idx, nil
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-ch:
		}
	}
}

func (f *fenceAPI) AgentReport(ctx context.Context, r *fsm.AgentReport) (*fsm.ReportResult, error) {
	f.mu.Lock()
	hold, held := f.hold, f.held
	f.hold = nil
	f.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, *r)
	res := &fsm.ReportResult{}
	for _, tr := range r.Tasks {
		cur := false
		for _, t := range f.tasks {
			cur = cur || (t.ID == tr.ID && t.Generation == tr.Generation)
		}
		if cur {
			res.Applied++
		} else {
			res.Fenced = append(res.Fenced, tr.ID)
		}
	}
	return res, nil
}

func (f *fenceAPI) AgentLeave(context.Context, string) error                        { return nil }
func (f *fenceAPI) AgentRegister(context.Context, string) error                     { return nil }
func (f *fenceAPI) CheckAgentToken(context.Context, string, string) error           { return nil }
func (f *fenceAPI) ReportDatabase(context.Context, *fsm.RegionDatabaseReport) error { return nil }
func (f *fenceAPI) RegionDatabase(context.Context, string) (*fsm.RegionDatabase, error) {
	return nil, nil
}

// gateExec reports running at once and runs until stopped, recording the
// generations it ran and those that were stopped.
type gateExec struct {
	mu      sync.Mutex
	started []uint64
	stopped []uint64
}

func (g *gateExec) Type() string { return "gate" }

func (g *gateExec) Run(ctx context.Context, t *fsm.Task, report func(agent.TaskStatus)) error {
	g.mu.Lock()
	g.started = append(g.started, t.Generation)
	g.mu.Unlock()
	report(agent.TaskStatus{Status: fsm.TaskRunning})
	<-ctx.Done()
	g.mu.Lock()
	g.stopped = append(g.stopped, t.Generation)
	g.mu.Unlock()
	return nil
}

// TestFencedReportDoesNotStopTheNewerGeneration: a report about a task's
// old generation, answered "fenced" after the agent already started the
// task's new generation, must not stop the new one (it would stay
// assigned to the agent and never run).
func TestFencedReportDoesNotStopTheNewerGeneration(t *testing.T) {
	api := &fenceAPI{changed: make(chan struct{})}
	gate := &gateExec{}
	a, err := agent.New(agent.Config{
		NodeID: "a1", Region: "r1", DataDir: t.TempDir(), SerfBindAddr: "127.0.0.1:0", Join: []string{"127.0.0.1:1"},
		Memberlist: testcluster.AgentMemberlist(), HeartbeatInterval: 50 * time.Millisecond,
		Executors: []agent.Executor{gate},
		NewAPI:    func(func() []string) agent.API { return api },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })

	// The first report about generation 1 is held in flight ...
	api.mu.Lock()
	api.hold, api.held = make(chan struct{}), make(chan struct{})
	hold, held := api.hold, api.held
	api.mu.Unlock()
	api.set(&fsm.Task{ID: "gate/x", Type: "gate", Region: "r1", Agent: "a1", Generation: 1, Status: fsm.TaskAssigned})
	<-held
	// ... while the task moves to generation 2, which the agent starts.
	api.set(&fsm.Task{ID: "gate/x", Type: "gate", Region: "r1", Agent: "a1", Generation: 2, Status: fsm.TaskAssigned})
	tu.Eventually(t, 10*time.Second, func() error {
		for _, rt := range a.Status().Tasks {
			if rt.ID == "gate/x" && rt.Generation == 2 {
				return nil
			}
		}
		return errTask
	})
	close(hold) // the held report is answered: generation 1 is fenced

	// Generation 2 keeps running and gets its report through.
	tu.Eventually(t, 10*time.Second, func() error {
		api.mu.Lock()
		defer api.mu.Unlock()
		for _, r := range api.reports {
			for _, tr := range r.Tasks {
				if tr.ID == "gate/x" && tr.Generation == 2 {
					return nil
				}
			}
		}
		return errTask
	})
	gate.mu.Lock()
	defer gate.mu.Unlock()
	for _, g := range gate.stopped {
		if g == 2 {
			t.Fatalf("a fenced report about generation 1 stopped generation 2 (started %v, stopped %v)", gate.started, gate.stopped)
		}
	}
	found := false
	for _, rt := range a.Status().Tasks {
		found = found || (rt.ID == "gate/x" && rt.Generation == 2)
	}
	if !found {
		t.Fatalf("generation 2 no longer runs: %+v", a.Status().Tasks)
	}
}

var errTask = errorString("not yet")

type errorString string

func (e errorString) Error() string { return string(e) }
