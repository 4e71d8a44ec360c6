package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// ScaleOptions shape the agent scale test.
type ScaleOptions struct {
	Agents, Regions int
	// Steady is how long resource use is measured once every agent is alive.
	Steady time.Duration
	Dir    string
}

// ScaleResult is what the scale test measured. Everything runs in one
// process (3 servers and every agent), so CPU and memory are the process's:
// an upper bound for the leader alone.
type ScaleResult struct {
	Servers, Agents, Regions int
	// AllAlive is the time from starting the first agent until the leader's
	// registry shows every agent alive.
	AllAlive time.Duration
	// ProbesRunning is the time from the same start until every region's
	// probe runs on an agent.
	ProbesRunning time.Duration
	// DetectFailed is the time from crashing one agent until the leader has
	// committed it as failed.
	DetectFailed time.Duration
	// TaskMoved is the time from the same crash until its probe ran on a peer
	// (only when the crashed agent held one).
	TaskMoved time.Duration
	// CPUCores is the process's CPU use in the steady window (cores).
	CPUCores float64
	// RSSMiB and HeapMiB are the process's resident set and Go heap.
	RSSMiB, HeapMiB float64
	Goroutines      int
	// LeaderRaftIndex growth per second in the steady window: the write load
	// that heartbeats and reports put on Raft.
	CommitsPerSec float64
}

// RunScale starts 3 servers and opts.Agents agents across opts.Regions
// regions in this process (testcluster, outside `go test` through
// testutil.RunTB), on loopback with the production (LAN) gossip and Raft
// settings, and measures membership convergence, failure detection and
// resource use. Gossip is encrypted, requests carry the token and agents
// sign their reports as in production; the in-process HTTP is plaintext
// (TLS costs the API, not membership).
func RunScale(ctx context.Context, opts ScaleOptions) (*ScaleResult, error) {
	var res *ScaleResult
	err := testutil.RunTB(opts.Dir, nil, func(t testutil.TB) error {
		var err error
		res, err = runScale(ctx, t, opts)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func runScale(ctx context.Context, t testutil.TB, opts ScaleOptions) (*ScaleResult, error) {
	res := &ScaleResult{Servers: 3, Agents: opts.Agents, Regions: opts.Regions}
	c := testcluster.New(t, testcluster.Options{
		Servers: 3, LANTimings: true, Plaintext: true,
		// The default policy, as a fresh federation has it.
		GatedPolicy: true,
		Configure:   func(_ int, cfg *cluster.Config) { cfg.Region = "scale-0" },
	})
	leader := func() *testcluster.Node {
		for _, n := range c.Running() {
			if n.Server.IsLeader() {
				return n
			}
		}
		return nil
	}
	for r := 0; r < opts.Regions; r++ {
		name := fmt.Sprintf("scale-%d", r)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c.RegisterRegion(&fsm.Region{Name: name, URL: c.Nodes[r%3].URL})
	}
	start := time.Now()
	agents := make([]*testcluster.AgentNode, opts.Agents)
	for i := range agents {
		agents[i] = c.AddAgent(fmt.Sprintf("a%03d", i), fmt.Sprintf("scale-%d", i%opts.Regions))
	}
	agentStatus := func() (alive int, byNode map[string]string, probes int) {
		byNode = map[string]string{}
		l := leader()
		if l == nil {
			return 0, byNode, 0
		}
		l.Server.FSM().Read(func(s *fsm.State) {
			for _, a := range s.Agents {
				byNode[a.Node] = a.Status
				if a.Status == fsm.AgentAlive {
					alive++
				}
			}
			for _, t := range s.Tasks {
				if t.Type == fsm.TaskTypeProbe && t.Status == fsm.TaskRunning {
					probes++
				}
			}
		})
		return alive, byNode, probes
	}
	if err := pollScale(ctx, 5*time.Minute, func() error {
		if n, _, _ := agentStatus(); n < opts.Agents {
			return fmt.Errorf("%d of %d agents alive", n, opts.Agents)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res.AllAlive = time.Since(start)
	if err := pollScale(ctx, 2*time.Minute, func() error {
		if _, _, p := agentStatus(); p < opts.Regions {
			return fmt.Errorf("%d of %d probes running", p, opts.Regions)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res.ProbesRunning = time.Since(start)

	// Steady state: resource use and raft write rate.
	runtime.GC()
	cpu0, idx0, t0 := cpuTime(), leader().Server.Raft().CommitIndex(), time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(opts.Steady):
	}
	elapsed := time.Since(t0).Seconds()
	res.CPUCores = (cpuTime() - cpu0).Seconds() / elapsed
	res.CommitsPerSec = float64(leader().Server.Raft().CommitIndex()-idx0) / elapsed
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMiB = float64(ms.HeapInuse) / (1 << 20)
	res.RSSMiB = rssMiB()
	res.Goroutines = runtime.NumGoroutine()

	// Crash the agent that runs scale-0's probe, if any, else the first.
	victim := 0
	var probeAgent string
	leader().Server.FSM().Read(func(s *fsm.State) {
		if t := s.Tasks[fsm.ProbeTaskID("scale-0")]; t != nil {
			probeAgent = t.Agent
		}
	})
	if probeAgent != "" {
		victim, _ = strconv.Atoi(strings.TrimPrefix(probeAgent, "a"))
	}
	name := agents[victim].ID
	crash := time.Now()
	c.StopAgent(agents[victim])
	if err := pollScale(ctx, 2*time.Minute, func() error {
		if _, st, _ := agentStatus(); st[name] != fsm.AgentFailed {
			return fmt.Errorf("%s is %s", name, st[name])
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res.DetectFailed = time.Since(crash)
	if probeAgent != "" {
		if err := pollScale(ctx, 2*time.Minute, func() error {
			var t *fsm.Task
			leader().Server.FSM().Read(func(s *fsm.State) { t = s.Tasks[fsm.ProbeTaskID("scale-0")] })
			if t == nil || t.Agent == name || t.Agent == "" || t.Status != fsm.TaskRunning {
				return errors.New("probe not moved yet")
			}
			return nil
		}); err != nil {
			return nil, err
		}
		res.TaskMoved = time.Since(crash)
	}
	return res, nil
}

// pollScale polls fn every 20 ms, the resolution of the times the scale
// test reports.
func pollScale(ctx context.Context, timeout time.Duration, fn func() error) error {
	if err := testutil.PollEvery(ctx, timeout, 20*time.Millisecond, fn); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("after %s: %w", timeout, err)
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseFloat(f[1], 64)
	return pages * float64(os.Getpagesize()) / (1 << 20)
}
