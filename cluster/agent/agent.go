package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/structs"
)

// API is what an agent needs from the servers. httpapi/client
// implements it over HTTP.
type API interface {
	// AgentTasks is a blocking query for the agent's assignments.
	AgentTasks(ctx context.Context, node string, index uint64, wait time.Duration) ([]*fsm.Task, uint64, error)
	// AgentReport commits a heartbeat with task statuses.
	AgentReport(ctx context.Context, r *fsm.AgentReport) (*fsm.ReportResult, error)
	// AgentLeave hands the agent's tasks back.
	AgentLeave(ctx context.Context, node string) error
	// ReportDatabase records the endpoint of the region's database.
	ReportDatabase(ctx context.Context, r *fsm.RegionDatabaseReport) error
	// RegionDatabase reads the recorded endpoint of a region's database.
	RegionDatabase(ctx context.Context, region string) (*fsm.RegionDatabase, error)
	// AgentRegister registers the agent's signing key as a trust member
	// (idempotent); its reports are signed with that key.
	AgentRegister(ctx context.Context, node string) error
	// CheckAgentToken asks a server what the agent's token is, and returns
	// an error wrapping ErrWrongToken when it is not an agent token bound
	// to node and region (an operator's, a reader's, another agent's, a
	// revoked one); other errors mean no server could say.
	CheckAgentToken(ctx context.Context, node, region string) error
}

// ErrWrongToken means the agent was given a token that is not its own:
// it refuses to use it.
var ErrWrongToken = structs.ErrWrongAgentToken

// Executor runs the tasks of one type. Run blocks until ctx ends (the task
// was moved, deleted, or the agent stops) or the task is done, and reports
// progress through report, which never blocks. The domain packages that
// provide executors (replication) implement it without importing this
// package: TaskStatus lives in internal/structs.
type Executor interface {
	Type() string
	Run(ctx context.Context, t *fsm.Task, report func(TaskStatus)) error
}

// TaskStatus is what an executor reports about its task.
type TaskStatus = structs.TaskStatus

// Config configures a region agent.
type Config struct {
	NodeID, Region, DataDir string
	// Serf addresses and the HTTP URL gossiped to servers.
	SerfBindAddr, SerfAdvertiseAddr string
	HTTPAdvertiseURL                string
	// Join lists Serf addresses to join (retried until one answers).
	Join []string
	// Capacity is how many tasks the agent takes (0: no limit).
	Capacity int
	Version  string
	// Memberlist replaces the default LAN memberlist settings (tests).
	Memberlist *memberlist.Config
	// HeartbeatInterval is how often the agent reports even without news.
	HeartbeatInterval time.Duration
	// GossipKey, when set, encrypts Serf gossip; it must be the servers'.
	GossipKey []byte
	// Executors are the task types this agent runs.
	Executors []Executor
	// Database is the secret-free endpoint of the region's PostgreSQL,
	// which the agent reports to the federation; nil when the agent has
	// none (replication in its region is then simulated: it runs no
	// replication tasks).
	Database *fsm.DatabaseEndpoint
	// NewAPI builds the server API client from a function that lists the
	// servers' HTTP URLs (nearest first), as Serf currently knows them.
	NewAPI     func(servers func() []string) API
	Logger     hclog.Logger
	Registerer prometheus.Registerer
}

// DefaultHeartbeatInterval is how often an idle agent reports.
const DefaultHeartbeatInterval = 5 * time.Second

// Validate checks the config.
func (c *Config) Validate() error {
	switch {
	case !fsm.ValidRegionName(c.NodeID):
		return fmt.Errorf("node name %q must be a DNS label (--node)", c.NodeID)
	case !fsm.ValidRegionName(c.Region):
		return fmt.Errorf("region %q must be a DNS label (--region)", c.Region)
	case c.DataDir == "":
		return errors.New("data directory is required (--data-dir)")
	case c.NewAPI == nil:
		return errors.New("agent: no server API")
	case len(c.Join) == 0:
		return errors.New("an agent needs --join: the Serf address of a server or agent")
	}
	return nil
}

// Agent is a region agent: a Serf member that runs the tasks the leader
// assigns to it.
type Agent struct {
	cfg     Config
	log     hclog.Logger
	serf    *serf.Serf
	events  chan serf.Event
	api     API
	execs   map[string]Executor
	metrics *agentMetrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	running  map[string]*runningTask
	gens     map[string]uint64        // highest generation seen per task (fencing)
	epochs   map[string]fsm.TaskEpoch // newest placement seen per tenant (epochs.go)
	pending  map[string]fsm.TaskReport
	reportCh chan struct{}
	// registered is closed once the agent's key is a trust member.
	registered chan struct{}
	// checked receives the outcome of the token check (nil: the token is
	// this agent's), once.
	checked  chan error
	leaving  bool
	stopOnce sync.Once
	stopErr  error
}

type runningTask struct {
	task    *fsm.Task
	cancel  context.CancelFunc
	done    chan struct{}
	since   time.Time
	status  string
	lastErr string
	// stale: the task's tenant epoch has ended; it is reported, not run.
	stale bool
}

// New starts an agent: it joins Serf with its tags, then watches its
// assignments and runs them.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := node.ClaimDataDir(cfg.DataDir, cfg.NodeID); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		cfg:      cfg,
		log:      cfg.Logger.Named("agent"),
		events:   make(chan serf.Event, 256),
		execs:    map[string]Executor{},
		metrics:  newAgentMetrics(cfg.Registerer),
		ctx:      ctx,
		cancel:   cancel,
		running:  map[string]*runningTask{},
		gens:     map[string]uint64{},
		epochs:   map[string]fsm.TaskEpoch{},
		pending:  map[string]fsm.TaskReport{},
		reportCh: make(chan struct{}, 1),

		registered: make(chan struct{}),
		checked:    make(chan error, 1),
	}
	for _, e := range cfg.Executors {
		a.execs[e.Type()] = e
	}
	if err := a.loadState(); err != nil {
		cancel()
		return nil, err
	}
	if err := a.setupSerf(); err != nil {
		cancel()
		return nil, err
	}
	a.api = cfg.NewAPI(a.Servers)
	a.goFn(a.drainEvents)
	a.goFn(a.joinLoop)
	a.goFn(a.registerKey)
	a.goFn(a.watchLoop)
	a.goFn(a.reportLoop)
	if cfg.Database != nil {
		a.goFn(a.databaseLoop)
	}
	a.log.Info("agent started", "region", cfg.Region, "serf", a.SerfAddr(), "capabilities", a.capabilities())
	return a, nil
}

func (a *Agent) goFn(fn func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn()
	}()
}

func (a *Agent) capabilities() []string {
	out := make([]string, 0, len(a.execs))
	for t := range a.execs {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func (a *Agent) setupSerf() error {
	sf, err := node.StartSerf(node.SerfOptions{
		Name: a.cfg.NodeID, DataDir: a.cfg.DataDir,
		Bind: a.cfg.SerfBindAddr, Advertise: a.cfg.SerfAdvertiseAddr,
		GossipKey: a.cfg.GossipKey, Memberlist: a.cfg.Memberlist,
		Tags: map[string]string{
			node.TagRole:            node.RoleAgent,
			node.TagRegion:          a.cfg.Region,
			node.TagHTTP:            a.cfg.HTTPAdvertiseURL,
			node.TagProtocolVersion: strconv.Itoa(node.ProtocolVersion),
			node.TagVersion:         a.cfg.Version,
			node.TagCapabilities:    strings.Join(a.capabilities(), ","),
			node.TagCapacity:        strconv.Itoa(a.cfg.Capacity),
		},
		EventCh: a.events, Logger: a.cfg.Logger,
	})
	if err != nil {
		return err
	}
	a.serf = sf
	return nil
}

// drainEvents consumes Serf events; the agent reads membership on demand.
func (a *Agent) drainEvents() {
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.events:
		}
	}
}

func (a *Agent) joinLoop() {
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := a.serf.Join(a.cfg.Join, true)
		if n > 0 {
			a.log.Info("joined the federation", "contacted", n)
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			a.log.Warn("join failed; retrying", "addresses", a.cfg.Join, "error", err)
		}
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// SerfAddr returns the agent's Serf address.
func (a *Agent) SerfAddr() string {
	m := a.serf.LocalMember()
	return fmt.Sprintf("%s:%d", m.Addr, m.Port)
}

// Serf exposes the agent's Serf member.
func (a *Agent) Serf() *serf.Serf { return a.serf }

// Servers returns the HTTP URLs of the alive servers, those of the agent's
// region first.
func (a *Agent) Servers() []string {
	var local, remote []string
	for _, m := range a.serf.Members() {
		if m.Status != serf.StatusAlive || m.Tags[node.TagRole] != node.RoleServer || m.Tags[node.TagHTTP] == "" {
			continue
		}
		if m.Tags[node.TagRegion] == a.cfg.Region {
			local = append(local, m.Tags[node.TagHTTP])
		} else {
			remote = append(remote, m.Tags[node.TagHTTP])
		}
	}
	sort.Strings(local)
	sort.Strings(remote)
	return append(local, remote...)
}

// registerKey registers the agent's key as a trust member, retrying until a
// server accepts it, then opens the registered channel: nothing is watched
// or reported before, since reports are signed with that key.
func (a *Agent) registerKey() {
	if !a.checkToken() {
		return
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		err := a.api.AgentRegister(ctx, a.cfg.NodeID)
		cancel()
		if err == nil {
			a.log.Info("agent key registered")
			close(a.registered)
			return
		}
		if attempt == 1 || attempt%20 == 0 {
			a.log.Warn("registering the agent key failed; retrying", "error", err)
		}
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// checkToken asks the servers, until one answers, whether the agent's token
// is an agent token bound to this node and region. A token that is not
// (an operator's given by mistake, another agent's) is never used again:
// the agent logs why, reports it on TokenChecked and stays idle.
func (a *Agent) checkToken() bool {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		err := a.api.CheckAgentToken(ctx, a.cfg.NodeID, a.cfg.Region)
		cancel()
		switch {
		case err == nil:
			a.checked <- nil
			return true
		case errors.Is(err, ErrWrongToken):
			a.log.Error("refusing to use the token: it is not this agent's", "error", err)
			a.checked <- err
			return false
		case attempt == 1 || attempt%20 == 0:
			a.log.Warn("checking the agent token failed; retrying", "error", err)
		}
		select {
		case <-a.ctx.Done():
			return false
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// TokenChecked receives, once, the outcome of the agent's token check: nil
// when the token is an agent token bound to this agent, else why not
// (wrapping ErrWrongToken).
func (a *Agent) TokenChecked() <-chan error { return a.checked }

// watchLoop follows the agent's assignments with blocking queries.
func (a *Agent) watchLoop() {
	select {
	case <-a.ctx.Done():
		return
	case <-a.registered:
	}
	var index uint64
	backoff := 100 * time.Millisecond
	for a.ctx.Err() == nil {
		tasks, idx, err := a.api.AgentTasks(a.ctx, a.cfg.NodeID, index, 5*time.Minute)
		if err != nil {
			if a.ctx.Err() != nil {
				return
			}
			a.log.Debug("watch tasks failed; retrying", "error", err, "backoff", backoff)
			select {
			case <-a.ctx.Done():
				return
			case <-time.After(backoff):
			}
			if backoff < 5*time.Second {
				backoff *= 2
			}
			continue
		}
		backoff = 100 * time.Millisecond
		if idx < index {
			index = 0 // the state was restored from a snapshot: start over
		} else {
			index = idx
		}
		a.reconcile(tasks)
	}
}

// reconcile makes the running set match the assignments: it refuses an
// assignment older than one already seen (the fencing token), stops tasks
// that moved away or changed generation, and starts new ones, except that
// a task of a tenant epoch that has ended is reported, not run (epochs.go).
func (a *Agent) reconcile(tasks []*fsm.Task) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.leaving {
		return
	}
	want := map[string]*fsm.Task{}
	for _, t := range tasks {
		if t.Agent != a.cfg.NodeID {
			continue
		}
		if seen := a.gens[t.ID]; t.Generation < seen {
			a.log.Warn("refusing a stale assignment", "task", t.ID, "generation", t.Generation, "seen", seen)
			a.metrics.refused.Inc()
			continue
		}
		want[t.ID] = t
	}
	stale, changed := a.staleLocked(want)
	for id, r := range a.running {
		if w, ok := want[id]; !ok || w.Generation != r.task.Generation || r.stale != (stale[id] != "") {
			a.stopLocked(id, r)
		}
	}
	for id, t := range want {
		if _, ok := a.running[id]; ok {
			continue
		}
		if a.gens[id] != t.Generation {
			a.gens[id] = t.Generation
			changed = true
		}
		if why := stale[id]; why != "" {
			a.startStaleLocked(t, why)
			continue
		}
		a.startLocked(t)
	}
	if changed {
		if err := a.saveStateLocked(); err != nil {
			a.log.Error("could not persist assignment generations and tenant epochs", "error", err)
		}
	}
	a.metrics.running.Set(float64(len(a.running)))
}

func (a *Agent) startLocked(t *fsm.Task) {
	ctx, cancel := context.WithCancel(a.ctx)
	r := &runningTask{task: t, cancel: cancel, done: make(chan struct{}), since: time.Now(), status: fsm.TaskAssigned}
	a.running[t.ID] = r
	exec := a.execs[t.Type]
	a.log.Info("starting task", "task", t.ID, "generation", t.Generation)
	go func() {
		defer close(r.done)
		if exec == nil {
			a.record(t, TaskStatus{Status: fsm.TaskFailing, Error: "this agent has no executor for " + t.Type + " tasks"})
			<-ctx.Done()
			return
		}
		err := exec.Run(ctx, t, func(st TaskStatus) { a.record(t, st) })
		if err != nil && ctx.Err() == nil {
			a.record(t, TaskStatus{Status: fsm.TaskFailing, Error: err.Error()})
		}
	}()
}

// stopLocked cancels a running task and drops its unsent reports.
func (a *Agent) stopLocked(id string, r *runningTask) {
	a.log.Info("stopping task", "task", id, "generation", r.task.Generation)
	r.cancel()
	delete(a.running, id)
	if p, ok := a.pending[id]; ok && p.Generation == r.task.Generation {
		delete(a.pending, id)
	}
}

// record queues an executor's status for the next report.
func (a *Agent) record(t *fsm.Task, st TaskStatus) {
	var raw json.RawMessage
	if st.Result != nil {
		b, err := json.Marshal(st.Result)
		if err == nil && len(b) <= fsm.MaxTaskResultBytes {
			raw = b
		}
	}
	errMsg := st.Error
	if len(errMsg) > fsm.MaxTaskErrorLen {
		errMsg = errMsg[:fsm.MaxTaskErrorLen]
	}
	a.mu.Lock()
	r := a.running[t.ID]
	if r == nil || r.task.Generation != t.Generation {
		a.mu.Unlock()
		return // the task moved on; this report is stale
	}
	changed := r.status != st.Status || r.lastErr != errMsg
	r.status, r.lastErr = st.Status, errMsg
	a.pending[t.ID] = fsm.TaskReport{ID: t.ID, Generation: t.Generation, Status: st.Status, Result: raw, Error: errMsg}
	a.mu.Unlock()
	if changed {
		select {
		case a.reportCh <- struct{}{}:
		default:
		}
	}
}

// reportLoop sends heartbeats with queued task reports: at once (batched
// over 100 ms) when a status changes, else every HeartbeatInterval.
func (a *Agent) reportLoop() {
	select {
	case <-a.ctx.Done():
		return
	case <-a.registered:
	}
	tick := time.NewTicker(a.cfg.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-tick.C:
		case <-a.reportCh:
			select {
			case <-a.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		a.sendReport()
	}
}

func (a *Agent) sendReport() {
	a.mu.Lock()
	rep := &fsm.AgentReport{Node: a.cfg.NodeID}
	for _, p := range a.pending {
		rep.Tasks = append(rep.Tasks, p)
	}
	a.mu.Unlock()
	sort.Slice(rep.Tasks, func(i, j int) bool { return rep.Tasks[i].ID < rep.Tasks[j].ID })
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	res, err := a.api.AgentReport(ctx, rep)
	if err != nil {
		a.metrics.reports.WithLabelValues("error").Inc()
		a.log.Debug("report failed; will retry", "error", err)
		return
	}
	a.metrics.reports.WithLabelValues("ok").Inc()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, sent := range rep.Tasks {
		if p, ok := a.pending[sent.ID]; ok && p.Generation == sent.Generation && p.Status == sent.Status && string(p.Result) == string(sent.Result) {
			delete(a.pending, sent.ID)
		}
	}
	sentGen := make(map[string]uint64, len(rep.Tasks))
	for _, sent := range rep.Tasks {
		sentGen[sent.ID] = sent.Generation
	}
	for _, id := range res.Fenced {
		// The leader moved this task away from us: stop it now rather than
		// wait for the watch to say so. Only the generation the report was
		// about: a newer one may already run here (the watch delivered it
		// while the report was in flight), and stopping that one would
		// leave the task assigned to us and never run.
		if r := a.running[id]; r != nil && r.task.Generation == sentGen[id] {
			a.log.Warn("report fenced: task no longer ours", "task", id, "generation", r.task.Generation)
			a.stopLocked(id, r)
		}
	}
	a.metrics.running.Set(float64(len(a.running)))
}

// RunningTask describes a task the agent runs, for its status endpoint.
type RunningTask struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Generation uint64    `json:"generation"`
	Status     string    `json:"status"`
	Error      string    `json:"error,omitempty"`
	Since      time.Time `json:"since"`
}

// Status is the agent's own view, served on its /health and
// /global-status.
type Status struct {
	Node     string           `json:"node"`
	Region   string           `json:"region"`
	Role     string           `json:"role"`
	Version  string           `json:"version"`
	Servers  []string         `json:"servers"`
	Members  int              `json:"members"`
	Tasks    []RunningTask    `json:"tasks"`
	Peers    []structs.Member `json:"-"`
	Capacity int              `json:"capacity"`
	// Database is the region database the agent serves (host:port/db),
	// or says that replication is simulated without one.
	Database string `json:"database"`
}

// Status returns the agent's view of itself.
func (a *Agent) Status() Status {
	st := Status{Node: a.cfg.NodeID, Region: a.cfg.Region, Role: node.RoleAgent, Version: a.cfg.Version,
		Servers: a.Servers(), Members: a.serf.NumNodes(), Capacity: a.cfg.Capacity, Tasks: []RunningTask{},
		Database: "none: no POSTGRES_DSN, replication in this region is simulated"}
	if d := a.cfg.Database; d != nil {
		st.Database = fmt.Sprintf("%s:%d/%s", d.Host, d.Port, d.Database)
	}
	a.mu.Lock()
	for _, r := range a.running {
		st.Tasks = append(st.Tasks, RunningTask{ID: r.task.ID, Type: r.task.Type, Generation: r.task.Generation,
			Status: r.status, Error: r.lastErr, Since: r.since})
	}
	a.mu.Unlock()
	sort.Slice(st.Tasks, func(i, j int) bool { return st.Tasks[i].ID < st.Tasks[j].ID })
	return st
}

// Summary is the agent's view of itself without detail: what its /health
// shows to anyone.
type Summary struct {
	Status   string `json:"status"`
	Node     string `json:"node"`
	Region   string `json:"region"`
	Role     string `json:"role"`
	Version  string `json:"version"`
	Members  int    `json:"members"`
	Capacity int    `json:"capacity"`
	// ServerCount is how many servers the agent knows.
	ServerCount int `json:"server_count"`
	// TaskCount is how many tasks it runs, TasksByStatus by status.
	TaskCount     int            `json:"task_count"`
	TasksByStatus map[string]int `json:"tasks_by_status"`
	// DatabaseConfigured says whether it serves a region database
	// (without naming it).
	DatabaseConfigured bool `json:"database_configured"`
}

// Summary returns the agent's view of itself without task, tenant or
// database detail.
func (a *Agent) Summary() Summary {
	s := Summary{Status: "ok", Node: a.cfg.NodeID, Region: a.cfg.Region, Role: node.RoleAgent, Version: a.cfg.Version,
		Members: a.serf.NumNodes(), Capacity: a.cfg.Capacity, ServerCount: len(a.Servers()),
		TasksByStatus: map[string]int{}, DatabaseConfigured: a.cfg.Database != nil}
	a.mu.Lock()
	for _, r := range a.running {
		s.TaskCount++
		s.TasksByStatus[r.status]++
	}
	a.mu.Unlock()
	return s
}

// Leave stops the agent gracefully: it stops its tasks, hands them back to
// the leader so they move to a peer at once, leaves Serf and shuts down.
func (a *Agent) Leave(ctx context.Context) error {
	a.mu.Lock()
	a.leaving = true
	for id, r := range a.running {
		a.stopLocked(id, r)
	}
	a.mu.Unlock()
	var errs []error
	select {
	case <-a.registered: // else the token was never used, or is not ours
		if err := a.api.AgentLeave(ctx, a.cfg.NodeID); err != nil {
			errs = append(errs, fmt.Errorf("hand back tasks: %w", err))
		}
	default:
	}
	if err := a.serf.Leave(); err != nil {
		errs = append(errs, fmt.Errorf("serf leave: %w", err))
	}
	errs = append(errs, a.Shutdown())
	return errors.Join(errs...)
}

// Shutdown stops the agent without leaving; servers see it fail.
func (a *Agent) Shutdown() error {
	a.stopOnce.Do(func() {
		a.cancel()
		a.stopErr = a.serf.Shutdown()
		a.wg.Wait()
		a.mu.Lock()
		for id, r := range a.running {
			a.stopLocked(id, r)
		}
		a.mu.Unlock()
		a.metrics.unregister()
	})
	return a.stopErr
}

// agentState is what an agent keeps on disk between runs.
type agentState struct {
	Generations map[string]uint64 `json:"generations"`
	// Epochs are the newest tenant placements seen, so that a restarted
	// agent still refuses tasks of an ended epoch.
	Epochs map[string]fsm.TaskEpoch `json:"epochs,omitempty"`
}

func (a *Agent) statePath() string { return filepath.Join(a.cfg.DataDir, "agent-state.json") }

func (a *Agent) loadState() error {
	b, err := os.ReadFile(a.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read agent state: %w", err)
	}
	var st agentState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("agent state %s is corrupt: %w", a.statePath(), err)
	}
	for k, v := range st.Generations {
		a.gens[k] = v
	}
	for k, v := range st.Epochs {
		a.epochs[k] = v
	}
	return nil
}

// saveStateLocked writes the fencing generations and tenant epochs
// atomically and durably, so a restarted agent still refuses assignments
// older than it has run.
func (a *Agent) saveStateLocked() error {
	b, err := json.Marshal(agentState{Generations: a.gens, Epochs: a.epochs})
	if err != nil {
		return err
	}
	tmp := a.statePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, a.statePath())
}
