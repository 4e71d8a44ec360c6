package chaos_test

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/chaos"
)

func runDataPlane(t *testing.T, cfg chaos.DataPlaneConfig) *chaos.DataPlaneResult {
	t.Helper()
	cfg.Dir = runDir(t)
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := chaos.RunDataPlane(ctx, cfg)
	if err != nil {
		t.Fatalf("data-plane run: %v", err)
	}
	t.Logf("%s: writes acked %d, maybe %d, not sent %d; rows acked %d, maybe %d; lag p50 %.3fs max %.3fs (%d probes); converged %v in %.2fs (bound %.0fs)",
		res.Name, res.WritesAcked, res.WritesMaybe, res.WritesNotSent, res.RowsAcked, res.RowsMaybe,
		res.LagP50S, res.LagMaxS, res.LagSamples, res.Converged, res.ConvergenceS, res.ConvergeWithinS)
	t.Logf("lost %d, extra %d, leaked %d, RLS visible %d / unprotected %d, PII %d, orphan slots %d, missing subscriptions %d",
		res.LostRows, res.ExtraRows, res.LeakedRows, res.RLSVisible, res.RLSOff, res.PIIFound, res.OrphanSlots, res.MissingSubscriptions)
	for _, ev := range res.Events {
		t.Logf("  %-22s %-24s held %5.2fs  %s %s", ev.Type, strings.Join(ev.Targets, ","), ev.Healed.Sub(ev.Start).Seconds(), ev.Detail, ev.Err)
	}
	for _, f := range res.Findings {
		t.Logf("  finding: %s", f)
	}
	t.Logf("writer errors: %v", res.Errors)
	return res
}

// TestChaosDataPlaneShort is the CI data-plane run: 3 servers, three
// regions each with its own PostgreSQL and agent, four tenants registered
// through the API, writers on every home, and a fixed seed and schedule:
// kill -9 of a region's PostgreSQL (every region is a home and a mirror),
// of an agent, of the leader, and of a PostgreSQL together with the
// leader. After healing every mirror must hold exactly its home's rows
// within the bound, every acknowledged row must be there, and no row may
// leak, be visible to another tenant under RLS, or carry PII; no slot may
// be orphaned.
func TestChaosDataPlaneShort(t *testing.T) {
	multiProcess(t)
	schedule := []string{"pg-kill", "agent-kill", "kill-leader", "pg-kill+kill-leader"}
	res := runDataPlane(t, chaos.DataPlaneConfig{
		Name: "ci-dataplane", Seed: 20261126, Bin: atomfedBin, Schedule: schedule,
		HoldMin: 1500 * time.Millisecond, HoldMax: 2500 * time.Millisecond,
		QuietMin: 500 * time.Millisecond, QuietMax: time.Second,
		Warmup: 3 * time.Second, ConvergeWithin: 60 * time.Second,
	})
	for _, f := range res.Failures {
		t.Error(f)
	}
	if len(res.Events) != len(schedule) {
		t.Fatalf("%d events ran, want the %d scheduled", len(res.Events), len(schedule))
	}
	for i, ev := range res.Events {
		if ev.Type != schedule[i] || ev.Start.IsZero() || ev.Recovered.Before(ev.Healed) {
			t.Errorf("event %d: %+v does not match the schedule entry %s", i, ev, schedule[i])
		}
	}
	if res.WritesAcked == 0 || res.RowsAcked == 0 || res.LagSamples == 0 || !res.Converged {
		t.Errorf("run did not exercise the checks: acked %d, rows %d, lag probes %d, converged %v",
			res.WritesAcked, res.RowsAcked, res.LagSamples, res.Converged)
	}
}

// TestChaosDataPlaneCatchesLeaks builds atomfed with the test-only
// chaosbug tag and runs the data plane with two replication bugs switched
// on: tenant publications without their row filter (every tenant's rows
// of the shared orders table reach each tenant's mirror) and mirror tables
// without row-level security. Acme (home us-east, mirror eu-west) and
// globex (home us-east, mirror ap-south) share us-east's orders table with
// the unregistered hooli. The checks must find rows in regions that are
// neither their tenant's home nor its mirror, and rows of other tenants
// visible to a tenant's session on a mirror. The normal binary carries no
// such switch.
func TestChaosDataPlaneCatchesLeaks(t *testing.T) {
	multiProcess(t)
	normal, err := os.ReadFile(atomfedBin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(normal, []byte("repl-no-row-filter")) {
		t.Fatal("the normal atomfed binary contains the replication bug switch")
	}
	buggy := chaosBugBinary(t)
	if b, err := os.ReadFile(buggy); err != nil || !bytes.Contains(b, []byte("repl-no-row-filter")) {
		t.Fatalf("the chaosbug build lacks the replication bug switch (%v); the test would prove nothing", err)
	}
	res := runDataPlane(t, chaos.DataPlaneConfig{
		Name: "leaky-replicator", Seed: 7, Bin: buggy,
		Env:     []string{"ATOMFED_CHAOS_BUG=repl-no-row-filter,repl-no-rls"},
		Tenants: chaos.DataPlaneTenants[:2], Schedule: []string{},
		Warmup: 2 * time.Second, StreamWithin: 45 * time.Second, ConvergeWithin: 20 * time.Second,
	})
	if res.Passed() {
		t.Fatal("the data-plane checks passed a replicator that leaks rows across tenants")
	}
	if res.LeakedRows == 0 {
		t.Errorf("no leaked rows found, though every publication carries every tenant's rows; failures: %v", res.Failures)
	}
	if res.RLSVisible == 0 || res.RLSOff == 0 {
		t.Errorf("row-level security check found %d visible rows of other tenants and %d unprotected tables; mirrors have none", res.RLSVisible, res.RLSOff)
	}
}
