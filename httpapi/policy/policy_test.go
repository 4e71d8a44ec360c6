package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/policy"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

var sim = &structs.Simulation{Enabled: true, Role: "server", Reason: "critical infrastructure is missing: vault (MISSING: VAULT_ADDR is not set)",
	Simulated: []structs.SimulatedPart{{Part: "secrets", What: "from the environment", Because: "vault MISSING"}}}

func policyStatus(t *testing.T, n *testcluster.Node) structs.PolicyStatus {
	t.Helper()
	r := n.Do(t, http.MethodGet, "/v1/policy/status", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /v1/policy/status on %s: %d %s", n.ID, r.Status, r.Body)
	}
	var st structs.PolicyStatus
	r.JSON(t, &st)
	return st
}

func byID(st structs.PolicyStatus) map[string]structs.PolicyResult {
	m := map[string]structs.PolicyResult{}
	for _, p := range st.Policies {
		m[p.ID] = p
	}
	return m
}

func register(t *testing.T, c *testcluster.Cluster, name, url string) {
	t.Helper()
	c.RegisterRegion(&fsm.Region{Name: name, URL: url})
}

// TestPolicyStatusMatrix reads P1-P7 from one server of a three-server
// cluster (each server evaluates from its own state): P1 and P5 have no
// replicated tenant to check and are not_evaluated with that reason, P4
// passes on servers that serve both endpoints, P6 has nothing to measure
// without regions, P7 blocks on the missing scheduled snapshots, and the
// node's simulation mode is part of the answer.
func TestPolicyStatusMatrix(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Simulation: sim})
	asked := c.Nodes[1]
	st := policyStatus(t, asked)
	var ids []string
	for _, p := range st.Policies {
		ids = append(ids, p.ID)
		if p.Title == "" || p.Reason == "" || p.EvaluatedAt.IsZero() {
			t.Errorf("%s lacks a title, a reason or a time: %+v", p.ID, p)
		}
	}
	if strings.Join(ids, ",") != "P1,P2,P3,P4,P5,P6,P7" {
		t.Fatalf("policies %v, want P1..P7 in order", ids)
	}
	m := byID(st)
	for _, id := range []string{"P1", "P5"} {
		if m[id].Status != structs.PolicyNotEvaluated || !strings.Contains(m[id].Reason, "no tenant is replicated yet") {
			t.Errorf("%s is %s (%s), want not_evaluated: no tenant is replicated", id, m[id].Status, m[id].Reason)
		}
	}
	if m["P2"].Status != structs.PolicyPass || !strings.Contains(m["P2"].Reason, "signatures are enforced") {
		t.Errorf("P2: %s %q, want pass: signatures are enforced and no region lacks a key", m["P2"].Status, m["P2"].Reason)
	}
	// Test clusters gate nothing (testcluster ungates the policy): P3 must
	// say that production registrations need no approval.
	if m["P3"].Status != structs.PolicyBlock || !strings.Contains(m["P3"].Reason, "needs no approval") {
		t.Errorf("P3: %s %q, want block: nothing is gated", m["P3"].Status, m["P3"].Reason)
	}
	if m["P4"].Status != structs.PolicyPass || !strings.Contains(m["P4"].Reason, "3 servers") {
		t.Errorf("P4 on three servers: %s %q, want pass", m["P4"].Status, m["P4"].Reason)
	}
	if m["P6"].Status != structs.PolicyNotEvaluated {
		t.Errorf("P6 with no region: %s, want not_evaluated", m["P6"].Status)
	}
	if m["P7"].Status != structs.PolicyBlock || !strings.Contains(m["P7"].Reason, "no control-plane snapshot shipped") || !strings.Contains(m["P7"].Reason, "no failover ran") {
		t.Errorf("P7: %s %q, want block saying no snapshot is shipped and no failover ran", m["P7"].Status, m["P7"].Reason)
	}
	if st.Summary != (structs.PolicySummary{Pass: 2, Block: 2, NotEvaluated: 3}) {
		t.Errorf("summary %+v, want 2 pass, 2 block, 3 not evaluated", st.Summary)
	}
	if !st.SimulationMode || !st.Simulation.Simulates("secrets") {
		t.Errorf("the policy status does not show the simulation mode: %+v", st.Simulation)
	}
	if head, _ := asked.Server.FSM().AuditHead(); st.AuditHead != head || st.Node != asked.ID || st.Region != "r2" {
		t.Errorf("node %q audit head %q", st.Node, st.AuditHead)
	}
	// /health and /global-status show it too.
	for _, path := range []string{"/health", "/global-status"} {
		var v struct {
			SimulationMode bool                `json:"simulation_mode"`
			Simulation     *structs.Simulation `json:"simulation"`
		}
		c.Nodes[0].Do(t, http.MethodGet, path, nil, nil).JSON(t, &v)
		if !v.SimulationMode || v.Simulation == nil || v.Simulation.Reason != sim.Reason {
			t.Errorf("%s: simulation_mode %v %+v", path, v.SimulationMode, v.Simulation)
		}
	}
}

// TestP4BlocksOnANodeWithoutEndpoints adds an agent whose advertised HTTP
// address answers nothing: P4 blocks and names it. The result is cached
// for CacheFor, then evaluated again.
func TestP4BlocksOnANodeWithoutEndpoints(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := policy.New(policy.Config{Source: c.Nodes[0].Server, Now: clock, Timeout: time.Second, TLS: c.ClientTLS()})
	p4 := func() structs.PolicyResult {
		for _, p := range e.Status(testcluster.Ctx(t, 20*time.Second)).Policies {
			if p.ID == "P4" {
				return p
			}
		}
		t.Fatal("no P4")
		return structs.PolicyResult{}
	}
	first := p4()
	if first.Status != structs.PolicyPass {
		t.Fatalf("P4 before the agent: %s %q", first.Status, first.Reason)
	}
	// testcluster agents advertise http://127.0.0.1:1, where nothing listens.
	c.AddAgent("mute-agent", "r1")
	testutil.Eventually(t, 15*time.Second, func() error {
		admitted := false
		c.Nodes[0].Server.FSM().Read(func(s *fsm.State) { admitted = s.Agents["mute-agent"] != nil })
		for _, m := range c.Nodes[0].Server.Members() {
			if m.Name == "mute-agent" && m.Status == "alive" && admitted {
				return nil
			}
		}
		return fmt.Errorf("the agent is not an alive, admitted member yet")
	})
	advance(time.Second)
	if again := p4(); again.Status != structs.PolicyPass || !again.EvaluatedAt.Equal(first.EvaluatedAt) {
		t.Errorf("within the cache time P4 was evaluated again: %s at %s", again.Status, again.EvaluatedAt)
	}
	advance(11 * time.Second)
	got := p4()
	if got.Status != structs.PolicyBlock || !strings.Contains(got.Reason, "mute-agent") {
		t.Fatalf("P4 with an agent that serves nothing: %s %q, want block naming it", got.Status, got.Reason)
	}
	b, _ := json.Marshal(got.Evidence)
	var ev policy.EndpointsEvidence
	json.Unmarshal(b, &ev)
	if ev.Checked != 4 || len(ev.Failing) != 1 || ev.Failing[0] != "mute-agent" {
		t.Errorf("evidence: checked %d failing %v", ev.Checked, ev.Failing)
	}
	for _, n := range ev.Nodes {
		if n.Role == "server" && (!n.Metrics.OK || !n.GlobalStatus.OK || n.Metrics.LatencyMS <= 0) {
			t.Errorf("server %s: %+v", n.Node, n)
		}
		// Under TLS a plain http:// URL is refused, not called.
		if n.Node == "mute-agent" && !strings.Contains(n.Metrics.Error, "not an https:// URL") {
			t.Errorf("the agent's http:// URL was not refused: %+v", n.Metrics)
		}
	}
}

func p6(t *testing.T, n *testcluster.Node) (structs.PolicyResult, policy.LatencyEvidence) {
	t.Helper()
	r := byID(policyStatus(t, n))["P6"]
	b, _ := json.Marshal(r.Evidence)
	var ev policy.LatencyEvidence
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	return r, ev
}

// TestP6LatencyBudgetFromProbes: regions whose agents probe them within
// budget pass, with inter-region estimates from the servers' coordinates;
// a region without an agent is unmeasured (not_evaluated); a region whose
// probe fails blocks.
func TestP6LatencyBudgetFromProbes(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	// Servers s1, s2, s3 run in r1, r2, r3; each region's probe target is
	// its server.
	register(t, c, "r1", c.Nodes[0].URL)
	register(t, c, "r2", c.Nodes[1].URL)
	c.AddAgent("a1", "r1")
	c.AddAgent("a2", "r2")
	testutil.Eventually(t, 30*time.Second, func() error {
		r, ev := p6(t, c.Nodes[2])
		if r.Status != structs.PolicyPass {
			return fmt.Errorf("P6 %s: %s", r.Status, r.Reason)
		}
		if len(ev.IntraRegion) != 2 || len(ev.InterRegion) != 1 {
			return fmt.Errorf("intra %+v inter %+v", ev.IntraRegion, ev.InterRegion)
		}
		return nil
	})
	_, ev := p6(t, c.Nodes[2])
	for _, ir := range ev.IntraRegion {
		if !ir.Measured || !ir.ProbeOK || !ir.WithinBudget || ir.LatencyMS <= 0 || ir.Agent == "" {
			t.Errorf("region %s: %+v", ir.Region, ir)
		}
	}
	if p := ev.InterRegion[0]; p.From != "r1" || p.To != "r2" || !p.WithinBudget || p.Via == "" {
		t.Errorf("inter-region pair %+v", p)
	}

	register(t, c, "r3", c.Nodes[2].URL)
	testutil.Eventually(t, 15*time.Second, func() error {
		r, ev := p6(t, c.Nodes[2])
		if r.Status != structs.PolicyNotEvaluated || len(ev.Unmeasured) != 1 || ev.Unmeasured[0] != "r3" {
			return fmt.Errorf("with r3 unprobed: %s %q unmeasured %v", r.Status, r.Reason, ev.Unmeasured)
		}
		return nil
	})

	// A region whose endpoint refuses connections: its probe fails.
	register(t, c, "dead", "http://127.0.0.1:1")
	c.AddAgent("a-dead", "dead")
	testutil.Eventually(t, 30*time.Second, func() error {
		r, _ := p6(t, c.Nodes[2])
		if r.Status != structs.PolicyBlock || !strings.Contains(r.Reason, "dead: probe fails") {
			return fmt.Errorf("P6 %s: %s", r.Status, r.Reason)
		}
		return nil
	})
}

// TestEvaluatorsPlugIn: replacing an entry of the table is all it takes to
// evaluate a policy for real; an evaluator that panics or answers nonsense
// is reported as not_evaluated, never as a pass.
func TestEvaluatorsPlugIn(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Servers: 1})
	ps := policy.Policies()
	ps[1].Eval = func(context.Context, *policy.Input) structs.PolicyResult {
		return structs.PolicyResult{Status: structs.PolicyPass, Reason: "every request verified", Evidence: map[string]int{"verified": 3}}
	}
	ps[2].Eval = func(context.Context, *policy.Input) structs.PolicyResult { panic("approvals exploded") }
	ps[4].Eval = func(context.Context, *policy.Input) structs.PolicyResult {
		return structs.PolicyResult{Status: "looks fine", Reason: "trust me"}
	}
	st := policy.New(policy.Config{Source: c.Nodes[0].Server, Policies: ps}).Status(testcluster.Ctx(t, 20*time.Second))
	m := byID(st)
	if m["P2"].Status != structs.PolicyPass || m["P2"].Title == "" {
		t.Errorf("plugged P2: %+v", m["P2"])
	}
	if m["P3"].Status != structs.PolicyNotEvaluated || !strings.Contains(m["P3"].Reason, "approvals exploded") {
		t.Errorf("panicking P3: %+v", m["P3"])
	}
	if m["P5"].Status != structs.PolicyNotEvaluated || !strings.Contains(m["P5"].Reason, "looks fine") {
		t.Errorf("P5 with an unknown status: %+v", m["P5"])
	}
}

// TestP1P5SimulatedWithoutRegionDatabases: a replicated tenant whose
// regions' agents have no region database is not verified by P1 or P5:
// both are not_evaluated, say that replication is simulated there, and
// list the simulated regions in their evidence.
func TestP1P5SimulatedWithoutRegionDatabases(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Servers: 1})
	n := c.Nodes[0]
	register(t, c, "us-east", "https://us-east.example.com")
	register(t, c, "eu-west", "https://eu-west.example.com")
	c.AddAgent("us-east-a1", "us-east")
	c.AddAgent("eu-west-a1", "eu-west")
	tn := &fsm.Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
		Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}}}
	if _, err := n.Client.PutTenant(testcluster.Ctx(t, 20*time.Second), tn, nil); err != nil {
		t.Fatal(err)
	}
	c.Settle()
	testutil.Eventually(t, 30*time.Second, func() error {
		m := byID(policyStatus(t, n))
		for id, region := range map[string]string{"P1": "us-east", "P5": "eu-west"} {
			r := m[id]
			if r.Status != structs.PolicyNotEvaluated || !strings.Contains(r.Reason, "replication in region "+region+" is simulated") {
				return fmt.Errorf("%s: %s %q", id, r.Status, r.Reason)
			}
			var ev struct {
				Simulated []policy.SimulatedRegion `json:"simulated"`
			}
			b, _ := json.Marshal(r.Evidence)
			if err := json.Unmarshal(b, &ev); err != nil || len(ev.Simulated) != 1 || ev.Simulated[0].Region != region {
				return fmt.Errorf("%s evidence does not list %s as simulated: %s", id, region, b)
			}
		}
		return nil
	})
}
