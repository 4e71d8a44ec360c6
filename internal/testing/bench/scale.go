package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/signing"
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

// The scale test's token and gossip key. Gossip is encrypted, requests
// carry the token and agents sign their reports as in production; the
// in-process HTTP is plaintext (TLS costs the API, not membership).
const scaleToken = "atf_scale_test"

var scaleGossipKey = []byte("atomfed-scale-test-gossip-key-32")

type scaleServer struct {
	srv  *cluster.Server
	http *http.Server
	url  string
}

// RunScale starts 3 servers and opts.Agents agents across opts.Regions
// regions in this process, on loopback with the production (LAN) gossip and
// Raft settings, and measures membership convergence, failure detection
// and resource use.
func RunScale(ctx context.Context, opts ScaleOptions) (*ScaleResult, error) {
	res := &ScaleResult{Servers: 3, Agents: opts.Agents, Regions: opts.Regions}
	var servers []*scaleServer
	var agents []*agent.Agent
	defer func() {
		for _, a := range agents {
			_ = a.Shutdown()
		}
		for _, s := range servers {
			_ = s.srv.Shutdown()
			_ = s.http.Close()
		}
	}()
	var join []string
	for i := 0; i < 3; i++ {
		s, err := startScaleServer(filepath.Join(opts.Dir, fmt.Sprintf("s%d", i+1)), fmt.Sprintf("s%d", i+1), join)
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
		join = append(join, s.srv.SerfAddr())
	}
	leader := func() *scaleServer {
		for _, s := range servers {
			if s.srv.IsLeader() {
				return s
			}
		}
		return nil
	}
	if err := pollUntil(ctx, 30*time.Second, func() error {
		if leader() == nil {
			return errors.New("no leader")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for r := 0; r < opts.Regions; r++ {
		name := fmt.Sprintf("scale-%d", r)
		key, _ := signing.NewSigner()
		c, err := client.New(leader().url, client.WithToken(scaleToken), client.WithSigner(key))
		if err != nil {
			return nil, err
		}
		if _, err := c.RegisterRegion(ctx, &fsm.Region{Name: name, URL: servers[r%3].url}, nil); err != nil {
			return nil, fmt.Errorf("register region: %w", err)
		}
	}
	start := time.Now()
	for i := 0; i < opts.Agents; i++ {
		region := fmt.Sprintf("scale-%d", i%opts.Regions)
		node := fmt.Sprintf("a%03d", i)
		key, err := signing.NewSigner()
		if err != nil {
			return nil, err
		}
		a, err := agent.New(agent.Config{
			NodeID: node, Region: region, DataDir: filepath.Join(opts.Dir, node),
			SerfBindAddr: "127.0.0.1:0", HTTPAdvertiseURL: "http://127.0.0.1:1", Join: join, Capacity: 16,
			Version: "scale", Executors: []agent.Executor{agent.NewProbeExecutor(nil, nil)},
			GossipKey: scaleGossipKey,
			NewAPI: func(s func() []string) agent.API {
				return client.NewPool(s, client.WithToken(scaleToken), client.WithSigner(key))
			},
			Logger: hclog.NewNullLogger(),
		})
		if err != nil {
			return nil, fmt.Errorf("start agent %s: %w", node, err)
		}
		agents = append(agents, a)
	}
	agentStatus := func() (alive int, byNode map[string]string, probes int) {
		byNode = map[string]string{}
		l := leader()
		if l == nil {
			return 0, byNode, 0
		}
		l.srv.FSM().Read(func(s *fsm.State) {
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
	if err := pollUntil(ctx, 5*time.Minute, func() error {
		if n, _, _ := agentStatus(); n < opts.Agents {
			return fmt.Errorf("%d of %d agents alive", n, opts.Agents)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res.AllAlive = time.Since(start)
	if err := pollUntil(ctx, 2*time.Minute, func() error {
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
	cpu0, idx0, t0 := cpuTime(), leader().srv.Raft().CommitIndex(), time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(opts.Steady):
	}
	elapsed := time.Since(t0).Seconds()
	res.CPUCores = (cpuTime() - cpu0).Seconds() / elapsed
	res.CommitsPerSec = float64(leader().srv.Raft().CommitIndex()-idx0) / elapsed
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMiB = float64(ms.HeapInuse) / (1 << 20)
	res.RSSMiB = rssMiB()
	res.Goroutines = runtime.NumGoroutine()

	// Crash the agent that runs scale-0's probe, if any, else the first.
	victim := 0
	var probeAgent string
	leader().srv.FSM().Read(func(s *fsm.State) {
		if t := s.Tasks[fsm.ProbeTaskID("scale-0")]; t != nil {
			probeAgent = t.Agent
		}
	})
	if probeAgent != "" {
		victim, _ = strconv.Atoi(strings.TrimPrefix(probeAgent, "a"))
	}
	name := fmt.Sprintf("a%03d", victim)
	crash := time.Now()
	_ = agents[victim].Shutdown()
	if err := pollUntil(ctx, 2*time.Minute, func() error {
		if _, st, _ := agentStatus(); st[name] != fsm.AgentFailed {
			return fmt.Errorf("%s is %s", name, st[name])
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res.DetectFailed = time.Since(crash)
	if probeAgent != "" {
		if err := pollUntil(ctx, 2*time.Minute, func() error {
			var t *fsm.Task
			leader().srv.FSM().Read(func(s *fsm.State) { t = s.Tasks[fsm.ProbeTaskID("scale-0")] })
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

func startScaleServer(dir, node string, join []string) (*scaleServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	url := "http://" + ln.Addr().String()
	reg := prometheus.NewRegistry()
	cfg := cluster.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.DataDir = node, "scale-0", dir
	cfg.RaftBindAddr, cfg.SerfBindAddr, cfg.HTTPAdvertiseURL = "127.0.0.1:0", "127.0.0.1:0", url
	cfg.BootstrapExpect, cfg.Join, cfg.Registerer = 3, join, reg
	cfg.GossipKey = scaleGossipKey
	if cfg.Signer, err = signing.NewSigner(); err != nil {
		ln.Close()
		return nil, err
	}
	srv, err := cluster.New(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	api := httpapi.New(httpapi.Config{Cluster: srv, Registerer: reg, Gatherer: reg, Version: "scale", BootstrapToken: scaleToken, Signer: cfg.Signer})
	hs := &http.Server{Handler: api.Handler()}
	go hs.Serve(ln)
	return &scaleServer{srv: srv, http: hs, url: url}, nil
}

func pollUntil(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
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
