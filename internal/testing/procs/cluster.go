package procs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// ServerConfig is the command line of one `atomfed server`.
type ServerConfig struct {
	Node, Region, DataDir        string
	HTTPAddr, RaftAddr, SerfAddr string
	// RaftAdvertise and SerfAdvertise (host:port) and HTTPAdvertise (a
	// URL) are what peers dial when that is not the bind address (the chaos
	// suite puts a fault proxy there); empty omits the flag.
	RaftAdvertise, SerfAdvertise, HTTPAdvertise string
	BootstrapExpect                             int
	Join                                        []string
	// Extra flags, appended as given.
	Extra []string
}

// serfDial is the Serf address peers dial: the advertised one, else the
// bind address.
func (c ServerConfig) serfDial() string {
	if c.SerfAdvertise != "" {
		return c.SerfAdvertise
	}
	return c.SerfAddr
}

// Args returns the server's command line after the binary.
func (c ServerConfig) Args() []string {
	args := []string{"server",
		"--node", c.Node, "--region", c.Region, "--data-dir", c.DataDir,
		"--http-addr", c.HTTPAddr, "--raft-addr", c.RaftAddr, "--serf-addr", c.SerfAddr,
	}
	for _, f := range []struct{ flag, v string }{
		{"--raft-advertise", c.RaftAdvertise}, {"--serf-advertise", c.SerfAdvertise}, {"--http-advertise", c.HTTPAdvertise},
	} {
		if f.v != "" {
			args = append(args, f.flag, f.v)
		}
	}
	if c.BootstrapExpect > 0 {
		args = append(args, "--bootstrap-expect", strconv.Itoa(c.BootstrapExpect))
	}
	if len(c.Join) > 0 {
		args = append(args, "--join", strings.Join(c.Join, ","))
	}
	return append(args, c.Extra...)
}

// ServerProc is an `atomfed server` process with a client of its HTTP API.
type ServerProc struct {
	*Proc
	Config ServerConfig
	// URL is the base URL of the server's HTTP API.
	URL    string
	Client *client.Client
	sec    *Security
}

// NewServerProc prepares (but does not start) a server whose log is
// logDir/<node>.log.
func NewServerProc(bin, logDir string, cfg ServerConfig, sec *Security) (*ServerProc, error) {
	url := sec.Scheme() + "://" + cfg.HTTPAddr
	flags, err := sec.NodeFlags(cfg.Node, true, cfg.certIPs()...)
	if err != nil {
		return nil, err
	}
	cfg.Extra = append(append([]string(nil), cfg.Extra...), flags...)
	c, err := sec.Client(url)
	if err != nil {
		return nil, err
	}
	p := NewProc(cfg.Node, bin, filepath.Join(logDir, cfg.Node+".log"), cfg.Args()...)
	p.Env = sec.Env()
	sec.addServer(url)
	return &ServerProc{Proc: p, Config: cfg, URL: url, Client: c, sec: sec}, nil
}

// certIPs are the addresses a server's certificate must name: the HTTP
// bind address and the advertised addresses peers and clients dial.
func (c ServerConfig) certIPs() []string {
	var ips []string
	for _, hp := range []string{c.HTTPAddr, c.RaftAdvertise, c.SerfAdvertise, strings.TrimPrefix(strings.TrimPrefix(c.HTTPAdvertise, "https://"), "http://")} {
		if host, _, err := net.SplitHostPort(hp); err == nil && net.ParseIP(host) != nil {
			ips = append(ips, host)
		}
	}
	return ips
}

// ID returns the server's node name (its Raft server id).
func (s *ServerProc) ID() string { return s.Config.Node }

// Health reads the server's /health with a short timeout.
func (s *ServerProc) Health(ctx context.Context) (*structs.Health, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.Client.Health(ctx)
}

// ClusterOptions shape a multi-process cluster.
type ClusterOptions struct {
	// Bin is the atomfed binary.
	Bin string
	// Dir holds the servers' data directories (Dir/<node>) and the
	// security material. Empty: a new temporary directory, which Remove
	// deletes.
	Dir string
	// LogDir holds the servers' logs; default Dir/logs.
	LogDir string
	// Servers is the number of servers bootstrapped together (default 3).
	Servers int
	// Port returns a free TCP port on 127.0.0.1 (tests pass
	// testutil.FreePort).
	Port func() (int, error)
	// Extra flags for every server (e.g. "--log-level", "debug").
	Extra []string
	// Env is added to every server's environment.
	Env []string
	// Plaintext starts the servers with --insecure-plaintext (see
	// Security.Plaintext).
	Plaintext bool
	// Configure, when set, adjusts server i's config before any server
	// starts: NewCluster has set the node name, region, data dir,
	// --bootstrap-expect and Extra, and afterwards binds whichever of
	// HTTPAddr, RaftAddr and SerfAddr is still empty to a fresh port on
	// 127.0.0.1 and sets Join (if still empty) to every server's
	// advertised Serf address (its bind address when it advertises none).
	// The chaos suite binds each server to its own loopback address and
	// advertises its fault proxy, which it sets up here.
	Configure func(i int, cfg *ServerConfig) error
}

// Regions are the region names the servers of a cluster run in, in order.
var Regions = []string{"us-east", "eu-west", "ap-south", "us-west", "eu-north"}

// Cluster is a set of server processes that bootstrap one Raft cluster.
type Cluster struct {
	Servers []*ServerProc
	// Sec is the cluster's TLS, token and key material.
	Sec *Security
	// Dir and LogDir are ClusterOptions.Dir and LogDir as used.
	Dir, LogDir string

	opts    ClusterOptions
	tempDir bool // Dir was made by NewCluster
}

// NewCluster prepares the servers (node names s1..sN, regions from
// Regions, data dirs under Dir, fresh ports or what Configure chose, each
// joining every server's Serf address) and starts them. It does not wait
// for a leader: see StartCluster, WaitFormed and WaitLeader. When it fails
// nothing it started runs.
func NewCluster(o ClusterOptions) (c *Cluster, err error) {
	if o.Servers == 0 {
		o.Servers = 3
	}
	tempDir := false
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "atomfed-cluster-"); err != nil {
			return nil, err
		}
		tempDir = true
		defer func() {
			if err != nil {
				os.RemoveAll(o.Dir)
			}
		}()
	}
	if o.LogDir == "" {
		o.LogDir = filepath.Join(o.Dir, "logs")
	}
	if o.Port == nil {
		o.Port = FreePort
	}
	cfgs, err := serverConfigs(o)
	if err != nil {
		return nil, err
	}
	sec, err := NewSecurity(o.Dir)
	if err != nil {
		return nil, err
	}
	sec.Plaintext = o.Plaintext
	c = &Cluster{Sec: sec, Dir: o.Dir, LogDir: o.LogDir, opts: o, tempDir: tempDir}
	for _, cfg := range cfgs {
		s, err := NewServerProc(o.Bin, o.LogDir, cfg, sec)
		if err != nil {
			return nil, err
		}
		s.Env = append(s.Env, o.Env...)
		c.Servers = append(c.Servers, s)
	}
	for _, s := range c.Servers {
		if err := s.Start(); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// serverConfigs makes the servers' configs: defaults, Configure, ports,
// join list.
func serverConfigs(o ClusterOptions) ([]ServerConfig, error) {
	cfgs := make([]ServerConfig, o.Servers)
	for i := range cfgs {
		node := fmt.Sprintf("s%d", i+1)
		cfg := ServerConfig{
			Node: node, Region: Regions[i%len(Regions)], DataDir: filepath.Join(o.Dir, node),
			BootstrapExpect: o.Servers, Extra: append([]string(nil), o.Extra...),
		}
		if o.Configure != nil {
			if err := o.Configure(i, &cfg); err != nil {
				return nil, fmt.Errorf("configure %s: %w", node, err)
			}
		}
		for _, addr := range []*string{&cfg.HTTPAddr, &cfg.RaftAddr, &cfg.SerfAddr} {
			if *addr == "" {
				p, err := uniquePort(o.Port)
				if err != nil {
					return nil, err
				}
				*addr = loopback(p)
			}
		}
		cfgs[i] = cfg
	}
	var join []string
	for _, cfg := range cfgs {
		join = append(join, cfg.serfDial())
	}
	for i := range cfgs {
		if len(cfgs[i].Join) == 0 {
			cfgs[i].Join = join
		}
	}
	return cfgs, nil
}

// StartCluster starts a cluster (NewCluster) and waits up to a minute for
// an established leader (WaitFormed). On failure it stops the servers and
// removes their data, keeping the logs, whose directory the error names.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	c, err := NewCluster(o)
	if err != nil {
		return nil, err
	}
	if err := c.WaitFormed(60 * time.Second); err != nil {
		c.Remove(true)
		return nil, fmt.Errorf("%w (logs kept in %s)", err, c.LogDir)
	}
	return c, nil
}

// Remove kills the servers and deletes the cluster's data: all of Dir
// when NewCluster made it and keepLogs is not set, else each server's data
// dir.
func (c *Cluster) Remove(keepLogs bool) {
	c.Close()
	if c.tempDir && !keepLogs {
		os.RemoveAll(c.Dir)
		return
	}
	for _, s := range c.Servers {
		os.RemoveAll(s.Config.DataDir)
	}
}

// handedOut holds every port given to a server by this process. A port
// that was free a moment ago is often handed out again by the kernel right
// after its probe listener closed, so two servers (or two clusters of
// parallel tests) could otherwise get the same one.
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

func uniquePort(port func() (int, error)) (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	for i := 0; i < 1000; i++ {
		n, err := port()
		if err != nil {
			return 0, err
		}
		if !handedOut.ports[n] {
			handedOut.ports[n] = true
			return n, nil
		}
	}
	return 0, errors.New("no unused free port after 1000 tries")
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// FreePort returns a port on 127.0.0.1 that was free a moment ago, below
// the kernel's ephemeral range (testutil.PickPort).
func FreePort() (int, error) { return testutil.PickPort() }

// Server returns the server with node name id, or nil.
func (c *Cluster) Server(id string) *ServerProc {
	for _, s := range c.Servers {
		if s.ID() == id {
			return s
		}
	}
	return nil
}

// Running returns the servers whose process runs.
func (c *Cluster) Running() []*ServerProc {
	var out []*ServerProc
	for _, s := range c.Servers {
		if s.Running() {
			out = append(out, s)
		}
	}
	return out
}

// Others returns the running servers other than s.
func (c *Cluster) Others(s *ServerProc) []*ServerProc {
	var out []*ServerProc
	for _, o := range c.Running() {
		if o != s {
			out = append(out, o)
		}
	}
	return out
}

// URLs returns the HTTP base URLs of all servers, running or not.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		out[i] = s.URL
	}
	return out
}

// Leader returns the leader as the running servers see it right now: the
// one whose /health says it is Leader, that every other running server
// names, and that answers a linearizable read (so its leadership is
// established, not just won).
func (c *Cluster) Leader(ctx context.Context) (*ServerProc, error) {
	running := c.Running()
	if len(running) == 0 {
		return nil, errors.New("no server is running")
	}
	var leader *ServerProc
	for _, s := range running {
		h, err := s.Health(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.ID(), err)
		}
		if h.Leader == "" {
			return nil, fmt.Errorf("%s knows no leader", s.ID())
		}
		l := c.Server(h.Leader)
		if l == nil || !l.Running() {
			return nil, fmt.Errorf("%s names %q as leader, which is not running", s.ID(), h.Leader)
		}
		if leader != nil && leader != l {
			return nil, fmt.Errorf("servers disagree on the leader: %s and %s", leader.ID(), l.ID())
		}
		leader = l
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, meta, err := leader.Client.Regions(rctx, &client.QueryOptions{Consistency: "linearizable"})
	if err != nil {
		return nil, fmt.Errorf("leader %s: linearizable read: %w", leader.ID(), err)
	}
	if meta.ServedBy != leader.ID() {
		return nil, fmt.Errorf("leader %s: linearizable read served by %q", leader.ID(), meta.ServedBy)
	}
	return leader, nil
}

// WaitLeader polls until Leader succeeds or timeout passes.
func (c *Cluster) WaitLeader(timeout time.Duration) (*ServerProc, error) {
	var l *ServerProc
	err := testutil.PollEvery(context.Background(), timeout, 25*time.Millisecond, func() error {
		var err error
		l, err = c.Leader(context.Background())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("no established leader within %s: %w (%s)", timeout, err, c.exits())
	}
	return l, nil
}

// exits describes servers that were started and have exited, for errors.
func (c *Cluster) exits() string {
	var parts []string
	for _, s := range c.Servers {
		if s.Starts() > 0 && !s.Running() {
			parts = append(parts, s.ID()+": "+s.ExitStatus())
		}
	}
	if len(parts) == 0 {
		return "every started server runs"
	}
	return strings.Join(parts, "; ")
}

// Close kills every server with SIGKILL and waits for them.
func (c *Cluster) Close() {
	for _, s := range c.Servers {
		s.Close()
	}
}

// TB is the part of testing.TB the test helpers here use: testutil.TB,
// and the test's name and outcome for its logs.
type TB interface {
	testutil.TB
	Name() string
	Failed() bool
}

// LogDirEnv names an environment variable: when set, server logs are
// written under that directory (and kept) instead of the test's temporary
// directory.
const LogDirEnv = "ATOMFED_E2E_LOG_DIR"

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// LogDir returns where t's server logs go: $ATOMFED_E2E_LOG_DIR/<test> when
// set, else a temporary directory of t.
func LogDir(t TB) string {
	t.Helper()
	if base := os.Getenv(LogDirEnv); base != "" {
		d := filepath.Join(base, unsafeName.ReplaceAllString(t.Name(), "_"))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("log dir: %v", err)
		}
		return d
	}
	return t.TempDir()
}

// StartTestCluster starts a cluster for t, waits for an established
// leader, and registers a cleanup that kills every server (also when the
// test fails or panics) and, when the test failed, prints each server's
// log path and the tail of its log.
func StartTestCluster(t TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.LogDir == "" {
		o.LogDir = LogDir(t)
	}
	c, err := NewCluster(o)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	c.CleanupOnExit(t)
	if err := c.WaitFormed(30 * time.Second); err != nil {
		t.Fatalf("cluster: %v", err)
	}
	return c
}

// WaitFormed waits for an established leader after the first start, and
// fails at once when a server exits (a port taken by another program, a bad
// flag) instead of waiting for the timeout.
func (c *Cluster) WaitFormed(timeout time.Duration) error {
	var exited error
	err := testutil.PollEvery(context.Background(), timeout, 25*time.Millisecond, func() error {
		for _, s := range c.Servers {
			if !s.Running() {
				exited = fmt.Errorf("%s exited during start (%s); its log ends:\n%s", s.ID(), s.ExitStatus(), s.LogTail(5))
				return testutil.Abort(exited)
			}
		}
		_, err := c.Leader(context.Background())
		return err
	})
	switch {
	case exited != nil:
		return exited
	case err != nil:
		return fmt.Errorf("no established leader within %s: %w", timeout, err)
	}
	return nil
}

// CleanupOnExit registers with t a cleanup that kills the servers and, if
// t failed, reports their logs.
func (c *Cluster) CleanupOnExit(t TB) {
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, s := range c.Servers {
				t.Logf("log of %s (%s): %s\n--- last lines ---\n%s\n---", s.ID(), s.ExitStatus(), s.LogPath, s.LogTail(40))
			}
		}
	})
}

// BuildBinary builds cmd/atomfed into dir with `go build` and returns its
// path. It must run inside the module (tests and `go run` do). The binary
// carries the git commit (GitCommit) as `make build` stamps it.
func BuildBinary(dir, version string) (string, error) {
	return BuildBinaryTags(dir, version)
}

// BuildBinaryTags is BuildBinary with build tags (the chaos suite builds a
// binary with the test-only chaosbug tag).
func BuildBinaryTags(dir, version string, tags ...string) (string, error) {
	out := filepath.Join(dir, "atomfed")
	ldflags := ""
	if version != "" {
		ldflags = "-X main.version=" + version
	}
	if c := GitCommit(); c != "" {
		ldflags += " -X main.commit=" + c
	}
	args := []string{"build", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	if ldflags != "" {
		args = append(args, "-ldflags", strings.TrimSpace(ldflags))
	}
	args = append(args, "github.com/atomcloud/atomfed/cmd/atomfed")
	cmd := exec.Command("go", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build atomfed: %v\n%s", err, b)
	}
	return out, nil
}

// GitCommit returns the commit of the working tree as `make build` stamps
// it (HEAD, with "-dirty" when tracked files differ from it), or "" outside
// a git checkout.
func GitCommit() string {
	b, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return ""
	}
	c := strings.TrimSpace(string(b))
	if exec.Command("git", "diff", "--quiet", "HEAD", "--").Run() != nil {
		c += "-dirty"
	}
	return c
}
