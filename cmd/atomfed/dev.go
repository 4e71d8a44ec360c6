package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/tlsutil"
	"github.com/atomcloud/atomfed/recovery"
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

// knownLocations places dev regions named like the usual cloud regions; a
// region of another name takes the location of the default region in its
// place.
var knownLocations = map[string]fsm.Location{
	"us-east": {Lat: 39.04, Lon: -77.49}, "us-west": {Lat: 45.60, Lon: -121.18}, "ca-central": {Lat: 45.50, Lon: -73.57},
	"sa-east": {Lat: -23.55, Lon: -46.63}, "eu-west": {Lat: 53.35, Lon: -6.26}, "eu-central": {Lat: 50.11, Lon: 8.68},
	"eu-north": {Lat: 59.33, Lon: 18.07}, "me-south": {Lat: 26.07, Lon: 50.56}, "af-south": {Lat: -33.92, Lon: 18.42},
	"ap-south": {Lat: 19.08, Lon: 72.88}, "ap-southeast": {Lat: 1.35, Lon: 103.82}, "ap-northeast": {Lat: 35.68, Lon: 139.69},
}

// devRegionsFromEnv names dev's three regions from the seed's
// PRIMARY_REGION and SECONDARY_REGIONS (two names, comma or space
// separated), each defaulting to dev's own (us-east; eu-west, ap-south).
func devRegionsFromEnv() ([]devRegion, error) {
	names := []string{devRegions[0].name}
	if p := os.Getenv("PRIMARY_REGION"); p != "" {
		names[0] = p
	}
	if sec := strings.FieldsFunc(os.Getenv("SECONDARY_REGIONS"), func(c rune) bool { return c == ',' || c == ' ' }); len(sec) > 0 {
		if len(sec) != 2 {
			return nil, fmt.Errorf("SECONDARY_REGIONS=%q: dev runs three regions, PRIMARY_REGION and two secondary ones; name two (e.g. eu-west,ap-south)", os.Getenv("SECONDARY_REGIONS"))
		}
		names = append(names, sec...)
	} else {
		names = append(names, devRegions[1].name, devRegions[2].name)
	}
	out := make([]devRegion, len(names))
	for i, n := range names {
		if !fsm.ValidRegionName(n) {
			return nil, fmt.Errorf("region name %q (PRIMARY_REGION/SECONDARY_REGIONS) must be a DNS label: lower-case letters, digits and dashes", n)
		}
		for _, o := range out[:i] {
			if o.name == n {
				return nil, fmt.Errorf("PRIMARY_REGION and SECONDARY_REGIONS name %q twice: dev needs three different regions", n)
			}
		}
		loc, ok := knownLocations[n]
		if !ok {
			loc = devRegions[i].loc
		}
		out[i] = devRegion{n, loc}
	}
	return out, nil
}

func newDevCmd() *cobra.Command {
	var dataDir, logLevel, host string
	var httpPort, raftPort, serfPort, agentHTTPPort, agentSerfPort int
	var keep, noPostgres, prometheus bool
	var prometheusPort int
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole local federation: three servers in us-east, eu-west and ap-south",
		Long: `Run a whole local federation in one process: three servers, one per region
(us-east, eu-west, ap-south; or PRIMARY_REGION and the two names of
SECONDARY_REGIONS), with the API of the first on 127.0.0.1:8401.
The three regions are registered once a leader is elected. When the
PostgreSQL binaries are installed, every region gets its own throwaway
PostgreSQL cluster and its agent drives real logical replication; without
them replication is simulated, and dev says so. Each region's agent runs
the region's metrics task (the global view: atomfed metrics federate); with
--prometheus and Prometheus installed, each region also gets its own
Prometheus scraping its nodes, which its agent federates. Data lives in a
temporary directory that is removed on Ctrl-C unless --keep is given.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDev(devOptions{dataDir: dataDir, logLevel: logLevel, host: host,
				httpPort: httpPort, raftPort: raftPort, serfPort: serfPort,
				agentHTTPPort: agentHTTPPort, agentSerfPort: agentSerfPort, keep: keep, noPostgres: noPostgres,
				prometheus: prometheus, prometheusPort: prometheusPort})
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
	f.BoolVar(&prometheus, "prometheus", false, "start one Prometheus per region (when installed), federated by the region's agent")
	f.IntVar(&prometheusPort, "prometheus-port", 9490, "port of the first region's Prometheus (--prometheus); the others use the next ports")
	return cmd
}

type devOptions struct {
	dataDir, logLevel, host      string
	httpPort, raftPort, serfPort int
	agentHTTPPort, agentSerfPort int
	keep, noPostgres             bool
	prometheus                   bool
	prometheusPort               int
}

func runDev(o devOptions) error {
	regions, err := devRegionsFromEnv()
	if err != nil {
		return err
	}
	devRegions = regions
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
	if err := os.MkdirAll(o.dataDir, 0o700); err != nil {
		return err
	}
	sec, err := devSecurity(o.dataDir, o.host)
	if err != nil {
		return fmt.Errorf("dev TLS and keys: %w", err)
	}
	// Every node of dev shares this environment: evaluate once per role,
	// announce once, and hand the result to each node.
	serverSim, err := evaluateSimulation(precheck.RoleServer)
	if err != nil {
		return err
	}
	pgs, pgNote := startDevPostgres(o)
	agentSims, err := devAgentSimulations(pgs)
	if err != nil {
		removeDevPostgres(pgs, o.keep)
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
		removeDevPostgres(pgs, o.keep)
	}
	for i, r := range devRegions {
		name := fmt.Sprintf("%s-1", r.name)
		opts := sec.server
		opts.TLS = sec.files[name]
		n, err := startServer(serverOptions{
			Node: name, Region: r.name, DataDir: filepath.Join(o.dataDir, name),
			HTTPAddr: addr(o.httpPort, i), RaftAddr: addr(o.raftPort, i), SerfAddr: addr(o.serfPort, i),
			BootstrapExpect: len(devRegions), Join: join, RaftMultiplier: 1,
			DeadServerCleanup: 30 * time.Second, Security: opts, Logger: newLogger(name, o.logLevel, false),
			Simulation: serverSim, AnonymousRegionList: true, SnapshotRepo: filepath.Join(o.dataDir, "snapshots"),
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
	prom := startDevPrometheus(o, sec.caPath)
	stopServers := stopAll
	stopAll = func() {
		stopServers()
		prom.stop()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	setup, err := setupDevFederation(ctx, o.dataDir, nodes, sec)
	if err != nil {
		stopAll()
		return err
	}
	for i, r := range devRegions {
		name := fmt.Sprintf("%s-a1", r.name)
		opts := sec.server
		opts.TLS = sec.files[name]
		opts.Token = setup.agentTokens[name]
		ao := agentOptions{
			Node: name, Region: r.name, DataDir: filepath.Join(o.dataDir, name),
			HTTPAddr: addr(o.agentHTTPPort, i), SerfAddr: addr(o.agentSerfPort, i), Join: join,
			Capacity: 64, Security: opts, Logger: newLogger(name, o.logLevel, false),
			Simulation: agentSims[r.name], ReplicationInterval: 2 * time.Second,
			PromURL: prom.urls[r.name],
		}
		if pg := pgs[r.name]; pg != nil {
			ao.PostgresDSN, ao.ReplicationPass, ao.ReplicationCA = pg.DSN(pglocal.Database), pg.Passfile, pg.RootCert
			// pgBackRest's config and the shared repository sit where the
			// regions' PostgreSQL (the postgres user) can reach them.
			ao.Backup = backupOptions{Dir: filepath.Join(o.dataDir, name+"-pgbackrest"), Repo: filepath.Join(o.dataDir, "backups")}
		}
		a, err := startAgent(ao)
		if err != nil {
			stopAll()
			return fmt.Errorf("start agent %s: %w", name, err)
		}
		agents = append(agents, a)
	}
	if err := writeDevFile(o.dataDir, nodes, sec, setup, pgs); err != nil {
		return err
	}
	printDev(o.dataDir, nodes, agents, sec, setup, pgs, pgNote)
	if prom.note != "" {
		fmt.Println(prom.note)
		for _, r := range devRegions {
			if u := prom.urls[r.name]; u != "" {
				fmt.Printf("  prometheus  region %-9s %s\n", r.name, u)
			}
		}
	}
	fmt.Print("\n" + simulationBanner(serverSim, agentSims[devRegions[0].name]))
	<-ctx.Done()
	stopping.Store(true)
	fmt.Println("\nstopping the dev federation")
	stopAll()
	return nil
}

// devSec is the dev federation's throwaway security material.
type devSec struct {
	caPath string
	files  map[string]tlsutil.Files // by node name
	server securityOptions          // token and gossip key (TLS per node)
	client *tls.Config
}

// devSecurity makes (or, in a kept data dir, reuses) a federation CA, a
// certificate per node, a gossip key and the bootstrap token.
func devSecurity(dir, host string) (*devSec, error) {
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return nil, err
	}
	sec := &devSec{caPath: filepath.Join(tlsDir, "ca.pem"), files: map[string]tlsutil.Files{}}
	var ca *tlsutil.CA
	if _, err := os.Stat(sec.caPath); err != nil {
		if ca, err = tlsutil.NewCA("atomfed dev federation CA"); err != nil {
			return nil, err
		}
		if err := os.WriteFile(sec.caPath, ca.CertPEM, 0o644); err != nil {
			return nil, err
		}
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if ip := net.ParseIP(host); ip != nil {
		ips = append(ips, ip)
	}
	for _, r := range devRegions {
		for _, n := range []struct{ name, role string }{{r.name + "-1", tlsutil.ServerName}, {r.name + "-a1", tlsutil.AgentName}} {
			f := tlsutil.Files{CA: sec.caPath, Cert: filepath.Join(tlsDir, n.name+".pem"), Key: filepath.Join(tlsDir, n.name+"-key.pem")}
			if ca != nil {
				var err error
				if f, err = ca.WriteNode(tlsDir, n.name, sec.caPath, []string{n.name, n.role, "localhost"}, ips); err != nil {
					return nil, err
				}
			}
			sec.files[n.name] = f
		}
	}
	gossip, err := readOrCreate(filepath.Join(dir, "gossip.key"), func() string {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		return base64.StdEncoding.EncodeToString(b)
	})
	if err != nil {
		return nil, err
	}
	token := os.Getenv("FEDERATION_TOKEN")
	if token == "" {
		if token, err = readOrCreate(filepath.Join(dir, "token"), func() string {
			b := make([]byte, 24)
			_, _ = rand.Read(b)
			return "atf_dev_" + hex.EncodeToString(b)
		}); err != nil {
			return nil, err
		}
	}
	sec.server = securityOptions{GossipKey: gossip, Token: token}
	if sec.client, err = tlsutil.ClientConfig(tlsutil.Files{CA: sec.caPath}, ""); err != nil {
		return nil, err
	}
	return sec, nil
}

// readOrCreate returns the trimmed content of path, writing make() there
// first (0600) when it does not exist.
func readOrCreate(path string, make func() string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	v := make()
	return v, os.WriteFile(path, []byte(v+"\n"), 0o600)
}

// devSetup is what setupDevFederation made.
type devSetup struct {
	agentTokens map[string]string // by agent node: each agent's own bound token
	approvers   []string          // key paths
	regionKeys  []string          // key paths
}

// setupDevFederation waits for a leader, then, through the API like any
// operator would: registers the three regions (each signed by its own key),
// registers two approvers, and makes each agent's own token.
// devSnapshotEvery is dev's snapshot shipping interval, in seconds.
const devSnapshotEvery = 60

func setupDevFederation(ctx context.Context, dir string, nodes []*serverNode, sec *devSec) (*devSetup, error) {
	keys := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return nil, err
	}
	setup := &devSetup{}
	op, err := client.New(nodes[0].url, client.WithToken(sec.server.Token), client.WithTLS(sec.client))
	if err != nil {
		return nil, err
	}
	retry := func(what string, fn func() error) error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := fn()
			if err == nil {
				return nil
			}
			var ce *client.Error
			if ctx.Err() != nil || time.Now().After(deadline) || (errors.As(err, &ce) && ce.Status != 503) {
				return fmt.Errorf("%s: %w", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i, r := range devRegions {
		path := filepath.Join(keys, r.name+".key")
		signer, err := loadOrCreateSigner("", path)
		if err != nil {
			return nil, err
		}
		setup.regionKeys = append(setup.regionKeys, path)
		c, _ := client.New(nodes[0].url, client.WithToken(sec.server.Token), client.WithTLS(sec.client), client.WithSigner(signer))
		reg := &fsm.Region{Name: r.name, URL: nodes[i].url, Tier: fsm.TierStaging, Location: r.loc, Labels: map[string]string{"env": "dev"}}
		if err := retry("register region "+r.name, func() error { _, err := c.RegisterRegion(ctx, reg, nil); return err }); err != nil {
			return nil, err
		}
	}
	// Control-plane snapshots ship every minute in dev (into
	// <dev dir>/snapshots), ten kept.
	if err := retry("set the snapshot policy", func() error {
		_, err := op.PutSnapshotPolicy(ctx, &fsm.SnapshotPolicy{IntervalSeconds: devSnapshotEvery, Keep: 10})
		return err
	}); err != nil {
		return nil, err
	}
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("approver-%d", i)
		path := filepath.Join(keys, name+".key")
		signer, err := loadOrCreateSigner("", path)
		if err != nil {
			return nil, err
		}
		setup.approvers = append(setup.approvers, path)
		c, _ := client.New(nodes[0].url, client.WithToken(sec.server.Token), client.WithTLS(sec.client), client.WithSigner(signer))
		if err := retry("register "+name, func() error { _, err := c.RegisterMember(ctx, name, fsm.MemberApprover); return err }); err != nil {
			return nil, err
		}
	}
	// One token per agent, bound to its node and region: the leader admits
	// an agent only with one, and it acts only as that agent.
	setup.agentTokens = map[string]string{}
	for _, r := range devRegions {
		name := r.name + "-a1"
		if err := retry("create the token of agent "+name, func() error {
			t, err := op.CreateAgentToken(ctx, name, r.name, "dev agent "+name)
			if err == nil {
				setup.agentTokens[name] = t.Secret
			}
			return err
		}); err != nil {
			return nil, err
		}
	}
	return setup, nil
}

// startDevPostgres starts one throwaway PostgreSQL cluster per region when
// the binaries are installed, and returns a line that says what dev runs.
func startDevPostgres(o devOptions) (map[string]*pglocal.Cluster, string) {
	if o.noPostgres {
		return nil, "  SIMULATION: replication is simulated (--no-postgres): no region has a database, replication tasks stay pending."
	}
	if _, err := pglocal.Find(); err != nil {
		return nil, "  SIMULATION: replication is simulated: " + err.Error() + ".\n" +
			"  No region has a database and replication tasks stay pending (GET /v1/tenants/{id}/replication says why)."
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A sibling of the federation CA signs the regions' PostgreSQL server
	// certificates: subscriptions and agents reach other regions over TLS
	// with sslmode=verify-full against it (each cluster's RootCert).
	ca, err := tlsutil.NewCA("atomfed dev PostgreSQL CA")
	if err != nil {
		return nil, "  SIMULATION: replication is simulated: " + err.Error() + "."
	}
	pw := ""
	out := map[string]*pglocal.Cluster{}
	for _, r := range devRegions {
		pg, err := pglocal.Start(ctx, pglocal.Options{Name: r.name, Parent: o.dataDir, ReplicationPassword: pw, CA: ca})
		if err != nil {
			removeDevPostgres(out, false)
			return nil, "  SIMULATION: replication is simulated: PostgreSQL did not start (" + err.Error() + ")."
		}
		pw = pg.ReplicationPassword
		out[r.name] = pg
	}
	return out, "  Every region has its own PostgreSQL; tenants with tables replicate for real (logical replication):"
}

// removeDevPostgres stops the regions' PostgreSQL clusters, keeping their
// data when keep is set.
func removeDevPostgres(pgs map[string]*pglocal.Cluster, keep bool) {
	for _, pg := range pgs {
		if keep {
			_ = pg.Stop()
		} else {
			_ = pg.Remove()
		}
	}
}

// devAgentSimulations decides each dev agent's SIMULATION_MODE the way a
// real agent would, with its region's database as POSTGRES_DSN. Dev
// announces the result once, in its banner.
func devAgentSimulations(pgs map[string]*pglocal.Cluster) (map[string]*structs.Simulation, error) {
	out := map[string]*structs.Simulation{}
	for _, r := range devRegions {
		cfg := precheckConfigFromEnv()
		if pg := pgs[r.name]; pg != nil {
			cfg.PostgresDSN = pg.DSN(pglocal.Database)
		}
		sim, err := evaluateSimulationWith(precheck.RoleAgent, cfg)
		if err != nil {
			return nil, err
		}
		out[r.name] = sim
	}
	return out, nil
}

func printDev(dir string, nodes []*serverNode, agents []*agentNode, sec *devSec, setup *devSetup, pgs map[string]*pglocal.Cluster, pgNote string) {
	fmt.Println("atomfed dev federation is up (TLS, tokens, signed requests)")
	fmt.Printf("  data dir: %s\n", dir)
	for i, n := range nodes {
		fmt.Printf("  %-11s region %-9s api %s  raft %s  serf %s\n", n.srv.NodeID(), devRegions[i].name, n.url, n.srv.RaftAddr(), n.srv.SerfAddr())
	}
	for i, a := range agents {
		fmt.Printf("  %-11s region %-9s http %s  (agent)  serf %s\n", devRegions[i].name+"-a1", devRegions[i].name, a.url, a.agent.SerfAddr())
	}
	fmt.Println()
	fmt.Println(pgNote)
	for _, r := range devRegions {
		if pg := pgs[r.name]; pg != nil {
			fmt.Printf("  postgres    region %-9s %s/%s   PGPASSFILE=%s psql -h %s -p %d -U %s %s\n",
				r.name, pg.Addr(), pglocal.Database, pg.SuperuserPassfile, pg.Host, pg.Port, pglocal.Superuser, pglocal.Database)
		}
	}
	if _, err := recovery.FindPgBackRest(""); len(pgs) > 0 && err == nil {
		fmt.Printf("  backups     pgBackRest backs up every region into %s (atomfed backup list)\n", filepath.Join(dir, "backups"))
	}
	u := nodes[0].url
	self := selfName()
	fmt.Printf(`
  CA certificate:   %s
  management token: %s
  approver keys:    %s

  export ATOMFED_ADDR=%s ATOMFED_CACERT=%s FEDERATION_TOKEN=%s ATOMFED_DEV_DIR=%s
`, sec.caPath, sec.server.Token, strings.Join(setup.approvers, " "), u, sec.caPath, sec.server.Token, dir)
	if pg := pgs[devRegions[0].name]; pg != nil {
		// What precheck needs to see a region database; the password
		// stays in the passfile.
		fmt.Printf("  export POSTGRES_DSN='postgres://%s@%s/%s?passfile=%s'   # %s's database, for %s precheck\n",
			pglocal.Superuser, pg.Addr(), pglocal.Database, pg.SuperuserPassfile, devRegions[0].name, self)
	}
	fmt.Printf(`  curl -s %s/region/list    # anonymous in dev: the region list only
  curl -s --cacert "$ATOMFED_CACERT" -H "Authorization: Bearer $FEDERATION_TOKEN" $ATOMFED_ADDR/v1/tenants
  %s region list
  %s members
  COSIGN_KEY_PATH=%s %s approve <approval-id>

Press Ctrl-C to stop.
`, strings.Replace(u, "https://", "http://", 1), self, self, setup.approvers[0], self)
}

// DevFile is the name of the file, in a dev federation's data directory,
// that says where its parts are for the tools that work with it
// (atomfed report --dev-dir): no secret is in it, only paths to the files
// that hold them.
const DevFile = "federation.json"

// devFile is DevFile's content.
type devFile struct {
	API    []string `json:"api"`
	CACert string   `json:"ca_cert"`
	// ApproverKeys are the approvers' private key files.
	ApproverKeys []string `json:"approver_keys"`
	// RegionDBs are the regions' databases as DSNs whose password is in
	// a passfile; absent when replication is simulated.
	RegionDBs map[string]string `json:"region_dbs,omitempty"`
}

func writeDevFile(dir string, nodes []*serverNode, sec *devSec, setup *devSetup, pgs map[string]*pglocal.Cluster) error {
	f := devFile{CACert: sec.caPath, ApproverKeys: setup.approvers}
	for _, n := range nodes {
		f.API = append(f.API, n.url)
	}
	for _, r := range devRegions {
		if pg := pgs[r.name]; pg != nil {
			if f.RegionDBs == nil {
				f.RegionDBs = map[string]string{}
			}
			f.RegionDBs[r.name] = fmt.Sprintf("postgres://%s@%s/%s?passfile=%s&sslmode=disable", pglocal.Superuser, pg.Addr(), pglocal.Database, pg.SuperuserPassfile)
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, DevFile), append(b, '\n'), 0o600)
}

// readDevFile reads a dev federation's DevFile.
func readDevFile(dir string) (*devFile, error) {
	b, err := os.ReadFile(filepath.Join(dir, DevFile))
	if err != nil {
		return nil, fmt.Errorf("read the dev federation's %s: %w", DevFile, err)
	}
	var f devFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, DevFile), err)
	}
	return &f, nil
}

// selfName is how the user ran this binary (bin/atomfed from make run),
// so that the printed commands work when pasted.
func selfName() string {
	if a := os.Args[0]; strings.Contains(a, "/") {
		return strings.TrimPrefix(a, "./")
	}
	return "atomfed"
}
