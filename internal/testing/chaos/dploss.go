package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// The region-loss run: a region (0) that is the home of tenants with the
// automatic failover policy loses its PostgreSQL and its agent (SIGKILL)
// while writers write every tenant at the home the API names at that
// moment. The policy fails them over; the region comes back (PostgreSQL
// restarted, crash recovery; agent restarted), its tenants' old home is
// fenced, quarantines what diverged and mirrors the new home. Checks:
//
//   - RPO accounting: every acknowledged write is at the tenant's current
//     home, except writes acknowledged by the lost home, which may be
//     missing there only if the old home's quarantine holds that row as
//     missing at the new home (a row it committed that never reached the
//     new home: the data at risk);
//   - one writable home: a prober writes every tenant (in a transaction it
//     rolls back) at the lost region and at the failover's target every
//     250 ms; once the failover committed, the two may never both accept
//     in one pass (the lost home must be unreachable or fenced);
//   - PII: a row's PII value is only in the region it was written in;
//   - after healing, the old home holds exactly the new home's rows of
//     each failed-over tenant, and every mirror its home's.

// RegionLossTenants: wayne and stark at home in us-east with the automatic
// policy (mirrors eu-west and ap-south, each of which passes a drill
// first), oscorp at home in eu-west, mirrored to us-east, manual.
var RegionLossTenants = []DataPlaneTenant{
	{ID: "wayne", Home: 0, Mirrors: []int{1}, Tables: []Table{{"orders", "email"}}, Auto: true},
	{ID: "stark", Home: 0, Mirrors: []int{2}, Tables: []Table{{"orders", "email"}}, Auto: true},
	{ID: "oscorp", Home: 1, Mirrors: []int{0}, Tables: []Table{{"orders", "email"}}},
}

// RegionLossPlan is the suite's region-loss run.
func RegionLossPlan(seed uint64) DataPlaneConfig {
	return DataPlaneConfig{Name: "region-loss", Seed: seed + 5, Tenants: RegionLossTenants, Backups: true}
}

// lossAck is an acknowledged (or maybe) write of the region-loss run.
type lossAck struct {
	id     int64
	region int
	at     time.Time
}

// lossWriter writes one tenant at its current home.
type lossWriter struct {
	t    DataPlaneTenant
	home atomic.Int64 // region index the API names
	next int64

	mu     sync.Mutex
	acked  []lossAck
	maybe  []lossAck
	errors map[string]int
}

func (w *lossWriter) record(a lossAck, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok {
		w.acked = append(w.acked, a)
	} else {
		w.maybe = append(w.maybe, a)
	}
}

func (w *lossWriter) fail(what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(what) > 80 {
		what = what[:80]
	}
	w.errors[what]++
}

// run writes until ctx ends: one insert at a time at the current home.
func (d *dataPlane) runLossWriter(ctx context.Context, w *lossWriter) {
	conns := map[int]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		h := int(w.home.Load())
		c := conns[h]
		if c == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			var err error
			c, err = d.pgs[h].Connect(cctx, pglocal.Database)
			cancel()
			if err != nil {
				w.fail("connect: " + err.Error())
				_ = waitCtx(ctx, 100*time.Millisecond)
				continue
			}
			conns[h] = c
		}
		w.next++
		id := w.next
		ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := c.Exec(ictx, `INSERT INTO orders (tenant_id, id, amount, note, email) VALUES ($1, $2, $2, 'loss', $3)`,
			w.t.ID, id, fmt.Sprintf("%s%d%s", w.t.ID, id, piiMarker))
		cancel()
		var pe *pgconn.PgError
		switch {
		case err == nil:
			w.record(lossAck{id, h, time.Now()}, true)
		case errors.As(err, &pe):
			// Refused (the fence, or anything else PostgreSQL said no to).
			w.fail(pe.Code + " " + pe.Message)
		default:
			w.record(lossAck{id, h, time.Now()}, false)
			w.fail(err.Error())
			_ = c.Close(context.Background())
			delete(conns, h)
		}
		_ = waitCtx(ctx, d.cfg.WriteInterval)
	}
}

// followHomes keeps each writer's home at what the API says.
func (d *dataPlane) followHomes(ctx context.Context, ws []*lossWriter) {
	for i := 0; ctx.Err() == nil; i++ {
		for _, w := range ws {
			cl, err := d.api(i)
			if err != nil {
				continue
			}
			tctx, cancel := context.WithTimeout(ctx, time.Second)
			tn, _, err := cl.Tenant(tctx, w.t.ID, &client.QueryOptions{Consistency: "stale"})
			cancel()
			if err == nil {
				if r := d.regionIndex(tn.HomeRegion); r >= 0 {
					w.home.Store(int64(r))
				}
			}
		}
		_ = waitCtx(ctx, 100*time.Millisecond)
	}
}

// writable probes whether region accepts a write of tenant now (in a
// transaction rolled back): false when it refuses or cannot be reached.
func (d *dataPlane) writable(ctx context.Context, region int, tenant string) bool {
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := d.pgs[region].Connect(pctx, pglocal.Database)
	if err != nil {
		return false
	}
	defer c.Close(context.Background())
	tx, err := c.Begin(pctx)
	if err != nil {
		return false
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(pctx, `INSERT INTO orders (tenant_id, id, amount, note) VALUES ($1, -1, 0, 'probe')`, tenant)
	return err == nil
}

// lossProbe is one probe pass of a tenant: which of the lost region and
// the failover's target accepted a write, and whether the failover had
// committed before the pass started.
type lossProbe struct {
	at                time.Time
	lost, target      bool
	committedBefore   bool
	tenant, committed string
}

// RunRegionLoss runs the region-loss scenario (see the top of this file).
func RunRegionLoss(ctx context.Context, cfg DataPlaneConfig) (*DataPlaneResult, error) {
	cfg.Backups = true
	cfg.defaults()
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6c6f7373))
	d := &dataPlane{cfg: cfg, conns: map[int]*pgx.Conn{}}
	for i := 0; i < cfg.Regions; i++ {
		d.regions = append(d.regions, regionName(i))
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
		Nemeses: []string{"region-loss"}, Dir: cfg.Dir, ConvergeWithinS: cfg.ConvergeWithin.Seconds(), ConvergenceS: -1, BackupsRun: true}
	res.Setup = fmt.Sprintf("3 servers, %d regions each with its own PostgreSQL 15 and one agent, %d tenants (%s with the automatic failover policy), region %s lost", cfg.Regions, len(tenants), autoList(tenants), d.regions[0])
	cfg.Logf("region-loss run %q: seed %d, %s", cfg.Name, cfg.Seed, res.Setup)
	c, err := StartCluster(ClusterConfig{Bin: cfg.Bin, Dir: cfg.Dir, Servers: 3, RaftMultiplier: 1, TmpfsNode: -1, Env: cfg.Env, Seed: rng.Uint64(), Logf: cfg.Logf})
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
	if err := d.prepareBackups(ctx); err != nil {
		return res, err
	}
	if err := d.createTables(ctx); err != nil {
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
		return res, nil
	}
	res.StreamS = time.Since(streamStart).Seconds()
	// The policy's precondition: every failover target passed a drill.
	targets := map[int]bool{}
	for _, t := range tenants {
		if t.Auto {
			targets[t.Mirrors[0]] = true
		}
	}
	for r := range targets {
		if err := d.drillOnce(ctx, d.regions[r]); err != nil {
			res.fail("the drill of %s, the automatic policy's precondition: %v", d.regions[r], err)
			return res, nil
		}
	}

	var ws []*lossWriter
	for _, t := range tenants {
		w := &lossWriter{t: t, errors: map[string]int{}}
		w.home.Store(int64(t.Home))
		ws = append(ws, w)
	}
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.followHomes(wctx, ws) }()
	for _, w := range ws {
		wg.Add(1)
		go func(w *lossWriter) { defer wg.Done(); d.runLossWriter(wctx, w) }(w)
	}
	// The prober: the lost region and each auto tenant's target.
	var pmu sync.Mutex
	var probes []lossProbe
	var committedAt sync.Map // tenant -> time.Time
	wg.Add(1)
	go func() {
		defer wg.Done()
		for wctx.Err() == nil {
			for _, t := range tenants {
				if !t.Auto {
					continue
				}
				_, done := committedAt.Load(t.ID)
				p := lossProbe{at: time.Now(), tenant: t.ID, committedBefore: done}
				p.lost = d.writable(wctx, 0, t.ID)
				p.target = d.writable(wctx, t.Mirrors[0], t.ID)
				pmu.Lock()
				probes = append(probes, p)
				pmu.Unlock()
			}
			_ = waitCtx(wctx, 250*time.Millisecond)
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopWriters()
			wg.Wait()
		}
	}
	defer stop()
	_ = waitCtx(ctx, cfg.Warmup)

	// The region is lost.
	ev := Event{Type: "region-loss", Targets: []string{"pg/" + d.regions[0], d.agents[0].Name + "/" + d.regions[0]}, Detail: d.regionRole(0), Start: time.Now()}
	if err := d.agents[0].Kill9(); err != nil {
		return res, err
	}
	if err := d.pgs[0].Kill(); err != nil {
		return res, err
	}
	killed := ev.Start
	// Until every auto tenant's failover committed (as the API says).
	err = testutil.PollEvery(ctx, 90*time.Second, 200*time.Millisecond, func() error {
		var waiting []string
		for _, t := range tenants {
			if !t.Auto {
				continue
			}
			if _, ok := committedAt.Load(t.ID); ok {
				continue
			}
			cl, err := d.api(rng.IntN(3))
			if err != nil {
				return err
			}
			st, _, err := cl.Switchover(ctx, t.ID, &client.QueryOptions{Consistency: "stale"})
			if err == nil && st.Kind == fsm.FailoverKind {
				for _, s := range st.Steps {
					if s.Phase == fsm.PhaseCommitted {
						committedAt.Store(t.ID, time.Unix(0, s.At))
						cfg.Logf("%s failed over to %s: committed %s after the kill", t.ID, st.To, time.Unix(0, s.At).Sub(killed).Round(time.Millisecond))
					}
				}
			}
			if _, ok := committedAt.Load(t.ID); !ok {
				waiting = append(waiting, t.ID)
			}
		}
		if len(waiting) > 0 {
			return fmt.Errorf("not failed over yet: %s", strings.Join(waiting, ", "))
		}
		return nil
	})
	if err != nil {
		res.fail("the automatic policy did not fail every tenant of %s over within 90 s of its loss: %v", d.regions[0], err)
	}
	_ = waitCtx(ctx, 3*time.Second) // writes at the new homes
	// Healing: the region comes back.
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	if err := d.pgs[0].Restart(rctx); err != nil {
		ev.Err = err.Error()
	}
	cancel()
	d.lossPGUp = time.Now()
	if err := d.agents[0].Restart(); err != nil {
		ev.Err = strings.TrimSpace(ev.Err + " " + err.Error())
	}
	d.lossAgentUp = time.Now()
	ev.Healed = time.Now()
	if err := d.waitWhole(ctx, 90*time.Second); err != nil {
		res.fail("not whole after %s came back: %v", d.regions[0], err)
	}
	ev.Recovered = time.Now()
	res.Events = append(res.Events, ev)
	_ = waitCtx(ctx, 5*time.Second) // writes and probes after the return
	stop()
	res.FaultPhaseS = ev.Recovered.Sub(ev.Start).Seconds()

	// Convergence: every mirror of the current placement (the old home
	// among them) holds exactly its home's rows.
	writesEnd := time.Now()
	if err := d.refreshPlacement(ctx); err != nil {
		res.fail("read the placement after healing: %v", err)
	}
	if err := d.converge(ctx, writesEnd, res); err != nil {
		res.fail("%v", err)
	}
	d.checkLoss(ctx, ws, probes, res)
	d.checkBackups(ctx, res)
	res.ElapsedS = time.Since(res.Started).Seconds()
	if !res.Passed() {
		logTails(cfg.Logf, c)
		d.keepPostgresLogs()
	}
	return res, nil
}

func autoList(ts []DataPlaneTenant) string {
	var out []string
	for _, t := range ts {
		if t.Auto {
			out = append(out, t.ID)
		}
	}
	return strings.Join(out, ", ")
}

// regionName is the i-th region of a run.
func regionName(i int) string { return procs.Regions[i] }

// drillOnce takes a backup of region and a drill of it, which must pass.
func (d *dataPlane) drillOnce(ctx context.Context, region string) error {
	var b *fsm.Backup
	if err := d.retryAPI(ctx, 30*time.Second, "ask for a backup of "+region, func(ctx context.Context, cl *client.Client) error {
		var err error
		b, err = cl.RunBackup(ctx, region, fsm.BackupFull)
		return err
	}); err != nil {
		return err
	}
	d.bk.add("backup", b.ID, region)
	got, err := d.waitBackup(ctx, b.ID, 2*time.Minute)
	if err != nil || got.Status != fsm.BackupSucceeded || got.BackupResult == nil || !got.Verified {
		return fmt.Errorf("backup %s: %s", b.ID, backupText(got, err))
	}
	var dr *fsm.Drill
	if err := d.retryAPI(ctx, 30*time.Second, "ask for a drill of "+region, func(ctx context.Context, cl *client.Client) error {
		var err error
		dr, err = cl.RunDrill(ctx, region)
		return err
	}); err != nil {
		return err
	}
	d.bk.add("drill", dr.ID, region)
	x, err := d.waitDrill(ctx, region, dr.ID, 2*time.Minute)
	if err != nil || x.Status != fsm.DrillPassed {
		return fmt.Errorf("drill %s: %s", dr.ID, drillText(x, err))
	}
	return nil
}

// refreshPlacement reads each tenant's home and mirrors as they are now
// (after the failovers) into the run's tenants, so that the convergence
// check compares the current placement.
func (d *dataPlane) refreshPlacement(ctx context.Context) error {
	for i, t := range d.cfg.Tenants {
		var tn *fsm.Tenant
		if err := d.retryAPI(ctx, 30*time.Second, "tenant "+t.ID, func(ctx context.Context, cl *client.Client) error {
			var err error
			tn, _, err = cl.Tenant(ctx, t.ID, nil)
			return err
		}); err != nil {
			return err
		}
		t.Home, t.HomeRegion = d.regionIndex(tn.HomeRegion), tn.HomeRegion
		t.Mirrors, t.MirrorRegions = nil, nil
		for _, m := range tn.Mirrors {
			t.Mirrors, t.MirrorRegions = append(t.Mirrors, d.regionIndex(m)), append(t.MirrorRegions, m)
		}
		d.cfg.Tenants[i] = t
	}
	return nil
}

// checkLoss runs the region-loss checks (see the top of this file).
func (d *dataPlane) checkLoss(ctx context.Context, ws []*lossWriter, probes []lossProbe, res *DataPlaneResult) {
	res.Errors = map[string]int{}
	for _, w := range ws {
		w.mu.Lock()
		acked, maybe := append([]lossAck(nil), w.acked...), append([]lossAck(nil), w.maybe...)
		for k, v := range w.errors {
			res.Errors[w.t.ID+": "+k] += v
		}
		w.mu.Unlock()
		res.WritesAcked += int64(len(acked))
		res.WritesMaybe += int64(len(maybe))
		res.RowsAcked += len(acked)
		res.RowsMaybe += len(maybe)
		t := d.cfg.Tenants[d.tenantIndex(w.t.ID)] // the current placement
		home, err := d.lossRows(ctx, t.Home, t.ID)
		if err != nil {
			res.fail("%s: read its rows at its home %s: %v", t.ID, t.HomeRegion, err)
			continue
		}
		writtenIn := map[int64]int{}
		for _, a := range append(maybe, acked...) {
			writtenIn[a.id] = a.region
		}
		var lostAtOld []int64
		for _, a := range acked {
			if _, ok := home[a.id]; ok {
				continue
			}
			if w.t.Auto && a.region == 0 && t.Home != 0 {
				lostAtOld = append(lostAtOld, a.id)
				continue
			}
			res.LostRows++
			res.finding("%s: row %d acknowledged at %s is not at its home %s", t.ID, a.id, d.regions[a.region], t.HomeRegion)
		}
		for id := range home {
			if _, ok := writtenIn[id]; !ok && id > 0 {
				res.ExtraRows++
				res.finding("%s: row %d at its home %s was never written", t.ID, id, t.HomeRegion)
			}
		}
		if len(lostAtOld) > 0 {
			q, err := d.quarantined(ctx, 0, t.ID)
			var missing []int64
			for _, id := range lostAtOld {
				if !q[id] {
					missing = append(missing, id)
				}
			}
			switch {
			case err != nil:
				res.fail("%s: read the quarantine at %s: %v", t.ID, d.regions[0], err)
			case len(missing) > 0:
				res.LostRows += len(missing)
				res.finding("%s: %d rows acknowledged by the lost home are neither at the new home %s nor in the old home's quarantine as missing there (first: %d)",
					t.ID, len(missing), t.HomeRegion, missing[0])
			default:
				res.Notes = append(res.Notes, fmt.Sprintf("%s: %d rows acknowledged by the lost home %s never reached %s (the data at risk); each is in its quarantine as missing_at_new_home",
					t.ID, len(lostAtOld), d.regions[0], t.HomeRegion))
			}
		}
		// PII only where the row was written.
		for r := range d.regions {
			rows, err := d.lossRows(ctx, r, t.ID)
			if err != nil {
				continue // the table is not in that region
			}
			for id, v := range rows {
				if v.pii != "" && writtenIn[id] != r {
					res.PIIFound++
					res.finding("%s: row %d written in %s has its PII in %s", t.ID, id, d.regions[writtenIn[id]], d.regions[r])
				}
			}
		}
	}
	// One writable home.
	var both []string
	var first, last time.Time
	for _, p := range probes {
		if p.committedBefore && p.lost && p.target {
			both = append(both, fmt.Sprintf("%s at %s", p.tenant, p.at.Format("15:04:05.000")))
			if first.IsZero() {
				first = p.at
			}
			last = p.at
		}
	}
	if len(both) > 0 {
		res.fail("two writable homes: the lost home %s and the failover's target both accepted a write in %d probe passes after the commit, from %s to %s "+
			"(its PostgreSQL was back at %s, its agent started at %s): %s",
			d.regions[0], len(both), first.Format("15:04:05.000"), last.Format("15:04:05.000"), d.lossPGUp.Format("15:04:05.000"), d.lossAgentUp.Format("15:04:05.000"),
			strings.Join(both[:min(len(both), 5)], "; "))
	}
	res.Notes = append(res.Notes, fmt.Sprintf("%d probe passes (a write at the lost region and at the failover's target, rolled back)", len(probes)))
	if res.LostRows > 0 || res.ExtraRows > 0 || res.PIIFound > 0 {
		res.fail("%d rows lost beyond the quarantine's account, %d extra, %d PII values outside their region", res.LostRows, res.ExtraRows, res.PIIFound)
	}
}

func (d *dataPlane) tenantIndex(id string) int {
	for i, t := range d.cfg.Tenants {
		if t.ID == id {
			return i
		}
	}
	return -1
}

// lossVal is a row of the region-loss run: its PII ("" when NULL).
type lossVal struct{ pii string }

// lossRows reads tenant's orders rows in region.
func (d *dataPlane) lossRows(ctx context.Context, region int, tenant string) (map[int64]lossVal, error) {
	out := map[int64]lossVal{}
	err := d.query(ctx, region, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT id, coalesce(email, '') FROM orders WHERE tenant_id = $1`, tenant)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var v lossVal
			if err := rows.Scan(&id, &v.pii); err != nil {
				return err
			}
			out[id] = v
		}
		return rows.Err()
	})
	return out, err
}

// quarantined returns the ids of tenant's orders rows that region's
// quarantine holds as missing at the new home (none when there is no
// quarantine).
func (d *dataPlane) quarantined(ctx context.Context, region int, tenant string) (map[int64]bool, error) {
	out := map[int64]bool{}
	err := d.query(ctx, region, func(c *pgx.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, `SELECT to_regclass('atomfed_quarantine.divergent_rows') IS NOT NULL`).Scan(&exists); err != nil || !exists {
			return err
		}
		rows, err := c.Query(ctx, `SELECT (home_row->>'id')::bigint FROM atomfed_quarantine.divergent_rows
			WHERE tenant_id = $1 AND reason = 'missing_at_new_home' AND home_row ? 'id'`, tenant)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			out[id] = true
		}
		return rows.Err()
	})
	return out, err
}
