package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/tlsutil"
	"github.com/atomcloud/atomfed/replication"
)

// agentOptions are an agent's settings, from flags or from dev.
type agentOptions struct {
	Node, Region, DataDir   string
	HTTPAddr, HTTPAdvertise string
	SerfAddr, SerfAdvertise string
	Join                    []string
	Capacity                int
	Security                securityOptions
	Logger                  hclog.Logger
	// Replication: the region's PostgreSQL (DSN with its credentials; never
	// logged), the address other regions dial, and the replication role's
	// name and passfile.
	PostgresDSN, PostgresAdvertise   string
	ReplicationUser, ReplicationPass string
	ReplicationCA                    string
	ReplicationInterval              time.Duration
	// PromURL is the region's Prometheus (PROM_URL), federated by the
	// region's metrics task with PromMatch; "" scrapes only the atomfed
	// nodes.
	PromURL   string
	PromMatch []string
	// DisableTaskTypes: task types this agent does not run (see
	// withoutTaskTypes).
	DisableTaskTypes []string
	// Backup: where pgBackRest works and keeps backups (agent_backup.go).
	Backup backupOptions
	// Simulation is the agent's SIMULATION_MODE evaluation; nil makes
	// startAgent evaluate it from the environment and announce it.
	Simulation *structs.Simulation
}

// agentNode is a running agent with its small HTTP API.
type agentNode struct {
	agent *agent.Agent
	http  *httpEndpoint
	url   string
	log   hclog.Logger
}

type agentStatus struct {
	a   *agent.Agent
	sim *structs.Simulation
}

// agentView is an agent's /health and /global-status: its own view plus
// its simulation mode.
type agentView struct {
	agent.Status
	SimulationMode bool                `json:"simulation_mode"`
	Simulation     *structs.Simulation `json:"simulation,omitempty"`
}

func (s agentStatus) AgentStatus() any {
	return agentView{Status: s.a.Status(), SimulationMode: s.sim.Active(), Simulation: s.sim}
}

// agentSummaryView is what an agent's /health and /global-status show
// without its token: status and counts, no task, tenant or database
// detail.
type agentSummaryView struct {
	agent.Summary
	SimulationMode bool                `json:"simulation_mode"`
	Simulation     *structs.Simulation `json:"simulation,omitempty"`
}

func (s agentStatus) AgentSummary() any {
	return agentSummaryView{Summary: s.a.Summary(), SimulationMode: s.sim.Active(), Simulation: s.sim.Summary()}
}

func startAgent(o agentOptions) (*agentNode, error) {
	if o.Security.Token == "" {
		return nil, errors.New("the agent needs its own agent token (--token or FEDERATION_TOKEN; make one with: atomfed token create --role agent --node <node> --region <region>)")
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil && o.DataDir != "" {
		return nil, err
	}
	sec, err := o.Security.resolve(o.DataDir, "agent.key", false, o.Logger)
	if err != nil {
		return nil, err
	}
	quiet := o.Simulation != nil
	if o.Simulation == nil {
		cfg := precheckConfigFromEnv()
		if o.PostgresDSN != "" {
			cfg.PostgresDSN = o.PostgresDSN
		}
		sim, err := evaluateSimulationWith(precheck.RoleAgent, cfg)
		if err != nil {
			return nil, err
		}
		o.Simulation = sim
	}
	announceSimulation(o.Logger.Named("agent"), o.Simulation, quiet)
	ln, adv, handlerWrap, err := listenHTTP(o.HTTPAddr, o.HTTPAdvertise, sec, httpapi.PlaintextGuard)
	if err != nil {
		return nil, err
	}
	reg := newRegistry()
	opts := []client.Option{client.WithToken(o.Security.Token), client.WithSigner(sec.signer)}
	if sec.client != nil {
		// The agent's token goes only to a server of the federation: the
		// server names Serf members gossip are not trusted, the
		// certificate must name a server (a member advertising a fake
		// server's http URL fails the handshake before any request).
		pinned := sec.client.Clone()
		pinned.ServerName = tlsutil.ServerName
		opts = append(opts, client.WithTLS(pinned))
	}
	var probeTransport http.RoundTripper
	if sec.roots != nil {
		probeTransport = &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: sec.roots, MinVersion: tls.VersionTLS12}}
	}
	execs, db, err := agentExecutors(o, reg, probeTransport)
	if err == nil {
		execs, err = withoutTaskTypes(execs, o.DisableTaskTypes)
	}
	if err != nil {
		ln.Close()
		return nil, err
	}
	var self atomic.Pointer[agent.Agent]
	var pool atomic.Pointer[client.Pool]
	execs = append(execs, newMetricsExecutor(o, reg, sec.roots, &self, &pool))
	ag, err := agent.New(agent.Config{
		NodeID: o.Node, Region: o.Region, DataDir: o.DataDir,
		SerfBindAddr: o.SerfAddr, SerfAdvertiseAddr: o.SerfAdvertise, HTTPAdvertiseURL: adv,
		Join: o.Join, Capacity: o.Capacity, Version: version, GossipKey: sec.gossipKey,
		Executors: execs, Database: db,
		NewAPI: func(servers func() []string) agent.API {
			p := client.NewPool(servers, opts...)
			pool.Store(p)
			return p
		},
		Logger: o.Logger, Registerer: reg,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	self.Store(ag)
	n := &agentNode{
		agent: ag,
		http:  serveHTTP(ln, handlerWrap(httpapi.NewAgentHandler(agentStatus{a: ag, sim: o.Simulation}, reg, o.Security.Token, o.Logger)), o.Logger),
		url:   adv,
		log:   o.Logger.Named("agent"),
	}
	if err := awaitTokenCheck(ag, o.Logger); err != nil {
		_ = n.shutdown()
		return nil, err
	}
	return n, nil
}

// tokenCheckWait bounds how long an agent waits at start for a server to
// say what its token is; it keeps asking afterwards.
const tokenCheckWait = 30 * time.Second

// awaitTokenCheck refuses to start an agent given a token that is not an
// agent token bound to it (an operator's FEDERATION_TOKEN, a reader's,
// another agent's). When no server answers in time the agent starts and
// goes on asking; it uses the token for nothing else until a server
// confirms it.
func awaitTokenCheck(ag *agent.Agent, log hclog.Logger) error {
	select {
	case err := <-ag.TokenChecked():
		if err != nil {
			return fmt.Errorf("refusing to start: %w", err)
		}
		return nil
	case <-time.After(tokenCheckWait):
		log.Warn("no server confirmed the agent's token yet; the agent starts and uses it only once one does")
		return nil
	}
}

// agentExecutors returns the probe executor and, when the agent knows its
// region's PostgreSQL, the replication executors (the replication tasks'
// and a switchover's step tasks': tenant-fence, tenant-catchup,
// tenant-promote, tenant-detach) and the database endpoint to report. Without a DSN, or when its simulation mode simulates
// replication, the region's replication is simulated, and the agent says so.
func agentExecutors(o agentOptions, reg prometheus.Registerer, probeTransport http.RoundTripper) ([]agent.Executor, *fsm.DatabaseEndpoint, error) {
	execs := []agent.Executor{agent.NewProbeExecutor(reg, probeTransport)}
	switch {
	case o.PostgresDSN == "":
		o.Logger.Warn("SIMULATION: no POSTGRES_DSN (--postgres-dsn): this agent runs no replication tasks, so replication in its region is simulated",
			"region", o.Region)
		return execs, nil, nil
	case o.Simulation.Simulates("replication"):
		o.Logger.Warn("SIMULATION: this agent runs no replication tasks, so replication in its region is simulated",
			"region", o.Region, "reason", o.Simulation.Reason)
		return execs, nil, nil
	}
	cfg := replication.Config{DSN: o.PostgresDSN, Advertise: o.PostgresAdvertise, ReplicationUser: o.ReplicationUser,
		ReplicationPassfile: o.ReplicationPass, ReplicationCA: o.ReplicationCA, Interval: o.ReplicationInterval, Logger: o.Logger, Registerer: reg}
	repl, err := replication.Executors(cfg)
	if err != nil {
		return nil, nil, err
	}
	db, err := cfg.Endpoint()
	if err != nil {
		return nil, nil, err
	}
	for _, e := range repl {
		execs = append(execs, e)
	}
	bx, err := backupExecutors(o, reg)
	if err != nil {
		return nil, nil, err
	}
	execs = append(execs, bx...)
	o.Logger.Info("replication executors ready", "database", fmt.Sprintf("%s:%d/%s", db.Host, db.Port, db.Database))
	return execs, db, nil
}

func (n *agentNode) leave(ctx context.Context) error {
	err := n.agent.Leave(ctx)
	return errors.Join(err, n.http.stop())
}

func (n *agentNode) shutdown() error {
	return errors.Join(n.agent.Shutdown(), n.http.stop())
}

func newAgentCmd() *cobra.Command {
	var o agentOptions
	var logLevel string
	var logJSON bool
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a region agent: it runs the tasks the leader places on it (probes, ...)",
		Long: `Run a region agent. It joins the federation's Serf pool with its region and
capabilities, watches its task assignments with blocking queries, runs them,
and reports heartbeats and task status through the servers. SIGTERM or SIGINT
hands its tasks back, leaves Serf and exits 0.

Each agent has its own token, bound to its --node and --region (make it with
atomfed token create --role agent --node <node> --region <region>): the
leader admits the agent only with it, and the agent refuses to start with any
other token (an operator's FEDERATION_TOKEN, another agent's). It sends the
token only to servers whose certificate names server.atomfed.

At start the agent checks its critical infrastructure: its region database
(POSTGRES_DSN), its signing key (COSIGN_KEY_PATH, COSIGN_PASSWORD) and Vault
(VAULT_ADDR). When one is missing it runs in SIMULATION_MODE (without a
region database: replication, tenant row-level security and backups run
simulated), says so in its log, /health and /global-status. With
SIMULATION_MODE=false it refuses to start instead.`,
		Example: `  atomfed agent --node us-east-a1 --region us-east --data-dir /var/lib/atomfed-agent \
    --http-addr 10.0.0.5:8411 --serf-addr 10.0.0.5:8311 --join 10.0.0.1:8301`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Region == "" {
				o.Region = os.Getenv("PRIMARY_REGION")
			}
			o.Join = splitList(o.Join)
			o.DisableTaskTypes = splitList(o.DisableTaskTypes)
			if o.Security.Token == "" {
				o.Security.Token = os.Getenv("FEDERATION_TOKEN")
			}
			if o.PostgresDSN == "" {
				o.PostgresDSN = os.Getenv("POSTGRES_DSN")
			}
			if o.ReplicationPass == "" {
				o.ReplicationPass = os.Getenv("ATOMFED_REPLICATION_PASSFILE")
			}
			if o.PromURL == "" {
				o.PromURL = os.Getenv("PROM_URL")
			}
			if o.ReplicationCA == "" {
				o.ReplicationCA = os.Getenv("ATOMFED_REPLICATION_CA")
			}
			o.Security.KeyPath = os.Getenv("COSIGN_KEY_PATH")
			o.Logger = newLogger(o.Node, logLevel, logJSON)
			return runAgent(o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Node, "node", "", "unique node name (a DNS label)")
	f.StringVar(&o.Region, "region", "", "region this agent serves (default $PRIMARY_REGION)")
	f.StringVar(&o.DataDir, "data-dir", "", "directory for the agent's identity and state")
	f.StringVar(&o.HTTPAddr, "http-addr", "127.0.0.1:8411", "listen address of the agent's /health, /global-status and /metrics")
	f.StringVar(&o.HTTPAdvertise, "http-advertise", "", "URL others use to reach the agent's HTTP endpoints")
	f.StringVar(&o.SerfAddr, "serf-addr", "127.0.0.1:8311", "Serf gossip listen address")
	f.StringVar(&o.SerfAdvertise, "serf-advertise", "", "Serf address other members use")
	f.StringSliceVar(&o.Join, "join", nil, "Serf addresses of servers or agents to join (comma-separated)")
	f.IntVar(&o.Capacity, "capacity", 64, "how many tasks this agent takes (0: no limit)")
	f.StringVar(&o.PostgresDSN, "postgres-dsn", "", "the region's PostgreSQL (default $POSTGRES_DSN); without it replication in the region is simulated")
	f.StringVar(&o.PostgresAdvertise, "postgres-advertise", "", "host:port other regions' PostgreSQL servers use to reach this one (default: from the DSN)")
	f.StringVar(&o.ReplicationUser, "replication-user", replication.DefaultReplicationUser, "role subscriptions log in as on publishers (the same in every region)")
	f.StringVar(&o.ReplicationPass, "replication-passfile", "", "pgpass file with the replication role's password, readable by this region's PostgreSQL server (default $ATOMFED_REPLICATION_PASSFILE)")
	f.StringVar(&o.ReplicationCA, "replication-ca", "", "CA certificate (PEM) that signs the other regions' PostgreSQL server certificates; connections to them use sslmode=verify-full against it; readable by this region's PostgreSQL server (default $ATOMFED_REPLICATION_CA)")
	f.DurationVar(&o.ReplicationInterval, "replication-interval", replication.DefaultInterval, "how often replication tasks converge and probe lag and schema drift")
	f.StringVar(&o.PromURL, "prom-url", "", "the region's Prometheus, federated by the region's metrics task (default $PROM_URL); without it only the atomfed nodes are scraped")
	f.StringArrayVar(&o.PromMatch, "prom-match", nil, `match[] selector of the region's Prometheus /federate (repeatable; default {__name__=~".+"})`)
	f.StringSliceVar(&o.DisableTaskTypes, "disable-task-types", nil, "task types this agent does not run, comma-separated (e.g. global-publisher,global-subscriber to leave federation sync to other agents); the leader places them on none of its tasks")
	f.StringVar(&o.Security.Token, "token", "", "this agent's token: an agent token bound to its --node and --region (default $FEDERATION_TOKEN)")
	addSecurityFlags(f, &o.Security)
	addBackupFlags(f, &o.Backup)
	f.StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	f.BoolVar(&logJSON, "log-json", false, "log as JSON lines")
	cmd.AddCommand(newAgentTasksCmd())
	return cmd
}

func runAgent(o agentOptions) error {
	n, err := startAgent(o)
	if err != nil {
		return err
	}
	n.log.Info("agent HTTP endpoints", "url", n.url)
	return runUntilSignal(n.log, n.http, n.leave, n.shutdown, "signal received; handing back tasks and leaving", "left the federation; bye")
}
