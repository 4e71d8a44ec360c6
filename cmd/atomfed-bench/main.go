// Command atomfed-bench measures atomfed on this machine: it starts three
// `atomfed server` processes on loopback with their default flags (fsync
// on), drives them over HTTP with a closed-loop load generator, kills the
// leader under a steady writer, and writes a markdown report (and prints
// it). `make bench` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/testing/bench"
	"github.com/atomcloud/atomfed/internal/testing/machine"
	"github.com/atomcloud/atomfed/internal/testing/procs"
)

// options are the command's flags.
type options struct {
	bin, out         string
	duration, warmup time.Duration
	rounds           int
	writeConc        []int
	readConc         []int
	keys, readKeys   int
	labelBytes       int
	keepLogs         bool
	scaleAgents      int
	scaleRegions     int
	replRate         int
	replDuration     time.Duration
	replRounds       int
	securityRounds   int
	blocking         bench.BlockingOptions
	only             string
	outSet           bool
	compareEtcd      bool
	compare          compareOptions
	profileDir       string
	dataPlane        dataPlaneOptions
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "atomfed-bench:", err)
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "atomfed-bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("atomfed-bench", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "bin/atomfed", "atomfed binary to benchmark (built with `go build` into a temp dir if it does not exist)")
	fs.StringVar(&o.out, "out", "reports/bench.md", "markdown report to write (empty: only print it)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration of each load step")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up before each load step")
	fs.IntVar(&o.rounds, "rounds", 5, "failover rounds (0 skips the failover measurement)")
	wc := fs.String("concurrency", "1,16,64", "comma-separated client counts for the upsert steps")
	rc := fs.String("read-concurrency", "16,64", "comma-separated client counts for the read steps")
	fs.IntVar(&o.keys, "keys", 10000, "distinct tenant ids the upserts spread over")
	fs.IntVar(&o.readKeys, "read-keys", 1000, "tenants written before the run and read by the read steps")
	fs.IntVar(&o.labelBytes, "label-bytes", 256, "size of the label value of each upserted tenant")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep the server logs (their directory is printed)")
	fs.IntVar(&o.scaleAgents, "scale-agents", 200, "agents in the in-process scale test (0 skips it)")
	fs.IntVar(&o.scaleRegions, "scale-regions", 5, "regions the scale test's agents spread over")
	fs.IntVar(&o.replRate, "repl-rate", 200, "insert rate (rows/s) of the replication lag measurement (0 skips it)")
	fs.DurationVar(&o.replDuration, "repl-duration", 10*time.Second, "length of each replication lag run")
	fs.IntVar(&o.replRounds, "repl-rounds", 2, "replication lag runs per setup (atomfed and by hand, alternating)")
	fs.IntVar(&o.securityRounds, "security-rounds", 2, "runs each of default security and --insecure-plaintext, alternating, for the cost of security (0 skips it)")
	fs.IntVar(&o.blocking.Watchers, "blocking-watchers", 5000, "blocking queries held open on the leader while GET /health is timed (0 skips it)")
	fs.IntVar(&o.blocking.Tokens, "blocking-tokens", 8, "reader tokens the blocking queries spread over (each within the default per-token cap)")
	fs.IntVar(&o.blocking.HealthRequests, "blocking-health", 3000, "GET /health requests timed per blocking-query round")
	fs.IntVar(&o.blocking.Rounds, "blocking-rounds", 3, "blocking-query rounds (the report shows the medians)")
	fs.DurationVar(&o.blocking.WriteEvery, "blocking-write-every", 50*time.Millisecond, "pace of the tenant writer during the blocking-query rounds (0: none)")
	fs.StringVar(&o.only, "only", "", "run only this phase: blocking (the report is printed, and written only with an explicit -out), or dataplane (switchover and backups on a federation with a PostgreSQL per region; its own section of -out)")
	addDataPlaneFlags(fs, &o.dataPlane)
	fs.BoolVar(&o.compareEtcd, "compare-etcd", false, "run atomfed and etcd side by side instead (make bench-compare)")
	fs.StringVar(&o.compare.etcdBin, "etcd-bin", "/usr/bin/etcd", "etcd binary for -compare-etcd")
	fs.IntVar(&o.compare.rounds, "compare-rounds", 3, "runs of each system in -compare-etcd (alternating A B A B ...)")
	fs.StringVar(&o.profileDir, "profile-dir", "", "with -compare-etcd: also save the CPU profiles of the leader and of a follower (puts, 64 clients) here")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	fs.Visit(func(f *flag.Flag) { o.outSet = o.outSet || f.Name == "out" })
	switch o.only {
	case "", "blocking", "dataplane":
	default:
		return nil, fmt.Errorf("-only %q: the phases that run alone are: blocking, dataplane", o.only)
	}
	if o.only == "blocking" && o.blocking.Watchers <= 0 {
		return nil, errors.New("-only blocking needs -blocking-watchers > 0")
	}
	if o.blocking.Watchers > 0 && (o.blocking.Tokens < 1 || o.blocking.HealthRequests < 1 || o.blocking.Rounds < 1) {
		return nil, errors.New("-blocking-tokens, -blocking-health and -blocking-rounds must be positive")
	}
	var err error
	if o.writeConc, err = intList(*wc); err != nil {
		return nil, fmt.Errorf("-concurrency: %w", err)
	}
	if o.readConc, err = intList(*rc); err != nil {
		return nil, fmt.Errorf("-read-concurrency: %w", err)
	}
	if o.duration <= 0 || o.warmup < 0 || o.rounds < 0 {
		return nil, errors.New("-duration must be positive, -warmup and -rounds not negative")
	}
	return o, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// command renders how the benchmark was started.
func command() string {
	name := os.Args[0]
	if strings.Contains(name, "go-build") {
		name = "go run ./cmd/atomfed-bench"
	}
	parts := []string{name}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

const region = "bench"

func run(ctx context.Context, o *options) error {
	rep := &bench.Report{Date: time.Now(), Machine: machine.Detect(), Version: machine.GitDescribe(),
		Command: command(), FailoverTarget: time.Second}
	bin, cleanup, err := binary(o.bin, rep.Version)
	if err != nil {
		return err
	}
	defer cleanup()
	if o.compareEtcd {
		return runCompare(ctx, o, bin)
	}
	if o.only == "dataplane" {
		return runDataPlane(ctx, o, bin)
	}
	if o.only == "blocking" {
		runBlocking(ctx, o, bin, rep)
		if err := writeReport(ctx, o, rep, o.outSet); err != nil {
			return err
		}
		if rep.BlockingErr != nil {
			return fmt.Errorf("blocking: %w", rep.BlockingErr)
		}
		return nil
	}

	logf("starting 3 atomfed servers (%s)", bin)
	c, err := procs.StartCluster(procs.ClusterOptions{Bin: bin, Servers: 3})
	if err != nil {
		return err
	}
	rep.Machine.Disk = bench.Disk(c.Dir)
	keep := o.keepLogs
	defer func() {
		c.Remove(keep)
		if keep {
			logf("server logs kept in %s", c.LogDir)
		}
	}()
	leader, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		return err
	}
	h, err := leader.Health(ctx)
	if err != nil {
		return err
	}
	rep.BinaryVersion = h.Version
	rc, err := c.Sec.SigningClient(leader.URL, region)
	if err != nil {
		return err
	}
	if _, err := rc.RegisterRegion(ctx, &fsm.Region{Name: region, URL: "http://127.0.0.1:1"}, nil); err != nil {
		return fmt.Errorf("register region %s: %w", region, err)
	}

	maxConc := 1
	for _, n := range append(append([]int{16}, o.writeConc...), o.readConc...) {
		maxConc = max(maxConc, n)
	}
	hc := bench.NewHTTP(maxConc).Secure(c.Sec.TLSConfig(), procs.Token)
	all, err := bench.NewAtomfed(hc, c.URLs(), region, o.keys, o.readKeys, o.labelBytes)
	if err != nil {
		return err
	}
	logf("writing %d tenants for the read steps", o.readKeys)
	if err := all.Populate(ctx, 16); err != nil {
		return err
	}
	rep.Settings = []string{
		"Cluster: 3 `atomfed server` processes on 127.0.0.1 with default flags (Raft log fsynced, LAN timings), " +
			"each with its own data dir; the load generator runs on the same machine over persistent keep-alive HTTP/1.1 connections.",
		"Security as by default: HTTPS (TLS 1.3, ECDSA P-256 certificates) to the API and between servers (forwarding), mutual TLS on the Raft transport, " +
			"encrypted gossip, and a bearer token checked on every request.",
		fmt.Sprintf("Each load step: %s warm-up, then %s measured; closed loop (each client sends its next request when the previous one is answered). "+
			"Throughput and latencies count successful requests started in the measured window.", o.warmup, o.duration),
		fmt.Sprintf("Upserts: PUT /v1/tenants/{id} with a %d-byte body (a %d-byte label value), over %d tenant ids, home region %q.",
			all.BodySize(), o.labelBytes, o.keys, region),
		fmt.Sprintf("Reads: GET /v1/tenants/{id} over %d tenants written before the run; default consistency is linearizable "+
			"(the leader confirms its leadership with a quorum, coalesced across concurrent reads).", o.readKeys),
		"Targets: \"leader\" sends every request to the leader; \"all 3\" sends request n of client i to server (i+n) mod 3, " +
			"so two thirds of writes and linearizable reads are forwarded by a follower to the leader (one extra hop). Stale reads are answered locally.",
	}

	leaderOnly := func() ([]string, error) {
		l, err := c.WaitLeader(30 * time.Second)
		if err != nil {
			return nil, err
		}
		return []string{l.URL}, nil
	}
	targets := []struct {
		name string
		urls func() ([]string, error)
	}{
		{"leader", leaderOnly},
		{"all 3 (round-robin)", func() ([]string, error) { return c.URLs(), nil }},
	}
	step := func(name string, conc int, op bench.Op) bench.Result {
		hc.CloseIdle()
		r := bench.Run(ctx, bench.Step{Name: name, Concurrency: conc, Warmup: o.warmup, Duration: o.duration, Op: op})
		logf("%s", r)
		return r
	}

	for _, tg := range targets {
		for _, n := range o.writeConc {
			urls, err := tg.urls()
			if err != nil {
				return err
			}
			a := *all
			a.Targets = urls
			r := step("upsert via "+tg.name, n, a.Upsert)
			rep.Writes = append(rep.Writes, bench.Row{Op: "upsert", Target: tg.name, Result: r})
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	reads := []struct {
		consistency, label string
		targets            []int // indexes into targets
	}{
		{"", "linearizable (default)", []int{0, 1}},
		{"stale", "stale", []int{1}},
	}
	for _, rd := range reads {
		for _, ti := range rd.targets {
			tg := targets[ti]
			for _, n := range o.readConc {
				urls, err := tg.urls()
				if err != nil {
					return err
				}
				a := *all
				a.Targets = urls
				r := step("read "+rd.label+" via "+tg.name, n, a.Read(rd.consistency))
				rep.Reads = append(rep.Reads, bench.Row{Op: "read", Consistency: rd.label, Target: tg.name, Result: r})
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
	}
	hc.CloseIdle()

	for i := 1; i <= o.rounds && ctx.Err() == nil; i++ {
		f, err := bench.Failover(ctx, c, i, bench.FailoverOptions{HTTP: bench.NewHTTP(4).Secure(c.Sec.TLSConfig(), procs.Token), Region: region, Steady: time.Second})
		if err != nil {
			rep.FailoverErr = err
			keep = true
			logf("failover round %d: %v", i, err)
			break
		}
		logf("failover round %d: killed %s, %s led; kill -> first acknowledged write %s; %d writes read back; rejoined in %s",
			i, f.Killed, f.NewLeader, f.KillToAck.Round(time.Millisecond), f.Verified, f.Rejoin.Round(time.Millisecond))
		rep.Failover = append(rep.Failover, f)
	}
	if o.rounds > 0 {
		rep.Settings = append(rep.Settings, "Failover: one client writes tenant f<round>-<n> one at a time (2 ms think time) to the three servers in turn, "+
			"retrying a write on the next server until it is acknowledged; the leader is killed with SIGKILL after 1 s of steady writes, "+
			"writing continues 1 s after the first acknowledged write, then every acknowledged write is read back linearizably, "+
			"and the killed server is restarted (same flags, data dir and ports) and waited for until its audit head equals the leader's.")
	}
	if o.replRate > 0 && ctx.Err() == nil {
		logf("replication: lag at %d rows/s, atomfed versus by hand", o.replRate)
		rep.Replication, rep.ReplicationErr = bench.RunReplication(ctx, bench.ReplicationOptions{Bin: bin, Cluster: c,
			Rate: o.replRate, Duration: o.replDuration, Rounds: o.replRounds, Log: logf})
		if rep.ReplicationErr != nil {
			logf("replication: %v", rep.ReplicationErr)
		}
	}
	if o.securityRounds > 0 && ctx.Err() == nil {
		c.Remove(keep) // each setup gets the machine to itself
		logf("security: default flags against --insecure-plaintext, %d runs each", o.securityRounds)
		rep.Security, rep.SecurityErr = runSecurityCost(ctx, o, bin)
		if rep.SecurityErr != nil {
			logf("security: %v", rep.SecurityErr)
		}
	}
	if o.blocking.Watchers > 0 && ctx.Err() == nil {
		c.Remove(keep) // its own cluster, with the machine to itself
		runBlocking(ctx, o, bin, rep)
	}
	if o.scaleAgents > 0 && ctx.Err() == nil {
		c.Remove(keep) // the scale test wants the machine to itself
		dir, err := os.MkdirTemp("", "atomfed-scale-")
		if err != nil {
			return err
		}
		logf("scale: 3 servers and %d agents in %d regions, in process", o.scaleAgents, o.scaleRegions)
		rep.Scale, rep.ScaleErr = bench.RunScale(ctx, bench.ScaleOptions{Agents: o.scaleAgents, Regions: o.scaleRegions, Steady: 10 * time.Second, Dir: dir})
		os.RemoveAll(dir)
		if rep.ScaleErr != nil {
			logf("scale: %v", rep.ScaleErr)
		} else {
			logf("scale: all alive after %s, failure detected in %s, %.2f cores, %.0f MiB RSS",
				rep.Scale.AllAlive.Round(time.Millisecond), rep.Scale.DetectFailed.Round(time.Millisecond), rep.Scale.CPUCores, rep.Scale.RSSMiB)
		}
	}
	if err := writeReport(ctx, o, rep, o.out != ""); err != nil {
		return err
	}
	if rep.FailoverErr != nil {
		return fmt.Errorf("failover: %w", rep.FailoverErr)
	}
	return nil
}

// writeReport prints the report, and splices it into o.out when write.
func writeReport(ctx context.Context, o *options, rep *bench.Report, write bool) error {
	rep.LoadAvgEnd = machine.LoadAvg()
	if rep.Machine.Cores <= 4 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("This machine has %d cores shared by the three servers and the load generator (and whatever else runs: see the load averages), "+
			"so the figures are a floor, not what three dedicated servers would do.", rep.Machine.Cores))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	md := rep.Markdown()
	fmt.Println()
	fmt.Print(md)
	if write && o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		if err := bench.SpliceSection(o.out, "bench", md); err != nil {
			return err
		}
		logf("wrote %s", o.out)
	}
	return nil
}

// runBlocking runs the blocking-query phase into rep.
func runBlocking(ctx context.Context, o *options, bin string, rep *bench.Report) {
	b := o.blocking
	b.Bin, b.Log = bin, logf
	logf("blocking: GET /health under %d blocking queries on the leader, %d rounds", b.Watchers, b.Rounds)
	rep.Blocking, rep.BlockingErr = bench.RunBlocking(ctx, b)
	if rep.BinaryVersion == "" && rep.Blocking != nil {
		rep.BinaryVersion = rep.Blocking.Version
	}
	if rep.BlockingErr != nil {
		logf("blocking: %v", rep.BlockingErr)
	} else {
		p50, p99, _ := rep.Blocking.Medians()
		logf("blocking: median GET /health p50 %s p99 %s", p50, p99)
	}
}

// binary returns the atomfed binary to run: path if it exists, else one
// built into a temporary directory.
func binary(path, version string) (string, func(), error) {
	if _, err := os.Stat(path); err == nil {
		abs, err := filepath.Abs(path)
		return abs, func() {}, err
	}
	dir, err := os.MkdirTemp("", "atomfed-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	logf("%s does not exist; building atomfed into %s", path, dir)
	bin, err := procs.BuildBinary(dir, version)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}
