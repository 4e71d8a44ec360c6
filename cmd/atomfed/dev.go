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
	"github.com/atomcloud/atomfed/internal/pgtest"
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
	var keep, noPostgres bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole local federation: three servers in us-east, eu-west and ap-south",
		Long: `Run a whole local federation in one process: three servers, one per region
(us-east, eu-west, ap-south), with the API of the first on 127.0.0.1:8401.
The three regions are registered once a leader is elected. When the
PostgreSQL binaries are installed, every region gets its own throwaway
PostgreSQL cluster and its agent drives real logical replication; without
them replication is simulated, and dev says so. Data lives in a temporary
directory that is removed on Ctrl-C unless --keep is given.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDev(devOptions{dataDir: dataDir, logLevel: logLevel, host: host,
				httpPort: httpPort, raftPort: raftPort, serfPort: serfPort,
				agentHTTPPort: agentHTTPPort, agentSerfPort: agentSerfPort, keep: keep, noPostgres: noPostgres})
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
	f.BoolVar(&noPostgres, "no-postgres", false, "do not start PostgreSQL clusters (replication is then simulated)")
	return cmd
}

type devOptions struct {
	dataDir, logLevel, host      string
	httpPort, raftPort, serfPort int
	agentHTTPPort, agentSerfPort int
	keep, noPostgres             bool
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
		// Each region's PostgreSQL may run as the postgres user.
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	addr := func(port, i int) string { return fmt.Sprintf("%s:%d", o.host, port+i) }
	var join []string
	for i := range devRegions {
		join = append(join, addr(o.serfPort, i))
	}
	var nodes []*serverNode
	var agents []*agentNode
	pgs, pgNote := startDevPostgres(o)
	stopAll := func() {
		for _, a := range agents {
			_ = a.shutdown()
		}
		for _, n := range nodes {
			_ = n.shutdown()
		}
		for _, pg := range pgs {
			if o.keep {
				_ = pg.Stop()
			} else {
				_ = pg.Remove()
			}
		}
	}
	for i, r := range devRegions {
		name := fmt.Sprintf("%s-1", r.name)
		n, err := startServer(serverOptions{
			Node: name, Region: r.name, DataDir: filepath.Join(o.dataDir, name),
			HTTPAddr: addr(o.httpPort, i), RaftAddr: addr(o.raftPort, i), SerfAddr: addr(o.serfPort, i),
			BootstrapExpect: len(devRegions), Join: join, RaftMultiplier: 1,
			DeadServerCleanup: 30 * time.Second, Logger: newLogger(name, o.logLevel, false),
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
		ao := agentOptions{
			Node: name, Region: r.name, DataDir: filepath.Join(o.dataDir, name),
			HTTPAddr: addr(o.agentHTTPPort, i), SerfAddr: addr(o.agentSerfPort, i), Join: join,
			Capacity: 64, Logger: newLogger(name, o.logLevel, false), ReplicationInterval: 2 * time.Second,
		}
		if pg := pgs[r.name]; pg != nil {
			ao.PostgresDSN, ao.ReplicationPass = pg.DSN(pgtest.Database), pg.Passfile
		}
		a, err := startAgent(ao)
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
	fmt.Println()
	fmt.Println(pgNote)
	for _, r := range devRegions {
		if pg := pgs[r.name]; pg != nil {
			fmt.Printf("  postgres   region %-9s %s/%s   PGPASSFILE=%s psql -h %s -p %d -U %s %s\n",
				r.name, pg.Addr(), pgtest.Database, pg.SuperuserPassfile, pg.Host, pg.Port, pgtest.Superuser, pgtest.Database)
		}
	}
	fmt.Printf("\n  try: curl -s %s/region/list\n       atomfed region list --addr %s\n       atomfed members --addr %s\n\nPress Ctrl-C to stop.\n", nodes[0].url, nodes[0].url, nodes[0].url)
	<-ctx.Done()
	fmt.Println("\nstopping the dev federation")
	stopAll()
	return nil
}

// startDevPostgres starts one throwaway PostgreSQL cluster per region when
// the binaries are installed, and returns a line that says what dev runs.
func startDevPostgres(o devOptions) (map[string]*pgtest.Cluster, string) {
	if o.noPostgres {
		return nil, "  SIMULATION: replication is simulated (--no-postgres): no region has a database, replication tasks stay pending."
	}
	if _, err := pgtest.Find(); err != nil {
		return nil, "  SIMULATION: replication is simulated: " + err.Error() + ".\n" +
			"  No region has a database and replication tasks stay pending (GET /v1/tenants/{id}/replication says why)."
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pw := ""
	out := map[string]*pgtest.Cluster{}
	for _, r := range devRegions {
		pg, err := pgtest.Start(ctx, pgtest.Options{Name: r.name, Parent: o.dataDir, ReplicationPassword: pw})
		if err != nil {
			for _, p := range out {
				_ = p.Remove()
			}
			return nil, "  SIMULATION: replication is simulated: PostgreSQL did not start (" + err.Error() + ")."
		}
		pw = pg.ReplicationPassword
		out[r.name] = pg
	}
	return out, "  Every region has its own PostgreSQL; tenants with tables replicate for real (logical replication):"
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
