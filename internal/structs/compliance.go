package structs

import (
	"sort"
	"strings"
	"time"
)

// InfraCheck is the result of one infrastructure check of the precheck
// (registry, vault, cosign, postgres), in the seed's vocabulary.
type InfraCheck struct {
	// Status is UP, OK, REACHABLE, MISSING, NO_REGISTRY or ERROR:<reason>.
	Status string `json:"status"`
	// Detail says what was checked and what answered, with every secret
	// masked.
	Detail string `json:"detail"`
	// Target is what was checked (a URL, a path or a DSN), secrets masked.
	Target string `json:"target,omitempty"`
	// DurationMS is how long the check took.
	DurationMS float64 `json:"duration_ms"`
	// Findings are what the check found present but unsafe (PostgreSQL:
	// a replication role that bypasses row-level security, an output
	// plugin other than pgoutput installed); they do not change Status.
	Findings []string `json:"findings,omitempty"`
}

// SimulatedPart is one part of a node that runs simulated because the
// infrastructure it needs is missing.
type SimulatedPart struct {
	// Part names the part ("replication", "signing", ...).
	Part string `json:"part"`
	// What says what the node does instead.
	What string `json:"what"`
	// Because names the failed check and its status.
	Because string `json:"because"`
}

// Simulation says whether a node runs in SIMULATION_MODE and why. It is
// decided once, at start, from the checks of the node's critical
// infrastructure.
type Simulation struct {
	// Enabled is true when the node runs in simulation mode.
	Enabled bool `json:"enabled"`
	// Role is the node's role ("server" or "agent"): what is critical
	// depends on it.
	Role string `json:"role"`
	// Setting is SIMULATION_MODE as given ("" when unset: automatic).
	Setting string `json:"setting"`
	// Reason is one line an operator reads.
	Reason string `json:"reason"`
	// Simulated lists the parts that run simulated.
	Simulated []SimulatedPart `json:"simulated"`
	// Checks are the checks of the role's critical infrastructure.
	Checks map[string]InfraCheck `json:"checks"`
	// CheckedAt is when the checks ran.
	CheckedAt time.Time `json:"checked_at"`
}

// Active reports whether s says the node runs in simulation mode; a nil
// Simulation (not evaluated) is not active.
func (s *Simulation) Active() bool { return s != nil && s.Enabled }

// Simulates reports whether part runs simulated on this node. A node
// out of simulation mode may still list parts that this build never runs
// for real (secrets from Vault).
func (s *Simulation) Simulates(part string) bool {
	if s == nil {
		return false
	}
	for _, p := range s.Simulated {
		if p.Part == part {
			return true
		}
	}
	return false
}

// Policy statuses of GET /v1/policy/status.
const (
	PolicyPass         = "pass"
	PolicyBlock        = "block"
	PolicyNotEvaluated = "not_evaluated"
)

// PolicyResult is the evaluation of one federation policy (P1-P7).
type PolicyResult struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	// Status is pass, block or not_evaluated. not_evaluated is never a
	// pass: the code that would enforce or measure the policy is not there
	// yet, or nothing could be measured.
	Status string `json:"status"`
	// Reason is one line saying why.
	Reason string `json:"reason"`
	// Evidence is what the status rests on (measurements, per-node
	// results, what exists and what does not).
	Evidence any `json:"evidence,omitempty"`
	// EvaluatedAt is when the evidence was gathered (cached evidence keeps
	// its time).
	EvaluatedAt time.Time `json:"evaluated_at"`
}

// PolicySummary counts policies by status.
type PolicySummary struct {
	Pass         int `json:"pass"`
	Block        int `json:"block"`
	NotEvaluated int `json:"not_evaluated"`
}

// PolicyStatus answers GET /v1/policy/status.
type PolicyStatus struct {
	Node           string         `json:"node"`
	Region         string         `json:"region"`
	Index          uint64         `json:"index"`
	AuditHead      string         `json:"audit_head"`
	GeneratedAt    time.Time      `json:"generated_at"`
	SimulationMode bool           `json:"simulation_mode"`
	Simulation     *Simulation    `json:"simulation,omitempty"`
	Summary        PolicySummary  `json:"summary"`
	Policies       []PolicyResult `json:"policies"`
}

// Summary returns what an anonymous caller may see of s: whether the node
// runs in simulation mode, which parts and the status of each check, with
// no check detail or target (hosts, DSNs, paths) and a reason that names
// checks only. nil stays nil.
func (s *Simulation) Summary() *Simulation {
	if s == nil {
		return nil
	}
	out := &Simulation{Enabled: s.Enabled, Role: s.Role, Setting: s.Setting, CheckedAt: s.CheckedAt,
		Simulated: []SimulatedPart{}, Checks: map[string]InfraCheck{}}
	var failing []string
	for name, c := range s.Checks {
		status, _, _ := strings.Cut(c.Status, ":")
		out.Checks[name] = InfraCheck{Status: status, DurationMS: c.DurationMS}
		switch status {
		case "UP", "OK", "REACHABLE":
		default:
			failing = append(failing, name+" "+status)
		}
	}
	for _, p := range s.Simulated {
		because, _, _ := strings.Cut(p.Because, ":")
		out.Simulated = append(out.Simulated, SimulatedPart{Part: p.Part, What: p.What, Because: because})
	}
	sort.Strings(failing)
	// The full reason quotes the failing checks' detail; keep what comes
	// before it and name the checks instead.
	reason, _, cut := strings.Cut(s.Reason, "missing: ")
	if cut {
		reason += "missing: " + strings.Join(failing, ", ")
	}
	out.Reason = reason
	return out
}
