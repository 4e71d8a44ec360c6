package testcluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/metrics"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// AgentNode is a region agent of a test cluster.
type AgentNode struct {
	ID     string
	Region string
	Dir    string
	Agent  *agent.Agent
	Reg    *prometheus.Registry
	// Token is the agent's own token, bound to its node and region.
	Token string

	cfg     agent.Config
	opts    AgentOptions
	running bool
	// self and pool are the running agent and its server pool, for its
	// metrics executor (set once they exist).
	self atomic.Pointer[agent.Agent]
	pool atomic.Pointer[client.Pool]
}

// metricsExecutor is the region metrics task's executor, as cmd/atomfed
// wires it: it scrapes the region's nodes and pushes to every server.
func (n *AgentNode) metricsExecutor(tr http.RoundTripper) agent.Executor {
	s := &metrics.Scraper{Region: n.Region, Client: &http.Client{Transport: tr}, Nodes: func(context.Context) []metrics.Target {
		a := n.self.Load()
		if a == nil {
			return nil
		}
		var out []metrics.Target
		for _, e := range a.RegionNodes() {
			out = append(out, metrics.Target{Name: e.Name, URL: e.URL})
		}
		return out
	}}
	push := func(ctx context.Context, region string, gen uint64, st metrics.ScrapeStatus, b []byte) (int, error) {
		p := n.pool.Load()
		if p == nil {
			return 0, client.ErrNoServers
		}
		return p.PushMetrics(ctx, region, gen, st, b)
	}
	return agent.NewMetricsExecutor(s, push, nil, n.Reg)
}

// AgentOptions add to what AddAgent starts: more executors (built on every
// start with the agent's fresh registry) and a region database endpoint
// the agent reports.
type AgentOptions struct {
	Executors func(reg prometheus.Registerer) ([]agent.Executor, error)
	Database  *fsm.DatabaseEndpoint
	// Memberlist replaces AgentMemberlist's gossip settings (tests that
	// must not see a live agent declared failed on a starved machine).
	Memberlist *memberlist.Config
}

// AgentMemberlist returns the gossip settings of test agents: fast enough
// that a crashed agent is found within a second or two, slow enough that a
// few dozen in-process agents do not starve two cores under -race.
func AgentMemberlist() *memberlist.Config {
	c := TestMemberlist()
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 3
	return c
}

// SteadyMemberlist returns gossip settings that declare a member failed
// only after it has been silent for several seconds: for tests whose
// assertions assume that members which keep running are never declared
// failed, which AgentMemberlist's sub-second detection does not promise on
// a loaded two-core machine under -race.
func SteadyMemberlist() *memberlist.Config {
	c := TestMemberlist()
	c.ProbeInterval = time.Second
	c.ProbeTimeout = 500 * time.Millisecond
	c.GossipInterval = 100 * time.Millisecond
	c.SuspicionMult = 4
	return c
}

// AgentHeartbeat is the heartbeat interval of test agents.
const AgentHeartbeat = 500 * time.Millisecond

// AddAgent starts a region agent that joins the cluster with the probe
// executor.
func (c *Cluster) AddAgent(id, region string) *AgentNode {
	c.t.Helper()
	return c.AddAgentWith(id, region, AgentOptions{})
}

// AddAgentWith starts a region agent with the probe executor and what o
// adds.
func (c *Cluster) AddAgentWith(id, region string, o AgentOptions) *AgentNode {
	c.t.Helper()
	n := &AgentNode{ID: id, Region: region, Dir: filepath.Join(c.t.TempDir(), id), opts: o}
	n.Token = c.AgentToken(id, region)
	ml, heartbeat := o.Memberlist, AgentHeartbeat
	if c.opts.LANTimings {
		heartbeat = 0 // the agent's default, and nil gossip settings are LAN's
	} else if ml == nil {
		ml = AgentMemberlist()
	}
	n.cfg = agent.Config{
		NodeID: id, Region: region, DataDir: n.Dir,
		SerfBindAddr: "127.0.0.1:0", HTTPAdvertiseURL: "http://127.0.0.1:1",
		Join: []string{c.Nodes[0].Server.SerfAddr()}, Capacity: 16, Version: "test",
		Memberlist: ml, HeartbeatInterval: heartbeat, Database: o.Database,
		GossipKey: c.sec.gossipKey,
		NewAPI: func(servers func() []string) agent.API {
			p := client.NewPool(servers, client.WithToken(n.Token), client.WithTLS(c.agentTLS()), client.WithSigner(c.Signer(id)))
			n.pool.Store(p)
			return p
		},
		Logger: c.logger(id),
	}
	if err := c.startAgent(n); err != nil {
		c.t.Fatalf("start agent %s: %v", id, err)
	}
	c.mu.Lock()
	c.Agents = append(c.Agents, n)
	c.mu.Unlock()
	return n
}

func (c *Cluster) startAgent(n *AgentNode) error {
	n.Reg = prometheus.NewRegistry()
	cfg := n.cfg
	cfg.Registerer = n.Reg
	tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: c.sec.client}
	cfg.Executors = []agent.Executor{agent.NewProbeExecutor(n.Reg, tr), n.metricsExecutor(tr)}
	if n.opts.Executors != nil {
		more, err := n.opts.Executors(n.Reg)
		if err != nil {
			return err
		}
		cfg.Executors = append(cfg.Executors, more...)
	}
	// Other live members to join through, in case the first server is down.
	cfg.Join = nil
	for _, s := range c.Running() {
		cfg.Join = append(cfg.Join, s.Server.SerfAddr())
	}
	if len(cfg.Join) == 0 {
		return fmt.Errorf("no running server to join")
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	n.cfg.SerfBindAddr = a.SerfAddr()
	n.self.Store(a)
	n.Agent, n.running = a, true
	return nil
}

// AgentToken makes an agent token bound to node and region through the
// leader, as an operator provisions each agent, and returns its secret.
func (c *Cluster) AgentToken(node, region string) string {
	c.t.Helper()
	var secret string
	testutil.Eventually(c.t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tok, err := c.WaitLeader().Client.CreateAgentToken(ctx, node, region, "agent "+node)
		if st := client.StatusOf(err); err != nil && st != 0 && st != http.StatusServiceUnavailable {
			c.t.Fatalf("agent token for %s: %v", node, err)
		}
		if err == nil {
			secret = tok.Secret
		}
		return err
	})
	return secret
}

// agentTLS is the TLS config agents call servers with: it accepts only a
// server's certificate, as `atomfed agent` does.
func (c *Cluster) agentTLS() *tls.Config {
	if c.sec.client == nil {
		return nil
	}
	cfg := c.sec.client.Clone()
	cfg.ServerName = tlsutil.ServerName
	return cfg
}

// StopAgent crashes an agent: it stops without leaving.
func (c *Cluster) StopAgent(n *AgentNode) {
	if n.running {
		n.running = false
		_ = n.Agent.Shutdown()
	}
}

// LeaveAgent stops an agent gracefully: it hands back its tasks and leaves.
func (c *Cluster) LeaveAgent(n *AgentNode) {
	c.t.Helper()
	if !n.running {
		return
	}
	n.running = false
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Agent.Leave(ctx); err != nil {
		c.t.Logf("leave %s: %v", n.ID, err)
	}
}

// RestartAgent starts a stopped agent again on its data dir and port.
func (c *Cluster) RestartAgent(n *AgentNode) {
	c.t.Helper()
	if err := testutil.Poll(5*time.Second, func() error { return c.startAgent(n) }); err != nil {
		c.t.Fatalf("restart agent %s: %v", n.ID, err)
	}
}

// Settle waits until the leader's scheduler has nothing left to do (its
// plan for the current state is empty) and every running server has applied
// the leader's latest change. Tests that compare whole states call it after
// registering regions, since each region gets a probe task asynchronously.
func (c *Cluster) Settle() {
	c.t.Helper()
	testutil.Eventually(c.t, c.wait(15*time.Second), func() error {
		l := c.WaitLeader()
		var plan *fsm.TaskPlan
		l.Server.FSM().Read(func(s *fsm.State) { plan = cluster.ComputePlan(s) })
		if plan != nil {
			return fmt.Errorf("scheduler has a pending plan: %+v", plan)
		}
		var missingKey string
		l.Server.FSM().Read(func(s *fsm.State) {
			for _, n := range c.Running() {
				if s.Members[n.ID] == nil {
					missingKey = n.ID
				}
			}
		})
		if missingKey != "" {
			return fmt.Errorf("the leader has not recorded %s's server key yet", missingKey)
		}
		want := l.Server.FSM().Index()
		for _, n := range c.Running() {
			if got := n.Server.FSM().Index(); got != want {
				return fmt.Errorf("%s is at index %d, the leader at %d", n.ID, got, want)
			}
		}
		return nil
	})
}
