package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/atomcloud/atomfed/internal/precheck"
	"github.com/atomcloud/atomfed/internal/structs"
)

// evaluateSimulation runs the checks of a role's critical infrastructure
// from the environment and decides SIMULATION_MODE. With
// SIMULATION_MODE=false and something missing it returns an error that
// names what is missing: the node must not start.
func evaluateSimulation(role precheck.Role) (*structs.Simulation, error) {
	return evaluateSimulationWith(role, precheckConfigFromEnv())
}

// evaluateSimulationWith is evaluateSimulation with the checks' settings
// given (an agent's --postgres-dsn flag overrides POSTGRES_DSN).
func evaluateSimulationWith(role precheck.Role, cfg precheck.Config) (*structs.Simulation, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sim, err := precheck.Evaluate(ctx, cfg, role, os.Getenv("SIMULATION_MODE"))
	if err != nil {
		return nil, fmt.Errorf("refusing to start: %w", err)
	}
	return sim, nil
}

// announceSimulation logs a node's mode: simulation loudly, at warn, one
// line per simulated part; production at info. dev announces once for
// all its nodes and passes quiet=true.
func announceSimulation(log hclog.Logger, sim *structs.Simulation, quiet bool) {
	warn := log.Warn
	if quiet {
		warn = log.Info
	}
	if sim != nil {
		for name, c := range sim.Checks {
			for _, f := range c.Findings {
				warn("check " + name + " finding: " + f)
			}
		}
	}
	if !sim.Active() {
		log.Info("production mode: critical infrastructure present", "checks", checkSummary(sim))
		for _, p := range sim.Simulated {
			log.Info("not run for real by this build: "+p.Part+": "+p.What, "because", p.Because)
		}
		return
	}
	warn("*** SIMULATION MODE *** "+sim.Reason, "checks", checkSummary(sim))
	for _, p := range sim.Simulated {
		warn("*** SIMULATED *** "+p.Part+": "+p.What, "because", p.Because)
	}
}

// checkSummary renders checks as "name=STATUS ...".
func checkSummary(sim *structs.Simulation) string {
	var names []string
	for n := range sim.Checks {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, n+"="+sim.Checks[n].Status)
	}
	return strings.Join(parts, " ")
}

// simulationBanner is what dev prints about its servers' and agents'
// simulation mode.
func simulationBanner(server, agent *structs.Simulation) string {
	if !server.Active() && !agent.Active() {
		return "  SIMULATION_MODE: off (vault, cosign and postgres present); not run for real by this build: secrets from Vault\n"
	}
	var b strings.Builder
	b.WriteString("  *** SIMULATION MODE ***  critical infrastructure is missing, so parts run simulated:\n")
	for _, s := range []*structs.Simulation{server, agent} {
		if !s.Active() {
			continue
		}
		fmt.Fprintf(&b, "    %-7s checks: %s\n", s.Role+"s", checkSummary(s))
		for _, p := range s.Simulated {
			fmt.Fprintf(&b, "             simulated %-11s (%s)\n", p.Part, p.Because)
		}
	}
	b.WriteString("    set VAULT_ADDR, COSIGN_KEY_PATH (+COSIGN_PASSWORD) and POSTGRES_DSN for production; see /health and /v1/policy/status\n")
	return b.String()
}
