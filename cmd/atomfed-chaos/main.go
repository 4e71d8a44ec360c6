// Command atomfed-chaos runs the long chaos suite: fresh multi-process
// clusters (3 and 5 servers, on loopback and with 80 ms round trips between
// continents) behind fault proxies, nemeses chosen from a seed, a recorded
// client history checked with porcupine, and the post-healing checks; then
// a data-plane run (a real PostgreSQL and agent per region, tenant writers,
// PostgreSQL, agent and leader kills, row, leak, RLS, PII and slot checks). It
// writes chaos.md and chaos.json and exits 1 when any check failed.
// `make chaos` runs it; the short deterministic run is a test of
// internal/testing/chaos that `make test` runs.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/chaos"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

func main() {
	fs := flag.NewFlagSet("atomfed-chaos", flag.ExitOnError)
	bin := fs.String("bin", "bin/atomfed", "atomfed binary (built into a temp dir when it does not exist)")
	duration := fs.Duration("duration", 10*time.Minute, "total time of fault injection, shared out over the runs")
	seed := fs.Uint64("seed", 0, "seed of the suite (0: a random one, printed)")
	out := fs.String("out", "reports", "directory for chaos.md and chaos.json")
	dir := fs.String("dir", "", "directory for the runs' data and logs (default: a new temp dir, kept when a run fails)")
	only := fs.String("only", "", "run only the run of this name from the plan (to replay one run with the suite's seed); \"dataplane\" runs the data-plane run alone and writes chaos-dataplane.md and .json, \"region-loss\" the region-loss run (chaos-region-loss.md and .json)")
	keep := fs.Bool("keep", false, "keep the runs' logs and histories also when every check passed")
	check := fs.String("check", "", "check a saved history.json of a run again (no cluster) and write visualisations next to it")
	checkTimeout := fs.Duration("check-timeout", 5*time.Minute, "porcupine's time limit for -check")
	_ = fs.Parse(os.Args[1:])
	if *check != "" {
		os.Exit(recheck(*check, *checkTimeout))
	}

	if *seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		*seed = binary.BigEndian.Uint64(b[:]) % 1_000_000_000
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *bin, *duration, *seed, *out, *dir, *only, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "atomfed-chaos:", err)
		os.Exit(1)
	}
}

// recheck runs porcupine on a saved history and prints the verdict per
// key; it returns the exit code.
func recheck(path string, timeout time.Duration) int {
	ops, err := chaos.LoadHistory(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "atomfed-chaos:", err)
		return 2
	}
	start := time.Now()
	verdicts := chaos.CheckLinearizable(ops, timeout, filepath.Join(filepath.Dir(path), "html"))
	code := 0
	for _, v := range verdicts {
		fmt.Printf("%-6s %-8s %6d ops %4d unknown writes %s\n", v.Key, v.Result, v.Ops, v.Unknown, v.HTML)
		if v.Result != "Ok" {
			code = 1
		}
	}
	fmt.Printf("%d operations checked in %s\n", len(ops), time.Since(start).Round(time.Millisecond))
	return code
}

func run(ctx context.Context, bin string, d time.Duration, seed uint64, out, dir, only string, keep bool) error {
	if _, err := os.Stat(bin); err != nil {
		tmp, err := os.MkdirTemp("", "atomfed-chaos-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if bin, err = procs.BuildBinary(tmp, "chaos"); err != nil {
			return err
		}
	}
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", fmt.Sprintf("atomfed-chaos-%d-", seed)); err != nil {
			return err
		}
	}
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Printf("%8.1fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	logf("atomfed-chaos: seed %d, %s of faults, runs in %s", seed, d, dir)
	rep := chaos.RunSuite(ctx, chaos.SuiteConfig{
		Seed: seed, Duration: d, Bin: bin, Dir: dir, Logf: logf, Only: only,
		Command: command(d, seed, only),
	})
	if out != "" {
		// The data-plane run alone gets its own files, so that it does not
		// replace the whole suite's report.
		base := "chaos"
		if only == "dataplane" || only == "region-loss" {
			base = "chaos-" + only
		}
		if err := rep.WriteFilesAs(out, base); err != nil {
			return err
		}
		logf("wrote %s and %s", filepath.Join(out, base+".md"), filepath.Join(out, base+".json"))
	}
	if !rep.Passed {
		var why []string
		for _, r := range rep.Runs {
			why = append(why, r.Failures...)
		}
		for _, r := range rep.DataPlane {
			why = append(why, r.Failures...)
		}
		why = append(why, rep.Errors...)
		return fmt.Errorf("suite failed (seed %d; logs in %s):\n  %s", seed, dir, strings.Join(why, "\n  "))
	}
	if keep {
		logf("logs and histories kept in %s", dir)
	} else {
		_ = os.RemoveAll(dir)
	}
	logf("PASS: %d runs, %d ops, no violations, no lost writes; %d data-plane runs, no lost or leaked rows", len(rep.Runs), rep.Ops, len(rep.DataPlane))
	return nil
}

// command is how to run the suite (or the one run) again.
func command(d time.Duration, seed uint64, only string) string {
	if only == "dataplane" {
		return fmt.Sprintf("make chaos-dataplane DURATION=%s SEED=%d", d, seed)
	}
	if only != "" {
		return fmt.Sprintf("go run ./cmd/atomfed-chaos -only %s -duration %s -seed %d", only, d, seed)
	}
	return fmt.Sprintf("make chaos DURATION=%s SEED=%d", d, seed)
}
