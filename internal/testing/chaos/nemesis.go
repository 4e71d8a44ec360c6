package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// Event is one injected fault (or a mix of two, run together).
type Event struct {
	Type    string   `json:"type"`
	Targets []string `json:"targets,omitempty"`
	Detail  string   `json:"detail,omitempty"`
	// Start is when the fault was injected, Healed when the nemesis undid
	// it, Recovered when the cluster was whole again.
	Start     time.Time `json:"start"`
	Healed    time.Time `json:"healed"`
	Recovered time.Time `json:"recovered"`
	// Window is the longest stretch from Start to Recovered in which no
	// write was acknowledged.
	Window  time.Duration `json:"-"`
	WindowS float64       `json:"window_s"`
	Err     string        `json:"error,omitempty"`
}

// nemesisFunc injects a fault into r's cluster, holds it for hold, and
// undoes it. It fills in ev's targets and detail and sets ev.Start when the
// fault takes effect.
type nemesisFunc func(ctx context.Context, r *runner, ev *Event, hold time.Duration) error

// Nemeses lists every fault type by name.
var Nemeses = []string{
	"kill", "kill-leader", "pause", "pause-leader",
	"partition-minority", "partition-leader", "partition-asymmetric",
	"latency", "rolling-restart", "member-replace", "disk-full",
}

var nemesisFuncs = map[string]nemesisFunc{
	"kill":                 nemKill(false),
	"kill-leader":          nemKill(true),
	"pause":                nemPause(false),
	"pause-leader":         nemPause(true),
	"partition-minority":   nemPartitionMinority,
	"partition-leader":     nemPartitionLeader,
	"partition-asymmetric": nemPartitionAsymmetric,
	"latency":              nemLatency,
	"rolling-restart":      nemRollingRestart,
	"member-replace":       nemMemberReplace,
	"disk-full":            nemDiskFull,
	// The data-plane run's own (dataplane.go).
	"pg-kill":    nemPGKill,
	"agent-kill": nemAgentKill,
}

// mixable nemeses combine as "network+process" in a mixed event.
var (
	mixNetwork = []string{"partition-minority", "partition-leader", "partition-asymmetric", "latency"}
	mixProcess = []string{"kill", "kill-leader", "pause", "pause-leader"}
)

// runner runs nemeses against a cluster.
type runner struct {
	c    *Cluster
	rng  *rand.Rand
	logf func(string, ...any)
	// latency: one-way delay range a latency nemesis adds to every link.
	latMin, latMax time.Duration
	// firstRound is every allowed nemesis in a seeded order; next is the
	// next one of it to run.
	firstRound []string
	next       int
	// dp is the data-plane run whose PostgreSQL clusters and agents the
	// pg-kill and agent-kill nemeses hit (nil in control-plane runs).
	dp *dataPlane
}

func (r *runner) pick(nodes []*Node) *Node { return nodes[r.rng.IntN(len(nodes))] }

// target returns the leader when leader is set and one is established,
// else a random server.
func (r *runner) target(ctx context.Context, leader bool) *Node {
	if leader {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if l, err := r.c.Leader(lctx); err == nil {
			return l
		}
		r.logf("no established leader to aim at; picking a random server")
	}
	return r.pick(r.c.Nodes)
}

// leaderNote returns "<n> was the leader" when n is the established
// leader right now, for event details.
func (r *runner) leaderNote(ctx context.Context, n *Node) string {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if l, err := r.c.Leader(lctx); err == nil && l == n {
		return n.ID() + " was the leader"
	}
	return ""
}

func names(ns []*Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID()
	}
	return out
}

func nemKill(leader bool) nemesisFunc {
	return func(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
		n := r.target(ctx, leader)
		ev.Targets = []string{n.ID()}
		if !leader {
			ev.Detail = r.leaderNote(ctx, n)
		}
		ev.Start = time.Now()
		if err := r.c.Kill(n); err != nil {
			return err
		}
		_ = waitCtx(ctx, hold)
		return r.c.Restart(n)
	}
}

func nemPause(leader bool) nemesisFunc {
	return func(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
		n := r.target(ctx, leader)
		ev.Targets = []string{n.ID()}
		if !leader {
			ev.Detail = r.leaderNote(ctx, n)
		}
		ev.Start = time.Now()
		if err := r.c.Pause(n); err != nil {
			return err
		}
		_ = waitCtx(ctx, hold)
		return r.c.Resume(n)
	}
}

func (r *runner) cutMode() Mode {
	if r.rng.IntN(3) == 0 {
		return Drop
	}
	return Blackhole
}

// isolate partitions group from the other servers for hold.
func (r *runner) isolate(ctx context.Context, ev *Event, group []*Node, hold time.Duration) error {
	in := map[string]bool{}
	for _, n := range group {
		in[n.ID()] = true
	}
	var rest []string
	for _, n := range r.c.Nodes {
		if !in[n.ID()] {
			rest = append(rest, n.ID())
		}
	}
	mode := r.cutMode()
	ev.Targets = names(group)
	lead := ""
	for _, n := range group {
		if note := r.leaderNote(ctx, n); note != "" {
			lead = "; " + note
		}
	}
	ev.Detail = fmt.Sprintf("%s cut off from %s (%s)%s", strings.Join(ev.Targets, ","), strings.Join(rest, ","), mode, lead)
	ev.Start = time.Now()
	r.c.Net.SetMany(Partition(mode, ev.Targets, rest))
	_ = waitCtx(ctx, hold)
	r.c.Net.Heal()
	return nil
}

func nemPartitionMinority(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	k := (len(r.c.Nodes) - 1) / 2
	perm := r.rng.Perm(len(r.c.Nodes))
	group := make([]*Node, k)
	for i := range group {
		group[i] = r.c.Nodes[perm[i]]
	}
	return r.isolate(ctx, ev, group, hold)
}

func nemPartitionLeader(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	return r.isolate(ctx, ev, []*Node{r.target(ctx, true)}, hold)
}

// nemPartitionAsymmetric cuts one direction only: a server (the leader
// half of the time) can hear the others but not reach them, or the other
// way round.
func nemPartitionAsymmetric(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	n := r.target(ctx, r.rng.IntN(2) == 0)
	outbound := r.rng.IntN(2) == 0
	fs := map[Link]Fault{}
	for _, o := range r.c.Nodes {
		if o == n {
			continue
		}
		l := Link{o.ID(), n.ID()}
		if outbound {
			l = Link{n.ID(), o.ID()}
		}
		fs[l] = Fault{Mode: Blackhole}
	}
	ev.Targets = []string{n.ID()}
	if outbound {
		ev.Detail = n.ID() + " cannot send to the other servers (it still hears them)"
	} else {
		ev.Detail = n.ID() + " cannot hear the other servers (they still hear it)"
	}
	ev.Start = time.Now()
	r.c.Net.SetMany(fs)
	_ = waitCtx(ctx, hold)
	r.c.Net.Heal()
	return nil
}

// nemLatency adds a one-way delay with jitter to every link between
// servers.
func nemLatency(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	d := r.latMin + time.Duration(r.rng.Int64N(int64(r.latMax-r.latMin)+1))
	d = d.Round(time.Millisecond)
	f := Fault{Delay: d, Jitter: d / 2}
	fs := map[Link]Fault{}
	for _, a := range r.c.Nodes {
		for _, b := range r.c.Nodes {
			if a != b {
				fs[Link{a.ID(), b.ID()}] = f
			}
		}
	}
	ev.Targets = names(r.c.Nodes)
	ev.Detail = fmt.Sprintf("+%s one-way (+0..%s jitter) on every server link", d, f.Jitter)
	ev.Start = time.Now()
	r.c.Net.SetMany(fs)
	_ = waitCtx(ctx, hold)
	r.c.Net.Heal()
	return nil
}

// nemRollingRestart stops every server in turn with SIGTERM (a graceful
// leave: a leader hands over first), restarts it with the same data dir
// and waits for the cluster to be whole before the next.
func nemRollingRestart(ctx context.Context, r *runner, ev *Event, _ time.Duration) error {
	order := r.rng.Perm(len(r.c.Nodes))
	ev.Start = time.Now()
	for _, i := range order {
		n := r.c.Nodes[i]
		ev.Targets = append(ev.Targets, n.ID())
		n.Proxy.Down(n.HTTPPort) // drain clients first, as a load balancer would
		if err := n.Term(); err != nil {
			return err
		}
		code, err := n.Wait(30 * time.Second)
		if err != nil {
			return err
		}
		if code != 0 {
			return fmt.Errorf("%s exited with %d after SIGTERM; a graceful leave exits 0", n.ID(), code)
		}
		n.Proxy.Down(n.tcpPorts()...)
		if err := r.c.Restart(n); err != nil {
			return err
		}
		if err := r.c.WaitHealthy(ctx, 60*time.Second); err != nil {
			return fmt.Errorf("after restarting %s: %w", n.ID(), err)
		}
	}
	return nil
}

// nemMemberReplace replaces a server with a blank one of the same name, as
// the runbook does for dead hardware: kill it, remove it from the Raft
// configuration through the leader, wipe its data dir, start it again
// without --bootstrap-expect; the leader adds it back once Serf sees it.
func nemMemberReplace(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	n := r.pick(r.c.Nodes)
	ev.Targets = []string{n.ID()}
	note := r.leaderNote(ctx, n)
	ev.Start = time.Now()
	if err := r.c.Kill(n); err != nil {
		return err
	}
	if err := testutil.PollContext(ctx, 30*time.Second, func() error {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		l, err := r.c.Leader(lctx)
		if err != nil {
			return err
		}
		return l.Client.RemovePeer(lctx, n.ID())
	}); err != nil {
		return fmt.Errorf("remove %s from the configuration: %w", n.ID(), err)
	}
	if err := wipeDir(n.Config.DataDir); err != nil {
		return err
	}
	cfg := n.Config
	cfg.BootstrapExpect = 0
	n.Args = cfg.Args()
	ev.Detail = strings.TrimSpace(note + "; removed from the configuration, data dir wiped, started again without --bootstrap-expect")
	ev.Detail = strings.TrimPrefix(ev.Detail, "; ")
	_ = waitCtx(ctx, hold)
	return r.c.Restart(n)
}

// wipeDir removes what dir holds but not dir itself (it may be a mount).
func wipeDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// nemDiskFull fills the tmpfs data dir of one server, holds, and frees it.
// A server that crashed on the full disk is started again.
func nemDiskFull(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	n := r.c.TmpfsNode()
	if n == nil {
		return errors.New("no server has a tmpfs data dir")
	}
	ev.Targets = []string{n.ID()}
	note := r.leaderNote(ctx, n)
	if note != "" {
		note += "; "
	}
	fill := filepath.Join(n.Config.DataDir, "disk-full.fill")
	ev.Start = time.Now()
	size, err := fillDisk(fill)
	if err != nil {
		return err
	}
	_ = waitCtx(ctx, hold)
	if err := os.Remove(fill); err != nil {
		return err
	}
	if n.Running() {
		ev.Detail = fmt.Sprintf("%sfilled %d KiB; %s kept running", note, size>>10, n.ID())
		return nil
	}
	ev.Detail = fmt.Sprintf("%sfilled %d KiB; %s exited (%s) and was started again", note, size>>10, n.ID(), n.ExitStatus())
	n.Proxy.Down(n.tcpPorts()...)
	return r.c.Restart(n)
}

// fillDisk writes zeros to path until the file system is full.
func fillDisk(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for _, size := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, size)
		for {
			n, err := f.Write(buf)
			total += int64(n)
			if err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					return total, err
				}
				break
			}
		}
	}
	return total, nil
}

// runEvent runs one named nemesis ("a" or "a+b" for a mix run together)
// and returns its event once the cluster has recovered.
func (r *runner) runEvent(ctx context.Context, name string, hold time.Duration) Event {
	ev := Event{Type: name}
	parts := strings.Split(name, "+")
	errs := make([]error, len(parts))
	subs := make([]Event, len(parts))
	done := make(chan int, len(parts))
	for i, p := range parts {
		fn := nemesisFuncs[p]
		if fn == nil {
			errs[i] = fmt.Errorf("unknown nemesis %q", p)
			done <- i
			continue
		}
		// Each part draws from its own generator, seeded in order, so a
		// mix replays the same way from the same seed.
		sub := *r
		sub.rng = rand.New(rand.NewPCG(r.rng.Uint64(), uint64(i)))
		var offset time.Duration
		if i > 0 { // the second fault of a mix starts a little later
			offset = time.Duration(r.rng.Int64N(int64(hold/2) + 1))
		}
		go func(i int, fn nemesisFunc, sub *runner) {
			_ = waitCtx(ctx, offset)
			errs[i] = fn(ctx, sub, &subs[i], hold)
			done <- i
		}(i, fn, &sub)
	}
	for range parts {
		<-done
	}
	ev.Healed = time.Now()
	var details []string
	for i, s := range subs {
		if !s.Start.IsZero() && (ev.Start.IsZero() || s.Start.Before(ev.Start)) {
			ev.Start = s.Start
		}
		ev.Targets = append(ev.Targets, s.Targets...)
		if s.Detail != "" {
			details = append(details, s.Detail)
		}
		if errs[i] != nil {
			ev.Err = strings.TrimSpace(ev.Err + " " + parts[i] + ": " + errs[i].Error())
		}
	}
	if ev.Start.IsZero() {
		ev.Start = ev.Healed
	}
	ev.Detail = strings.Join(details, "; ")
	return ev
}

// heal undoes every fault: network, pauses, stopped servers.
func (r *runner) heal() {
	r.c.Net.Heal()
	for _, n := range r.c.Nodes {
		if n.Paused() {
			_ = r.c.Resume(n)
		}
		if !n.Running() {
			n.Proxy.Down(n.tcpPorts()...)
			if err := r.c.Restart(n); err != nil {
				r.logf("restart %s while healing: %v", n.ID(), err)
			}
		}
	}
}

// chooseNemesis picks the next event's name: first every allowed nemesis
// once, alone, in a seeded order (so that every run covers all of them when
// it is long enough), then at random from allowed, mixing a network fault
// with a process fault with probability mixPct/100.
func (r *runner) chooseNemesis(allowed []string, mixPct int) string {
	if r.firstRound == nil {
		for _, i := range r.rng.Perm(len(allowed)) {
			r.firstRound = append(r.firstRound, allowed[i])
		}
	}
	if r.next < len(r.firstRound) {
		r.next++
		return r.firstRound[r.next-1]
	}
	if mixPct > 0 && r.rng.IntN(100) < mixPct {
		a := mixNetwork[r.rng.IntN(len(mixNetwork))]
		b := mixProcess[r.rng.IntN(len(mixProcess))]
		if slices.Contains(allowed, a) && slices.Contains(allowed, b) {
			return a + "+" + b
		}
	}
	return allowed[r.rng.IntN(len(allowed))]
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
