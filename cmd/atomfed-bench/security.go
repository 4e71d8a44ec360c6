package main

import (
	"context"

	"github.com/atomcloud/atomfed/internal/testing/bench"
)

// runSecurityCost measures what the default security (HTTPS, mutual TLS
// between servers, encrypted gossip) costs: the same load on a cluster
// with default flags and on one with --insecure-plaintext, alternating,
// o.securityRounds runs each. Tokens and signatures apply to both.
func runSecurityCost(ctx context.Context, o *options, bin string) (*bench.CompareResult, error) {
	var steps []bench.CompareStep
	for _, c := range o.writeConc {
		steps = append(steps, bench.CompareStep{Name: "put", Concurrency: c})
	}
	steps = append(steps, bench.CompareStep{Name: "linearizable read", Concurrency: o.readConc[len(o.readConc)-1]})
	systems := []bench.System{
		noProfile(atomfedSystemWith(bench.SecureName, bin, o, false)),
		noProfile(atomfedSystemWith(bench.PlaintextName, bin, o, true)),
	}
	return bench.Compare(ctx, systems, bench.CompareOptions{Steps: steps, Rounds: o.securityRounds,
		Warmup: o.warmup, Duration: o.duration, Logf: logf})
}

// noProfile drops a system's leader profile: the security runs compare
// two atomfed setups and need no pprof.
func noProfile(s bench.System) bench.System {
	start := s.Start
	s.Start = func(ctx context.Context) (*bench.SystemRun, error) {
		run, err := start(ctx)
		if run != nil {
			run.ProfileLeader = nil
		}
		return run, err
	}
	return s
}
