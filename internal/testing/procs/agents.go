package procs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// AgentProc is an `atomfed agent` process.
type AgentProc struct {
	*Proc
	Node, Region, DataDir string
	// URL is the base URL of the agent's own HTTP endpoints.
	URL string
	sec *Security
}

// NewAgentProc prepares (but does not start) an agent that joins the given
// Serf addresses. Its log is logDir/<node>.log.
func NewAgentProc(bin, logDir, dataDir, node, region string, port func() (int, error), join []string, sec *Security, extra ...string) (*AgentProc, error) {
	httpPort, err := uniquePort(port)
	if err != nil {
		return nil, err
	}
	serfPort, err := uniquePort(port)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(dataDir, node)
	flags, err := sec.NodeFlags(node, false)
	if err != nil {
		return nil, err
	}
	args := append([]string{"agent", "--node", node, "--region", region, "--data-dir", dir,
		"--http-addr", loopback(httpPort), "--serf-addr", loopback(serfPort),
		"--join", strings.Join(join, ",")}, append(flags, extra...)...)
	p := NewProc(node, bin, filepath.Join(logDir, node+".log"), args...)
	p.Env = sec.Env()
	return &AgentProc{Proc: p, Node: node, Region: region, DataDir: dir, URL: sec.Scheme() + "://" + loopback(httpPort), sec: sec}, nil
}

// SerfAddrs returns the Serf addresses of the cluster's servers.
func (c *Cluster) SerfAddrs() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.Config.SerfAddr)
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

// Status reads the agent's /health.
func (a *AgentProc) Status(ctx context.Context) (*AgentView, error) {
	var v AgentView
	if err := a.getJSON(ctx, "/health", &v); err != nil {
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
	for _, line := range strings.Split(body, "\n") {
		var v float64
		if strings.HasPrefix(line, name+" ") {
			if _, err := fmt.Sscanf(line[len(name)+1:], "%g", &v); err == nil {
				return v, nil
			}
		}
	}
	return 0, fmt.Errorf("metric %s not on %s/metrics", name, a.URL)
}

func (a *AgentProc) getJSON(ctx context.Context, path string, out any) error {
	body, err := a.get(ctx, path)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(body), out)
}

func (a *AgentProc) get(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+path, nil)
	if err != nil {
		return "", err
	}
	cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: a.sec.CAPath}, "")
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
	}
	return string(b), err
}
