package chaos_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/chaos"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// atomfedBin is the binary under test, built once by TestMain (or
// $ATOMFED_BIN).
var atomfedBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("internal/testing/chaos: multi-process runs skipped in -short mode")
		os.Exit(m.Run())
	}
	atomfedBin = os.Getenv("ATOMFED_BIN")
	var tmp string
	if atomfedBin == "" {
		var err error
		if tmp, err = os.MkdirTemp("", "atomfed-chaos-bin-"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if atomfedBin, err = procs.BuildBinary(tmp, "chaos"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(tmp)
			os.Exit(1)
		}
	}
	code := m.Run()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	if bugBin.dir != "" {
		os.RemoveAll(bugBin.dir)
	}
	os.Exit(code)
}

// bugBin is the atomfed binary built with the test-only chaosbug tag,
// once for every test that needs it.
var bugBin struct {
	once      sync.Once
	dir, path string
	err       error
}

// chaosBugBinary returns the chaosbug build, building it on first use.
func chaosBugBinary(t *testing.T) string {
	t.Helper()
	bugBin.once.Do(func() {
		if bugBin.dir, bugBin.err = os.MkdirTemp("", "atomfed-chaosbug-bin-"); bugBin.err == nil {
			bugBin.path, bugBin.err = procs.BuildBinaryTags(bugBin.dir, "chaosbug", "chaosbug")
		}
	})
	if bugBin.err != nil {
		t.Fatal(bugBin.err)
	}
	return bugBin.path
}

// multiProcess skips t in -short mode, where no binary is built.
func multiProcess(t *testing.T) {
	t.Helper()
	if atomfedBin == "" {
		t.Skip("starts real server processes; not in -short mode")
	}
}

// runDir returns where a run keeps data and logs: under
// $ATOMFED_E2E_LOG_DIR when set (kept), else in the test's temp dir.
func runDir(t *testing.T) string {
	if base := os.Getenv(procs.LogDirEnv); base != "" {
		d := filepath.Join(base, t.Name())
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func run(t *testing.T, cfg chaos.RunConfig) *chaos.RunResult {
	t.Helper()
	cfg.Dir = runDir(t)
	cfg.Logf = t.Logf
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := chaos.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("%s: %d ops, %.0f ops/s before the first fault, %d writes acked, %d unknown, %d failed; %d events; check took %.1fs",
		res.Name, res.Ops, res.OpsPerSecBefore, res.Acked, res.Unknown, res.Failed, len(res.Events), res.CheckS)
	for _, ev := range res.Events {
		t.Logf("  %-34s %-12s window %6.3fs  %s %s", ev.Type, strings.Join(ev.Targets, ","), ev.WindowS, ev.Detail, ev.Err)
	}
	t.Logf("client errors: %v", res.Errors)
	return res
}

// TestChaosShort is the CI run: a fixed seed and a fixed schedule over 3
// servers and an agent on loopback — leader kill and pause, a minority
// and a leader partition, an asymmetric partition mixed with a pause,
// latency, member replacement, a full disk and a rolling restart — with
// every check of the long suite: per-key linearizability, no acknowledged
// write lost, equal audit heads, a final write, and at least 100 ops/s
// before the first fault.
func TestChaosShort(t *testing.T) {
	multiProcess(t)
	schedule := []string{"kill-leader", "pause-leader", "partition-minority", "partition-leader",
		"partition-asymmetric+pause", "latency", "member-replace", "disk-full", "rolling-restart"}
	res := run(t, chaos.RunConfig{
		Name: "ci", Seed: 20261126, Bin: atomfedBin, Servers: 3, Agents: 1,
		Schedule: schedule,
		HoldMin:  1500 * time.Millisecond, HoldMax: 2500 * time.Millisecond,
		QuietMin: 500 * time.Millisecond, QuietMax: time.Second,
		Warmup: 3 * time.Second,
	})
	for _, f := range res.Failures {
		t.Error(f)
	}
	if res.NoDiskFull != "" {
		// mount(8) needs root; without it the run has no disk-full event.
		t.Logf("no disk-full event: %s", res.NoDiskFull)
		schedule = without(schedule, "disk-full")
	}
	if len(res.Events) != len(schedule) {
		t.Fatalf("%d events ran, want the %d scheduled", len(res.Events), len(schedule))
	}
	for i, ev := range res.Events {
		if ev.Type != schedule[i] || ev.Start.IsZero() || ev.Recovered.Before(ev.Healed) {
			t.Errorf("event %d: %+v does not match the schedule entry %s", i, ev, schedule[i])
		}
	}
	if res.Acked == 0 || res.DurableAcked == 0 || !res.FinalWriteOK || !res.AuditHeadsEqual {
		t.Errorf("run did not exercise the checks: acked %d, durable %d, final %v, audit %v",
			res.Acked, res.DurableAcked, res.FinalWriteOK, res.AuditHeadsEqual)
	}
}

// TestChaosCatchesStaleReads builds atomfed with the test-only chaosbug
// tag and shows that the suite turns red for two real consistency bugs:
//
//   - follower-local-reads: a follower answers linearizable reads from
//     its own state without the read-index round to the leader; while a
//     follower is cut off, reads through it return values the majority
//     has overwritten.
//   - no-read-barrier: a server that believes it leads answers
//     linearizable reads from a leadership flag it refreshes every 500 ms,
//     without confirming with a quorum; a leader woken from a pause
//     answers the reads that queued up meanwhile from its stale state
//     before the flag catches up.
//
// Porcupine must find the history illegal and write its visualisation.
// The normal binary carries no such switch.
func TestChaosCatchesStaleReads(t *testing.T) {
	multiProcess(t)
	normal, err := os.ReadFile(atomfedBin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(normal, []byte("ATOMFED_CHAOS_BUG")) {
		t.Fatal("the normal atomfed binary contains the chaos bug switch")
	}
	buggy := chaosBugBinary(t)
	b, err := os.ReadFile(buggy)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("ATOMFED_CHAOS_BUG")) {
		t.Fatal("the chaosbug build lacks the switch; the test would prove nothing")
	}
	cases := []struct {
		bug      string
		schedule []string
		// rounds bounds how many fresh runs may be needed: a leader woken
		// from a pause races its own step-down, and now and then every
		// pause of a run loses the race.
		rounds int
	}{
		{"follower-local-reads", []string{"partition-minority", "partition-minority"}, 1},
		{"no-read-barrier", []string{"pause-leader", "pause-leader", "pause-leader"}, 6},
	}
	for i, tc := range cases {
		t.Run(tc.bug, func(t *testing.T) {
			for round := 1; ; round++ {
				res := run(t, chaos.RunConfig{
					Name: tc.bug, Seed: uint64(7 + 10*i + round), Bin: buggy, Servers: 3,
					Env:      []string{"ATOMFED_CHAOS_BUG=" + tc.bug},
					Schedule: tc.schedule,
					HoldMin:  2 * time.Second, HoldMax: 3 * time.Second,
					QuietMin: 500 * time.Millisecond, QuietMax: 500 * time.Millisecond,
					Warmup: 2 * time.Second,
				})
				if res.Violations > 0 {
					for _, v := range res.Verdicts {
						if v.Result == "Illegal" {
							if st, err := os.Stat(v.HTML); err != nil || st.Size() == 0 {
								t.Errorf("key %s is illegal but its visualisation %q is missing: %v", v.Key, v.HTML, err)
							}
						}
					}
					t.Logf("round %d: %d of %d keys illegal, as they must be", round, res.Violations, len(res.Verdicts))
					return
				}
				if round == tc.rounds {
					t.Fatalf("the checker found no violation in %d runs of a build with bug %s; failures: %v", round, tc.bug, res.Failures)
				}
				t.Logf("round %d found no violation; running another", round)
			}
		})
	}
}

func without(list []string, drop string) []string {
	var out []string
	for _, v := range list {
		if v != drop {
			out = append(out, v)
		}
	}
	return out
}
