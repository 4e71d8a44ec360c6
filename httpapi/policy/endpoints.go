package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/internal/structs"
)

// Fetcher calls other nodes' HTTP endpoints with a short timeout.
type Fetcher struct {
	hc      *http.Client
	token   string
	timeout time.Duration
}

func newFetcher(tr http.RoundTripper, token string, timeout time.Duration) *Fetcher {
	if tr == nil {
		tr = &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	}
	return &Fetcher{hc: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, token: token, timeout: timeout}
}

// EndpointResult is one GET of a node's endpoint.
type EndpointResult struct {
	OK         bool    `json:"ok"`
	HTTPStatus int     `json:"http_status,omitempty"`
	LatencyMS  float64 `json:"latency_ms"`
	Error      string  `json:"error,omitempty"`
}

// Get fetches url (at most 4 MiB of body) within the fetcher's timeout.
func (f *Fetcher) Get(ctx context.Context, url string) ([]byte, EndpointResult) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	start := time.Now()
	res := EndpointResult{}
	defer func() { res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000 }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		res.Error = err.Error()
		return nil, res
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		res.Error = err.Error()
		res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
		return nil, res
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	res.HTTPStatus = resp.StatusCode
	res.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		res.Error = "read body: " + err.Error()
		return nil, res
	}
	if resp.StatusCode/100 != 2 {
		res.Error = fmt.Sprintf("HTTP %d", resp.StatusCode)
		return body, res
	}
	res.OK = true
	return body, res
}

// NodeEndpoints is P4's evidence for one node.
type NodeEndpoints struct {
	Node         string         `json:"node"`
	Role         string         `json:"role"`
	Region       string         `json:"region"`
	URL          string         `json:"url"`
	Metrics      EndpointResult `json:"metrics"`
	GlobalStatus EndpointResult `json:"global_status"`
	// SimulationMode is what the node's /global-status says, when it
	// says.
	SimulationMode *bool `json:"simulation_mode,omitempty"`
}

// EndpointsEvidence is P4's evidence.
type EndpointsEvidence struct {
	Checked int             `json:"checked"`
	Failing []string        `json:"failing"`
	Nodes   []NodeEndpoints `json:"nodes"`
	// NotAlive lists members Serf reports failed or leaving: they are
	// not asked (Serf already says they cannot answer).
	NotAlive []string `json:"not_alive,omitempty"`
	// InSimulation lists the nodes that say they run in SIMULATION_MODE.
	InSimulation []string `json:"in_simulation"`
}

// EndpointsServed is P4: every alive Serf member, servers and agents
// alike, answers GET /metrics with Prometheus text and GET /global-status
// with its own status, each within the fetch timeout.
func EndpointsServed(ctx context.Context, in *Input) structs.PolicyResult {
	ev := EndpointsEvidence{Failing: []string{}, Nodes: []NodeEndpoints{}, InSimulation: []string{}}
	var targets []structs.Member
	for _, m := range in.Source.Members() {
		switch {
		case m.Status == "left":
		case m.Status != "alive":
			ev.NotAlive = append(ev.NotAlive, m.Name+" ("+m.Status+")")
		default:
			targets = append(targets, m)
		}
	}
	ev.Nodes = make([]NodeEndpoints, len(targets))
	var wg sync.WaitGroup
	for i, m := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev.Nodes[i] = checkNode(ctx, in.HTTP, m)
		}()
	}
	wg.Wait()
	sort.Slice(ev.Nodes, func(i, j int) bool { return ev.Nodes[i].Node < ev.Nodes[j].Node })
	for _, n := range ev.Nodes {
		if !n.Metrics.OK || !n.GlobalStatus.OK {
			ev.Failing = append(ev.Failing, n.Node)
		}
		if n.SimulationMode != nil && *n.SimulationMode {
			ev.InSimulation = append(ev.InSimulation, n.Node)
		}
	}
	ev.Checked = len(ev.Nodes)
	res := structs.PolicyResult{Evidence: ev}
	switch {
	case ev.Checked == 0:
		res.Status, res.Reason = structs.PolicyNotEvaluated, "no alive node is known"
	case len(ev.Failing) > 0:
		res.Status = structs.PolicyBlock
		res.Reason = fmt.Sprintf("%d of %d alive nodes do not serve both endpoints: %s", len(ev.Failing), ev.Checked, strings.Join(ev.Failing, ", "))
	default:
		res.Status = structs.PolicyPass
		res.Reason = fmt.Sprintf("all %d alive nodes (%s) serve /metrics and /global-status", ev.Checked, roleCounts(ev.Nodes))
	}
	return res
}

func roleCounts(nodes []NodeEndpoints) string {
	c := map[string]int{}
	for _, n := range nodes {
		c[n.Role]++
	}
	var parts []string
	for _, r := range []string{"server", "agent"} {
		if c[r] > 0 {
			parts = append(parts, fmt.Sprintf("%d %ss", c[r], r))
		}
	}
	return strings.Join(parts, ", ")
}

// checkNode fetches one member's /metrics and /global-status.
func checkNode(ctx context.Context, f *Fetcher, m structs.Member) NodeEndpoints {
	base := strings.TrimRight(m.Tags["http"], "/")
	n := NodeEndpoints{Node: m.Name, Role: m.Role, Region: m.Region, URL: base}
	if base == "" {
		n.Metrics.Error = "the member gossips no http address"
		n.GlobalStatus.Error = n.Metrics.Error
		return n
	}
	body, r := f.Get(ctx, base+"/metrics")
	if r.OK && !bytes.Contains(body, []byte("# TYPE ")) {
		r.OK, r.Error = false, "the answer is not Prometheus text"
	}
	n.Metrics = r
	// stale: each node answers from itself rather than forwarding to the
	// leader, which is what P4 asks of it.
	body, r = f.Get(ctx, base+"/global-status?consistency=stale")
	if r.OK {
		var gs struct {
			Node           string `json:"node"`
			SimulationMode *bool  `json:"simulation_mode"`
		}
		switch err := json.Unmarshal(body, &gs); {
		case err != nil:
			r.OK, r.Error = false, "the answer is not JSON: "+err.Error()
		case gs.Node != m.Name:
			r.OK, r.Error = false, fmt.Sprintf("the answer is node %q's status, not %q's", gs.Node, m.Name)
		default:
			n.SimulationMode = gs.SimulationMode
		}
	}
	n.GlobalStatus = r
	return n
}
