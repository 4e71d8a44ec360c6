package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/machine"
)

// SuiteConfig shapes the long suite that `make chaos` runs.
type SuiteConfig struct {
	// Seed is the suite's seed: run i uses Seed+i, so one run can be
	// replayed alone with its own seed.
	Seed uint64
	// Duration is the total fault time, shared out over the runs.
	Duration time.Duration
	// Bin is the atomfed binary; Dir receives each run's data and logs.
	Bin, Dir string
	// Command is how the suite was invoked, for the report.
	Command string
	// Only, when set, runs just the run of that name from the plan
	// ("dataplane" for the data-plane run alone).
	Only string
	Logf func(format string, args ...any)
}

// Plan returns the suite's runs for seed and duration: 3 and 5 servers on
// loopback, then 3 and 5 servers with 80 ms round trips between
// continents, every nemesis, a quarter of the events mixing a network fault
// with a process fault.
func Plan(seed uint64, d time.Duration) []RunConfig {
	share := func(f float64) time.Duration {
		x := time.Duration(float64(d) * f).Round(time.Second)
		if x < 20*time.Second {
			x = 20 * time.Second
		}
		return x
	}
	runs := []RunConfig{
		{Name: "loopback-3", Servers: 3, Agents: 3, Duration: share(0.3)},
		{Name: "loopback-5", Servers: 5, Agents: 2, Duration: share(0.3)},
		{Name: "wan80-3", Servers: 3, Agents: 3, WAN: true, Duration: share(0.2)},
		{Name: "wan80-5", Servers: 5, Agents: 2, WAN: true, Duration: share(0.2)},
	}
	for i := range runs {
		runs[i].Seed = seed + uint64(i)
		runs[i].MixPct = 25
	}
	return runs
}

// DataPlanePlan returns the suite's data-plane run for seed and duration:
// three regions with their own PostgreSQL and agent, four tenants, faults
// for a fifth of the suite's fault time (at least 1 minute, at most 3),
// run after the four control-plane runs with seed+4; backups and restore
// drills run during the faults and are checked after healing.
func DataPlanePlan(seed uint64, d time.Duration) DataPlaneConfig {
	x := (d / 5).Round(time.Second)
	if x < time.Minute {
		x = time.Minute
	}
	if x > 3*time.Minute {
		x = 3 * time.Minute
	}
	return DataPlaneConfig{Name: "dataplane", Seed: seed + 4, Duration: x, MixPct: 25, Backups: true}
}

// Report is the outcome of a suite (or of a single run).
type Report struct {
	Date      time.Time     `json:"date"`
	Machine   machine.Facts `json:"machine"`
	Version   string        `json:"version"`
	Command   string        `json:"command"`
	Seed      uint64        `json:"seed"`
	DurationS float64       `json:"fault_duration_s"`
	ElapsedS  float64       `json:"elapsed_s"`
	Runs      []*RunResult  `json:"runs"`
	// DataPlane are the data-plane runs (DataPlaneResult).
	DataPlane []*DataPlaneResult `json:"data_plane,omitempty"`
	// Errors are runs that could not be carried out.
	Errors []string `json:"errors,omitempty"`

	Ops        int            `json:"ops"`
	Violations int            `json:"violations"`
	Unknown    int            `json:"unknown_verdicts"`
	Lost       int            `json:"lost_writes"`
	Phantom    int            `json:"phantom_writes"`
	Nemeses    map[string]int `json:"nemeses"`
	Windows    []WindowStat   `json:"availability_windows"`
	// Totals of the data-plane runs.
	DPLostRows   int  `json:"data_plane_lost_rows"`
	DPLeakedRows int  `json:"data_plane_leaked_rows"`
	DPRLSVisible int  `json:"data_plane_rls_rows_visible"`
	DPPIIFound   int  `json:"data_plane_pii_found"`
	DPOrphans    int  `json:"data_plane_orphan_slots"`
	Passed       bool `json:"passed"`
}

// WindowStat summarises the availability windows of one fault type on one
// kind of network.
type WindowStat struct {
	Type    string  `json:"type"`
	Network string  `json:"network"`
	Events  int     `json:"events"`
	P50     float64 `json:"p50_s"`
	P99     float64 `json:"p99_s"`
	Max     float64 `json:"max_s"`
	// BudgetS is the median the issue sets for leader loss (kill or pause
	// of the leader): 1 s on loopback, 2 s with 80 ms between continents;
	// 0 for other fault types.
	BudgetS   float64 `json:"budget_p50_s,omitempty"`
	BudgetMet bool    `json:"budget_met,omitempty"`
}

// leaderLossBudget returns the median availability window allowed for a
// fault type on a network, or 0.
func leaderLossBudget(typ, network string) float64 {
	if typ != "kill-leader" && typ != "pause-leader" {
		return 0
	}
	if network == "loopback" {
		return 1
	}
	return 2
}

// RunSuite runs the plan one run after the other on fresh clusters.
func RunSuite(ctx context.Context, sc SuiteConfig) *Report {
	rep := &Report{Date: time.Now().UTC(), Machine: machine.Detect(), Version: machine.GitDescribe(),
		Command: sc.Command, Seed: sc.Seed, DurationS: sc.Duration.Seconds()}
	logf := sc.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	start := time.Now()
	for _, rc := range Plan(sc.Seed, sc.Duration) {
		if ctx.Err() != nil {
			break
		}
		if sc.Only != "" && rc.Name != sc.Only {
			continue
		}
		rc.Bin, rc.Dir, rc.Logf = sc.Bin, filepath.Join(sc.Dir, rc.Name), logf
		if err := os.MkdirAll(rc.Dir, 0o755); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
			continue
		}
		res, err := Run(ctx, rc)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s (seed %d): %v", rc.Name, rc.Seed, err))
			logf("run %s could not be carried out: %v", rc.Name, err)
			continue
		}
		rep.Runs = append(rep.Runs, res)
		logf("run %s: %s", rc.Name, verdict(res))
		if res.Passed() {
			removeData(rc.Dir)
		}
	}
	if ctx.Err() == nil && (sc.Only == "" || sc.Only == "dataplane") {
		dc := DataPlanePlan(sc.Seed, sc.Duration)
		dc.Bin, dc.Dir, dc.Logf = sc.Bin, filepath.Join(sc.Dir, dc.Name), logf
		if err := os.MkdirAll(dc.Dir, 0o755); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		} else if res, err := RunDataPlane(ctx, dc); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s (seed %d): %v", dc.Name, dc.Seed, err))
			logf("run %s could not be carried out: %v", dc.Name, err)
		} else {
			rep.DataPlane = append(rep.DataPlane, res)
			logf("run %s: %s", dc.Name, dpVerdict(res))
			if res.Passed() {
				removeData(dc.Dir)
			}
		}
	}
	if ctx.Err() == nil && (sc.Only == "" || sc.Only == "region-loss") {
		lc := RegionLossPlan(sc.Seed)
		lc.Bin, lc.Dir, lc.Logf = sc.Bin, filepath.Join(sc.Dir, lc.Name), logf
		if err := os.MkdirAll(lc.Dir, 0o755); err != nil {
			rep.Errors = append(rep.Errors, err.Error())
		} else if res, err := RunRegionLoss(ctx, lc); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s (seed %d): %v", lc.Name, lc.Seed, err))
			logf("run %s could not be carried out: %v", lc.Name, err)
		} else {
			rep.DataPlane = append(rep.DataPlane, res)
			logf("run %s: %s", lc.Name, dpVerdict(res))
			if res.Passed() {
				removeData(lc.Dir)
			}
		}
	}
	rep.ElapsedS = time.Since(start).Seconds()
	rep.summarise()
	return rep
}

func dpVerdict(r *DataPlaneResult) string {
	if r.Passed() {
		return fmt.Sprintf("PASS (%d writes acked, %d events, converged in %s)", r.WritesAcked, len(r.Events), secs(r.ConvergenceS))
	}
	return fmt.Sprintf("FAIL: %v", r.Failures)
}

// NewDataPlaneReport wraps a single data-plane run in a report.
func NewDataPlaneReport(command string, r *DataPlaneResult) *Report {
	rep := &Report{Date: time.Now().UTC(), Machine: machine.Detect(), Version: machine.GitDescribe(),
		Command: command, Seed: r.Seed, DurationS: r.FaultPhaseS, ElapsedS: r.ElapsedS, DataPlane: []*DataPlaneResult{r}}
	rep.summarise()
	return rep
}

func verdict(r *RunResult) string {
	if r.Passed() {
		return fmt.Sprintf("PASS (%d ops, %d events)", r.Ops, len(r.Events))
	}
	return fmt.Sprintf("FAIL: %v", r.Failures)
}

// NewReport wraps a single run in a report.
func NewReport(command string, r *RunResult) *Report {
	rep := &Report{Date: time.Now().UTC(), Machine: machine.Detect(), Version: machine.GitDescribe(),
		Command: command, Seed: r.Seed, DurationS: r.FaultPhaseS, ElapsedS: r.ElapsedS, Runs: []*RunResult{r}}
	rep.summarise()
	return rep
}

// summarise totals the runs and computes the availability windows per
// fault type and network.
func (rep *Report) summarise() {
	rep.Nemeses = map[string]int{}
	windows := map[[2]string][]float64{}
	rep.Passed = len(rep.Errors) == 0 && len(rep.Runs)+len(rep.DataPlane) > 0
	rep.DPLostRows, rep.DPLeakedRows, rep.DPRLSVisible, rep.DPPIIFound, rep.DPOrphans = 0, 0, 0, 0, 0
	for _, r := range rep.DataPlane {
		rep.DPLostRows += r.LostRows
		rep.DPLeakedRows += r.LeakedRows
		rep.DPRLSVisible += r.RLSVisible
		rep.DPPIIFound += r.PIIFound
		rep.DPOrphans += r.OrphanSlots
		if !r.Passed() {
			rep.Passed = false
		}
		for _, ev := range r.Events {
			for _, p := range splitMix(ev.Type) {
				rep.Nemeses[p]++
			}
		}
	}
	for _, r := range rep.Runs {
		rep.Ops += r.Ops
		rep.Violations += r.Violations
		rep.Unknown += r.UnknownVerdicts
		rep.Lost += len(r.Lost)
		rep.Phantom += len(r.Phantom)
		if !r.Passed() {
			rep.Passed = false
		}
		network := "loopback"
		if r.WAN {
			network = "80 ms RTT"
		}
		for _, ev := range r.Events {
			for _, p := range splitMix(ev.Type) {
				rep.Nemeses[p]++
			}
			k := [2]string{ev.Type, network}
			if len(splitMix(ev.Type)) > 1 {
				k[0] = "mixed (network + process)"
			}
			windows[k] = append(windows[k], ev.WindowS)
		}
	}
	rep.Windows = nil
	for k, ws := range windows {
		sort.Float64s(ws)
		st := WindowStat{Type: k[0], Network: k[1], Events: len(ws),
			P50: percentile(ws, 50), P99: percentile(ws, 99), Max: ws[len(ws)-1], BudgetS: leaderLossBudget(k[0], k[1])}
		st.BudgetMet = st.BudgetS > 0 && st.P50 < st.BudgetS
		rep.Windows = append(rep.Windows, st)
	}
	order := map[string]int{}
	for i, n := range Nemeses {
		order[n] = i
	}
	sort.Slice(rep.Windows, func(i, j int) bool {
		a, b := rep.Windows[i], rep.Windows[j]
		if a.Network != b.Network {
			return a.Network == "loopback"
		}
		oa, oka := order[a.Type]
		ob, okb := order[b.Type]
		if oka != okb {
			return oka
		}
		if oa != ob {
			return oa < ob
		}
		return a.Type < b.Type
	})
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return sorted[rank]
}
