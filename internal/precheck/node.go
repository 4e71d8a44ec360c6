package precheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/structs"
)

// ErrMissingInfrastructure means SIMULATION_MODE=false was given but a
// node's critical infrastructure is missing or failing: the node must not
// start.
var ErrMissingInfrastructure = errors.New("critical infrastructure is missing")

// Role is the kind of node whose infrastructure is checked.
type Role string

// Roles.
const (
	RoleServer Role = "server"
	RoleAgent  Role = "agent"
)

// Mode is the SIMULATION_MODE setting.
type Mode int

// Modes.
const (
	// ModeAuto (SIMULATION_MODE unset): simulate what is missing.
	ModeAuto Mode = iota
	// ModeOn (SIMULATION_MODE=true): simulate every part, even with the
	// infrastructure present.
	ModeOn
	// ModeOff (SIMULATION_MODE=false): never simulate; refuse to start
	// when something critical is missing.
	ModeOff
)

// ParseMode reads a SIMULATION_MODE value.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return ModeAuto, nil
	case "true", "1", "yes", "on":
		return ModeOn, nil
	case "false", "0", "no", "off":
		return ModeOff, nil
	}
	return ModeAuto, fmt.Errorf("SIMULATION_MODE=%q: want true, false or unset", s)
}

// dependency is a check a role needs and the parts that run simulated
// without it.
type dependency struct {
	check string
	parts []structs.SimulatedPart // Because is filled in by Evaluate
}

// critical is what each role needs; see docs/operations.md ("Simulation
// mode"). The registry is nobody's critical infrastructure at start: a
// server is the registry (the first one has nothing to reach), and an agent
// finds the servers through Serf gossip and retries until one answers.
// PostgreSQL is an agent's alone: servers hold no region data.
var critical = map[Role][]dependency{
	RoleServer: {
		{Vault, []structs.SimulatedPart{{Part: "secrets", What: "federation secrets (bootstrap token, TLS and gossip keys) come from flags, the environment and local files, not from Vault"}}},
		{Cosign, []structs.SimulatedPart{{Part: "signing", What: "no provisioned signing key (COSIGN_KEY_PATH): this server signs trust bundles with a key it generated in its data dir (server.key), which nobody vouched for out of band"}}},
	},
	RoleAgent: {
		{Postgres, []structs.SimulatedPart{
			{Part: "replication", What: "federation sync and tenant replication of this region run simulated: there is no region database to publish from or subscribe to"},
			{Part: "tenant_rls", What: "row-level security of tenant mirrors is not applied: there is no region database"},
			{Part: "backups", What: "DR backups, their validation and restores of this region run simulated: there is no region database"},
		}},
		{Cosign, []structs.SimulatedPart{{Part: "signing", What: "no provisioned signing key (COSIGN_KEY_PATH): this agent signs its reports with a key it generated in its data dir (agent.key) and registered as its trust member on first contact"}}},
		{Vault, []structs.SimulatedPart{{Part: "secrets", What: "the region database credentials come from POSTGRES_DSN, not from Vault"}}},
	},
}

// CriticalChecks returns the checks a role needs, in order.
func CriticalChecks(role Role) []string {
	var out []string
	for _, d := range critical[role] {
		out = append(out, d.check)
	}
	return out
}

// Evaluate runs the role's critical checks and decides whether the node
// runs in simulation mode. With ModeOff and something missing it returns
// the evaluation and an error wrapping ErrMissingInfrastructure that names
// every missing piece; the node must then refuse to start.
func Evaluate(ctx context.Context, cfg Config, role Role, setting string) (*structs.Simulation, error) {
	mode, err := ParseMode(setting)
	if err != nil {
		return nil, err
	}
	deps, ok := critical[role]
	if !ok {
		return nil, fmt.Errorf("precheck: unknown role %q", role)
	}
	checks := Run(ctx, cfg, CriticalChecks(role)...)
	sim := &structs.Simulation{Role: string(role), Setting: setting, Checks: checks, CheckedAt: time.Now().UTC(), Simulated: []structs.SimulatedPart{}}
	var missing []string
	for _, d := range deps {
		c := checks[d.check]
		healthy := Healthy(c.Status)
		if !healthy {
			missing = append(missing, fmt.Sprintf("%s (%s: %s)", d.check, c.Status, c.Detail))
		}
		if healthy && mode != ModeOn {
			continue
		}
		because := d.check + " " + c.Status
		if healthy {
			because = "SIMULATION_MODE=" + setting
		}
		for _, p := range d.parts {
			p.Because = because
			sim.Simulated = append(sim.Simulated, p)
		}
	}
	switch {
	case mode == ModeOff && len(missing) > 0:
		sim.Reason = "SIMULATION_MODE=" + setting + " but critical infrastructure is missing: " + strings.Join(missing, "; ")
		return sim, fmt.Errorf("SIMULATION_MODE=%s, but %w for a %s: %s. Provide it, or unset SIMULATION_MODE to run in simulation mode", setting, ErrMissingInfrastructure, role, strings.Join(missing, "; "))
	case mode == ModeOn:
		sim.Enabled = true
		sim.Reason = "SIMULATION_MODE=" + setting + ": every part that needs infrastructure runs simulated"
	case len(missing) > 0:
		sim.Enabled = true
		sim.Reason = "critical infrastructure is missing: " + strings.Join(missing, "; ")
	default:
		sim.Reason = "all critical infrastructure of a " + string(role) + " is present: " + strings.Join(CriticalChecks(role), ", ")
	}
	return sim, nil
}
