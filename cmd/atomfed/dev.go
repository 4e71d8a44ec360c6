package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/precheck"
)

// devRegion is one region of the dev federation.
type devRegion struct {
	name string
	loc  fsm.Location
}

var devRegions = []devRegion{
	{"us-east", fsm.Location{Lat: 39.04, Lon: -77.49}},
	{"eu-west", fsm.Location{Lat: 53.35, Lon: -6.26}},
	{"ap-south", fsm.Location{Lat: 19.08, Lon: 72.88}},
}

func newDevCmd() *cobra.Command {
	var dataDir, logLevel, host string
	var httpPort, raftPort, serfPort, agentHTTPPort, agentSerfPort int
	var keep bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole local federation: three servers in us-east, eu-west and ap-south",
		Long: `Run a whole local federation in one process: three servers, one per region
(us-east, eu-west, ap-south), with the API of the first on 127.0.0.1:8401.
The three regions are registered once a leader is elected. Data lives in a
temporary directory that is removed on Ctrl-C unless --keep is given.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDev(devOptions{dataDir: dataDir, logLevel: logLevel, host: host,
				httpPort: httpPort, raftPort: raftPort, serfPort: serfPort,
				agentHTTPPort: agentHTTPPort, agentSerfPort: agentSerfPort, keep: keep})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "where the servers keep their data (default: a new temporary directory)")
	f.BoolVar(&keep, "keep", false, "keep the data directory on exit")
	f.StringVar(&host, "host", "127.0.0.1", "address every listener binds")
	f.IntVar(&httpPort, "http-port", 8401, "HTTP port of the first server; the others use the next ports")
	f.IntVar(&raftPort, "raft-port", 8501, "Raft port of the first server; the others use the next ports")
	f.IntVar(&serfPort, "serf-port", 8601, "Serf port of the first server; the others use the next ports")
	f.IntVar(&agentHTTPPort, "agent-http-port", 8411, "HTTP port of the first region agent; the others use the next ports")
	f.IntVar(&agentSerfPort, "agent-serf-port", 8611, "Serf port of the first region agent; the others use the next ports")
	f.StringVar(&logLevel, "log-level", "warn", "log level of the servers: trace, debug, info, warn, error")
	return cmd
}

type devOptions struct {
	dataDir, logLevel, host      string
	httpPort, raftPort, serfPort int
	agentHTTPPort, agentSerfPort int
	keep                         bool
}

func runDev(o devOptions) error {
	if o.dataDir == "" {
		d, err := os.MkdirTemp("", "atomfed-dev-")
		if err != nil {
			return err
		}
		o.dataDir = d
		if !o.keep {
			defer os.RemoveAll(d)
		}
	}
	// Every node of dev shares this environment: evaluate once per role,
	// announce once, and hand the result to each node.
	serverSim, err := evaluateSimulation(precheck.RoleServer)
	if err != nil {
		return err
	}
	agentSim, err := evaluateSimulation(precheck.RoleAgent)
	if err != nil {
		return err
	}
	addr := func(port, i int) string { return fmt.Sprintf("%s:%d", o.host, port+i) }
	var join []string
	for i := range devRegions {
		join = append(join, addr(o.serfPort, i))
	}
	var nodes []*serverNode
	var agents []*agentNode
	stopAll := func() {
		for _, a := range agents {
			_ = a.shutdown()
		}
		for _, n := range nodes {
			_ = n.shutdown()
		}
	}
	for i, r := range devRegions {
		name := fmt.Sprintf("%s-1", r.name)
		n, err := startServer(serverOptions{
			Node: name, Region: r.name, DataDir: filepath.Join(o.dataDir, name),
			HTTPAddr: addr(o.httpPort, i), RaftAddr: addr(o.raftPort, i), SerfAddr: addr(o.serfPort, i),
			BootstrapExpect: len(devRegions), Join: join, RaftMultiplier: 1,
			DeadServerCleanup: 30 * time.Second, Logger: newLogger(name, o.logLevel, false),
			Simulation: serverSim,
		})
		if err != nil {
			stopAll()
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("start %s: %w (is another atomfed dev running? pick other ports with --http-port, --raft-port and --serf-port)", name, err)
			}
			return fmt.Errorf("start %s: %w", name, err)
		}
		nodes = append(nodes, n)
	}
	for i, r := range devRegions {
		name := fmt.Sprintf("%s-a1", r.name)
		a, err := startAgent(agentOptions{
			Node: name, Region: r.name, DataDir: filepath.Join(o.dataDir, name),
			HTTPAddr: addr(o.agentHTTPPort, i), SerfAddr: addr(o.agentSerfPort, i), Join: join,
			Capacity: 64, Logger: newLogger(name, o.logLevel, false),
			Simulation: agentSim,
		})
		if err != nil {
			stopAll()
			return fmt.Errorf("start agent %s: %w", name, err)
		}
		agents = append(agents, a)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := registerDevRegions(ctx, nodes); err != nil {
		stopAll()
		return err
	}
	fmt.Println("atomfed dev federation is up")
	fmt.Printf("  data dir: %s\n", o.dataDir)
	for i, n := range nodes {
		fmt.Printf("  %-10s region %-9s http %s  raft %s  serf %s\n", n.srv.NodeID(), devRegions[i].name, n.url, n.srv.RaftAddr(), n.srv.SerfAddr())
	}
	for i, a := range agents {
		fmt.Printf("  %-10s region %-9s http %s  (agent)  serf %s\n", fmt.Sprintf("%s-a1", devRegions[i].name), devRegions[i].name, a.url, a.agent.SerfAddr())
	}
	fmt.Print("\n" + simulationBanner(serverSim, agentSim))
	fmt.Printf("\n  try: curl -s %s/region/list\n       curl -s %s/v1/policy/status\n       atomfed region list --addr %s\n       atomfed members --addr %s\n       GLOBAL_REGISTRY_URL=%s atomfed precheck\n\nPress Ctrl-C to stop.\n",
		nodes[0].url, nodes[0].url, nodes[0].url, nodes[0].url, nodes[0].url)
	<-ctx.Done()
	fmt.Println("\nstopping the dev federation")
	stopAll()
	return nil
}

// registerDevRegions waits for a leader and registers the three regions
// through the first server's API, like any client would.
func registerDevRegions(ctx context.Context, nodes []*serverNode) error {
	c, err := client.New(nodes[0].url)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for i, r := range devRegions {
		reg := &fsm.Region{Name: r.name, URL: nodes[i].url, Tier: fsm.TierStaging, Location: r.loc,
			Labels: map[string]string{"env": "dev"}}
		for {
			_, err := c.RegisterRegion(ctx, reg, nil)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("register region %s: %w", r.name, err)
			}
			var ce *client.Error
			if errors.As(err, &ce) && ce.Status != 503 {
				return fmt.Errorf("register region %s: %w", r.name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}
