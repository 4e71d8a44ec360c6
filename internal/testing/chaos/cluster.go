package chaos

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// ClusterConfig shapes a chaos cluster.
type ClusterConfig struct {
	// Bin is the atomfed binary; Dir holds data dirs and logs.
	Bin, Dir string
	// Servers (3 or 5) and Agents (spread over the servers' regions).
	Servers, Agents int
	// RaftMultiplier is passed to every server (--raft-multiplier).
	RaftMultiplier int
	// Continents assigns each server (and the agents of its region) a
	// continent; every link between endpoints on different continents
	// gets InterContinent as its standing condition, in each direction.
	// Nil puts everything on one continent.
	Continents     []int
	InterContinent Fault
	// TmpfsNode is the index of the server whose data dir is a tmpfs of
	// TmpfsSize bytes (the disk-full nemesis fills it), or -1.
	TmpfsNode int
	TmpfsSize int64
	// Env is added to every server's environment.
	Env []string
	// Seed drives the network's jitter.
	Seed uint64
	// Logf logs harness events.
	Logf func(format string, args ...any)
}

// Node is one server of a chaos cluster.
type Node struct {
	*procs.ServerProc
	Index                        int
	BindIP, ProxyIP              string
	HTTPPort, RaftPort, SerfPort int
	// ProxyURL is the server's HTTP API through its proxy: what clients
	// and the other servers use.
	ProxyURL string
	Proxy    *Proxy
	// Tmpfs is true when the data dir is a size-limited tmpfs.
	Tmpfs bool

	paused atomic.Bool
}

// Paused reports whether the node is stopped with SIGSTOP.
func (n *Node) Paused() bool { return n.paused.Load() }

func (n *Node) tcpPorts() []int { return []int{n.HTTPPort, n.RaftPort, n.SerfPort} }

// Cluster is a set of atomfed servers (and agents) whose every link runs
// through the fault network. The processes run with the security a
// federation has by default: HTTPS and mutual TLS on Raft with a
// throwaway CA, encrypted gossip, the bootstrap token (procs.Token), and
// region registrations signed with the region's key.
type Cluster struct {
	cfg     ClusterConfig
	Block   int
	Net     *Network
	Sec     *procs.Security
	Nodes   []*Node
	Agents  []*procs.Proc
	servers *procs.Cluster
	// join is every server's Serf address through its proxy.
	join []string

	mu        sync.Mutex
	mounts    []string
	continent map[string]int
	// NoTmpfs says why there is no disk-full node when one was asked for.
	NoTmpfs string
}

// usedBlocks are the 127.b.0.0/16 blocks this process has handed out.
var usedBlocks = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// pickBlock picks an unused second octet for a cluster's addresses, at
// random so that concurrent test processes rarely meet (ports are probed
// anyway).
func pickBlock() int {
	usedBlocks.Lock()
	defer usedBlocks.Unlock()
	for {
		var b [2]byte
		_, _ = crand.Read(b[:])
		n := 20 + int(binary.BigEndian.Uint16(b[:])%230)
		if !usedBlocks.m[n] {
			usedBlocks.m[n] = true
			return n
		}
	}
}

// freePortPair returns a port free for TCP and UDP on both ips.
func freePortPair(ips ...string) (int, error) {
	for try := 0; try < 100; try++ {
		ln, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		var closers []func() error
		closers = append(closers, ln.Close)
		for i, ip := range ips {
			if i > 0 {
				l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
				if err != nil {
					ok = false
					break
				}
				closers = append(closers, l.Close)
			}
			u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
			if err != nil {
				ok = false
				break
			}
			closers = append(closers, u.Close)
		}
		for _, c := range closers {
			_ = c()
		}
		if ok {
			return port, nil
		}
	}
	return 0, errors.New("no port free on every address after 100 tries")
}

// StartCluster starts the servers (through procs, each placed behind its
// proxy by placeServer) and agents and waits for an established leader.
// On error everything started is stopped.
func StartCluster(cfg ClusterConfig) (c *Cluster, err error) {
	if cfg.Servers == 0 {
		cfg.Servers = 3
	}
	if cfg.RaftMultiplier == 0 {
		cfg.RaftMultiplier = 1
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	c = &Cluster{cfg: cfg, Block: pickBlock(), Net: NewNetwork(cfg.Seed)}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	c.servers, err = procs.NewCluster(procs.ClusterOptions{
		Bin: cfg.Bin, Dir: cfg.Dir, LogDir: filepath.Join(cfg.Dir, "logs"), Servers: cfg.Servers,
		Extra:     []string{"--raft-multiplier", strconv.Itoa(cfg.RaftMultiplier)},
		Env:       cfg.Env,
		Configure: c.placeServer,
	})
	if err != nil {
		return c, err
	}
	c.Sec = c.servers.Sec
	for i, sp := range c.servers.Servers {
		c.Nodes[i].ServerProc = sp
	}
	c.join = c.servers.SerfAddrs()
	for i := 0; i < cfg.Agents; i++ {
		region := procs.Regions[(i%cfg.Servers)%len(procs.Regions)]
		if _, err := c.StartAgent(region, nil, nil); err != nil {
			return c, err
		}
	}
	if err := c.servers.WaitFormed(60 * time.Second); err != nil {
		return c, err
	}
	return c, nil
}

// placeServer is procs' Configure hook: it binds server i to its own
// address, advertises its proxy (which it adds to the network with the
// server's continent), and mounts the tmpfs data dir of the disk-full
// node. The server's own client (ServerProc.Client) goes to its bind
// address: the harness observes, it is not a client under test.
func (c *Cluster) placeServer(i int, sc *procs.ServerConfig) error {
	bind, proxy := ipOf(c.Block, subnetBind, 10+i), ipOf(c.Block, subnetProxy, 10+i)
	var ports [3]int
	for k := range ports {
		p, err := freePortPair(bind, proxy)
		if err != nil {
			return err
		}
		ports[k] = p
	}
	hp := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	sc.HTTPAddr, sc.RaftAddr, sc.SerfAddr = hp(bind, ports[0]), hp(bind, ports[1]), hp(bind, ports[2])
	sc.HTTPAdvertise, sc.RaftAdvertise, sc.SerfAdvertise = "https://"+hp(proxy, ports[0]), hp(proxy, ports[1]), hp(proxy, ports[2])
	n := &Node{
		Index: i, BindIP: bind, ProxyIP: proxy,
		HTTPPort: ports[0], RaftPort: ports[1], SerfPort: ports[2],
		ProxyURL: "https://" + hp(proxy, ports[0]),
	}
	c.Net.AddEndpoint(sc.Node, bind)
	var err error
	if n.Proxy, err = c.Net.AddProxy(sc.Node, proxy, bind, n.tcpPorts(), []int{n.SerfPort}); err != nil {
		return err
	}
	c.Nodes = append(c.Nodes, n)
	if c.cfg.Continents != nil {
		c.setEndpointContinent(sc.Node, c.cfg.Continents[i])
	}
	if i == c.cfg.TmpfsNode {
		if err := c.mountTmpfs(n, sc.DataDir); err != nil {
			c.NoTmpfs = err.Error()
			c.cfg.Logf("no disk-full node: %v", err)
		}
	}
	return nil
}

// StartAgent starts the next agent (a1, a2, ...) in region, with its own
// addresses and proxy, the cluster's security, and extra flags and
// environment (a region database for the data-plane runs). Agents of
// server i's region sit on server i's continent.
func (c *Cluster) StartAgent(region string, extra, env []string) (*procs.Proc, error) {
	c.mu.Lock()
	i := len(c.Agents)
	c.mu.Unlock()
	bind, proxy := ipOf(c.Block, subnetBind, 100+i), ipOf(c.Block, subnetProxy, 100+i)
	httpPort, err := freePortPair(bind, proxy)
	if err != nil {
		return nil, err
	}
	serfPort, err := freePortPair(bind, proxy)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("a%d", i+1)
	hp := func(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
	ap, err := procs.NewAgentProcWith(c.cfg.Bin, filepath.Join(c.cfg.Dir, "logs"), procs.AgentConfig{
		Node: name, Region: region, DataDir: filepath.Join(c.cfg.Dir, name),
		HTTPAddr: hp(bind, httpPort), HTTPAdvertise: "https://" + hp(proxy, httpPort),
		SerfAddr: hp(bind, serfPort), SerfAdvertise: hp(proxy, serfPort),
		Join: c.join, Extra: extra,
	}, c.Sec)
	if err != nil {
		return nil, err
	}
	p := ap.Proc
	p.Env = append(p.Env, env...)
	c.Net.AddEndpoint(name, bind)
	if _, err := c.Net.AddProxy(name, proxy, bind, []int{httpPort, serfPort}, []int{serfPort}); err != nil {
		return nil, err
	}
	if cont := c.cfg.Continents; cont != nil {
		for _, n := range c.Nodes {
			if n.Config.Region == region {
				c.setEndpointContinent(name, cont[n.Index])
				break
			}
		}
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.Agents = append(c.Agents, p)
	c.mu.Unlock()
	return p, nil
}

// setEndpointContinent places name on continent k: links to and from every
// endpoint already placed on another continent get the inter-continent
// condition.
func (c *Cluster) setEndpointContinent(name string, k int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.continent == nil {
		c.continent = map[string]int{}
	}
	for other, ok := range c.continent {
		if ok != k {
			c.Net.SetBase(Link{name, other}, c.cfg.InterContinent)
			c.Net.SetBase(Link{other, name}, c.cfg.InterContinent)
		}
	}
	c.continent[name] = k
}

// mountTmpfs mounts a size-limited tmpfs as n's data dir, dir.
func (c *Cluster) mountTmpfs(n *Node, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700", c.cfg.TmpfsSize), "tmpfs", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount tmpfs on %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	c.mu.Lock()
	c.mounts = append(c.mounts, dir)
	c.mu.Unlock()
	n.Tmpfs = true
	return nil
}

// TmpfsNode returns the node whose data dir is a tmpfs, or nil.
func (c *Cluster) TmpfsNode() *Node {
	for _, n := range c.Nodes {
		if n.Tmpfs {
			return n
		}
	}
	return nil
}

// Close kills every process, stops the network and unmounts the tmpfs.
func (c *Cluster) Close() {
	if c.servers != nil {
		c.servers.Close()
	}
	for _, a := range c.Agents {
		a.Close()
	}
	c.Net.Close()
	c.mu.Lock()
	mounts := c.mounts
	c.mounts = nil
	c.mu.Unlock()
	for _, m := range mounts {
		if out, err := exec.Command("umount", m).CombinedOutput(); err != nil {
			c.cfg.Logf("umount %s: %v: %s", m, err, out)
		}
	}
}

// Node returns the server named id, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID() == id {
			return n
		}
	}
	return nil
}

// ProxyURLs returns every server's API through its proxy.
func (c *Cluster) ProxyURLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.ProxyURL
	}
	return out
}

// Leader returns the established leader, as procs.Cluster.Leader sees it
// through the servers' own addresses (the harness observes, it is not a
// client under test).
func (c *Cluster) Leader(ctx context.Context) (*Node, error) {
	l, err := c.servers.Leader(ctx)
	if err != nil {
		return nil, err
	}
	return c.Node(l.ID()), nil
}

// Kill sends SIGKILL to n after closing its proxy's ports, so that clients
// see refused connections rather than requests that vanish.
func (c *Cluster) Kill(n *Node) error {
	n.Proxy.Down(n.tcpPorts()...)
	if n.Paused() {
		_ = n.Cont()
		n.paused.Store(false)
	}
	return n.Kill9()
}

// Restart starts n again with its flags and data dir and opens its proxy
// once the server listens.
func (c *Cluster) Restart(n *Node) error {
	if err := n.Restart(); err != nil {
		return err
	}
	return c.openWhenListening(n)
}

// openWhenListening waits until n's own ports accept connections and then
// opens its proxy.
func (c *Cluster) openWhenListening(n *Node) error {
	var exited error
	err := testutil.PollEvery(context.Background(), 30*time.Second, 20*time.Millisecond, func() error {
		if !n.Running() {
			exited = fmt.Errorf("%s exited while starting (%s): %s", n.ID(), n.ExitStatus(), n.LogTail(5))
			return testutil.Abort(exited)
		}
		for _, p := range n.tcpPorts() {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(n.BindIP, strconv.Itoa(p)), time.Second)
			if err != nil {
				return err
			}
			conn.Close()
		}
		return nil
	})
	switch {
	case exited != nil:
		return exited
	case err != nil:
		return fmt.Errorf("%s does not listen on all its ports 30s after start: %w", n.ID(), err)
	}
	return n.Proxy.Up(n.tcpPorts()...)
}

// Pause stops n with SIGSTOP.
func (c *Cluster) Pause(n *Node) error {
	if err := n.Stop(); err != nil {
		return err
	}
	n.paused.Store(true)
	return nil
}

// Resume continues a paused n.
func (c *Cluster) Resume(n *Node) error {
	n.paused.Store(false)
	return n.Cont()
}

// Healthy reports whether the cluster is whole again: every server runs
// unpaused, an established leader is agreed on, every server is a voter in
// its configuration and knows the leader.
func (c *Cluster) Healthy(ctx context.Context) error {
	for _, n := range c.Nodes {
		if !n.Running() {
			return fmt.Errorf("%s is not running (%s)", n.ID(), n.ExitStatus())
		}
		if n.Paused() {
			return fmt.Errorf("%s is paused", n.ID())
		}
	}
	l, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	peers, err := l.Client.RaftConfiguration(rctx, nil)
	if err != nil {
		return fmt.Errorf("configuration from %s: %w", l.ID(), err)
	}
	voters := map[string]bool{}
	for _, p := range peers {
		if p.Voter {
			voters[p.ID] = true
		}
	}
	for _, n := range c.Nodes {
		if !voters[n.ID()] {
			return fmt.Errorf("%s is not a voter in %s's configuration", n.ID(), l.ID())
		}
	}
	return nil
}

// WaitHealthy polls Healthy until it holds or timeout passes. It polls
// every 50 ms: the runs time how long the cluster takes to be whole again.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	if err := testutil.PollEvery(ctx, timeout, 50*time.Millisecond, func() error { return c.Healthy(ctx) }); err != nil {
		return fmt.Errorf("cluster not healthy within %s: %w", timeout, err)
	}
	return nil
}
