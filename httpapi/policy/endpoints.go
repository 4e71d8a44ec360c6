package policy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Fetcher calls other nodes' anonymous endpoints with a short timeout. It
// sends no credential: what a probe reads needs none, and a member's
// advertised URL is the member's to choose. Under TLS it refuses plain
// http:// URLs and requires the peer's certificate to name the member.
type Fetcher struct {
	hc      *http.Client
	tls     *tls.Config
	timeout time.Duration
}

func newFetcher(tlsCfg *tls.Config, timeout time.Duration) *Fetcher {
	f := &Fetcher{tls: tlsCfg, timeout: timeout}
	if tlsCfg == nil {
		f.hc = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}, CheckRedirect: noRedirect}
	}
	return f
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// client returns the HTTP client that may call member at base: under TLS,
// one whose handshake requires a certificate naming member, and an error
// for a plain http:// URL.
func (f *Fetcher) client(member, base string) (*http.Client, error) {
	if f.tls == nil {
		return f.hc, nil
	}
	if !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("refused: the member advertises %q, not an https:// URL, and the federation runs TLS", base)
	}
	cfg := f.tls.Clone()
	cfg.ServerName = member
	return &http.Client{Transport: &http.Transport{Proxy: nil, TLSClientConfig: cfg, DisableKeepAlives: true}, CheckRedirect: noRedirect}, nil
}

// EndpointResult is one GET of a node's endpoint.
type EndpointResult struct {
	OK         bool    `json:"ok"`
	HTTPStatus int     `json:"http_status,omitempty"`
	LatencyMS  float64 `json:"latency_ms"`
	Error      string  `json:"error,omitempty"`
}

// Get fetches url (at most 4 MiB of body) from hc within the fetcher's
// timeout, without a credential.
func (f *Fetcher) Get(ctx context.Context, hc *http.Client, url string) ([]byte, EndpointResult) {
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
	resp, err := hc.Do(req)
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
	// NotContacted lists members the federation does not know (a server
	// not in the Raft configuration, an agent not admitted to the
	// registry): a Serf tag is not an identity, so they are not called.
	NotContacted []string `json:"not_contacted,omitempty"`
	// InSimulation lists the nodes that say they run in SIMULATION_MODE.
	InSimulation []string `json:"in_simulation"`
}

// EndpointsServed is P4: every alive member the federation knows (the
// servers of the Raft configuration, the agents of the registry) answers
// GET /metrics with Prometheus text and GET /global-status, each within the
// fetch timeout. Probes carry no token: a server's /global-status that
// answers 401 with the API's error body serves it (to callers with a
// token); an agent's answers with its own status.
func EndpointsServed(ctx context.Context, in *Input) structs.PolicyResult {
	ev := EndpointsEvidence{Failing: []string{}, Nodes: []NodeEndpoints{}, InSimulation: []string{}}
	known := knownMembers(in.Source)
	var targets []structs.Member
	for _, m := range in.Source.Members() {
		switch {
		case m.Status == "left":
		case !known[m.Name]:
			ev.NotContacted = append(ev.NotContacted, m.Name+" ("+m.Role+")")
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

// knownMembers are the members the federation knows by identity: the
// servers of the Raft configuration (each proved a server certificate
// naming it, under TLS) and the agents admitted to the registry (each has
// a token bound to its name and region).
func knownMembers(src Source) map[string]bool {
	known := map[string]bool{src.NodeID(): true}
	if peers, _, err := src.Configuration(); err == nil {
		for _, p := range peers {
			known[p.ID] = true
		}
	}
	src.FSM().Read(func(s *fsm.State) {
		for n := range s.Agents {
			known[n] = true
		}
	})
	return known
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
	hc, err := f.client(m.Name, base)
	if err != nil {
		n.Metrics.Error = err.Error()
		n.GlobalStatus.Error = n.Metrics.Error
		return n
	}
	body, r := f.Get(ctx, hc, base+"/metrics")
	if r.OK && !bytes.Contains(body, []byte("# TYPE ")) {
		r.OK, r.Error = false, "the answer is not Prometheus text"
	}
	n.Metrics = r
	// stale: each node answers from itself rather than forwarding to the
	// leader, which is what P4 asks of it.
	body, r = f.Get(ctx, hc, base+"/global-status?consistency=stale")
	if r.HTTPStatus == http.StatusUnauthorized && bytes.Contains(body, []byte(`"unauthenticated"`)) {
		// Served, to callers with a token: the probe sends none.
		r.OK, r.Error = true, ""
	}
	if r.OK && r.HTTPStatus == http.StatusOK {
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
