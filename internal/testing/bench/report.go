package bench

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/internal/testing/machine"
)

// Disk describes the file system the servers' data directories are on,
// and how long an fsync of a small append takes there (p50 of 50), which
// bounds a single write's commit latency.
func Disk(dir string) string {
	fsType := "unknown file system"
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil {
		fsType = fsName(int64(st.Type))
	}
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return fsType
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var ds []time.Duration
	for i := 0; i < 50; i++ {
		if _, err := f.Write(buf); err != nil {
			return fsType
		}
		t0 := time.Now()
		if err := f.Sync(); err != nil {
			return fsType
		}
		ds = append(ds, time.Since(t0))
	}
	return fmt.Sprintf("%s, fsync of a 4 KiB append: p50 %s", fsType, fmtDur(Median(ds)))
}

func fsName(magic int64) string {
	switch magic {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs (fsync is free: the figures overstate a disk)"
	case 0x794C7630:
		return "overlayfs"
	}
	return fmt.Sprintf("file system 0x%x", magic)
}

// Row is a measured load step with what it measured.
type Row struct {
	Op          string // "upsert", "read"
	Consistency string // reads: "linearizable (default)" or "stale"
	Target      string // "leader" or "all 3 (round-robin)"
	Result
}

// Report is a benchmark run.
type Report struct {
	Date          time.Time
	Machine       machine.Facts
	Version       string // git describe of the source tree
	BinaryVersion string // what the servers report in /health
	Command       string
	Settings      []string // one line each
	Writes, Reads []Row
	Failover      []FailoverRound
	FailoverErr   error
	// FailoverTarget is the median kill-to-ack time the issue asks for.
	FailoverTarget time.Duration
	LoadAvgEnd     string
	Scale          *ScaleResult
	ScaleErr       error
	Replication    *ReplicationResult
	ReplicationErr error
	// Security compares default flags (SecureName) with
	// --insecure-plaintext (PlaintextName).
	Security    *CompareResult
	SecurityErr error
	// Blocking is /health under many held blocking queries.
	Blocking    *BlockingResult
	BlockingErr error
	Notes       []string
}

// BlockingHealthTarget is the p99 of GET /health under 5,000 blocking
// queries that the threat model asks for.
const BlockingHealthTarget = 100 * time.Millisecond

// The system names of Report.Security.
const (
	SecureName    = "default security"
	PlaintextName = "--insecure-plaintext"
)

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# atomfed benchmark\n\n")
	p("- Date: %s\n", r.Date.UTC().Format("2006-01-02 15:04:05 MST"))
	p("- Machine: %s, %d cores, %s RAM, Linux %s\n", r.Machine.CPU, r.Machine.Cores, r.Machine.RAM, r.Machine.Kernel)
	if r.Machine.Disk != "" {
		p("- Data directories: %s\n", r.Machine.Disk)
	}
	p("- Load average (1/5/15 min) at start: %s; at end: %s\n", r.Machine.LoadAvg, r.LoadAvgEnd)
	p("- Go: %s\n", r.Machine.Go)
	p("- atomfed: %s (git describe); the servers report version %s\n", r.Version, r.BinaryVersion)
	p("- Command: `%s`\n", r.Command)
	for _, s := range r.Settings {
		p("- %s\n", s)
	}
	if len(r.Writes) > 0 {
		p("\n## Tenant upserts (PUT /v1/tenants/{id})\n\n")
		p("| target | concurrency | ops/s | p50 | p99 | max | ok | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range r.Writes {
			p("| %s | %d | %.0f | %s | %s | %s | %d | %d |\n", w.Target, w.Concurrency, w.Throughput, fmtDur(w.P50), fmtDur(w.P99), fmtDur(w.Max), w.OK, w.Errors)
		}
		r.errorNotes(&b, r.Writes)
	}
	if len(r.Reads) > 0 {
		p("\n## Tenant reads (GET /v1/tenants/{id})\n\n")
		p("| consistency | target | concurrency | ops/s | p50 | p99 | max | ok | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, w := range r.Reads {
			p("| %s | %s | %d | %.0f | %s | %s | %s | %d | %d |\n", w.Consistency, w.Target, w.Concurrency, w.Throughput, fmtDur(w.P50), fmtDur(w.P99), fmtDur(w.Max), w.OK, w.Errors)
		}
		r.errorNotes(&b, r.Reads)
	}
	if len(r.Failover) > 0 || r.FailoverErr != nil {
		r.failoverMarkdown(&b)
	}
	if r.Security != nil || r.SecurityErr != nil {
		r.securityMarkdown(&b)
	}
	if r.Blocking != nil || r.BlockingErr != nil {
		r.blockingMarkdown(&b)
	}
	if r.Replication != nil || r.ReplicationErr != nil {
		r.replicationMarkdown(&b)
	}
	if r.Scale != nil || r.ScaleErr != nil {
		r.scaleMarkdown(&b)
	}
	if len(r.Notes) > 0 {
		p("\n## Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
	return b.String()
}

func (r *Report) errorNotes(b *strings.Builder, rows []Row) {
	for _, w := range rows {
		if w.FirstError != "" {
			fmt.Fprintf(b, "\nFirst error of %s via %s at concurrency %d: `%s`\n", w.Op, w.Target, w.Concurrency, oneLine(w.FirstError))
		}
	}
}

func (r *Report) failoverMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## Failover: kill -9 of the leader under a steady writer\n\n")
	p("| round | killed leader | new leader | kill → first acknowledged write | acked before / after kill | read back | writer attempts (failed) | restarted node caught up after |\n")
	p("|---:|---|---|---:|---:|---:|---:|---:|\n")
	var times []time.Duration
	for _, f := range r.Failover {
		times = append(times, f.KillToAck)
		p("| %d | %s | %s | %s | %d / %d | %d | %d (%d) | %s |\n", f.Round, f.Killed, f.NewLeader, fmtDur(f.KillToAck),
			f.Before, f.After, f.Verified, f.Attempts, f.Failures, fmtDur(f.Rejoin))
	}
	if len(times) > 0 {
		max := times[0]
		for _, t := range times {
			if t > max {
				max = t
			}
		}
		med := Median(times)
		verdict := "met"
		if med >= r.FailoverTarget {
			verdict = "NOT met"
		}
		p("\nMedian kill → first acknowledged write: **%s**, max %s over %d rounds (target: median < %s with default flags: %s).\n",
			fmtDur(med), fmtDur(max), len(times), r.FailoverTarget, verdict)
	}
	if r.FailoverErr != nil {
		p("\n**Failover run failed:** `%s`\n", oneLine(r.FailoverErr.Error()))
	} else if len(r.Failover) > 0 {
		p("No acknowledged write was lost: every write acknowledged before and after each kill read back linearizably from the new leader.\n")
	}
}

func (r *Report) scaleMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## Agent scale: membership, failure detection and cost\n\n")
	if r.ScaleErr != nil {
		p("**Scale run failed:** `%s`\n", oneLine(r.ScaleErr.Error()))
		return
	}
	s := r.Scale
	p("%d servers and %d agents across %d regions, all in one process on loopback, with the production (LAN) gossip and Raft settings "+
		"and agent heartbeats every %s.\n\n", s.Servers, s.Agents, s.Regions, agent.DefaultHeartbeatInterval)
	p("| measure | value |\n|---|---:|\n")
	p("| first agent started → leader's registry shows all %d alive | %s |\n", s.Agents, fmtDur(s.AllAlive))
	p("| first agent started → every region's probe running | %s |\n", fmtDur(s.ProbesRunning))
	p("| agent crashed → committed as failed on the leader | %s |\n", fmtDur(s.DetectFailed))
	if s.TaskMoved > 0 {
		p("| agent crashed → its probe running on a peer | %s |\n", fmtDur(s.TaskMoved))
	}
	p("| process CPU in steady state (3 servers + %d agents) | %.2f cores |\n", s.Agents, s.CPUCores)
	p("| process RSS / Go heap in use | %.0f MiB / %.0f MiB |\n", s.RSSMiB, s.HeapMiB)
	p("| goroutines | %d |\n", s.Goroutines)
	p("| raft commits per second in steady state (heartbeats and reports) | %.1f |\n", s.CommitsPerSec)
	p("\nThe CPU and memory figures are for the whole process, so they bound the leader's own cost from above.\n")
}

func (r *Report) securityMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## What the default security costs\n\n")
	if r.SecurityErr != nil {
		p("**Security comparison failed:** `%s`\n\n", oneLine(r.SecurityErr.Error()))
	}
	x := r.Security
	if x == nil || len(x.Rows) == 0 {
		return
	}
	runs := len(x.Rows[0].Runs[SecureName])
	p("The same load on two fresh 3-server clusters, one with default flags (HTTPS to the API, mutual TLS on the Raft transport and the forwarding RPC, "+
		"encrypted gossip) and one with `--insecure-plaintext` (plain HTTP and TCP, gossip unencrypted); "+
		"both check the bearer token on every request. Requests round-robin over the 3 servers; the setups alternate, %d runs each; "+
		"the table shows the median run's throughput and the medians of p50 and p99. Server CPU per operation is the three server processes' CPU time "+
		"in the measured window over the successful operations.\n\n", runs)
	p("| operation | clients | default ops/s | p50 / p99 | plaintext ops/s | p50 / p99 | throughput default/plaintext | server CPU per op default / plaintext |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range x.Rows {
		s, pl := row.Median[SecureName], row.Median[PlaintextName]
		cs, _ := row.MedianCPU(SecureName)
		cp, _ := row.MedianCPU(PlaintextName)
		ratio, cpu := "n/a", "n/a"
		if pl.Throughput > 0 && s.Throughput > 0 {
			ratio = fmt.Sprintf("**%.2f**", s.Throughput/pl.Throughput)
			cpu = fmt.Sprintf("%.0fµs / %.0fµs", cs*1e6/s.Throughput, cp*1e6/pl.Throughput)
		}
		p("| %s | %d | %.0f | %s / %s | %.0f | %s / %s | %s | %s |\n", row.Step.Name, row.Step.Concurrency,
			s.Throughput, fmtDur(s.P50), fmtDur(s.P99), pl.Throughput, fmtDur(pl.P50), fmtDur(pl.P99), ratio, cpu)
	}
	if e := x.Elections; e[SecureName]+e[PlaintextName] > 0 {
		p("\nLeader elections during the load steps: default %d, plaintext %d.\n", e[SecureName], e[PlaintextName])
	}
}

func (r *Report) blockingMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## GET /health under held blocking queries\n\n")
	if r.BlockingErr != nil {
		p("**Blocking-query run failed:** `%s`\n\n", oneLine(r.BlockingErr.Error()))
	}
	x := r.Blocking
	if x == nil || len(x.Rounds) == 0 {
		return
	}
	writer := "no writer"
	if x.WriteEvery > 0 {
		writer = fmt.Sprintf("a tenant write every %s meanwhile (none of the held queries watches the tenants)", x.WriteEvery)
	}
	p("A fresh 3-server cluster with default flags (TLS, default caps on blocking queries). %d blocking queries "+
		"(`GET /v1/agents/{node}/tasks?index=1&wait=10m`, each on its own HTTPS connection, spread over %d reader tokens) are held open on the leader, "+
		"then %d `GET /health` are sent to it one at a time over one keep-alive connection, with %s. "+
		"%d rounds, each with fresh watchers; the last row is the median of the rounds.\n\n",
		x.Watchers, x.Tokens, x.HealthRequests, writer, len(x.Rounds))
	p("| round | held | p50 | p99 | max | ok | errors | writes | watchers woken |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, rd := range x.Rounds {
		p("| %d | %d | %s | %s | %s | %d | %d | %d | %d |\n", i+1, rd.Held, fmtDur(rd.P50), fmtDur(rd.P99), fmtDur(rd.Max), rd.OK, rd.Errors, rd.Writes, rd.WatcherAnswers)
	}
	p50, p99, mx := x.Medians()
	verdict := "meets"
	if p99 >= BlockingHealthTarget {
		verdict = "**misses**"
	}
	p("| **median** | | **%s** | **%s** | %s | | | | |\n\n", fmtDur(p50), fmtDur(p99), fmtDur(mx))
	p("The median p99 %s the target of %s.\n", verdict, BlockingHealthTarget)
}

func (r *Report) replicationMarkdown(b *strings.Builder) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("\n## Tenant replication: lag on PostgreSQL logical replication\n\n")
	if r.ReplicationErr != nil {
		p("**Replication run failed or was skipped:** `%s`\n", oneLine(r.ReplicationErr.Error()))
		return
	}
	x := r.Replication
	p("Two PostgreSQL %s clusters on this machine (fsync on), a home and a mirror region, each with an `atomfed agent` process "+
		"(default flags: 5 s replication interval) joined to the servers above. A single client inserts rows of tenant `%s` "+
		"(a 200-byte payload and a PII column) at the home at %d rows/s for %s, %d times per setup, alternating. "+
		"Lag is the time from sending an insert at the home to the row being visible on the mirror "+
		"(an apply-side trigger on the mirror notifies a listener there).\n\n",
		x.PG, benchTenant, x.Rate, x.Duration, x.Rounds)
	p("| setup | set up in | rows sent / seen | insert rate | lag p50 | lag p99 | lag max |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range []struct {
		name string
		s    LagStats
	}{
		{"atomfed: `PUT /v1/tenants/bench` (row filter, column list without PII, RLS on the mirror)", x.Controller},
		{"by hand with psql: the same publication and subscription", x.Manual},
	} {
		p("| %s | %s | %d / %d | %.0f/s | %s | %s | %s |\n", row.name, fmtDur(row.s.Setup), row.s.Sent, row.s.Seen, row.s.Rate,
			fmtDur(row.s.P50), fmtDur(row.s.P99), fmtDur(row.s.Max))
	}
	ratio := func(a, b time.Duration) string {
		if b <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", float64(a)/float64(b))
	}
	p("\nController overhead ratio (atomfed / by hand): lag p50 **%s**, lag p99 **%s**. "+
		"The data path is PostgreSQL's in both, with the same row filter and column list; what atomfed adds at run time is its agents' probes "+
		"(a few catalog and statistics queries per interval on each side; the mirror's row-level security does not apply to the apply worker). Setting up takes longer with atomfed because the tenant goes through Raft, "+
		"the scheduler and the agents' task watch, and the mirror's agent validates the spec against the home before it creates anything.\n",
		ratio(x.Controller.P50, x.Manual.P50), ratio(x.Controller.P99, x.Manual.P99))
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "`", "'")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}
