// Package policy evaluates the federation policies P1-P7 for
// GET /v1/policy/status: each policy has one evaluator function, and the
// table in Policies says which. A policy whose enforcement is not built yet
// is reported as not_evaluated with the reason, never as a pass; plugging
// in a real evaluator is a one-line change to that table.
//
// Evaluators read the server's local state (P1 and P5 read what the
// replication executors on the agents reported into it) and may call other
// nodes' HTTP endpoints (P4); they never change anything.
package policy

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Source is what the evaluators read from the server. cluster.Server
// implements it.
type Source interface {
	NodeID() string
	Region() string
	FSM() *fsm.FSM
	Members() []structs.Member
	// Configuration is the Raft configuration: the servers probes may
	// call.
	Configuration() ([]structs.Peer, uint64, error)
	Coordinates() []structs.Coordinate
	Stats() map[string]string
}

// Input is what every evaluator gets.
type Input struct {
	Source Source
	// HTTP calls other nodes' endpoints, with the federation token.
	HTTP *Fetcher
	// Simulation is this server's SIMULATION_MODE evaluation.
	Simulation *structs.Simulation
	// Now is the time of the evaluation.
	Now time.Time
}

// Evaluator evaluates one policy. It fills Status, Reason and Evidence;
// the engine fills ID, Title and EvaluatedAt.
type Evaluator func(ctx context.Context, in *Input) structs.PolicyResult

// Policy is one federation policy and its evaluator.
type Policy struct {
	ID    string
	Title string
	Eval  Evaluator
	// CacheFor keeps a result this long (expensive evaluators: P4).
	CacheFor time.Duration
}

// Policies returns P1-P7 with their evaluators. To plug in a real
// evaluator, replace the policy's NotEvaluated(...) with it.
func Policies() []Policy {
	return []Policy{
		{ID: "P1", Title: "No PII in transit: PII columns are never published",
			Eval: NoPIIInTransit},
		{ID: "P2", Title: "Every region registration and cross-region request is signed (sigstore, cosign-compatible)",
			Eval: SignedRequests},
		{ID: "P3", Title: "m-of-n approvals for production region additions and failovers",
			Eval: Approvals},
		{ID: "P4", Title: "Every node serves /metrics and /global-status",
			Eval: EndpointsServed, CacheFor: 10 * time.Second},
		{ID: "P5", Title: "Tenant row-level security in every region",
			Eval: TenantRLS},
		{ID: "P6", Title: "Latency budget: < 500 ms intra-region, < 1 s inter-region",
			Eval: LatencyBudget},
		{ID: "P7", Title: "Async snapshots and failover tests",
			Eval: SnapshotsAndFailover},
	}
}

// NotEvaluated returns an evaluator for a policy whose enforcement is not
// built yet: it always answers not_evaluated with reason.
func NotEvaluated(reason string) Evaluator {
	return func(context.Context, *Input) structs.PolicyResult {
		return structs.PolicyResult{Status: structs.PolicyNotEvaluated, Reason: reason}
	}
}

// Config configures an Engine.
type Config struct {
	Source     Source
	Simulation *structs.Simulation
	// TLS is the client config calls to other nodes use (it trusts the
	// federation CA); each call requires the peer's certificate to name
	// the member called. nil: plaintext mode, plain HTTP. Calls carry no
	// token.
	TLS *tls.Config
	// Timeout bounds each call to another node (default 2 s).
	Timeout time.Duration
	// Policies replaces Policies() (tests).
	Policies []Policy
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Engine evaluates the policies, caching expensive results briefly.
type Engine struct {
	cfg      Config
	policies []Policy
	fetch    *Fetcher
	now      func() time.Time

	mu    sync.Mutex
	cache map[string]*cached
}

type cached struct {
	mu     sync.Mutex // one evaluation at a time per policy
	result structs.PolicyResult
	at     time.Time
}

// New returns an Engine.
func New(cfg Config) *Engine {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ps := cfg.Policies
	if ps == nil {
		ps = Policies()
	}
	return &Engine{cfg: cfg, policies: ps, fetch: newFetcher(cfg.TLS, cfg.Timeout), now: cfg.Now, cache: map[string]*cached{}}
}

// Status evaluates every policy (concurrently) and returns the matrix.
func (e *Engine) Status(ctx context.Context) structs.PolicyStatus {
	src := e.cfg.Source
	head, idx := src.FSM().AuditHead()
	st := structs.PolicyStatus{
		Node: src.NodeID(), Region: src.Region(), Index: idx, AuditHead: head,
		GeneratedAt: e.now().UTC(), SimulationMode: e.cfg.Simulation.Active(), Simulation: e.cfg.Simulation,
		Policies: make([]structs.PolicyResult, len(e.policies)),
	}
	var wg sync.WaitGroup
	for i, p := range e.policies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.Policies[i] = e.evaluate(ctx, p)
		}()
	}
	wg.Wait()
	for _, r := range st.Policies {
		switch r.Status {
		case structs.PolicyPass:
			st.Summary.Pass++
		case structs.PolicyBlock:
			st.Summary.Block++
		default:
			st.Summary.NotEvaluated++
		}
	}
	return st
}

// evaluate runs one evaluator, from the cache when it is fresh. A panic
// or an unknown status becomes not_evaluated: never a pass.
func (e *Engine) evaluate(ctx context.Context, p Policy) (res structs.PolicyResult) {
	c := e.entry(p.ID)
	c.mu.Lock()
	defer c.mu.Unlock()
	now := e.now()
	if p.CacheFor > 0 && !c.at.IsZero() && now.Sub(c.at) < p.CacheFor {
		return c.result
	}
	defer func() {
		if v := recover(); v != nil {
			res = structs.PolicyResult{Status: structs.PolicyNotEvaluated, Reason: fmt.Sprintf("the evaluator failed: %v", v)}
		}
		res.ID, res.Title, res.EvaluatedAt = p.ID, p.Title, now.UTC()
		switch res.Status {
		case structs.PolicyPass, structs.PolicyBlock, structs.PolicyNotEvaluated:
		default:
			res.Reason = fmt.Sprintf("the evaluator answered an unknown status %q; %s", res.Status, res.Reason)
			res.Status = structs.PolicyNotEvaluated
		}
		// An evaluation cut short by its caller is not kept for others.
		if p.CacheFor > 0 && ctx.Err() == nil {
			c.result, c.at = res, now
		}
	}()
	return p.Eval(ctx, &Input{Source: e.cfg.Source, HTTP: e.fetch, Simulation: e.cfg.Simulation, Now: now})
}

func (e *Engine) entry(id string) *cached {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.cache[id]
	if c == nil {
		c = &cached{}
		e.cache[id] = c
	}
	return c
}
