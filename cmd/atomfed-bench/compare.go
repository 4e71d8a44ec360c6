package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/bench"
	"github.com/atomcloud/atomfed/internal/testing/machine"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// compareOptions are the -compare-etcd flags.
type compareOptions struct {
	etcdBin string
	rounds  int
}

// atomfedSystem runs a 3-server atomfed cluster with its default security
// (TLS, tokens) and pprof enabled for the profile.
func atomfedSystem(bin string, o *options) bench.System {
	return atomfedSystemWith("atomfed", bin, o, false)
}

// atomfedSystemWith is atomfedSystem named name, with --insecure-plaintext
// when plaintext.
func atomfedSystemWith(name, bin string, o *options, plaintext bool) bench.System {
	return bench.System{Name: name, Start: func(ctx context.Context) (*bench.SystemRun, error) {
		c, err := procs.StartCluster(procs.ClusterOptions{Bin: bin, Servers: 3, Extra: []string{"--enable-debug"}, Plaintext: plaintext})
		if err != nil {
			return nil, err
		}
		leader, err := c.WaitLeader(30 * time.Second)
		if err != nil {
			c.Remove(false)
			return nil, err
		}
		rc, err := c.Sec.SigningClient(leader.URL, region)
		if err != nil {
			c.Remove(false)
			return nil, err
		}
		if _, err := rc.RegisterRegion(ctx, &fsm.Region{Name: region, URL: "http://127.0.0.1:1"}, nil); err != nil {
			c.Remove(false)
			return nil, err
		}
		hc := bench.NewHTTP(64).Secure(c.Sec.TLSConfig(), procs.Token)
		a, err := bench.NewAtomfed(hc, c.URLs(), region, o.keys, o.readKeys, o.labelBytes)
		if err != nil {
			c.Remove(false)
			return nil, err
		}
		run := &bench.SystemRun{
			Write: a.Upsert, Read: a.Read(""), StaleRead: a.Read("stale"),
			Populate: func(ctx context.Context) error { return a.Populate(ctx, 16) },
			Stop:     func() { c.Remove(false) },
			Term:     c.Term,
			PIDs: func() []int {
				var out []int
				for _, sp := range c.Servers {
					out = append(out, sp.PID())
				}
				return out
			},
			Description: "3 `atomfed server` processes, default flags: Raft log fsynced, HTTPS with mutual TLS between servers, " +
				"encrypted gossip, a bearer token on every request; requests round-robin over the 3 servers (followers send writes to the leader over the forwarding RPC and serve linearizable reads after a read-index round with it)",
		}
		run.ProfileLeader = func(ctx context.Context, secs int) ([]byte, error) {
			l, err := c.WaitLeader(10 * time.Second)
			if err != nil {
				return nil, err
			}
			if o.profileDir != "" {
				// A follower's profile too, for where the time goes there.
				for _, f := range c.Others(l) {
					go func() {
						b, err := getWithToken(ctx, hc, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", f.URL, secs))
						if err == nil {
							err = os.WriteFile(filepath.Join(o.profileDir, "follower-"+f.ID()+".pprof"), b, 0o644)
						}
						if err != nil {
							logf("follower profile: %v", err)
						}
					}()
					break
				}
			}
			b, err := getWithToken(ctx, hc, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", l.URL, secs))
			if err == nil && o.profileDir != "" {
				err = os.WriteFile(filepath.Join(o.profileDir, "leader.pprof"), b, 0o644)
			}
			return b, err
		}
		run.Failover = func(ctx context.Context, round int) (bench.WindowRound, error) {
			w := bench.NewWriter(bench.NewHTTP(4).Secure(c.Sec.TLSConfig(), procs.Token), c.URLs(), fmt.Sprintf("f%d", round), region)
			var killed *procs.ServerProc
			return bench.FailoverRun(ctx, round, w,
				func() (func() error, time.Time, error) {
					l, err := c.WaitLeader(30 * time.Second)
					if err != nil {
						return nil, time.Time{}, err
					}
					killed = l
					at := time.Now()
					return l.Restart, at, l.Kill9()
				},
				func(ctx context.Context, acks []bench.Ack) error {
					l, err := c.WaitLeader(30 * time.Second)
					if err != nil {
						return err
					}
					return bench.Verify(ctx, l.Client, acks)
				},
				func(ctx context.Context) error { return c.WaitCaughtUp(ctx, killed) })
		}
		return run, nil
	}}
}

// etcdSystem runs a 3-member etcd cluster from the installed binary.
func etcdSystem(bin string, o *options) bench.System {
	return bench.System{Name: "etcd", Start: func(ctx context.Context) (*bench.SystemRun, error) {
		e, err := bench.StartEtcd(bin, 3)
		if err != nil {
			return nil, err
		}
		hc := bench.NewHTTP(64)
		ops := bench.NewEtcdOps(hc, e.ClientURLs, o.keys, o.readKeys, o.labelBytes)
		run := &bench.SystemRun{
			Write: ops.Put, Read: ops.Range(false), StaleRead: ops.Range(true),
			Populate: ops.Populate,
			Stop:     e.Close,
			Term:     e.Term,
			PIDs: func() []int {
				var out []int
				for _, m := range e.Members {
					out = append(out, m.PID())
				}
				return out
			},
			Description: "3 etcd " + etcdVersion(bin) + " processes, default flags: WAL fsynced, plaintext HTTP (no TLS, no auth); " +
				"requests round-robin over the 3 members through the HTTP/JSON gateway (/v3/kv/put, /v3/kv/range)",
		}
		run.Failover = func(ctx context.Context, round int) (bench.WindowRound, error) {
			w := bench.NewWriter(bench.NewHTTP(4), e.ClientURLs, fmt.Sprintf("f%d", round), "")
			w.Request = bench.EtcdWrite
			return bench.FailoverRun(ctx, round, w,
				func() (func() error, time.Time, error) {
					i, err := e.WaitLeader(ctx)
					if err != nil {
						return nil, time.Time{}, err
					}
					at := time.Now()
					return e.Members[i].Restart, at, e.Members[i].Kill9()
				},
				e.VerifyEtcd, e.WaitHealthy)
		}
		return run, nil
	}}
}

func getWithToken(ctx context.Context, hc *bench.HTTP, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return hc.Get(req)
}

func etcdVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "etcd Version: "); ok {
			return v
		}
	}
	return "?"
}

// runCompare is make bench-compare.
func runCompare(ctx context.Context, o *options, bin string) error {
	if _, err := os.Stat(o.compare.etcdBin); err != nil {
		return fmt.Errorf("etcd binary %s: %w (apt-get install etcd-server)", o.compare.etcdBin, err)
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return fmt.Errorf("-profile-dir: %w", err)
		}
	}
	var steps []bench.CompareStep
	for _, c := range o.writeConc {
		steps = append(steps, bench.CompareStep{Name: "put", Concurrency: c})
	}
	for _, c := range o.readConc {
		steps = append(steps, bench.CompareStep{Name: "linearizable read", Concurrency: c})
	}
	steps = append(steps, bench.CompareStep{Name: "stale read", Concurrency: o.readConc[len(o.readConc)-1]})
	systems := []bench.System{atomfedSystem(bin, o), etcdSystem(o.compare.etcdBin, o)}
	start := time.Now()
	facts := machine.Detect()
	res, err := bench.Compare(ctx, systems, bench.CompareOptions{Steps: steps, Rounds: o.compare.rounds,
		Warmup: o.warmup, Duration: o.duration, FailoverRounds: o.rounds, Logf: logf})
	if err != nil {
		return err
	}
	md := compareMarkdown(res, o, facts, start, bin, systems)
	fmt.Println(md)
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := bench.SpliceSection(o.out, "bench-compare", md); err != nil {
			return err
		}
		logf("wrote the comparison into %s", o.out)
	}
	return nil
}

func compareMarkdown(res *bench.CompareResult, o *options, m machine.Facts, start time.Time, bin string, systems []bench.System) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# atomfed and etcd, side by side\n\n")
	p("- Date: %s; finished %s\n", start.UTC().Format("2006-01-02 15:04 MST"), time.Now().UTC().Format("15:04 MST"))
	p("- Machine: %s, %d cores, %s RAM, Linux %s; %s; load average at start %s, at end %s\n", m.CPU, m.Cores, m.RAM, m.Kernel, m.Go, m.LoadAvg, machine.LoadAvg())
	p("- atomfed %s; command: `%s`\n", machine.GitDescribe(), command())
	p("- Load: the same Go closed-loop generator for both, over persistent HTTP/1.1 connections; %d keys; values of %d bytes "+
		"(atomfed: a tenant with a %d-byte label, etcd: a %d-byte value); each step %s warm-up and %s measured; "+
		"the systems run one at a time, alternating A B A B (%d runs each); the table shows the median run (throughput) and the medians of p50 and p99.\n",
		o.keys, o.labelBytes, o.labelBytes, o.labelBytes, o.warmup, o.duration, o.compare.rounds)
	p("- atomfed: 3 server processes with default flags: Raft log fsynced, HTTPS with mutual TLS between servers, encrypted gossip, a bearer token on every request.\n")
	p("- etcd: 3 members with default flags: WAL fsynced, **plaintext HTTP, no auth** (the gateway of %s).\n", etcdVersion(o.compare.etcdBin))
	p("- Both: requests round-robin over the 3 members; followers forward to the leader (atomfed: the forwarding RPC over the raft port's mutual TLS; etcd: its gRPC proxy to the leader).\n\n")
	p("| operation | clients | atomfed ops/s | atomfed p50 / p99 | etcd ops/s | etcd p50 / p99 | throughput atomfed/etcd | p99 atomfed/etcd |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range res.Rows {
		a, e := r.Median["atomfed"], r.Median["etcd"]
		name := r.Step.Name
		if name == "stale read" {
			name = "stale read (etcd: serializable)"
		}
		p("| %s | %d | %.0f | %s / %s | %.0f | %s / %s | **%.2f** | %.2f |\n", name, r.Step.Concurrency,
			a.Throughput, dur(a.P50), dur(a.P99), e.Throughput, dur(e.P50), dur(e.P99),
			ratio(a.Throughput, e.Throughput), ratio(float64(a.P99), float64(e.P99)))
	}
	p("\nCPU during the measured window (median run; the machine has %d cores shared by the servers and the load generator): "+
		"cores the 3 server processes used together, the load generator's, and server CPU time per successful operation.\n\n", m.Cores)
	p("| operation | clients | atomfed servers | etcd servers | load generator atomfed / etcd | server CPU per op atomfed | etcd | atomfed/etcd |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range res.Rows {
		a, e := r.Median["atomfed"], r.Median["etcd"]
		as, ac := r.MedianCPU("atomfed")
		es, ec := r.MedianCPU("etcd")
		perOp := func(cores, tput float64) float64 {
			if tput == 0 {
				return 0
			}
			return cores / tput * 1e6
		}
		ap, ep := perOp(as, a.Throughput), perOp(es, e.Throughput)
		p("| %s | %d | %.2f | %.2f | %.2f / %.2f | %.0fµs | %.0fµs | %.2f |\n", r.Step.Name, r.Step.Concurrency, as, es, ac, ec, ap, ep, ratio(ap, ep))
	}
	p("\nLeader elections during the load steps (raft terms that passed; 0 means the leader held under load): atomfed %d, etcd %d.\n", res.Elections["atomfed"], res.Elections["etcd"])
	p("\n## Failover: kill -9 of the leader under a steady writer\n\n")
	p("One client writes one key at a time to the members in turn, retrying on the next member until acknowledged; " +
		"the leader is killed with SIGKILL after a second of steady writes. The window is the time from the last write acknowledged " +
		"before the kill to the first acknowledged after it. Every acknowledged write is then read back linearizably.\n\n")
	p("| system | rounds | windows | median | max | acknowledged writes lost |\n|---|---:|---|---:|---:|---:|\n")
	var redone []string
	for _, s := range res.Systems {
		ws := res.Failover[s]
		var ds []time.Duration
		var parts []string
		lost := 0
		for _, w := range ws {
			ds = append(ds, w.Window)
			parts = append(parts, dur(w.Window))
			if w.Lost != 0 {
				lost++
			}
		}
		med, max := time.Duration(0), time.Duration(0)
		if len(ds) > 0 {
			med = bench.Median(ds)
			sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
			max = ds[len(ds)-1]
		}
		p("| %s | %d | %s | **%s** | %s | %d |\n", s, len(ws), strings.Join(parts, ", "), dur(med), dur(max), lost)
		if n := res.Redone[s]; n > 0 {
			redone = append(redone, fmt.Sprintf("%s: %d round(s) measured again because no election followed the kill (leadership had already moved).", s, n))
		}
		if e := res.Errors[s]; e != "" {
			p("\n%s failover error: `%s`\n", s, strings.ReplaceAll(e, "`", "'"))
		}
	}
	for _, n := range redone {
		p("\n%s\n", n)
	}
	if len(res.Profile) > 0 {
		top, areas, err := bench.ProfileTop(res.Profile, bin)
		p("\n## Where atomfed's leader spends its CPU (puts, 64 clients)\n\n")
		if err != nil {
			p("The profile could not be rendered: `%v`\n", err)
		} else {
			type kv struct {
				k string
				v float64
			}
			var list []kv
			for _, a := range bench.ProfileAreas {
				list = append(list, kv{a.Name, areas[a.Name]})
			}
			p("CPU profile of the leader during an extra run of puts at 64 clients after the first round, not counted in the tables above (profiling costs the server CPU). Each sample counts for the first area that any frame of its stack belongs to, in the order of the table (so the shares add up to 100%%); time blocked in fsync burns no CPU and shows up as latency, not here:\n\n| area | share of CPU samples |\n|---|---:|\n")
			for _, e := range list {
				p("| %s | %.1f%% |\n", e.k, e.v)
			}
			p("\nTop entries (`go tool pprof -top`):\n\n```\n%s```\n", top)
		}
	}
	return b.String()
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000)
	}
	return d.Round(time.Millisecond).String()
}
