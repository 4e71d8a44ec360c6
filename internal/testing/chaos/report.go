package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/machine"
)

func splitMix(t string) []string { return strings.Split(t, "+") }

// WriteFiles writes chaos.md and chaos.json into dir.
func (rep *Report) WriteFiles(dir string) error { return rep.WriteFilesAs(dir, "chaos") }

// WriteFilesAs writes base.md and base.json into dir.
func (rep *Report) WriteFilesAs(dir, base string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, base+".json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, base+".md"), []byte(rep.Markdown()), 0o644)
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
	w("**%s**", result)
	if len(rep.Runs) > 0 {
		w(": %d linearizability violations, %d keys without a verdict, %d acknowledged writes lost, %d failed writes present, over %d checked operations in %d runs",
			rep.Violations, rep.Unknown, rep.Lost, rep.Phantom, rep.Ops, len(rep.Runs))
	}
	if len(rep.DataPlane) > 0 {
		sep := ":"
		if len(rep.Runs) > 0 {
			sep = ". Data plane:"
		}
		w("%s %d acknowledged rows lost, %d rows leaked across tenants, %d rows of other tenants visible under RLS, %d PII columns or values on mirrors, %d orphan replication slots in %s",
			sep, rep.DPLostRows, rep.DPLeakedRows, rep.DPRLSVisible, rep.DPPIIFound, rep.DPOrphans, plural(len(rep.DataPlane), "data-plane run"))
	}
	w(".\n\n")
	w("- Date: %s\n", rep.Date.Format("2006-01-02 15:04:05 UTC"))
	m := rep.Machine
	w("- Machine: %s, %d cores, %s RAM, Linux %s; load average at the end %s\n", m.CPU, m.Cores, m.RAM, m.Kernel, machine.LoadAvg())
	w("- Go: %s; atomfed: %s (git describe)\n", m.Go, rep.Version)
	if rep.Command != "" {
		w("- Command: `%s`\n", rep.Command)
	}
	replay := rep.Command
	if replay == "" {
		replay = fmt.Sprintf("make chaos SEED=%d DURATION=%s", rep.Seed, time.Duration(rep.DurationS*float64(time.Second)).Round(time.Second))
	}
	w("- Seed: %d (control-plane run i uses seed+i, the data-plane run seed+4, the region-loss run seed+5; replay with `%s`)\n", rep.Seed, replay)
	var dpFault float64
	for _, r := range rep.DataPlane {
		dpFault += r.FaultPhaseS
	}
	switch {
	case len(rep.Runs) == 0:
		w("- Fault time: %s; wall time %s\n", secs(dpFault), secs(rep.ElapsedS))
	case len(rep.DataPlane) > 0:
		w("- Fault time: %s over the control-plane runs plus %s in the data-plane run; wall time %s\n", secs(rep.DurationS), secs(dpFault), secs(rep.ElapsedS))
	default:
		w("- Fault time: %s in total; wall time %s\n", secs(rep.DurationS), secs(rep.ElapsedS))
	}
	for _, e := range rep.Errors {
		w("- Run not carried out: %s\n", e)
	}

	if len(rep.Runs) > 0 {
		rep.controlPlane(w)
	}
	if len(rep.DataPlane) > 0 {
		rep.dataPlane(w)
	}
	rep.nemesesInjected(w)

	w("\n## Method\n\n")
	notes := methodNotes
	if len(rep.Runs) == 0 {
		notes = notes[:2] // the processes, the network and the security
	}
	for _, line := range notes {
		w("- %s\n", line)
	}
	if len(rep.DataPlane) > 0 {
		w("- %s\n", dataPlaneNote)
	}
	return b.String()
}

// controlPlane renders the control-plane runs.
func (rep *Report) controlPlane(w func(string, ...any)) {
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
}

// nemesesInjected renders the count of events per nemesis and the ones
// not injected.
func (rep *Report) nemesesInjected(w func(string, ...any)) {
	w("\n## Nemeses injected\n\n| nemesis | events (alone or in a mix) |\n|---|---:|\n")
	for _, n := range sortedKeys(rep.Nemeses) {
		w("| %s | %d |\n", n, rep.Nemeses[n])
	}
	var all []string
	if len(rep.Runs) > 0 {
		all = append(all, Nemeses...)
	}
	if len(rep.DataPlane) > 0 {
		all = append(all, DataPlaneNemeses...)
	}
	var notRun []string
	for _, n := range uniq(all) {
		if rep.Nemeses[n] == 0 {
			notRun = append(notRun, n)
		}
	}
	if len(notRun) > 0 {
		w("\nNot injected in this suite: %s.\n", strings.Join(notRun, ", "))
	}
}

// dataPlane renders the data-plane runs.
func (rep *Report) dataPlane(w func(string, ...any)) {
	w("\n## Data plane\n\n")
	w("Each data-plane run has 3 servers and, per region, a real PostgreSQL 15 and a real `atomfed agent` with that database (POSTGRES_DSN) and the replication passfile. The tenants are registered through the API with their tables and PII columns, so the agents run PostgreSQL's logical replication: a publication per tenant at its home with the row filter and a column list without the PII column, a subscription on each mirror with row-level security. One writer per tenant inserts, updates and deletes rows with unique ids at the home and records what PostgreSQL acknowledged; a statement that errored or timed out after it was sent is a maybe. After healing, the writes stop and every mirror must hold exactly its home's rows of each tenant within the stated bound; then the checks below run.\n\n")
	w("| run | setup | seed | fault phase | mirrors streaming after registration | writes acked / maybe / not sent | rows acked / maybe | lag before faults p50 / max | convergence after heal (bound) | lost / extra rows | leaked rows | RLS: other tenants' rows visible / tables unprotected | PII found | orphan slots / missing subscriptions | result |\n")
	w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rep.DataPlane {
		res := "pass"
		if !r.Passed() {
			res = "**FAIL**"
		}
		conv := "**not converged**"
		if r.Converged {
			conv = secs(r.ConvergenceS)
		}
		stream := "**never**"
		if r.StreamS > 0 {
			stream = secs(r.StreamS)
		}
		w("| %s | %s | %d | %s | %s | %d / %d / %d | %d / %d | %s / %s (%d probes%s) | %s (< %s) | %d / %d | %d | %d / %d | %d | %d / %d | %s |\n",
			r.Name, r.Setup, r.Seed, secs(r.FaultPhaseS), stream, r.WritesAcked, r.WritesMaybe, r.WritesNotSent, r.RowsAcked, r.RowsMaybe,
			secs(r.LagP50S), secs(r.LagMaxS), r.LagSamples, lagTimeouts(r.LagTimeouts), conv, secs(r.ConvergeWithinS), r.LostRows, r.ExtraRows, r.LeakedRows,
			r.RLSVisible, r.RLSOff, r.PIIFound, r.OrphanSlots, r.MissingSubscriptions, res)
	}
	for _, r := range rep.DataPlane {
		if b := r.Backup; r.BackupsRun {
			w("\n%s: backups and restore drills during the faults and after healing: %d backups asked, %d recorded verified (%d of them passed the checker's `pgbackrest verify`, %d expired before it), %d failed, %d taken unverified; %d drills asked, %d recorded passed (%d recomputed by the checker's own restore with equal checksums), %d failed.\n",
				r.Name, b.BackupsAsked, b.BackupsVerified, b.BackupsRechecked, b.BackupsExpired, b.BackupsFailed, b.BackupsUnverified,
				b.DrillsAsked, b.DrillsPassed, b.DrillsRechecked, b.DrillsFailed)
		}
	}
	for _, r := range rep.DataPlane {
		for _, f := range r.Failures {
			w("\n- %s: %s", r.Name, mdEscape(f))
		}
	}
	for _, r := range rep.DataPlane {
		w("\n\n### %s (seed %d): tenants\n\n| tenant | home | mirrors | tables (PII column) |\n|---|---|---|---|\n", r.Name, r.Seed)
		for _, t := range r.Tenants {
			var tables []string
			for _, tb := range t.Tables {
				tables = append(tables, fmt.Sprintf("%s (%s)", tb.Name, tb.PII))
			}
			w("| %s | %s | %s | %s |\n", t.ID, t.HomeRegion, strings.Join(t.MirrorRegions, ", "), strings.Join(tables, ", "))
		}
		w("| %s (not registered) | %s | none | orders |\n", dpLocalTenant, r.Regions[0])
		w("\n| # | at | fault | targets | held | whole again after | detail |\n|---:|---:|---|---|---:|---:|---|\n")
		for i, ev := range r.Events {
			detail := ev.Detail
			if ev.Err != "" {
				detail = strings.TrimSpace(detail + " — error: " + ev.Err)
			}
			w("| %d | %s | %s | %s | %s | %s | %s |\n", i+1, secs(ev.Start.Sub(r.Started).Seconds()), ev.Type, strings.Join(ev.Targets, " "),
				secs(ev.Healed.Sub(ev.Start).Seconds()), secs(ev.Recovered.Sub(ev.Healed).Seconds()), mdEscape(detail))
		}
		if len(r.Findings) > 0 {
			w("\nFindings:\n\n")
			for _, f := range r.Findings {
				w("- %s\n", mdEscape(f))
			}
		}
		if len(r.Notes) > 0 {
			w("\nNotes (these fail nothing):\n\n")
			for _, n := range r.Notes {
				w("- %s\n", mdEscape(n))
			}
		}
		if len(r.Errors) > 0 {
			w("\nWriter errors seen: %s\n", errorSummary(r.Errors))
		}
	}
	w("\nChecks: **lost** — an acknowledged row missing, or holding a value no write gave it, at the home or a mirror; **extra** — a row no write (acknowledged or maybe) explains, e.g. one back after an acknowledged delete; **leaked** — a row of a tenant in a region that is neither its home nor its mirror (hooli's rows must never leave its region); **RLS** — every mirror table must have row-level security enabled and forced with the tenant policy, and a session as a plain role (`SET ROLE chaos_reader`, SELECT only) with `app.tenant_id` set to each tenant in turn, or unset, must see no row of another tenant; **PII** — a PII column on a table that exists in its region only as a mirror table, or a PII value (each carries a marker) in any column of a mirrored tenant's row; **home columns** — every tenant table at its home must keep its PII column (the home's data is the tenant's); **orphan slots** — a replication slot at a home that no mirror's subscription uses, or a subscription no tenant explains (polled for 30 s, as teardown is asynchronous); **missing** — a mirror without its subscription, or a subscription without its slot; **backups** (when the run takes them; scheduled ones are off) — while the faults run, a backup of each region in turn (full, then incremental) and a restore drill of each verified one; after healing one more of each per region must pass; every one asked for must end (a run a fault interrupted ends failed or is retried, never hangs); a backup recorded verified must pass the checker's own `pgbackrest verify` (with the agent's configuration, as PostgreSQL's user) while the repository holds it; a drill recorded passed is recomputed: the checker restores the same backup to the same named restore point, starts it and reads every recorded table, whose row counts and checksums must equal the recorded ones. The lag is from a probe row's commit at the home until every mirror of the tenant shows it. **region-loss** (its own run): us-east, home of two tenants with the automatic failover policy (their mirrors passed a drill first) and mirror of a third, loses its PostgreSQL and its agent (SIGKILL) while writers write each tenant at the home the API names at that moment; the policy must fail both over within 90 s; then us-east comes back (PostgreSQL first, then the agent). A prober writes each failed-over tenant at us-east and at its new home every 250 ms (in a transaction it rolls back): once the failover committed, both may never accept in one pass. Every acknowledged write must be at the tenant's current home, except writes the lost home acknowledged, which may be missing only if its quarantine (`atomfed_quarantine.divergent_rows`) holds that very row as `missing_at_new_home`; no row's PII value may be outside the region it was written in; every mirror of the new placement (the old home among them) must hold exactly its home's rows.\n")
}

// dataPlaneNote is the method of the data-plane runs.
const dataPlaneNote = "Data plane: 3 servers as in the control-plane runs, and per region a throwaway PostgreSQL 15 cluster (internal/pglocal: wal_level logical, the replication role's password in a passfile the server reads) and one `atomfed agent` with POSTGRES_DSN and --replication-interval 1s. Nemeses: kill -9 of a region's PostgreSQL (postmaster and every backend at once, so it runs crash recovery on restart; every region is a home and a mirror), kill -9 of a region's agent, kill -9 of the leader server, and mixes of two; each restarted after its hold. Writers keep writing to the homes throughout, one statement at a time per tenant, reconnecting after each failure: a connection refused before anything was sent is a write that did not happen, any other error a maybe. PostgreSQL runs with fsync off (throwaway clusters): a kill -9 of the process loses nothing, a crash of the machine would."

var methodNotes = []string{
	"Real `atomfed server` and `atomfed agent` processes from the built binary. Each node binds its own loopback address (127.b.0.x) and advertises a userspace proxy (127.b.1.x) for Raft, Serf (TCP and UDP) and HTTP; nodes bind their outgoing connections to their own address, so the proxy knows the sender and applies faults per directed link: pass, delay with jitter, drop (fast reset) or blackhole (held until healed). Clients reach every server through its proxy too. Inter-region latency is a standing delay on the links between continents (no netem on this kernel).",
	"Security as by default: HTTPS with a throwaway federation CA (server certificates name the proxy addresses), mutual TLS on Raft and on the forwarding RPC that shares its port, encrypted gossip, the bootstrap bearer token on every request, and the workload's region registered with a request signed by the region's key. Followers answer linearizable reads themselves after a read index from the leader (or hand them to the leader when they have not applied it within 5 ms); writes reach the leader over the forwarding RPC.",
	"Nemeses: kill -9 and restart (any server, or the leader), SIGSTOP/SIGCONT pause (any, or the leader), partitions of a minority, of the leader alone, and asymmetric (one direction cut), latency on every server link, rolling restart (SIGTERM = graceful leave, restart, wait until whole), member replacement (kill, remove from the Raft configuration, wipe, start blank without --bootstrap-expect), and disk full (a 64 MiB tmpfs data dir filled to ENOSPC, then freed). Killing a region's PostgreSQL is the data-plane run's (below).",
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

func lagTimeouts(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(", %d over 30 s", n)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
