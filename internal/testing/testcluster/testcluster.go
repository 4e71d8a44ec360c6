// Package testcluster is the one way to start atomfed servers and agents
// inside the calling process: real Raft on disk under t.TempDir(), real
// Serf and real HTTP over loopback sockets, with a throwaway CA, gossip key
// and signing keys, and timings shortened so that an election takes well
// under a second. The in-process tests of cluster, httpapi and replication
// use it, and so does the bench tool's scale test (with LANTimings and
// Plaintext, through testutil.RunTB). It sits on testutil; procs is its
// counterpart for clusters of real processes. It takes a testutil.TB, not
// a testing.TB, so that the bench tool does not link package testing
// through it.
package testcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/httpapi"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// Options shape a test cluster.
type Options struct {
	// Servers is the number of voters bootstrapped together (default 3).
	Servers int
	// Configure, when set, adjusts each server's config before it starts.
	Configure func(i int, c *cluster.Config)
	// LogLevel for the servers' loggers (default: ATOMFED_TEST_LOG or off;
	// "info" when LogOutput is set).
	LogLevel string
	// LogOutput, when set, receives every server's log instead of stderr,
	// so that a test can wait for a line (see LogBuffer).
	LogOutput io.Writer
	// GatedPolicy keeps the default approval policy (two approvers for
	// production registrations, deregistrations and key revocations). By
	// default test clusters gate nothing, so that tests about other things
	// can change regions directly.
	GatedPolicy bool
	// Now, when set, is the clock the servers stamp commands with (tests of
	// expiry move it forward).
	Now func() time.Time
	// Simulation, when set, is every server's SIMULATION_MODE evaluation
	// (shown in /health, /global-status and /v1/policy/status).
	Simulation *structs.Simulation
	// LANTimings runs servers and agents with what a deployment on one LAN
	// runs with instead of the shortened test timings: the Raft timings,
	// reconcile interval and dead-server cleanup of cluster.DefaultConfig,
	// the default LAN gossip settings and the agents' default heartbeat
	// (AgentOptions.Memberlist still wins). Waits for a leader allow twice
	// as long. For measurements that must see what a deployment sees (the
	// bench tool's scale test), not for tests.
	LANTimings bool
	// Plaintext runs the HTTP API, forwarding and the Raft transport
	// without TLS (http:// URLs, ClientTLS nil). Gossip stays encrypted;
	// tokens and signatures still apply. For the bench tool's scale test,
	// which measures membership and should not pay for TLS on the API.
	Plaintext bool
	// HTTPWriteTimeout is the servers' http.Server WriteTimeout (0: none),
	// for tests of what outlives it.
	HTTPWriteTimeout time.Duration
	// MaxBlockingPerToken is the servers' cap on one token's blocking
	// queries (0: the default).
	MaxBlockingPerToken int
}

// Cluster is a running in-process cluster.
type Cluster struct {
	t      testutil.TB
	opts   Options
	mu     sync.Mutex
	Nodes  []*Node
	Agents []*AgentNode
	sec    *security
}

// Node is one server of a test cluster with its HTTP API.
type Node struct {
	ID     string
	Index  int
	Dir    string
	URL    string
	Server *cluster.Server
	Client *client.Client
	Reg    *prometheus.Registry

	c        *Cluster
	cfg      *cluster.Config
	httpTLS  *tls.Config
	fwdTLS   *tls.Config
	inflight *inflight
	http     *http.Server
	httpAddr string
	cancel   context.CancelFunc
	running  bool
}

// TestTimings are the raft timings of test clusters: short enough that
// elections take well under a second, long enough that a loaded two-core
// machine running several suites under -race (with TLS everywhere) does not
// starve a leader past its lease.
var TestTimings = cluster.RaftTimings{
	HeartbeatTimeout:   300 * time.Millisecond,
	ElectionTimeout:    300 * time.Millisecond,
	LeaderLeaseTimeout: 300 * time.Millisecond,
	CommitTimeout:      5 * time.Millisecond,
}

// TestMemberlist returns memberlist settings with fast failure detection.
func TestMemberlist() *memberlist.Config {
	c := memberlist.DefaultLocalConfig()
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.SuspicionMult = 2
	c.TCPTimeout = time.Second
	return c
}

// New starts a cluster of opts.Servers voters and waits until one of them
// has established leadership.
func New(t testutil.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Servers == 0 {
		opts.Servers = 3
	}
	c := &Cluster{t: t, opts: opts}
	// The first TempDir call registers the removal of every temp dir; it
	// must come before Shutdown's cleanup so that it runs after it (cleanups
	// run last-in first-out) and never races a node still writing.
	t.TempDir()
	c.sec = newSecurity(t)
	if opts.Plaintext {
		c.sec.client = nil
	}
	t.Cleanup(c.Shutdown)
	var join []string
	for i := 0; i < opts.Servers; i++ {
		n := c.newNode(i, opts.Servers, join)
		if i == 0 {
			join = []string{n.Server.SerfAddr()}
		}
	}
	c.WaitLeader()
	if !opts.GatedPolicy {
		c.ungatePolicy()
	}
	c.Settle() // server keys recorded: tests start from a quiet state
	return c
}

// AddServer starts another server that joins the cluster (no bootstrap).
// configure may adjust its config (e.g. NonVoter).
func (c *Cluster) AddServer(configure func(*cluster.Config)) *Node {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.Nodes)
	join := []string{c.Nodes[0].Server.SerfAddr()}
	c.mu.Unlock()
	saved := c.opts.Configure
	c.opts.Configure = func(j int, cfg *cluster.Config) {
		if saved != nil {
			saved(j, cfg)
		}
		if configure != nil {
			configure(cfg)
		}
	}
	defer func() { c.opts.Configure = saved }()
	return c.newNode(i, 0, join)
}

func (c *Cluster) newNode(i, expect int, join []string) *Node {
	c.t.Helper()
	id := fmt.Sprintf("s%d", i+1)
	dir := filepath.Join(c.t.TempDir(), id)
	cfg := cluster.DefaultConfig()
	cfg.NodeID, cfg.Region, cfg.DataDir = id, fmt.Sprintf("r%d", i%3+1), dir
	cfg.RaftBindAddr, cfg.SerfBindAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.BootstrapExpect, cfg.Join = expect, join
	if !c.opts.LANTimings {
		t := TestTimings
		cfg.RaftTimings = &t
		cfg.Memberlist = TestMemberlist()
		cfg.DeadServerCleanupAfter = 0
		cfg.ReconcileInterval = 2 * time.Second
	}
	cfg.GossipKey = c.sec.gossipKey
	cfg.Signer = c.Signer(id)
	cfg.Now = c.opts.Now
	if c.opts.Configure != nil {
		c.opts.Configure(i, cfg)
	}
	n := &Node{ID: id, Index: i, Dir: dir, c: c, cfg: cfg, httpAddr: "127.0.0.1:0"}
	if !c.opts.Plaintext {
		var err error
		if n.httpTLS, cfg.TLS, n.fwdTLS, err = c.sec.serverTLS(id); err != nil {
			c.t.Fatalf("TLS for %s: %v", id, err)
		}
	}
	// Ports below the kernel's ephemeral range, so that a restart on the
	// same ports cannot find one taken by some outgoing connection; a port
	// another test process picked meanwhile means new ports.
	pick := func(addr *string) {
		if *addr == "127.0.0.1:0" {
			*addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(c.t)))
		}
	}
	raftAddr, serfAddr := cfg.RaftBindAddr, cfg.SerfBindAddr
	for attempt := 1; ; attempt++ {
		cfg.RaftBindAddr, cfg.SerfBindAddr, n.httpAddr = raftAddr, serfAddr, "127.0.0.1:0"
		pick(&cfg.RaftBindAddr)
		pick(&cfg.SerfBindAddr)
		pick(&n.httpAddr)
		err := c.start(n)
		if err == nil {
			break
		}
		if !testutil.AddrInUse(err) || attempt == 5 {
			c.t.Fatalf("start %s: %v", id, err)
		}
	}
	c.mu.Lock()
	c.Nodes = append(c.Nodes, n)
	c.mu.Unlock()
	return n
}

func (c *Cluster) logger(id string) hclog.Logger {
	level := c.opts.LogLevel
	if level == "" {
		level = os.Getenv("ATOMFED_TEST_LOG")
	}
	var out io.Writer = os.Stderr
	if c.opts.LogOutput != nil {
		out = c.opts.LogOutput
		if level == "" {
			level = "info"
		}
	}
	if level == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.LevelFromString(level), Output: out})
}

// start (re)starts a node on its data dir. After the first start it reuses
// the node's ports, as a restarted process would.
func (c *Cluster) start(n *Node) error {
	ln, err := net.Listen("tcp", n.httpAddr)
	if err != nil {
		return err
	}
	n.httpAddr = ln.Addr().String()
	if c.opts.Plaintext {
		n.URL = "http://" + n.httpAddr
	} else {
		n.URL = "https://" + n.httpAddr
		ln = tls.NewListener(ln, n.httpTLS)
	}
	n.Reg = prometheus.NewRegistry()
	cfg := *n.cfg
	cfg.HTTPAdvertiseURL = n.URL
	cfg.Logger = c.logger(n.ID)
	cfg.Registerer = n.Reg
	srv, err := cluster.New(&cfg)
	if err != nil {
		ln.Close()
		return err
	}
	// Pin the ports for restarts.
	n.cfg.RaftBindAddr = srv.RaftAddr()
	n.cfg.SerfBindAddr = srv.SerfAddr()
	api := httpapi.New(httpapi.Config{Cluster: srv, Logger: cfg.Logger, Registerer: n.Reg, Gatherer: n.Reg, Version: "test",
		BootstrapToken: Token, Signer: cfg.Signer, Now: c.opts.Now, Simulation: c.opts.Simulation, ProbeTLS: c.sec.client, MaxBlockingPerToken: c.opts.MaxBlockingPerToken, ForwardTransport: &http.Transport{TLSClientConfig: n.fwdTLS, MaxIdleConnsPerHost: 64}})
	srv.SetForwardAuthorizer(api.AuthorizeForwarded)
	base, cancel := context.WithCancel(context.Background())
	if n.inflight == nil {
		n.inflight = newInflight()
	}
	n.http = &http.Server{Handler: n.inflight.wrap(api.Handler()), BaseContext: func(net.Listener) context.Context { return base },
		WriteTimeout: c.opts.HTTPWriteTimeout,
		ErrorLog:     cfg.Logger.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug})}
	n.cancel = cancel
	go n.http.Serve(ln)
	n.Server = srv
	n.Client = c.NewClient(n)
	n.running = true
	return nil
}

// Stop shuts a node down without leaving, like a crash of the process
// (the data dir stays).
func (c *Cluster) Stop(n *Node) {
	c.t.Helper()
	if !n.running {
		return
	}
	n.running = false
	n.cancel()
	_ = n.Server.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = n.http.Shutdown(ctx)
}

// Leave makes a node leave gracefully and stop.
func (c *Cluster) Leave(n *Node) {
	c.t.Helper()
	if !n.running {
		return
	}
	n.running = false
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Server.Leave(ctx); err != nil {
		c.t.Logf("leave %s: %v", n.ID, err)
	}
	n.cancel()
	_ = n.http.Shutdown(ctx)
}

// Restart starts a stopped node again on the same data dir and ports.
func (c *Cluster) Restart(n *Node) {
	c.t.Helper()
	if n.running {
		c.t.Fatalf("restart %s: still running", n.ID)
	}
	err := testutil.Poll(5*time.Second, func() error { return c.start(n) })
	if err != nil {
		c.t.Fatalf("restart %s: %v", n.ID, err)
	}
}

// Reconfigure changes a stopped node's config for its next Restart (an
// upgrade to a new build, in tests of rolling upgrades).
func (c *Cluster) Reconfigure(n *Node, fn func(*cluster.Config)) {
	c.t.Helper()
	if n.running {
		c.t.Fatalf("reconfigure %s: still running", n.ID)
	}
	fn(n.cfg)
}

// Running returns the nodes that are up.
func (c *Cluster) Running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if n.running {
			out = append(out, n)
		}
	}
	return out
}

// WaitLeader waits until exactly one running node has established
// leadership and every running node agrees on it, and returns it.
func (c *Cluster) WaitLeader() *Node {
	c.t.Helper()
	var leader *Node
	testutil.Eventually(c.t, c.wait(15*time.Second), func() error {
		leader = nil
		for _, n := range c.Running() {
			if n.Server.IsLeader() {
				if leader != nil {
					return fmt.Errorf("two leaders: %s and %s", leader.ID, n.ID)
				}
				leader = n
			}
		}
		if leader == nil {
			return errors.New("no established leader")
		}
		for _, n := range c.Running() {
			if id, _ := n.Server.Leader(); id != leader.ID {
				return fmt.Errorf("%s sees leader %q, not %s", n.ID, id, leader.ID)
			}
		}
		return nil
	})
	return leader
}

// Followers returns the running nodes that are not the leader.
func (c *Cluster) Followers() []*Node {
	l := c.WaitLeader()
	var out []*Node
	for _, n := range c.Running() {
		if n != l {
			out = append(out, n)
		}
	}
	return out
}

// WaitVoters waits until the leader's configuration has exactly want
// voters, and returns their ids.
func (c *Cluster) WaitVoters(want int) {
	c.t.Helper()
	testutil.Eventually(c.t, c.wait(20*time.Second), func() error {
		l := c.WaitLeader()
		peers, _, err := l.Server.Configuration()
		if err != nil {
			return err
		}
		v := 0
		for _, p := range peers {
			if p.Voter {
				v++
			}
		}
		if v != want {
			return fmt.Errorf("%d voters, want %d: %+v", v, want, peers)
		}
		return nil
	})
}

// wait returns how long a wait for the cluster takes at most: d with test
// timings, twice d with LAN timings.
func (c *Cluster) wait(d time.Duration) time.Duration {
	if c.opts.LANTimings {
		return 2 * d
	}
	return d
}

// Shutdown stops every agent and node.
func (c *Cluster) Shutdown() {
	for _, a := range c.Agents {
		c.StopAgent(a)
	}
	for _, n := range c.Nodes {
		if n.running {
			n.running = false
			n.cancel()
			_ = n.Server.Shutdown()
			_ = n.http.Close()
		}
	}
}

// Ctx returns a context that ends with the test or after d.
func Ctx(t testutil.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
