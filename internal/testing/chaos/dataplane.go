package chaos

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// DataPlaneTenant is a tenant of a data-plane run: its home and mirrors
// (indexes into the run's regions) and its tables, each with one PII
// column.
type DataPlaneTenant struct {
	ID      string  `json:"id"`
	Home    int     `json:"-"`
	Mirrors []int   `json:"-"`
	Tables  []Table `json:"tables"`
	// Auto gives the tenant the automatic failover policy (region-loss
	// run).
	Auto bool `json:"auto_failover,omitempty"`
	// HomeRegion and MirrorRegions are filled in by the run.
	HomeRegion    string   `json:"home"`
	MirrorRegions []string `json:"mirrors"`
}

// Table is a tenant table and its PII column.
type Table struct {
	Name string `json:"name"`
	PII  string `json:"pii"`
}

func (t DataPlaneTenant) pii(table string) string {
	for _, tb := range t.Tables {
		if tb.Name == table {
			return tb.PII
		}
	}
	return ""
}

func (t DataPlaneTenant) mirrors(region int) bool {
	for _, m := range t.Mirrors {
		if m == region {
			return true
		}
	}
	return false
}

func (t DataPlaneTenant) hasTable(name string) bool { return t.pii(name) != "" }

// DataPlaneTenants is the default tenant set over three regions (0, 1,
// 2): every region is the home of someone and a mirror of someone, the
// replication graph has a cycle (0 -> 2 -> 0), two tenants share their
// home's orders table, a mirror's orders table holds the rows of two
// tenants (region 2: globex and initech), and umbrella's tickets exist
// only at its home and on its mirrors (where the PII column must be
// absent). Region 0 also holds rows of an unregistered tenant, hooli,
// which must never leave it.
var DataPlaneTenants = []DataPlaneTenant{
	{ID: "acme", Home: 0, Mirrors: []int{1}, Tables: []Table{{"orders", "email"}}},
	{ID: "globex", Home: 0, Mirrors: []int{2}, Tables: []Table{{"orders", "email"}}},
	{ID: "initech", Home: 1, Mirrors: []int{2}, Tables: []Table{{"orders", "email"}}},
	{ID: "umbrella", Home: 2, Mirrors: []int{0, 1}, Tables: []Table{{"orders", "email"}, {"tickets", "phone"}}},
}

// dpLocalTenant has rows in region 0's orders table but is registered
// nowhere: no publication may carry them.
const dpLocalTenant = "hooli"

// DataPlaneNemeses are the data-plane run's fault types: kill -9 of a
// region's PostgreSQL (every region is a home and a mirror) and its
// restart, kill -9 of a region's agent and its restart, and kill -9 of
// the leader server; mixes run two of them at once.
var DataPlaneNemeses = []string{"pg-kill", "agent-kill", "kill-leader"}

var dataPlaneMixes = []string{"pg-kill+kill-leader", "pg-kill+agent-kill", "agent-kill+kill-leader"}

// DataPlaneConfig shapes a data-plane run.
type DataPlaneConfig struct {
	Name string
	Seed uint64
	// Bin is the atomfed binary; Dir receives logs (and the PostgreSQL
	// logs of a failed run).
	Bin, Dir string
	// Tenants (default DataPlaneTenants) over Regions regions (3).
	Tenants []DataPlaneTenant
	Regions int
	// Duration of the fault phase; Warmup runs the writers (and the lag
	// probes) before the first fault.
	Duration, Warmup time.Duration
	// Nemeses to choose from (default DataPlaneNemeses); Schedule, when
	// not nil, runs these events in order instead. MixPct is the chance
	// that a random event is a mix.
	Nemeses  []string
	Schedule []string
	MixPct   int
	// Each fault is held for HoldMin..HoldMax; then QuietMin..QuietMax
	// without a fault.
	HoldMin, HoldMax, QuietMin, QuietMax time.Duration
	// WriteInterval paces each tenant's writer (one write at a time).
	WriteInterval time.Duration
	// StreamWithin bounds the wait for every mirror to stream after the
	// tenants are registered; ConvergeWithin bounds the convergence after
	// healing: every mirror holding exactly its home's rows.
	StreamWithin, ConvergeWithin time.Duration
	// ReplicationInterval is the agents' --replication-interval.
	ReplicationInterval time.Duration
	// Backups runs backups and restore drills during the faults and
	// checks their verdicts after healing (dpbackup.go).
	Backups bool
	// Env is added to the servers' and agents' environment.
	Env  []string
	Logf func(format string, args ...any)
}

func (c *DataPlaneConfig) defaults() {
	if c.Tenants == nil {
		c.Tenants = DataPlaneTenants
	}
	if c.Regions == 0 {
		c.Regions = 3
	}
	if c.Warmup == 0 {
		c.Warmup = 5 * time.Second
	}
	if len(c.Nemeses) == 0 {
		c.Nemeses = DataPlaneNemeses
	}
	if c.HoldMax == 0 {
		c.HoldMin, c.HoldMax = 2*time.Second, 8*time.Second
	}
	if c.QuietMax == 0 {
		c.QuietMin, c.QuietMax = time.Second, 4*time.Second
	}
	if c.WriteInterval == 0 {
		c.WriteInterval = 20 * time.Millisecond
	}
	if c.StreamWithin == 0 {
		c.StreamWithin = 2 * time.Minute
	}
	if c.ConvergeWithin == 0 {
		c.ConvergeWithin = 90 * time.Second
	}
	if c.ReplicationInterval == 0 {
		c.ReplicationInterval = time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// DataPlaneResult is what a data-plane run measured and found.
type DataPlaneResult struct {
	Name        string            `json:"name"`
	Setup       string            `json:"setup"`
	Seed        uint64            `json:"seed"`
	Started     time.Time         `json:"started"`
	ElapsedS    float64           `json:"elapsed_s"`
	FaultPhaseS float64           `json:"fault_phase_s"`
	Regions     []string          `json:"regions"`
	Tenants     []DataPlaneTenant `json:"tenants"`
	Nemeses     []string          `json:"nemeses_considered"`
	Events      []Event           `json:"events"`

	// Writes to the homes: acknowledged by PostgreSQL, of unknown outcome
	// (an error or timeout after the statement was sent), not sent (the
	// connection failed first).
	WritesAcked   int64 `json:"writes_acked"`
	WritesMaybe   int64 `json:"writes_maybe"`
	WritesNotSent int64 `json:"writes_not_sent"`
	// RowsAcked are rows certainly present by the acknowledged writes;
	// RowsMaybe rows whose state depends on a write of unknown outcome.
	RowsAcked int `json:"rows_acked"`
	RowsMaybe int `json:"rows_maybe"`

	// StreamS is how long after the tenants were registered every mirror
	// streamed (every table ready).
	StreamS float64 `json:"stream_after_register_s"`
	// Lag before faults: from a probe row's commit at the home until every
	// mirror of the tenant shows it.
	LagSamples int     `json:"lag_samples"`
	LagP50S    float64 `json:"lag_p50_s"`
	LagMaxS    float64 `json:"lag_max_s"`
	// LagTimeouts are probes whose row did not reach every mirror within
	// 30 s (not counted in the lag; Notes say what the mirror's
	// subscription and the home's slot showed then).
	LagTimeouts int `json:"lag_probe_timeouts"`
	// Convergence after healing: from the end of the writes (right after
	// the last fault was healed and everything was up) until every mirror
	// held exactly its home's rows of each tenant.
	ConvergeWithinS float64 `json:"converge_within_s"`
	Converged       bool    `json:"converged"`
	ConvergenceS    float64 `json:"convergence_s"`

	// Checks after convergence. Lost: acknowledged rows missing (or
	// holding a value no write gave them) at the home or a mirror.
	// Extra: rows no write (acknowledged or maybe) can explain. Leaked:
	// rows of a tenant in a region that is neither its home nor a mirror.
	// RLSVisible: rows of another tenant a session saw under row-level
	// security on a mirror; RLSOff: mirror tables without forced RLS or
	// the tenant policy. PIIFound: PII columns present on mirror-only
	// tables plus mirrored rows holding a PII value. HomeColumnsLost: a
	// tenant table at its home without its PII column (tenant data
	// destroyed, e.g. by a subscriber that took a shared table for a
	// mirror table of its own). OrphanSlots: slots on
	// a home no subscription uses; MissingSubscriptions: a mirror without
	// its subscription or its slot.
	LostRows             int      `json:"lost_rows"`
	ExtraRows            int      `json:"extra_rows"`
	LeakedRows           int      `json:"leaked_rows"`
	RLSVisible           int      `json:"rls_rows_of_other_tenants_visible"`
	RLSOff               int      `json:"rls_tables_unprotected"`
	PIIFound             int      `json:"pii_found"`
	HomeColumnsLost      int      `json:"home_pii_columns_lost"`
	OrphanSlots          int      `json:"orphan_slots"`
	MissingSubscriptions int      `json:"missing_subscriptions"`
	Findings             []string `json:"findings,omitempty"`
	// Notes are observations that fail nothing.
	Notes []string `json:"notes,omitempty"`

	// BackupsRun says the run asked for backups and drills during the
	// faults; Backup counts them and what the checker rechecked.
	BackupsRun bool         `json:"backups_run"`
	Backup     BackupChecks `json:"backups"`

	Errors   map[string]int `json:"writer_errors"`
	Failures []string       `json:"failures"`
	Dir      string         `json:"dir"`
}

// Passed reports whether every check held.
func (r *DataPlaneResult) Passed() bool { return len(r.Failures) == 0 }

func (r *DataPlaneResult) fail(format string, args ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

func (r *DataPlaneResult) finding(format string, args ...any) {
	if len(r.Findings) < 40 {
		r.Findings = append(r.Findings, fmt.Sprintf(format, args...))
	}
}

// dataPlane is the state of a running data-plane run.
type dataPlane struct {
	cfg     DataPlaneConfig
	c       *Cluster
	regions []string
	pgs     []*pglocal.Cluster
	agents  []*procs.Proc
	writers []*dpWriter
	bk      *dpBackups // nil unless cfg.Backups
	// lossPGUp and lossAgentUp: when the region-loss run brought the lost
	// region's PostgreSQL and agent back.
	lossPGUp, lossAgentUp time.Time

	mu    sync.Mutex
	conns map[int]*pgx.Conn // check connections per region
}

// regionRole describes region i's part, for event details.
func (d *dataPlane) regionRole(i int) string {
	var home, mirror []string
	for _, t := range d.cfg.Tenants {
		if t.Home == i {
			home = append(home, t.ID)
		}
		if t.mirrors(i) {
			mirror = append(mirror, t.ID)
		}
	}
	s := d.regions[i] + ": "
	if len(home) > 0 {
		s += "home of " + strings.Join(home, ",")
	}
	if len(mirror) > 0 {
		if len(home) > 0 {
			s += "; "
		}
		s += "mirror of " + strings.Join(mirror, ",")
	}
	return s
}

// RunDataPlane runs one data-plane run: 3 servers, a real PostgreSQL and
// an agent per region, tenants registered through the API, writers on the
// homes, faults, healing, and the checks. It returns an error only when
// the run could not be carried out; what the checks find is in the
// result's Failures.
func RunDataPlane(ctx context.Context, cfg DataPlaneConfig) (*DataPlaneResult, error) {
	cfg.defaults()
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x64617461))
	d := &dataPlane{cfg: cfg, conns: map[int]*pgx.Conn{}}
	for i := 0; i < cfg.Regions; i++ {
		d.regions = append(d.regions, procs.Regions[i])
	}
	tenants := make([]DataPlaneTenant, len(cfg.Tenants))
	for i, t := range cfg.Tenants {
		t.HomeRegion = d.regions[t.Home]
		t.MirrorRegions = nil
		for _, m := range t.Mirrors {
			t.MirrorRegions = append(t.MirrorRegions, d.regions[m])
		}
		tenants[i] = t
	}
	d.cfg.Tenants = tenants
	res := &DataPlaneResult{Name: cfg.Name, Seed: cfg.Seed, Started: time.Now(), Regions: d.regions, Tenants: tenants,
		Nemeses: cfg.Nemeses, Dir: cfg.Dir, ConvergeWithinS: cfg.ConvergeWithin.Seconds(), ConvergenceS: -1}
	res.Setup = fmt.Sprintf("3 servers, %d regions each with its own PostgreSQL 15 and one agent, %d tenants, loopback", cfg.Regions, len(tenants))
	cfg.Logf("data-plane run %q: seed %d, %s, faults for %s", cfg.Name, cfg.Seed, res.Setup, cfg.Duration)

	c, err := StartCluster(ClusterConfig{Bin: cfg.Bin, Dir: cfg.Dir, Servers: 3, RaftMultiplier: 1, TmpfsNode: -1,
		Env: cfg.Env, Seed: rng.Uint64(), Logf: cfg.Logf})
	if err != nil {
		if c != nil {
			logTails(cfg.Logf, c)
		}
		return res, fmt.Errorf("start cluster: %w", err)
	}
	d.c = c
	defer d.close(res)
	if err := d.startPostgres(ctx); err != nil {
		return res, err
	}
	for _, r := range d.regions {
		if err := registerRegion(ctx, c, r); err != nil {
			return res, err
		}
	}
	if cfg.Backups {
		if err := d.prepareBackups(ctx); err != nil {
			return res, fmt.Errorf("prepare backups: %w", err)
		}
		res.BackupsRun = true
	}
	if err := d.createTables(ctx); err != nil {
		return res, err
	}
	for i, t := range tenants {
		pg := d.pgs[t.Home]
		d.writers = append(d.writers, newDPWriter(t, func() string { return pg.DSN(pglocal.Database) }, cfg.WriteInterval, rng.Uint64()+uint64(i)))
	}
	if err := d.seedRows(ctx, 30); err != nil {
		return res, err
	}
	if err := d.startAgents(); err != nil {
		return res, err
	}
	if err := d.registerTenants(ctx); err != nil {
		return res, err
	}
	streamStart := time.Now()
	if err := d.waitStreaming(ctx, cfg.StreamWithin); err != nil {
		res.fail("replication was not streaming %s after the tenants were registered: %v", cfg.StreamWithin, err)
	} else {
		res.StreamS = time.Since(streamStart).Seconds()
		cfg.Logf("every mirror streams, %s after the tenants were registered", time.Since(streamStart).Round(time.Millisecond))
	}

	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, w := range d.writers {
		wg.Add(1)
		go func(w *dpWriter) {
			defer wg.Done()
			w.run(wctx)
		}(w)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopWriters()
			wg.Wait()
		}
	}
	defer stop()

	warmEnd := time.Now().Add(cfg.Warmup)
	lags := d.measureLag(ctx, warmEnd, res)
	sort.Float64s(lags)
	res.LagSamples = len(lags)
	if len(lags) > 0 {
		res.LagP50S, res.LagMaxS = percentile(lags, 50), lags[len(lags)-1]
	}
	cfg.Logf("replication lag before faults: p50 %s, max %s over %d probes", secs(res.LagP50S), secs(res.LagMaxS), len(lags))
	_ = waitCtx(ctx, time.Until(warmEnd))

	r := &runner{c: c, rng: rng, logf: cfg.Logf, dp: d}
	faultStart := time.Now()
	bctx, stopBackups := context.WithCancel(ctx)
	var bwg sync.WaitGroup
	if d.bk != nil {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			d.runBackups(bctx)
		}()
	}
	d.runFaults(ctx, r, res)
	stopBackups()
	bwg.Wait()
	res.FaultPhaseS = time.Since(faultStart).Seconds()
	d.heal(ctx, r)
	if err := d.waitWhole(ctx, 90*time.Second); err != nil {
		res.fail("not whole after the last fault was healed: %v", err)
	}
	stop()
	writesEnd := time.Now()
	cfg.Logf("faults over, writes stopped; waiting up to %s for every mirror to hold its home's rows", cfg.ConvergeWithin)

	models := make([]map[dpKey]*dpRow, len(d.writers))
	res.Errors = map[string]int{}
	for i, w := range d.writers {
		models[i] = w.model()
		res.WritesAcked += w.Acked.Load()
		res.WritesMaybe += w.Maybe.Load()
		res.WritesNotSent += w.NotSent.Load()
		p, u := modelSummary(models[i])
		res.RowsAcked += p
		res.RowsMaybe += u
		for k, v := range w.errors() {
			res.Errors[w.t.ID+": "+k] += v
		}
	}
	if err := d.converge(ctx, writesEnd, res); err != nil {
		res.fail("%v", err)
	}
	d.check(ctx, models, res)
	if d.bk != nil {
		d.checkBackups(ctx, res)
	}
	res.ElapsedS = time.Since(res.Started).Seconds()
	if !res.Passed() {
		logTails(cfg.Logf, c)
	}
	if !res.Passed() || res.LagTimeouts > 0 {
		d.keepPostgresLogs()
	}
	return res, nil
}

// startPostgres starts one PostgreSQL per region, sharing the
// replication role's password so that each passfile opens the others.
func (d *dataPlane) startPostgres(ctx context.Context) error {
	pw := make([]byte, 18)
	if _, err := crand.Read(pw); err != nil {
		return err
	}
	d.pgs = make([]*pglocal.Cluster, len(d.regions))
	errs := make([]error, len(d.regions))
	var wg sync.WaitGroup
	for i, r := range d.regions {
		wg.Add(1)
		go func(i int, r string) {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			d.pgs[i], errs[i] = pglocal.Start(sctx, pglocal.Options{Name: "chaos-" + r, ReplicationPassword: hex.EncodeToString(pw)})
		}(i, r)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// createTables creates each tenant table at the homes that hold it, as an
// operator would (the mirrors' tables are the subscribers' work).
func (d *dataPlane) createTables(ctx context.Context) error {
	for i := range d.regions {
		made := map[string]bool{}
		for _, t := range d.cfg.Tenants {
			if t.Home != i {
				continue
			}
			for _, tb := range t.Tables {
				if made[tb.Name] {
					continue
				}
				made[tb.Name] = true
				ddl := fmt.Sprintf(`CREATE TABLE %s (tenant_id text NOT NULL, id bigint NOT NULL, amount bigint NOT NULL,
					note text NOT NULL, %s text, PRIMARY KEY (tenant_id, id))`, pgx.Identifier{tb.Name}.Sanitize(), pgx.Identifier{tb.PII}.Sanitize())
				if err := d.exec(ctx, i, ddl); err != nil {
					return err
				}
				if tb.Name == "orders" && i == 0 {
					if err := d.exec(ctx, i, fmt.Sprintf(`INSERT INTO orders (tenant_id, id, amount, note, %s)
						SELECT '%s', g, g, 'local', 'x' || g || '%s' FROM generate_series(1, 50) g`,
						pgx.Identifier{tb.PII}.Sanitize(), dpLocalTenant, piiMarker)); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func (d *dataPlane) exec(ctx context.Context, region int, sql string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := d.pgs[region].Connect(cctx, pglocal.Database)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(cctx, sql); err != nil {
		return fmt.Errorf("%s: %s: %w", d.regions[region], strings.Join(strings.Fields(sql), " "), err)
	}
	return nil
}

// seedRows inserts n rows per tenant before replication starts, so that
// the mirrors' initial copy carries them.
func (d *dataPlane) seedRows(ctx context.Context, n int) error {
	for _, w := range d.writers {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		conn, err := d.pgs[w.t.Home].Connect(cctx, pglocal.Database)
		if err != nil {
			cancel()
			return err
		}
		for i := 0; i < n; i++ {
			if _, ok := w.insertNow(cctx, conn); !ok {
				cancel()
				conn.Close(context.Background())
				return fmt.Errorf("seed rows of %s: %v", w.t.ID, w.errors())
			}
		}
		conn.Close(context.Background())
		cancel()
	}
	return nil
}

// startAgents starts one agent per region with the region's DSN (in the
// environment, as an operator would pass a secret) and passfile.
func (d *dataPlane) startAgents() error {
	for i, r := range d.regions {
		pg := d.pgs[i]
		extra := []string{"--replication-passfile", pg.Passfile, "--replication-ca", pg.RootCert, "--replication-interval", d.cfg.ReplicationInterval.String()}
		if d.bk != nil {
			extra = append(extra, "--backup-dir", d.backupDir(r))
		}
		env := append([]string{"POSTGRES_DSN=" + pg.DSN(pglocal.Database)}, d.cfg.Env...)
		a, err := d.c.StartAgent(r, extra, env)
		if err != nil {
			return fmt.Errorf("start agent of %s: %w", r, err)
		}
		d.agents = append(d.agents, a)
	}
	return nil
}

// api returns a client of a random running server (through its proxy).
func (d *dataPlane) api(i int) (*client.Client, error) {
	n := d.c.Nodes[i%len(d.c.Nodes)]
	return d.c.Sec.Client(n.ProxyURL)
}

// retryAPI runs op against the servers in turn until it succeeds or
// timeout passes.
func (d *dataPlane) retryAPI(ctx context.Context, timeout time.Duration, what string, op func(context.Context, *client.Client) error) error {
	i := 0
	err := testutil.PollEvery(ctx, timeout, 200*time.Millisecond, func() error {
		cl, err := d.api(i)
		i++
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return op(rctx, cl)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// registerTenants puts every tenant through the API, once the agents
// have reported their regions' databases.
func (d *dataPlane) registerTenants(ctx context.Context) error {
	for _, r := range d.regions {
		if err := d.retryAPI(ctx, 60*time.Second, "database endpoint of "+r, func(ctx context.Context, cl *client.Client) error {
			_, err := cl.RegionDatabase(ctx, r, nil)
			return err
		}); err != nil {
			return err
		}
	}
	for _, t := range d.cfg.Tenants {
		spec := &fsm.Tenant{ID: t.ID, HomeRegion: t.HomeRegion, Mirrors: t.MirrorRegions}
		if t.Auto {
			spec.Failover = &fsm.FailoverPolicy{Mode: fsm.FailoverAuto, RPOBudgetMS: 60000}
		}
		for _, tb := range t.Tables {
			spec.Tables = append(spec.Tables, fsm.TenantTable{Name: tb.Name, PIIColumns: []string{tb.PII}})
		}
		if err := d.retryAPI(ctx, 60*time.Second, "put tenant "+t.ID, func(ctx context.Context, cl *client.Client) error {
			_, err := cl.PutTenant(ctx, spec, nil)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

// streaming reports why some tenant's replication does not stream yet,
// from the API's replication view.
func (d *dataPlane) streaming(ctx context.Context) error {
	for _, t := range d.cfg.Tenants {
		var v *fsm.TenantReplication
		if err := d.retryAPI(ctx, 5*time.Second, "replication of "+t.ID, func(ctx context.Context, cl *client.Client) error {
			var err error
			v, _, err = cl.TenantReplication(ctx, t.ID, nil)
			return err
		}); err != nil {
			return err
		}
		if v.Publisher == nil || v.Publisher.State != fsm.ReplReady {
			state := "none"
			if v.Publisher != nil {
				state = v.Publisher.State + " " + issuesText(v.Publisher.Issues)
			}
			return fmt.Errorf("%s: publisher %s", t.ID, state)
		}
		for _, m := range t.MirrorRegions {
			var mv *fsm.MirrorView
			for i := range v.Mirrors {
				if v.Mirrors[i].Region == m {
					mv = &v.Mirrors[i]
				}
			}
			if mv == nil {
				return fmt.Errorf("%s: mirror %s not reported", t.ID, m)
			}
			if mv.State != fsm.ReplStreaming || len(mv.Issues) > 0 {
				return fmt.Errorf("%s: mirror %s is %s %s", t.ID, m, mv.State, issuesText(mv.Issues))
			}
			for _, tb := range mv.Tables {
				if tb.State != "ready" {
					return fmt.Errorf("%s: mirror %s table %s is %s", t.ID, m, tb.Name, tb.State)
				}
			}
		}
	}
	return nil
}

func issuesText(is []fsm.ReplicationIssue) string {
	var parts []string
	for _, i := range is {
		parts = append(parts, i.Code+": "+i.Message)
	}
	return strings.Join(parts, "; ")
}

func (d *dataPlane) waitStreaming(ctx context.Context, timeout time.Duration) error {
	nextLog := time.Now().Add(5 * time.Second)
	var last error
	err := testutil.PollEvery(ctx, timeout, 250*time.Millisecond, func() error {
		last = d.streaming(ctx)
		if last != nil && time.Now().After(nextLog) {
			d.cfg.Logf("waiting for replication to stream: %v", last)
			nextLog = time.Now().Add(5 * time.Second)
		}
		return last
	})
	if err != nil {
		return last
	}
	return nil
}

// measureLag inserts probe rows at the homes until until, each time
// waiting for every mirror of the tenant to show the row, and returns the
// lags in seconds.
func (d *dataPlane) measureLag(ctx context.Context, until time.Time, res *DataPlaneResult) []float64 {
	var lags []float64
	for time.Now().Before(until) && ctx.Err() == nil {
		for _, w := range d.writers {
			if len(w.t.Mirrors) == 0 {
				continue
			}
			lag, err := d.probe(ctx, w)
			if err != nil {
				d.cfg.Logf("lag probe of %s: %v", w.t.ID, err)
				res.LagTimeouts++
				if len(res.Notes) < 20 {
					res.Notes = append(res.Notes, fmt.Sprintf("lag probe of %s: %v", w.t.ID, err))
				}
				continue
			}
			lags = append(lags, lag.Seconds())
		}
		_ = waitCtx(ctx, 300*time.Millisecond)
	}
	return lags
}

func (d *dataPlane) probe(ctx context.Context, w *dpWriter) (time.Duration, error) {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := d.pgs[w.t.Home].Connect(pctx, pglocal.Database)
	if err != nil {
		return 0, err
	}
	key, ok := w.insertNow(pctx, conn)
	conn.Close(context.Background())
	if !ok {
		return 0, errors.New("probe insert failed")
	}
	acked := time.Now()
	for _, m := range w.t.Mirrors {
		// Every 5 ms, the resolution of the lag.
		var qerr error
		err := testutil.PollEvery(pctx, testutil.Forever, 5*time.Millisecond, func() error {
			var n int
			qerr = d.query(pctx, m, func(c *pgx.Conn) error {
				return c.QueryRow(pctx, "SELECT count(*) FROM "+pgx.Identifier{key.Table}.Sanitize()+" WHERE tenant_id = $1 AND id = $2",
					w.t.ID, key.ID).Scan(&n)
			})
			if qerr == nil && n != 1 {
				return errors.New("not there yet")
			}
			return qerr
		})
		if err != nil {
			return 0, fmt.Errorf("row %s/%d not in %s within 30s (%v); %s", key.Table, key.ID, d.regions[m], qerr, d.replicationState(ctx, w.t, m))
		}
	}
	return time.Since(acked), nil
}

// replicationState describes a tenant's subscription on mirror m and its
// slot at the home, for a probe that timed out.
func (d *dataPlane) replicationState(ctx context.Context, t DataPlaneTenant, m int) string {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	name := fsm.TenantSubscription(t.ID, d.regions[m])
	var sub, slot string
	err := d.query(qctx, m, func(c *pgx.Conn) error {
		return c.QueryRow(qctx, `SELECT coalesce(string_agg(format('pid %s received %s end %s last message %s', pid, received_lsn, latest_end_lsn, last_msg_receipt_time), '; '), 'no worker')
			|| ' tables ' || coalesce((SELECT string_agg(srsubstate::text, '') FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1), '')
			FROM pg_stat_subscription WHERE subname = $1`, name).Scan(&sub)
	})
	if err != nil {
		sub = err.Error()
	}
	err = d.query(qctx, t.Home, func(c *pgx.Conn) error {
		return c.QueryRow(qctx, `SELECT coalesce((SELECT format('active %s confirmed %s', active, confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = $1), 'no slot')
			|| ' at WAL ' || pg_current_wal_lsn()::text`, name).Scan(&slot)
	})
	if err != nil {
		slot = err.Error()
	}
	return fmt.Sprintf("subscription %s on %s: %s; slot at %s: %s", name, d.regions[m], sub, d.regions[t.Home], slot)
}

// query runs fn on the check connection to region, opening it when
// needed and dropping it after an error.
func (d *dataPlane) query(ctx context.Context, region int, fn func(*pgx.Conn) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	conn := d.conns[region]
	if conn == nil {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := d.pgs[region].Connect(cctx, pglocal.Database)
		cancel()
		if err != nil {
			return err
		}
		conn = c
		d.conns[region] = c
	}
	err := fn(conn)
	if err != nil {
		_ = conn.Close(context.Background())
		delete(d.conns, region)
	}
	return err
}

// runFaults injects faults until the fault phase is over (or the schedule
// is done), waiting after each until everything is up and whole again.
func (d *dataPlane) runFaults(ctx context.Context, r *runner, res *DataPlaneResult) {
	cfg := d.cfg
	deadline := time.Now().Add(cfg.Duration)
	var first []string
	for _, i := range r.rng.Perm(len(cfg.Nemeses)) {
		first = append(first, cfg.Nemeses[i])
	}
	for i := 0; ctx.Err() == nil; i++ {
		var name string
		switch {
		case cfg.Schedule != nil:
			if i >= len(cfg.Schedule) {
				return
			}
			name = cfg.Schedule[i]
		case time.Now().After(deadline):
			return
		case i < len(first):
			name = first[i]
		case cfg.MixPct > 0 && r.rng.IntN(100) < cfg.MixPct:
			name = dataPlaneMixes[r.rng.IntN(len(dataPlaneMixes))]
		default:
			name = cfg.Nemeses[r.rng.IntN(len(cfg.Nemeses))]
		}
		hold := cfg.HoldMin + time.Duration(r.rng.Int64N(int64(cfg.HoldMax-cfg.HoldMin)+1))
		quiet := cfg.QuietMin + time.Duration(r.rng.Int64N(int64(cfg.QuietMax-cfg.QuietMin)+1))
		ev := r.runEvent(ctx, name, hold)
		if ev.Err != "" {
			res.fail("nemesis %s: %s", name, ev.Err)
		}
		err := d.waitWhole(ctx, 90*time.Second)
		ev.Recovered = time.Now()
		cfg.Logf("%s %v %s: held %s, whole again %s after healing", ev.Type, ev.Targets, ev.Detail,
			ev.Healed.Sub(ev.Start).Round(time.Millisecond), ev.Recovered.Sub(ev.Healed).Round(time.Millisecond))
		res.Events = append(res.Events, ev)
		if err != nil {
			res.fail("not whole again after %s: %v", name, err)
			return
		}
		_ = waitCtx(ctx, quiet)
	}
}

// whole reports whether every PostgreSQL and agent runs and the servers'
// cluster is whole.
func (d *dataPlane) whole(ctx context.Context) error {
	for i, pg := range d.pgs {
		if !pg.Running() {
			return fmt.Errorf("PostgreSQL of %s is down", d.regions[i])
		}
	}
	for i, a := range d.agents {
		if !a.Running() {
			return fmt.Errorf("agent of %s is down (%s)", d.regions[i], a.ExitStatus())
		}
	}
	return d.c.Healthy(ctx)
}

func (d *dataPlane) waitWhole(ctx context.Context, timeout time.Duration) error {
	// Every 50 ms: the run times how long the federation takes to be whole.
	if err := testutil.PollEvery(ctx, timeout, 50*time.Millisecond, func() error { return d.whole(ctx) }); err != nil {
		return fmt.Errorf("not whole within %s: %w", timeout, err)
	}
	return nil
}

// heal undoes every fault: servers, PostgreSQL clusters, agents.
func (d *dataPlane) heal(ctx context.Context, r *runner) {
	r.heal()
	for i, pg := range d.pgs {
		if !pg.Running() {
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := pg.Restart(rctx); err != nil {
				d.cfg.Logf("restart PostgreSQL of %s while healing: %v", d.regions[i], err)
			}
			cancel()
		}
	}
	for i, a := range d.agents {
		if !a.Running() {
			if err := a.Restart(); err != nil {
				d.cfg.Logf("restart agent of %s while healing: %v", d.regions[i], err)
			}
		}
	}
}

// nemPGKill kills a region's PostgreSQL with SIGKILL (postmaster and every
// backend, as a power loss looks to PostgreSQL), holds, and starts it
// again on its data dir (crash recovery).
func nemPGKill(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	d := r.dp
	if d == nil {
		return errors.New("pg-kill needs a data-plane run")
	}
	i := r.rng.IntN(len(d.pgs))
	ev.Targets = []string{"pg/" + d.regions[i]}
	ev.Detail = d.regionRole(i)
	ev.Start = time.Now()
	if err := d.pgs[i].Kill(); err != nil {
		return err
	}
	_ = waitCtx(ctx, hold)
	rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return d.pgs[i].Restart(rctx)
}

// nemAgentKill kills a region's agent with SIGKILL, holds, and starts it
// again with its data dir.
func nemAgentKill(ctx context.Context, r *runner, ev *Event, hold time.Duration) error {
	d := r.dp
	if d == nil {
		return errors.New("agent-kill needs a data-plane run")
	}
	i := r.rng.IntN(len(d.agents))
	a := d.agents[i]
	ev.Targets = []string{a.Name + "/" + d.regions[i]}
	ev.Start = time.Now()
	if err := a.Kill9(); err != nil {
		return err
	}
	_ = waitCtx(ctx, hold)
	return a.Restart()
}

// close stops the agents and servers, closes the check connections and
// removes the PostgreSQL clusters.
func (d *dataPlane) close(res *DataPlaneResult) {
	d.mu.Lock()
	for _, c := range d.conns {
		_ = c.Close(context.Background())
	}
	d.conns = map[int]*pgx.Conn{}
	d.mu.Unlock()
	d.c.Close()
	for _, pg := range d.pgs {
		if pg != nil {
			if err := pg.Remove(); err != nil {
				d.cfg.Logf("remove PostgreSQL %s: %v", pg.Name, err)
			}
		}
	}
	if d.bk != nil {
		if !res.Passed() {
			d.cfg.Logf("backup directories (pgBackRest logs) kept in %s", d.bk.base)
			return
		}
		os.RemoveAll(d.bk.base)
	}
}

// keepPostgresLogs copies the PostgreSQL server logs into the run's log
// directory (the clusters are removed at the end).
func (d *dataPlane) keepPostgresLogs() {
	for i, pg := range d.pgs {
		if pg == nil {
			continue
		}
		dst := filepath.Join(d.cfg.Dir, "logs", "postgres-"+d.regions[i])
		if err := os.MkdirAll(dst, 0o755); err != nil {
			continue
		}
		for _, f := range pg.LogFiles() {
			if b, err := os.ReadFile(f); err == nil {
				_ = os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644)
			}
		}
	}
}
