package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/bench"
)

func splitMix(t string) []string { return strings.Split(t, "+") }

// WriteFiles writes chaos.md and chaos.json into dir.
func (rep *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "chaos.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "chaos.md"), []byte(rep.Markdown()), 0o644)
}

func secs(s float64) string {
	switch {
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 100:
		return fmt.Sprintf("%.2f s", s)
	}
	return (time.Duration(s * float64(time.Second))).Round(time.Second).String()
}

// Markdown renders the report.
func (rep *Report) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# atomfed chaos suite\n\n")
	result := "PASS"
	if !rep.Passed {
		result = "FAIL"
	}
	w("**%s**: %d linearizability violations, %d keys without a verdict, %d acknowledged writes lost, %d failed writes present, over %d checked operations in %d runs.\n\n",
		result, rep.Violations, rep.Unknown, rep.Lost, rep.Phantom, rep.Ops, len(rep.Runs))
	w("- Date: %s\n", rep.Date.Format("2006-01-02 15:04:05 UTC"))
	m := rep.Machine
	w("- Machine: %s, %d cores, %s RAM, Linux %s; load average at the end %s\n", m.CPU, m.Cores, m.RAM, m.Kernel, bench.LoadAvg())
	w("- Go: %s; atomfed: %s (git describe)\n", m.Go, rep.Version)
	if rep.Command != "" {
		w("- Command: `%s`\n", rep.Command)
	}
	w("- Seed: %d (run i uses seed+i; replay with `make chaos SEED=%d DURATION=%s`)\n", rep.Seed, rep.Seed, time.Duration(rep.DurationS*float64(time.Second)).Round(time.Second))
	w("- Fault time: %s in total; wall time %s\n", secs(rep.DurationS), secs(rep.ElapsedS))
	for _, e := range rep.Errors {
		w("- Run not carried out: %s\n", e)
	}

	w("\n## Runs\n\n")
	w("| run | setup | seed | fault phase | checked ops | ops/s before 1st fault | writes acked / unknown / failed | violations | lost / phantom | audit heads | final write | result |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|\n")
	for _, r := range rep.Runs {
		res := "pass"
		if !r.Passed() {
			res = "**FAIL**"
		}
		audit := "differ"
		if r.AuditHeadsEqual {
			audit = fmt.Sprintf("equal at %d", r.AuditIndex)
		}
		w("| %s | %s | %d | %s | %d on %d keys | %.0f | %d / %d / %d | %d | %d / %d | %s | %v | %s |\n",
			r.Name, r.Setup, r.Seed, secs(r.FaultPhaseS), r.Ops, r.KeysUsed, r.OpsPerSecBefore, r.Acked, r.Unknown, r.Failed,
			r.Violations, len(r.Lost), len(r.Phantom), audit, okWord(r.FinalWriteOK), res)
	}
	for _, r := range rep.Runs {
		for _, f := range r.Failures {
			w("\n- %s: %s", r.Name, f)
		}
	}

	w("\n\n## Availability windows\n\n")
	w("The window of a fault is the longest stretch, from its injection until the cluster was whole again (every server up, one established leader that all follow, every server a voter), in which no client write was acknowledged. Clients keep starting operations at a fixed rate on random servers while earlier ones hang, so the window measures the cluster, not a client's timeout.\n\n")
	w("| fault type | network | events | p50 | p99 | max | budget for the median |\n|---|---|---:|---:|---:|---:|---|\n")
	for _, s := range rep.Windows {
		budget := ""
		if s.BudgetS > 0 {
			budget = fmt.Sprintf("< %s: **missed**", secs(s.BudgetS))
			if s.BudgetMet {
				budget = fmt.Sprintf("< %s: met", secs(s.BudgetS))
			}
		}
		w("| %s | %s | %d | %s | %s | %s | %s |\n", s.Type, s.Network, s.Events, secs(s.P50), secs(s.P99), secs(s.Max), budget)
	}
	w("\nEvery nemesis except disk-full can take the leader: a random kill, pause or partition hits it one time in N (the events below say so), and leader loss dominates those windows; a minority partition or an asymmetric cut of a follower costs nothing. A mix runs a network fault and a process fault at once, often leaving no quorum for its whole duration.\n")

	w("\n## Nemeses injected\n\n| nemesis | events (alone or in a mix) |\n|---|---:|\n")
	for _, n := range sortedKeys(rep.Nemeses) {
		w("| %s | %d |\n", n, rep.Nemeses[n])
	}
	var notRun []string
	for _, n := range Nemeses {
		if rep.Nemeses[n] == 0 {
			notRun = append(notRun, n)
		}
	}
	if len(notRun) > 0 {
		w("\nNot injected in this suite: %s.\n", strings.Join(notRun, ", "))
	}
	for _, r := range rep.Runs {
		if r.NoDiskFull != "" {
			w("\n%s had no disk-full node: %s\n", r.Name, r.NoDiskFull)
		}
	}

	w("\n## Events\n")
	for _, r := range rep.Runs {
		w("\n### %s (seed %d): %s\n\n| # | at | fault | targets | held | window | detail |\n|---:|---:|---|---|---:|---:|---|\n", r.Name, r.Seed, r.Setup)
		for i, ev := range r.Events {
			detail := ev.Detail
			if ev.Err != "" {
				detail = strings.TrimSpace(detail + " — error: " + ev.Err)
			}
			w("| %d | %s | %s | %s | %s | %s | %s |\n", i+1, secs(ev.Start.Sub(r.Started).Seconds()), ev.Type,
				strings.Join(ev.Targets, " "), secs(ev.Healed.Sub(ev.Start).Seconds()), secs(ev.WindowS), mdEscape(detail))
		}
		w("\nOperations started %d; not started because every client worker was busy: %d, because every key had its 3 operations in flight: %d.\n",
			r.OpsStarted, r.SkippedWorkers, r.SkippedKeys)
		if len(r.Errors) > 0 {
			w("\nClient errors seen: %s\n", errorSummary(r.Errors))
		}
	}

	w("\n## Method\n\n")
	for _, line := range methodNotes {
		w("- %s\n", line)
	}
	return b.String()
}

var methodNotes = []string{
	"Real `atomfed server` and `atomfed agent` processes from the built binary. Each node binds its own loopback address (127.b.0.x) and advertises a userspace proxy (127.b.1.x) for Raft, Serf (TCP and UDP) and HTTP; nodes bind their outgoing connections to their own address, so the proxy knows the sender and applies faults per directed link: pass, delay with jitter, drop (fast reset) or blackhole (held until healed). Clients reach every server through its proxy too. Inter-region latency is a standing delay on the links between continents (no netem on this kernel).",
	"Security as by default: HTTPS with a throwaway federation CA (server certificates name the proxy addresses), mutual TLS on Raft and on the forwarding RPC that shares its port, encrypted gossip, the bootstrap bearer token on every request, and the workload's region registered with a request signed by the region's key. Followers answer linearizable reads themselves after a read index from the leader (or hand them to the leader when they have not applied it within 5 ms); writes reach the leader over the forwarding RPC.",
	"Nemeses: kill -9 and restart (any server, or the leader), SIGSTOP/SIGCONT pause (any, or the leader), partitions of a minority, of the leader alone, and asymmetric (one direction cut), latency on every server link, rolling restart (SIGTERM = graceful leave, restart, wait until whole), member replacement (kill, remove from the Raft configuration, wipe, start blank without --bootstrap-expect), and disk full (a 64 MiB tmpfs data dir filled to ENOSPC, then freed). Killing a region's PostgreSQL belongs to the data-plane runs that come with the replication work; it is not faked here.",
	"Workload: operations start at a fixed rate (250/s) on random servers with up to 1024 in flight: linearizable reads, read-then-CAS writes (`PUT ?cas=`) and plain writes on a small set of tenant keys (24 at a time), and create-only writes of fresh tenants. At most 3 operations are in flight on a key; a key is retired for a fresh one after 300 operations or as soon as an operation on it hangs for 1 s (a fault holds it), so every key's history is short with bounded concurrency, as with Jepsen's independent keys, and operations keep flowing whatever hangs. Every written value is unique. A timeout, a connection lost after sending, or a 503 `outcome_unknown` is a write of unknown outcome (porcupine: it returns at the end of the history); a refused connection, a 4xx, or a 503 `no_leader`/`busy`/`shutting_down` (raft refused the entry before logging it, or the request ended before anything was sent) is a write that did not happen and is left out. Reads without an answer are left out (a read changes nothing).",
	"Checks: porcupine (v1.3.1) checks each key's history against a versioned register (reads must see the latest value and its modify_index, CAS succeeds exactly when the version matches, indexes grow); an Illegal or Unknown verdict fails the run and writes the HTML visualisation. After healing: the final write to every key must be acknowledged, every acknowledged create-only write must be present and no failed one may be, and all servers' audit heads (`GET /v1/status/audit?consistency=stale` on each) must be equal at the same index. A server answering 500 (an unmapped error) fails the run. A run with fewer than 100 ops/s before its first fault is invalid.",
}

func okWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "**failed**"
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

func errorSummary(m map[string]int) string {
	keys := sortedKeys(m)
	sort.SliceStable(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	var parts []string
	for i, k := range keys {
		if i == 8 {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, fmt.Sprintf("%s ×%d", mdEscape(k), m[k]))
	}
	return strings.Join(parts, ", ")
}
