package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// RunConfig shapes one chaos run: a fresh cluster, clients, faults for
// Duration, healing, and the checks.
type RunConfig struct {
	Name string
	// Seed drives every choice of the run: nemeses, targets, hold times,
	// the clients' operations and the network's jitter.
	Seed uint64
	// Bin is the atomfed binary; Dir receives data dirs, logs and the
	// visualisations of failed checks.
	Bin, Dir string
	// Servers (3 or 5) and Agents.
	Servers, Agents int
	// WAN places the servers on continents (each its own for 3 servers;
	// 2+2+1 for 5) with InterContinent on every link between them, and
	// runs them with --raft-multiplier wanMultiplier as docs/operations.md
	// asks for round trips up to 90 ms.
	WAN            bool
	InterContinent Fault
	// Duration is the length of the fault phase; Warmup runs the clients
	// before the first fault.
	Duration, Warmup time.Duration
	// Nemeses are the fault types to choose from (default: all); Schedule,
	// when set, runs these events in order instead ("a+b" mixes two).
	// MixPct is the chance that a random event mixes a network fault with
	// a process fault.
	Nemeses  []string
	Schedule []string
	MixPct   int
	// Each fault is held for HoldMin..HoldMax; after recovery the clients
	// run undisturbed for QuietMin..QuietMax.
	HoldMin, HoldMax, QuietMin, QuietMax time.Duration
	// Latency nemesis range (one-way, added to every server link).
	LatencyMin, LatencyMax time.Duration
	Workload               WorkloadConfig
	// CheckTimeout bounds porcupine; MinOpsPerSec is the throughput a run
	// needs before its first fault to count.
	CheckTimeout time.Duration
	MinOpsPerSec float64
	// Env is added to the servers' environment.
	Env  []string
	Logf func(format string, args ...any)
}

func (c *RunConfig) defaults() {
	if c.Servers == 0 {
		c.Servers = 3
	}
	if c.Warmup == 0 {
		c.Warmup = 4 * time.Second
	}
	if len(c.Nemeses) == 0 {
		c.Nemeses = Nemeses
	}
	if c.HoldMax == 0 {
		c.HoldMin, c.HoldMax = 1500*time.Millisecond, 5*time.Second
	}
	if c.QuietMax == 0 {
		c.QuietMin, c.QuietMax = time.Second, 3*time.Second
	}
	if c.LatencyMax == 0 {
		c.LatencyMin, c.LatencyMax = 5*time.Millisecond, 40*time.Millisecond
	}
	if c.InterContinent == (Fault{}) {
		c.InterContinent = Fault{Delay: 38 * time.Millisecond, Jitter: 4 * time.Millisecond}
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 5 * time.Minute
	}
	if c.MinOpsPerSec == 0 {
		c.MinOpsPerSec = 100
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.Workload.Timeout == 0 && c.WAN {
		c.Workload.Timeout = 6 * time.Second
	}
}

// Setup describes the run's cluster in words.
func (c *RunConfig) Setup() string {
	s := fmt.Sprintf("%d servers, %d agents, loopback", c.Servers, c.Agents)
	if c.WAN {
		rtt := 2 * (c.InterContinent.Delay + c.InterContinent.Jitter/2)
		s = fmt.Sprintf("%d servers, %d agents, %s RTT between continents (%s±%s one-way), --raft-multiplier %d",
			c.Servers, c.Agents, rtt.Round(time.Millisecond), c.InterContinent.Delay+c.InterContinent.Jitter/2, c.InterContinent.Jitter/2, wanMultiplier)
	}
	return s
}

// wanMultiplier is the --raft-multiplier of the WAN runs: 150 ms x 3 is
// more than 5 times their 80 ms round trips.
const wanMultiplier = 3

// RunResult is what a run measured and found.
type RunResult struct {
	Name    string    `json:"name"`
	Setup   string    `json:"setup"`
	Seed    uint64    `json:"seed"`
	Servers int       `json:"servers"`
	WAN     bool      `json:"wan"`
	Started time.Time `json:"started"`
	// ElapsedS is the whole run; FaultPhaseS the part with faults.
	ElapsedS    float64 `json:"elapsed_s"`
	FaultPhaseS float64 `json:"fault_phase_s"`

	// Ops counts the operations in the checked history (reads with an
	// answer, writes acknowledged, refused by cas or of unknown outcome).
	Ops               int            `json:"ops"`
	OpsStarted        int64          `json:"ops_started"`
	SkippedWorkers    int64          `json:"ops_skipped_workers_busy"`
	SkippedKeys       int64          `json:"ops_skipped_keys_busy"`
	Acked             int64          `json:"writes_acked"`
	Failed            int64          `json:"writes_failed"`
	Unknown           int64          `json:"writes_unknown"`
	Conflicts         int64          `json:"cas_conflicts"`
	ReadsUnanswered   int64          `json:"reads_unanswered"`
	OpsPerSecBefore   float64        `json:"ops_per_s_before_first_fault"`
	Errors            map[string]int `json:"client_errors"`
	Events            []Event        `json:"events"`
	Verdicts          []KeyVerdict   `json:"verdicts"`
	Violations        int            `json:"violations"`
	UnknownVerdicts   int            `json:"unknown_verdicts"`
	DurableAcked      int            `json:"durable_acked"`
	DurableUnknown    int            `json:"durable_unknown"`
	Lost              []string       `json:"lost_writes"`
	Phantom           []string       `json:"phantom_writes"`
	AuditHeadsEqual   bool           `json:"audit_heads_equal"`
	AuditHead         string         `json:"audit_head"`
	AuditIndex        uint64         `json:"audit_index"`
	FinalWriteOK      bool           `json:"final_write_ok"`
	NoDiskFull        string         `json:"no_disk_full,omitempty"`
	KeysUsed          int            `json:"register_keys_used"`
	Failures          []string       `json:"failures"`
	Dir               string         `json:"dir"`
	CheckS            float64        `json:"check_s"`
	NemesesConsidered []string       `json:"nemeses_considered"`
}

// Passed reports whether every check held.
func (r *RunResult) Passed() bool { return len(r.Failures) == 0 }

func (r *RunResult) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// Run runs one chaos run. It returns an error only when the run could not
// be carried out (the cluster did not start); everything the checks find
// is in the result's Failures.
func Run(ctx context.Context, cfg RunConfig) (*RunResult, error) {
	cfg.defaults()
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x63686173))
	res := &RunResult{Name: cfg.Name, Setup: cfg.Setup(), Seed: cfg.Seed, Servers: cfg.Servers, WAN: cfg.WAN,
		Started: time.Now(), Dir: cfg.Dir, NemesesConsidered: cfg.Nemeses}
	cfg.Logf("chaos run %q: seed %d, %s, faults for %s", cfg.Name, cfg.Seed, res.Setup, cfg.Duration)

	cc := ClusterConfig{
		Bin: cfg.Bin, Dir: cfg.Dir, Servers: cfg.Servers, Agents: cfg.Agents, RaftMultiplier: 1,
		TmpfsNode: -1, TmpfsSize: 64 << 20, Env: cfg.Env, Seed: rng.Uint64(), Logf: cfg.Logf,
	}
	if cfg.WAN {
		cc.RaftMultiplier = wanMultiplier
		cc.InterContinent = cfg.InterContinent
		cc.Continents = []int{0, 1, 2}
		if cfg.Servers == 5 {
			cc.Continents = []int{0, 0, 1, 1, 2}
		}
	}
	if slices.Contains(cfg.Nemeses, "disk-full") || scheduleHas(cfg.Schedule, "disk-full") {
		cc.TmpfsNode = rng.IntN(cfg.Servers)
	}
	c, err := StartCluster(cc)
	if err != nil {
		if c != nil {
			logTails(cfg.Logf, c)
		}
		return res, fmt.Errorf("start cluster: %w", err)
	}
	defer c.Close()
	res.NoDiskFull = c.NoTmpfs
	nemeses := cfg.Nemeses
	if c.TmpfsNode() == nil {
		nemeses = without(nemeses, "disk-full")
	}
	if err := registerRegion(ctx, c, cfg.Workload.regionOrDefault()); err != nil {
		return res, err
	}

	wcfg := cfg.Workload
	wcfg.Seed, wcfg.ClientIP = rng.Uint64(), ipOf(c.Block, subnetClient, 1)
	wcfg.Token, wcfg.TLS = procs.Token, c.Sec.TLSConfig()
	w, err := NewWorkload(wcfg, names(c.Nodes), c.ProxyURLs())
	if err != nil {
		return res, err
	}
	wctx, stopClients := context.WithCancel(ctx)
	clientsDone := make(chan struct{})
	clientsStart := time.Now()
	go func() {
		defer close(clientsDone)
		w.Run(wctx)
	}()
	defer func() { stopClients(); <-clientsDone }()

	_ = waitCtx(ctx, cfg.Warmup)
	r := &runner{c: c, rng: rng, logf: cfg.Logf, latMin: cfg.LatencyMin, latMax: cfg.LatencyMax}
	faultStart := time.Now()
	measureFrom := clientsStart.Add(time.Second)
	res.OpsPerSecBefore = float64(w.AnsweredBetween(measureFrom, faultStart)) / faultStart.Sub(measureFrom).Seconds()
	cfg.Logf("%.0f ops/s before the first fault", res.OpsPerSecBefore)

	runFaults(ctx, cfg, r, nemeses, res)
	res.FaultPhaseS = time.Since(faultStart).Seconds()

	r.heal()
	if err := c.WaitHealthy(ctx, 90*time.Second); err != nil {
		res.fail("cluster not whole after the last fault was healed: %v", err)
	}
	_ = waitCtx(ctx, 2*time.Second) // clients run on the healed cluster
	stopClients()
	<-clientsDone

	cfg.Logf("faults over; final writes, durability and audit heads")
	finalChecks(ctx, c, w, res)
	acks := w.Acks()
	for i := range res.Events {
		ev := &res.Events[i]
		end := ev.Recovered
		if end.IsZero() {
			end = ev.Healed
		}
		ev.Window = availabilityWindow(acks, ev.Start, end)
		ev.WindowS = ev.Window.Seconds()
	}
	res.OpsStarted, res.SkippedWorkers, res.SkippedKeys = w.Started.Load(), w.SkippedWorkers.Load(), w.SkippedKeys.Load()
	res.Acked, res.Failed, res.Unknown = w.Acked.Load(), w.Failed.Load(), w.Unknown.Load()
	res.Conflicts, res.ReadsUnanswered = w.Conflict.Load(), w.Dropped.Load()
	res.Errors = w.Errors()
	res.KeysUsed = w.KeysUsed()
	for desc, n := range res.Errors {
		if strings.HasPrefix(desc, "HTTP 500") {
			// Every failure the API can meet has a documented status; a
			// 500 is an unmapped error.
			res.fail("servers answered %d requests with %s", n, desc)
		}
	}

	checkStart := time.Now()
	ops := w.Hist.Operations()
	res.Ops = len(ops)
	if err := saveHistory(filepath.Join(cfg.Dir, "history.json"), ops); err != nil {
		cfg.Logf("save history: %v", err)
	}
	cfg.Logf("checking %d operations (%d writes of unknown outcome) with porcupine", len(ops), res.Unknown)
	res.Verdicts = CheckLinearizable(ops, cfg.CheckTimeout, filepath.Join(cfg.Dir, "html"))
	res.CheckS = time.Since(checkStart).Seconds()
	cfg.Logf("porcupine done in %.1fs", res.CheckS)
	for _, v := range res.Verdicts {
		switch v.Result {
		case porcupine.Illegal:
			res.Violations++
			res.fail("key %s: history is not linearizable (%d ops, %d of unknown outcome); see %s", v.Key, v.Ops, v.Unknown, v.HTML)
		case porcupine.Unknown:
			res.UnknownVerdicts++
			res.fail("key %s: porcupine gave no verdict within %s (%d ops, %d of unknown outcome); see %s", v.Key, cfg.CheckTimeout, v.Ops, v.Unknown, v.HTML)
		}
	}
	if res.OpsPerSecBefore < cfg.MinOpsPerSec {
		res.fail("invalid run: %.0f ops/s before the first fault, below %.0f", res.OpsPerSecBefore, cfg.MinOpsPerSec)
	}
	res.ElapsedS = time.Since(res.Started).Seconds()
	if !res.Passed() {
		logTails(cfg.Logf, c)
	}
	return res, nil
}

// runFaults injects faults until the fault phase is over (or the schedule
// is done), waiting for recovery after each.
func runFaults(ctx context.Context, cfg RunConfig, r *runner, nemeses []string, res *RunResult) {
	deadline := time.Now().Add(cfg.Duration)
	for i := 0; ctx.Err() == nil; i++ {
		var name string
		if cfg.Schedule != nil {
			if i >= len(cfg.Schedule) {
				return
			}
			name = cfg.Schedule[i]
		} else {
			if time.Now().After(deadline) {
				return
			}
			name = r.chooseNemesis(nemeses, cfg.MixPct)
		}
		if scheduleHas([]string{name}, "disk-full") && r.c.TmpfsNode() == nil {
			cfg.Logf("skipping %s: no tmpfs data dir (%s)", name, r.c.NoTmpfs)
			continue
		}
		hold := cfg.HoldMin + time.Duration(r.rng.Int64N(int64(cfg.HoldMax-cfg.HoldMin)+1))
		quiet := cfg.QuietMin + time.Duration(r.rng.Int64N(int64(cfg.QuietMax-cfg.QuietMin)+1))
		ev := r.runEvent(ctx, name, hold)
		if ev.Err != "" {
			res.fail("nemesis %s: %s", name, ev.Err)
		}
		err := r.c.WaitHealthy(ctx, 90*time.Second)
		ev.Recovered = time.Now()
		cfg.Logf("%s %v %s: held %s, recovered %s after healing",
			ev.Type, ev.Targets, ev.Detail, ev.Healed.Sub(ev.Start).Round(time.Millisecond), ev.Recovered.Sub(ev.Healed).Round(time.Millisecond))
		if err != nil {
			ev.Err = strings.TrimSpace(ev.Err + " " + err.Error())
			res.Events = append(res.Events, ev)
			res.fail("cluster did not recover after %s: %v", name, err)
			return
		}
		res.Events = append(res.Events, ev)
		_ = waitCtx(ctx, quiet)
	}
}

// finalChecks runs the checks after healing: the final writes, durability
// of acknowledged writes, and equal audit heads on every server.
func finalChecks(ctx context.Context, c *Cluster, w *Workload, res *RunResult) {
	if err := w.FinalWrites(ctx, 60*time.Second); err != nil {
		res.fail("%v", err)
	} else {
		res.FinalWriteOK = true
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	found, err := w.Tenants(lctx)
	cancel()
	acked, _, unknown := w.Durable.Counts()
	res.DurableAcked, res.DurableUnknown = acked, unknown
	if err != nil {
		res.fail("list tenants after healing: %v", err)
	} else {
		res.Lost, res.Phantom = w.Durable.Check(found, func(k string) bool { return strings.HasPrefix(k, durablePrefix) })
		if len(res.Lost) > 0 {
			res.fail("%d acknowledged writes lost: %s", len(res.Lost), firstN(res.Lost, 10))
		}
		if len(res.Phantom) > 0 {
			res.fail("%d writes reported as failed (or never sent) are present: %s", len(res.Phantom), firstN(res.Phantom, 10))
		}
	}
	head, idx, err := auditHeads(ctx, c, 30*time.Second)
	if err != nil {
		res.fail("%v", err)
		return
	}
	res.AuditHeadsEqual, res.AuditHead, res.AuditIndex = true, head, idx
}

// auditHeads polls every server's audit head (a stale read of its own
// state) until all report the same index; then the heads must be equal.
func auditHeads(ctx context.Context, c *Cluster, timeout time.Duration) (string, uint64, error) {
	var head, last string
	var index uint64
	var diverged error
	err := testutil.PollEvery(ctx, timeout, 100*time.Millisecond, func() error {
		heads := map[string]*wire.AuditStatus{}
		var errs []error
		for _, n := range c.Nodes {
			actx, cancel := context.WithTimeout(ctx, 3*time.Second)
			a, err := n.Client.Audit(actx, &client.QueryOptions{Consistency: "stale"})
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.ID(), err))
				continue
			}
			heads[n.ID()] = a
		}
		if len(errs) > 0 {
			last = errors.Join(errs...).Error()
			return errors.New(last)
		}
		first := heads[c.Nodes[0].ID()]
		same := true
		var parts []string
		for _, n := range c.Nodes {
			a := heads[n.ID()]
			parts = append(parts, fmt.Sprintf("%s %d %.12s", n.ID(), a.Index, a.Head))
			if a.Index != first.Index {
				same = false
			}
		}
		last = strings.Join(parts, ", ")
		if !same {
			return errors.New(last)
		}
		for _, n := range c.Nodes {
			if heads[n.ID()].Head != first.Head {
				diverged = fmt.Errorf("audit heads differ at index %d: %s; %s", first.Index, last, divergence(c, heads))
				return testutil.Abort(diverged)
			}
		}
		head, index = first.Head, first.Index
		return nil
	})
	switch {
	case diverged != nil:
		return "", 0, diverged
	case err != nil:
		return "", 0, fmt.Errorf("audit heads did not meet within %s: %s", timeout, last)
	}
	return head, index, nil
}

// divergence names the first audit entry, within the servers' recent
// audit rings, where their chains part: its index and each server's
// command type there, so a failed run says which command to look at.
func divergence(c *Cluster, heads map[string]*wire.AuditStatus) string {
	type entry struct{ typ, hash string }
	byNode := map[string]map[uint64]entry{}
	var lo, hi uint64
	for i, n := range c.Nodes {
		a := heads[n.ID()]
		if len(a.Recent) == 0 {
			return "no recent audit entries to compare"
		}
		m := map[uint64]entry{}
		for _, e := range a.Recent {
			m[e.Index] = entry{e.Type, e.Hash}
		}
		byNode[n.ID()] = m
		first, lastIdx := a.Recent[0].Index, a.Recent[len(a.Recent)-1].Index
		if i == 0 || first > lo {
			lo = first
		}
		if i == 0 || lastIdx < hi {
			hi = lastIdx
		}
	}
	ref := byNode[c.Nodes[0].ID()]
	for idx := lo; idx <= hi; idx++ {
		r, rok := ref[idx]
		differ := false
		for _, n := range c.Nodes {
			e, ok := byNode[n.ID()][idx]
			differ = differ || ok != rok || (ok && e.hash != r.hash)
		}
		if !differ {
			continue
		}
		var parts []string
		for _, n := range c.Nodes {
			if e, ok := byNode[n.ID()][idx]; ok {
				parts = append(parts, fmt.Sprintf("%s %s %.12s", n.ID(), e.typ, e.hash))
			} else {
				parts = append(parts, n.ID()+" (nothing applied)")
			}
		}
		return fmt.Sprintf("first difference in the recent audit entries at index %d: %s", idx, strings.Join(parts, ", "))
	}
	return fmt.Sprintf("the chains already differ before index %d (the oldest entry every server still lists)", lo)
}

func registerRegion(ctx context.Context, c *Cluster, name string) error {
	err := testutil.PollContext(ctx, 30*time.Second, func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		l, err := c.Leader(rctx)
		if err != nil {
			return err
		}
		// A registration is signed with the region's own key.
		rc, err := c.Sec.SigningClient(l.URL, name)
		if err != nil {
			return err
		}
		_, err = rc.RegisterRegion(rctx, &fsm.Region{Name: name, URL: "https://" + name + ".example.com"}, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("register region %s: %w", name, err)
	}
	return nil
}

func (c WorkloadConfig) regionOrDefault() string {
	if c.Region == "" {
		return "us-east"
	}
	return c.Region
}

func logTails(logf func(string, ...any), c *Cluster) {
	for _, n := range c.Nodes {
		logf("log of %s (%s): %s\n%s", n.ID(), n.ExitStatus(), n.LogPath, n.LogTail(15))
	}
}

func scheduleHas(schedule []string, name string) bool {
	for _, s := range schedule {
		for _, p := range strings.Split(s, "+") {
			if p == name {
				return true
			}
		}
	}
	return false
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

func firstN(list []string, n int) string {
	if len(list) > n {
		return strings.Join(list[:n], ", ") + ", ..."
	}
	return strings.Join(list, ", ")
}

// removeData deletes the run's data dirs (keeping logs, the history and
// visualisations).
func removeData(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "logs" && e.Name() != "html" && e.Name() != "history.json" {
			_ = os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}
