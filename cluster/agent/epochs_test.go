package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	tu "github.com/atomcloud/atomfed/internal/testing/testutil"
)

// tenantExec runs tasks until stopped and records which ran.
type tenantExec struct {
	mu      sync.Mutex
	running map[string]bool
	ever    []string
}

func (x *tenantExec) Type() string { return "tenant-gate" }

func (x *tenantExec) Run(ctx context.Context, t *fsm.Task, report func(agent.TaskStatus)) error {
	x.mu.Lock()
	x.running[t.ID] = true
	x.ever = append(x.ever, t.ID)
	x.mu.Unlock()
	report(agent.TaskStatus{Status: fsm.TaskRunning})
	<-ctx.Done()
	x.mu.Lock()
	delete(x.running, t.ID)
	x.mu.Unlock()
	return nil
}

func (x *tenantExec) ran(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Contains(x.ever, id)
}

func (x *tenantExec) runs(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.running[id]
}

// epochTask is a task of tenant acme planned for epoch of incarnation
// created, with generation gen.
func epochTask(id string, gen, created, epoch uint64) *fsm.Task {
	spec, _ := json.Marshal(map[string]any{"ensure": "present", "kind": "tenant", "tenant": "acme", "tenant_created": created, "epoch": epoch})
	return &fsm.Task{ID: id, Type: "tenant-gate", Region: "r1", Agent: "a1", Generation: gen, Status: fsm.TaskAssigned, Spec: spec}
}

// TestAgentRunsOnlyTheCurrentTenantEpoch: an agent that has seen epoch N
// of a tenant does not run a task of that tenant planned for an older
// epoch (a stale view): it reports it failing with a stale_epoch result
// and never starts it. A running task whose epoch ends is stopped. The
// newest epoch survives a restart, and a new incarnation of the tenant id
// starts over.
func TestAgentRunsOnlyTheCurrentTenantEpoch(t *testing.T) {
	api := &fenceAPI{changed: make(chan struct{})}
	x := &tenantExec{running: map[string]bool{}}
	dir := t.TempDir()
	start := func() *agent.Agent {
		a, err := agent.New(agent.Config{
			NodeID: "a1", Region: "r1", DataDir: dir, SerfBindAddr: "127.0.0.1:0", Join: []string{"127.0.0.1:1"},
			Memberlist: testcluster.AgentMemberlist(), HeartbeatInterval: 50 * time.Millisecond,
			Executors: []agent.Executor{x},
			NewAPI:    func(func() []string) agent.API { return api },
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := start()
	t.Cleanup(func() { _ = a.Shutdown() })
	// staleReported waits until the agent reports id failing as stale.
	staleReported := func(id string, gen uint64) {
		t.Helper()
		tu.Eventually(t, 10*time.Second, func() error {
			api.mu.Lock()
			defer api.mu.Unlock()
			for _, r := range api.reports {
				for _, tr := range r.Tasks {
					if tr.ID != id || tr.Generation != gen {
						continue
					}
					var res fsm.StaleEpochResult
					_ = json.Unmarshal(tr.Result, &res)
					if tr.Status == fsm.TaskFailing && strings.HasPrefix(tr.Error, "stale_epoch:") && res.State == fsm.ReplStaleEpoch &&
						len(res.Issues) == 1 && res.Issues[0].Code == fsm.IssueStaleEpoch {
						return nil
					}
					return fmt.Errorf("%s reported %s %q %s", id, tr.Status, tr.Error, tr.Result)
				}
			}
			return fmt.Errorf("no report of %s generation %d yet", id, gen)
		})
	}
	runs := func(id string) {
		t.Helper()
		tu.Eventually(t, 10*time.Second, func() error {
			if !x.runs(id) {
				return fmt.Errorf("%s does not run", id)
			}
			return nil
		})
	}

	api.set(epochTask("pub/acme", 10, 5, 2))
	runs("pub/acme")
	// A stale view: the same tenant at epoch 1 (its old home's publisher).
	api.set(epochTask("pub/acme", 10, 5, 2), epochTask("sub/acme", 11, 5, 1))
	staleReported("sub/acme", 11)
	if x.ran("sub/acme") {
		t.Fatal("a task of epoch 1 ran on an agent that has seen epoch 2")
	}
	// Epoch 3 arrives: the epoch-2 task still running is stopped.
	api.set(epochTask("pub/acme", 12, 5, 2), epochTask("sub/acme", 13, 5, 3))
	runs("sub/acme")
	staleReported("pub/acme", 12)
	if x.runs("pub/acme") {
		t.Fatal("a task of epoch 2 still runs after epoch 3 was seen")
	}

	// Restarted, the agent remembers epoch 3.
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	api.set(epochTask("pub/acme", 14, 5, 2))
	a = start()
	staleReported("pub/acme", 14)
	if x.runs("pub/acme") {
		t.Fatal("a restarted agent ran a task of an epoch that had ended before the restart")
	}
	// A tenant deleted and created again starts at epoch 1, and runs.
	api.set(epochTask("pub/acme", 15, 9, 1))
	runs("pub/acme")
}
