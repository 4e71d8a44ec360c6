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
	// ModeOn (SIMULATION_MODE=true): simulate every part that can do
	// without its infrastructure (an agent's replication, tenant RLS and
	// backups), even with the infrastructure present.
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
	parts []part
}

// part is a part of a node that runs simulated when its dependency is
// missing. forced parts also run simulated with SIMULATION_MODE=true and
// their infrastructure present: the node really does without it (an agent
// runs no replication or backup task). The others cannot be forced: a
// provisioned signing key is always used.
type part struct {
	structs.SimulatedPart
	forced bool
}

// critical is what each role needs; see docs/operations.md ("Simulation
// mode", whose table TestSimulationDocsTable checks against this). The
// registry is nobody's critical infrastructure at start: a server is the
// registry (the first one has nothing to reach), and an agent finds the
// servers through Serf gossip and retries until one answers. PostgreSQL is
// an agent's alone: servers hold no region data. Vault is checked for
// health, but nothing in this build reads from it (unbuilt).
var critical = map[Role][]dependency{
	RoleServer: {
		{Vault, nil},
		{Cosign, []part{{structs.SimulatedPart{Part: "signing", What: "no provisioned signing key (COSIGN_KEY_PATH): this server signs trust bundles with a key it generated in its data dir (server.key), which nobody vouched for out of band; signatures are real and verified as usual"}, false}}},
	},
	RoleAgent: {
		{Postgres, []part{
			{structs.SimulatedPart{Part: "replication", What: "this agent runs no replication task: federation sync and tenant replication of its region are simulated"}, true},
			{structs.SimulatedPart{Part: "tenant_rls", What: "row-level security of tenant mirrors is not applied in this region: the agent runs no tenant subscriber"}, true},
			{structs.SimulatedPart{Part: "backups", What: "this agent runs no backup task: the region's backups, their validation and restores are simulated"}, true},
		}},
		{Cosign, []part{{structs.SimulatedPart{Part: "signing", What: "no provisioned signing key (COSIGN_KEY_PATH): this agent signs its reports with a key it generated in its data dir (agent.key) and registered as its trust member on first contact; signatures are real and verified as usual"}, false}}},
		{Vault, nil},
	},
}

// unbuilt are the parts a role always runs simulated in this build,
// whatever the infrastructure: they are listed so that no node claims what
// it does not do.
var unbuilt = map[Role][]structs.SimulatedPart{
	RoleServer: {{Part: "secrets", What: "federation secrets (bootstrap token, TLS and gossip keys) come from flags, the environment and local files: this build reads no secret from Vault",
		Because: "not built: no Vault client (VAULT_ADDR is only checked for health)"}},
	RoleAgent: {{Part: "secrets", What: "the region database credentials come from POSTGRES_DSN and passfiles: this build reads no secret from Vault",
		Because: "not built: no Vault client (VAULT_ADDR is only checked for health)"}},
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
	var missing, forced []string
	for _, d := range deps {
		c := checks[d.check]
		healthy := Healthy(c.Status)
		if !healthy {
			missing = append(missing, fmt.Sprintf("%s (%s: %s)", d.check, c.Status, c.Detail))
		}
		for _, p := range d.parts {
			switch {
			case !healthy:
				p.Because = d.check + " " + c.Status
			case mode == ModeOn && p.forced:
				p.Because = "SIMULATION_MODE=" + setting
				forced = append(forced, p.Part)
			default:
				continue
			}
			sim.Simulated = append(sim.Simulated, p.SimulatedPart)
		}
	}
	sim.Simulated = append(sim.Simulated, unbuilt[role]...)
	switch {
	case mode == ModeOff && len(missing) > 0:
		sim.Reason = "SIMULATION_MODE=" + setting + " but critical infrastructure is missing: " + strings.Join(missing, "; ")
		return sim, fmt.Errorf("SIMULATION_MODE=%s, but %w for a %s: %s. Provide it, or unset SIMULATION_MODE to run in simulation mode", setting, ErrMissingInfrastructure, role, strings.Join(missing, "; "))
	case mode == ModeOn:
		sim.Enabled = true
		sim.Reason = "SIMULATION_MODE=" + setting + ": the parts that can do without their infrastructure run simulated"
		if len(forced) > 0 {
			sim.Reason += " (" + strings.Join(forced, ", ") + ")"
		}
	case len(missing) > 0:
		sim.Enabled = true
		sim.Reason = "critical infrastructure is missing: " + strings.Join(missing, "; ")
	default:
		sim.Reason = "all critical infrastructure of a " + string(role) + " is present: " + strings.Join(CriticalChecks(role), ", ")
	}
	return sim, nil
}
