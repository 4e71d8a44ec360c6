package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// System is one side of a comparison: how to run each kind of step on it.
type System struct {
	Name string
	// Start brings the system up and returns the ops and a stop function.
	Start func(ctx context.Context) (*SystemRun, error)
}

// SystemRun is a running system.
type SystemRun struct {
	Write         Op
	Read          Op // linearizable
	StaleRead     Op // stale (atomfed) or serializable (etcd)
	Populate      func(ctx context.Context) error
	Stop          func()
	Failover      func(ctx context.Context, round int) (WindowRound, error)
	ProfileLeader func(ctx context.Context, seconds int) ([]byte, error) // nil: no profile
	// PIDs returns the system's server processes, for CPU accounting.
	PIDs func() []int
	// Term returns the system's raft term, to count elections under load.
	Term        func(ctx context.Context) (uint64, error)
	Description string
}

// WindowRound is one kill -9 of a leader under a steady writer.
type WindowRound struct {
	Round int
	// Window is the time from the last write acknowledged before the kill
	// to the first write acknowledged after it: how long clients saw no
	// progress. KillToAck is from the kill itself.
	Window, KillToAck time.Duration
	Acked             int
	Lost              int
}

// CompareStep is one load step of the comparison.
type CompareStep struct {
	Name        string // "put", "linearizable read", "stale read"
	Concurrency int
}

// CompareRow is a step's median result over the runs of each system.
type CompareRow struct {
	Step   CompareStep
	Runs   map[string][]Result
	Median map[string]Result
	// CPU is, per system and run, the CPU its servers used per second of
	// the measured window (in cores), and the load generator's.
	CPU       map[string][]float64
	ClientCPU map[string][]float64
}

// MedianCPU returns the median server and client CPU (cores) of a system.
func (r *CompareRow) MedianCPU(system string) (servers, client float64) {
	return medianFloat(r.CPU[system]), medianFloat(r.ClientCPU[system])
}

func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// CompareOptions shape a comparison.
type CompareOptions struct {
	Steps            []CompareStep
	Rounds           int // alternations: A B A B ... (rounds each)
	Warmup, Duration time.Duration
	FailoverRounds   int
	Logf             func(format string, a ...any)
}

// CompareResult is a whole comparison.
type CompareResult struct {
	Systems  []string
	Rows     []*CompareRow
	Failover map[string][]WindowRound
	Errors   map[string]string
	Profile  []byte
	Notes    []string
	// Redone counts, per system, failover rounds measured again because no
	// election followed the kill.
	Redone map[string]int
	// Elections counts, per system, the raft terms that passed during the
	// load steps (a leader election each): 0 means no flapping.
	Elections map[string]uint64
}

// Compare runs every step on each system in turn, Rounds times (A B A B
// ...), never two systems at once, then the failover rounds of each.
func Compare(ctx context.Context, systems []System, o CompareOptions) (*CompareResult, error) {
	res := &CompareResult{Failover: map[string][]WindowRound{}, Errors: map[string]string{}, Elections: map[string]uint64{}, Redone: map[string]int{}}
	rows := map[CompareStep]*CompareRow{}
	for _, st := range o.Steps {
		r := &CompareRow{Step: st, Runs: map[string][]Result{}, Median: map[string]Result{},
			CPU: map[string][]float64{}, ClientCPU: map[string][]float64{}}
		rows[st] = r
		res.Rows = append(res.Rows, r)
	}
	for _, s := range systems {
		res.Systems = append(res.Systems, s.Name)
	}
	for round := 1; round <= o.Rounds; round++ {
		for _, s := range systems {
			o.Logf("round %d: %s", round, s.Name)
			run, err := s.Start(ctx)
			if err != nil {
				return res, fmt.Errorf("start %s: %w", s.Name, err)
			}
			if err := run.Populate(ctx); err != nil {
				run.Stop()
				return res, fmt.Errorf("%s: populate: %w", s.Name, err)
			}
			var term0 uint64
			if run.Term != nil {
				if term0, err = run.Term(ctx); err != nil {
					o.Logf("%s: term: %v", s.Name, err)
				}
			}
			for _, st := range o.Steps {
				op := run.Write
				switch st.Name {
				case "linearizable read":
					op = run.Read
				case "stale read":
					op = run.StaleRead
				}
				cpu := make(chan [2]float64, 1)
				go func() {
					// Sample over the measured window only.
					time.Sleep(o.Warmup)
					var pids []int
					if run.PIDs != nil {
						pids = run.PIDs()
					}
					self := os.Getpid()
					s0, c0, t0 := CPUOf(pids), ProcCPU(self), time.Now()
					time.Sleep(o.Duration)
					el := time.Since(t0).Seconds()
					cpu <- [2]float64{(CPUOf(pids) - s0).Seconds() / el, (ProcCPU(self) - c0).Seconds() / el}
				}()
				r := Run(ctx, Step{Name: s.Name + " " + st.Name, Concurrency: st.Concurrency, Warmup: o.Warmup, Duration: o.Duration, Op: op})
				used := <-cpu
				o.Logf("%s; CPU: servers %.2f cores, load generator %.2f", r, used[0], used[1])
				rows[st].Runs[s.Name] = append(rows[st].Runs[s.Name], r)
				rows[st].CPU[s.Name] = append(rows[st].CPU[s.Name], used[0])
				rows[st].ClientCPU[s.Name] = append(rows[st].ClientCPU[s.Name], used[1])
				if ctx.Err() != nil {
					run.Stop()
					return res, ctx.Err()
				}
			}
			if run.Term != nil && term0 > 0 {
				if t, err := run.Term(ctx); err == nil {
					res.Elections[s.Name] += t - term0
				}
			}
			if round == 1 && run.ProfileLeader != nil {
				// The profile comes from an extra step that is not
				// counted: profiling costs the profiled server CPU.
				res.Profile = profileStep(ctx, o, run)
			}
			run.Stop()
		}
	}
	for _, r := range res.Rows {
		for name, runs := range r.Runs {
			r.Median[name] = medianResult(runs)
		}
	}
	for _, s := range systems {
		if o.FailoverRounds == 0 {
			break
		}
		run, err := s.Start(ctx)
		if err != nil {
			return res, err
		}
		redone := 0
		for i := 1; i <= o.FailoverRounds && ctx.Err() == nil; i++ {
			var term0 uint64
			if run.Term != nil {
				term0, _ = run.Term(ctx)
			}
			w, err := run.Failover(ctx, i)
			if err != nil {
				res.Errors[s.Name] = err.Error()
				o.Logf("%s failover round %d: %v", s.Name, i, err)
				break
			}
			o.Logf("%s failover round %d: window %s (kill -> ack %s), %d acked, %d lost", s.Name, i, w.Window.Round(time.Millisecond), w.KillToAck.Round(time.Millisecond), w.Acked, w.Lost)
			if run.Term != nil && term0 > 0 && redone < o.FailoverRounds {
				// No election means leadership had moved before the kill
				// landed: the round measured the loss of a follower.
				if t, err := run.Term(ctx); err == nil && t == term0 {
					o.Logf("%s failover round %d: no election followed the kill (the server killed was no longer the leader); measuring it again", s.Name, i)
					redone++
					res.Redone[s.Name]++
					i--
					continue
				}
			}
			res.Failover[s.Name] = append(res.Failover[s.Name], w)
		}
		run.Stop()
	}
	return res, nil
}

// medianResult returns the run with the median throughput, with p50 and p99
// replaced by the medians over the runs.
// profileStep runs puts at 64 clients once more and takes the leader's CPU
// profile over the measured window; the run itself is thrown away.
func profileStep(ctx context.Context, o CompareOptions, run *SystemRun) []byte {
	prof := make(chan []byte, 1)
	go func() {
		time.Sleep(o.Warmup + time.Second)
		secs := int((o.Duration - 2*time.Second) / time.Second)
		if secs < 2 {
			secs = 2
		}
		b, err := run.ProfileLeader(ctx, secs)
		if err != nil {
			o.Logf("profile: %v", err)
		}
		prof <- b
	}()
	r := Run(ctx, Step{Name: "profiled put (not counted)", Concurrency: 64, Warmup: o.Warmup, Duration: o.Duration, Op: run.Write})
	o.Logf("%s", r)
	return <-prof
}

func medianResult(runs []Result) Result {
	if len(runs) == 0 {
		return Result{}
	}
	sorted := append([]Result(nil), runs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Throughput < sorted[j].Throughput })
	m := sorted[len(sorted)/2]
	var p50, p99 []time.Duration
	for _, r := range runs {
		p50, p99 = append(p50, r.P50), append(p99, r.P99)
	}
	m.P50, m.P99 = Median(p50), Median(p99)
	return m
}

// FailoverRun measures one round on a system given its pieces: a steady
// writer over targets, the kill of the leader, the restart and the
// read-back of every acknowledged write.
func FailoverRun(ctx context.Context, round int, w *Writer, kill func() (restart func() error, killedAt time.Time, err error),
	verify func(ctx context.Context, acks []Ack) error, healthy func(ctx context.Context) error) (WindowRound, error) {
	r := WindowRound{Round: round}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(wctx)
	}()
	stopWriter := func() {
		stop()
		<-done
	}
	defer stopWriter()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := w.WaitAcks(tctx, 50); err != nil {
		return r, err
	}
	sleep(ctx, time.Second)
	// The kill function finds the leader first and stamps the moment it
	// sends the signal: writes acknowledged while it was looking do not
	// count as after the kill.
	restart, killAt, err := kill()
	if err != nil {
		return r, err
	}
	first, err := w.WaitAckSentAfter(tctx, killAt)
	if err != nil {
		return r, err
	}
	last, _ := w.LastAckBefore(killAt)
	r.Window, r.KillToAck = first.Acked.Sub(last.Acked), first.Acked.Sub(killAt)
	sleep(ctx, time.Second)
	stopWriter()
	acks := w.Acks()
	r.Acked = len(acks)
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer vcancel()
	if err := verify(vctx, acks); err != nil {
		r.Lost = -1
		return r, err
	}
	if err := restart(); err != nil {
		return r, err
	}
	hctx, hcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer hcancel()
	return r, healthy(hctx)
}

// ProfileAreas are where a server's CPU time goes, each a pprof focus
// regexp over whole stacks. A sample counts for the first area whose regexp
// matches any frame of its stack, so the shares are exclusive and add up:
// an fdatasync under raft's log store counts as fsync, the write system call
// under a TLS write under an HTTP handler as network.
var ProfileAreas = []struct{ Name, Focus string }{
	{"garbage collection (background marking and sweeping)", `^runtime\.(gcBgMarkWorker|bgsweep|bgscavenge)$`},
	{"fsync of the raft log (fdatasync, in the kernel)", `fdatasync|\.Fsync$|Fdatasync`},
	{"raft log store (segment records, bolt stable store)", `atomfed/internal/raftlog|raft-boltdb|go\.etcd\.io/bbolt|raft\.\(\*LogCache\)`},
	{"network system calls (socket reads and writes, poller)", `internal/poll|^syscall\.|netpoll|^net\.\(`},
	{"TLS (encryption and records)", `^crypto/`},
	{"JSON and MessagePack of API bodies and commands", `^encoding/json|go-msgpack`},
	{"FSM apply (state, indexes, audit chain)", `atomfed/fsm\.`},
	{"raft (leader loop, replication, transport)", `hashicorp/raft`},
	{"HTTP server, routing and API handlers", `^net/http|gorilla/mux|atomfed/httpapi`},
	{"forwarding RPC and the rest of atomfed", `atomfed/`},
	{"Go runtime (scheduler, allocation, other)", `.`},
}

// ProfileTop renders a CPU profile: pprof's top entries, and the share of
// samples in each of ProfileAreas.
func ProfileTop(profile []byte, bin string) (top string, areas map[string]float64, err error) {
	dir, err := os.MkdirTemp("", "atomfed-profile-")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "cpu.pb.gz")
	if err := os.WriteFile(p, profile, 0o600); err != nil {
		return "", nil, err
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", bin, p).CombinedOutput()
	if err != nil {
		return "", nil, fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	total, err := focusedSamples(bin, p, "", "")
	if err != nil || total == 0 {
		return string(out), nil, err
	}
	areas = map[string]float64{}
	var seen []string
	for _, a := range ProfileAreas {
		n, err := focusedSamples(bin, p, a.Focus, strings.Join(seen, "|"))
		if err != nil {
			return string(out), nil, err
		}
		areas[a.Name] = 100 * n / total
		seen = append(seen, a.Focus)
	}
	return string(out), areas, nil
}

// focusedSamples returns the sample time (ms) of the stacks matching focus
// and none of ignore: with no node dropped, pprof's "Showing nodes
// accounting for X" is the focused total.
func focusedSamples(bin, profile, focus, ignore string) (float64, error) {
	args := []string{"tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0"}
	if focus != "" {
		args = append(args, "-focus="+focus)
	}
	if ignore != "" {
		args = append(args, "-ignore="+ignore)
	}
	out, err := exec.Command("go", append(args, bin, profile)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("go tool pprof: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Showing nodes accounting for "); ok {
			if i := strings.IndexByte(v, ','); i > 0 {
				return parseMillis(v[:i])
			}
		}
	}
	return 0, nil // nothing matched
}

// parseMillis parses pprof's durations (850ms, 1.43s, 2mins) as ms.
func parseMillis(s string) (float64, error) {
	if s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"ms", 1}, {"us", 0.001}, {"µs", 0.001}, {"ns", 1e-6}, {"mins", 60000}, {"hrs", 3600000}, {"s", 1000}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err != nil {
				return 0, fmt.Errorf("pprof duration %q: %v", s, err)
			}
			return f * u.ms, nil
		}
	}
	return 0, fmt.Errorf("pprof duration %q", s)
}
