package procs

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
)

// AgentConfig is the command line of one `atomfed agent`.
type AgentConfig struct {
	Node, Region, DataDir string
	HTTPAddr, SerfAddr    string
	// HTTPAdvertise (a URL) and SerfAdvertise (host:port) are what others
	// dial when that is not the bind address (the chaos suite puts a fault
	// proxy there); empty omits the flag.
	HTTPAdvertise, SerfAdvertise string
	// Join are the Serf addresses of servers to join through.
	Join []string
	// Extra flags, appended as given.
	Extra []string
	// Token, when set, is the agent's FEDERATION_TOKEN as given (tests of
	// wrong tokens); else NewAgentProcWith makes one bound to Node and
	// Region.
	Token string
}

// Args returns the agent's command line after the binary.
func (c AgentConfig) Args() []string {
	args := []string{"agent", "--node", c.Node, "--region", c.Region, "--data-dir", c.DataDir, "--http-addr", c.HTTPAddr}
	if c.HTTPAdvertise != "" {
		args = append(args, "--http-advertise", c.HTTPAdvertise)
	}
	args = append(args, "--serf-addr", c.SerfAddr)
	if c.SerfAdvertise != "" {
		args = append(args, "--serf-advertise", c.SerfAdvertise)
	}
	args = append(args, "--join", strings.Join(c.Join, ","))
	return append(args, c.Extra...)
}

// certIPs are the addresses an agent's certificate must name: the HTTP
// bind address and the advertised addresses others dial.
func (c AgentConfig) certIPs() []string {
	var ips []string
	for _, hp := range []string{c.HTTPAddr, strings.TrimPrefix(strings.TrimPrefix(c.HTTPAdvertise, "https://"), "http://"), c.SerfAdvertise} {
		if host, _, err := net.SplitHostPort(hp); err == nil && net.ParseIP(host) != nil {
			ips = append(ips, host)
		}
	}
	return ips
}

// AgentProc is an `atomfed agent` process.
type AgentProc struct {
	*Proc
	Config                AgentConfig
	Node, Region, DataDir string
	// URL is the base URL of the agent's own HTTP endpoints (its bind
	// address).
	URL string
	// Token is the agent's FEDERATION_TOKEN: its own, bound to its node
	// and region, or the bootstrap token when no server could make one
	// (the agent refuses that one once a server tells it what it is).
	Token string
	sec   *Security
}

// NewAgentProc prepares (but does not start) an agent on fresh ports of
// 127.0.0.1 that joins the given Serf addresses, with its data dir
// dataDir/<node> and its log logDir/<node>.log.
func NewAgentProc(bin, logDir, dataDir, node, region string, port func() (int, error), join []string, sec *Security, extra ...string) (*AgentProc, error) {
	httpPort, err := uniquePort(port)
	if err != nil {
		return nil, err
	}
	serfPort, err := uniquePort(port)
	if err != nil {
		return nil, err
	}
	return NewAgentProcWith(bin, logDir, AgentConfig{
		Node: node, Region: region, DataDir: filepath.Join(dataDir, node),
		HTTPAddr: loopback(httpPort), SerfAddr: loopback(serfPort), Join: join, Extra: extra,
	}, sec)
}

// NewAgentProcWith prepares (but does not start) the agent cfg describes,
// with the cluster's security; its log is logDir/<node>.log.
func NewAgentProcWith(bin, logDir string, cfg AgentConfig, sec *Security) (*AgentProc, error) {
	flags, err := sec.NodeFlags(cfg.Node, false, cfg.certIPs()...)
	if err != nil {
		return nil, err
	}
	cfg.Extra = append(flags, cfg.Extra...)
	p := NewProc(cfg.Node, bin, filepath.Join(logDir, cfg.Node+".log"), cfg.Args()...)
	p.Env = sec.Env()
	tok := cfg.Token
	if tok == "" {
		if tok, err = sec.AgentToken(cfg.Node, cfg.Region); err != nil {
			tok = ""
		}
	}
	if tok != "" {
		p.Env = []string{"FEDERATION_TOKEN=" + tok}
	} else {
		tok = Token
	}
	return &AgentProc{Proc: p, Config: cfg, Node: cfg.Node, Region: cfg.Region, DataDir: cfg.DataDir,
		URL: sec.Scheme() + "://" + cfg.HTTPAddr, Token: tok, sec: sec}, nil
}

// SerfAddrs returns the Serf addresses the cluster's servers are dialled
// on (advertised, else bound): what an agent joins.
func (c *Cluster) SerfAddrs() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.Config.serfDial())
	}
	return out
}

// AgentView is what an agent's /health says.
type AgentView struct {
	Node  string `json:"node"`
	Tasks []struct {
		ID         string `json:"id"`
		Generation uint64 `json:"generation"`
		Status     string `json:"status"`
	} `json:"tasks"`
}

// Status reads the agent's /health with the agent's own token (bound to
// its node and region): the view with its tasks.
func (a *AgentProc) Status(ctx context.Context) (*AgentView, error) {
	var v AgentView
	b, err := a.sec.get(ctx, a.URL+"/health", a.Token)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Metric returns the value of an unlabelled metric on the agent's /metrics.
func (a *AgentProc) Metric(ctx context.Context, name string) (float64, error) {
	body, err := a.get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	return metricValue(body, name, a.URL)
}

func (a *AgentProc) get(ctx context.Context, path string) (string, error) {
	b, err := a.sec.get(ctx, a.URL+path, "")
	return string(b), err
}
