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
	Description   string
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
}

// Compare runs every step on each system in turn, Rounds times (A B A B
// ...), never two systems at once, then the failover rounds of each.
func Compare(ctx context.Context, systems []System, o CompareOptions) (*CompareResult, error) {
	res := &CompareResult{Failover: map[string][]WindowRound{}, Errors: map[string]string{}}
	rows := map[CompareStep]*CompareRow{}
	for _, st := range o.Steps {
		r := &CompareRow{Step: st, Runs: map[string][]Result{}, Median: map[string]Result{}}
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
			for _, st := range o.Steps {
				op := run.Write
				switch st.Name {
				case "linearizable read":
					op = run.Read
				case "stale read":
					op = run.StaleRead
				}
				var prof chan []byte
				if round == 1 && st.Name == "put" && st.Concurrency == 64 && run.ProfileLeader != nil {
					prof = make(chan []byte, 1)
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
				}
				r := Run(ctx, Step{Name: s.Name + " " + st.Name, Concurrency: st.Concurrency, Warmup: o.Warmup, Duration: o.Duration, Op: op})
				o.Logf("%s", r)
				rows[st].Runs[s.Name] = append(rows[st].Runs[s.Name], r)
				if prof != nil {
					res.Profile = <-prof
				}
				if ctx.Err() != nil {
					run.Stop()
					return res, ctx.Err()
				}
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
		for i := 1; i <= o.FailoverRounds && ctx.Err() == nil; i++ {
			w, err := run.Failover(ctx, i)
			if err != nil {
				res.Errors[s.Name] = err.Error()
				o.Logf("%s failover round %d: %v", s.Name, i, err)
				break
			}
			o.Logf("%s failover round %d: window %s (kill -> ack %s), %d acked, %d lost", s.Name, i, w.Window.Round(time.Millisecond), w.KillToAck.Round(time.Millisecond), w.Acked, w.Lost)
			res.Failover[s.Name] = append(res.Failover[s.Name], w)
		}
		run.Stop()
	}
	return res, nil
}

// medianResult returns the run with the median throughput, with p50 and p99
// replaced by the medians over the runs.
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
func FailoverRun(ctx context.Context, round int, w *Writer, kill func() (restart func() error, err error),
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
	killAt := time.Now()
	restart, err := kill()
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

// ProfileTop renders a CPU profile's top entries with `go tool pprof`, and
// the share of CPU by area (what the time goes to).
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
	all, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=100000", bin, p).CombinedOutput()
	if err != nil {
		return "", nil, err
	}
	areas = map[string]float64{}
	for _, line := range strings.Split(string(all), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") {
			continue
		}
		var pct float64
		if _, err := fmt.Sscanf(strings.TrimSuffix(f[1], "%"), "%g", &pct); err != nil {
			continue
		}
		areas[area(strings.Join(f[5:], " "))] += pct
	}
	return string(out), areas, nil
}

// area classifies a function into what the report names.
func area(fn string) string {
	switch {
	case strings.Contains(fn, "syscall.") || strings.Contains(fn, "internal/runtime/syscall") || strings.Contains(fn, "runtime/internal/syscall"):
		return "syscalls (network and disk I/O, fsync)"
	case strings.HasPrefix(fn, "crypto/") || strings.Contains(fn, "vendor/golang.org/x/crypto"):
		return "TLS and crypto"
	case strings.HasPrefix(fn, "encoding/json") || strings.HasPrefix(fn, "reflect.") || strings.HasPrefix(fn, "strconv."):
		return "JSON encoding and decoding"
	case strings.Contains(fn, "hashicorp/raft") || strings.Contains(fn, "go-msgpack") || strings.Contains(fn, "bbolt"):
		return "raft, its log store and msgpack"
	case strings.HasPrefix(fn, "net/http") || strings.HasPrefix(fn, "net.") || strings.HasPrefix(fn, "bufio") || strings.Contains(fn, "gorilla/mux"):
		return "HTTP and networking"
	case strings.HasPrefix(fn, "runtime.") && (strings.Contains(fn, "gc") || strings.Contains(fn, "scan") || strings.Contains(fn, "mark") || strings.Contains(fn, "sweep")):
		return "garbage collection"
	case strings.HasPrefix(fn, "runtime."):
		return "Go runtime (scheduler, memory)"
	case strings.Contains(fn, "atomfed"):
		return "atomfed (FSM, API handlers)"
	}
	return "other"
}
