package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
)

// TenantFailoverGoal is the unplanned failover RTO the issue asks for.
const TenantFailoverGoal = 10 * time.Second

// TenantFailoverRound is one unplanned failover with the automatic policy.
type TenantFailoverRound struct {
	Tenant, From, To string
	// KillToWrite: from the kill of the home's PostgreSQL and agent to the
	// first write acknowledged at the new home through the edge. The
	// parts: the kill until the leader started the failover (Serf's
	// failure detection plus the policy's detection window), and until
	// the failover committed.
	KillToWrite, KillToStart, KillToCommit time.Duration
	Acked, Missing                         int
}

// TenantFailoverResult is the failover RTO measurement.
type TenantFailoverResult struct {
	Rounds   []TenantFailoverRound
	Interval time.Duration
}

// MeasureTenantFailover runs rounds unplanned failovers with the automatic
// policy at the servers' default detection settings. Each round registers
// a fresh tenant (fo<n>, home us-east, mirror eu-west, policy auto with a
// 60 s RPO budget), writes it through the edge, kills us-east's PostgreSQL
// and agent with SIGKILL, and times the kill to the first write the new
// home acknowledges through the edge; then it brings us-east back. A
// fresh tenant per round: the old home's return (fencing, quarantine,
// resync) is not what is timed. eu-west first passes a restore drill (the
// policy's precondition).
func MeasureTenantFailover(ctx context.Context, f *DataPlaneFed, rounds int, interval time.Duration) (*TenantFailoverResult, error) {
	res := &TenantFailoverResult{Interval: interval}
	from, to := "us-east", "eu-west"
	if err := passDrill(ctx, f, to); err != nil {
		return res, fmt.Errorf("drill of %s: %w", to, err)
	}
	for i := 1; i <= rounds; i++ {
		r, err := failoverRound(ctx, f, fmt.Sprintf("fo%d", i), from, to, interval)
		if r != nil {
			res.Rounds = append(res.Rounds, *r)
			f.Log("failover round %d (%s): kill -> started %s, committed %s, first write at %s through the edge %s",
				i, r.Tenant, r.KillToStart.Round(time.Millisecond), r.KillToCommit.Round(time.Millisecond), to, r.KillToWrite.Round(time.Millisecond))
		}
		if err != nil {
			return res, fmt.Errorf("round %d: %w", i, err)
		}
	}
	return res, nil
}

// passDrill takes a backup of region and a restore drill of it, which
// must pass.
func passDrill(ctx context.Context, f *DataPlaneFed, region string) error {
	var r BackupRound
	if err := atomfedBackup(ctx, f, region, &r); err != nil {
		return err
	}
	return atomfedDrill(ctx, f, region, &r)
}

func failoverRound(ctx context.Context, f *DataPlaneFed, tenant, from, to string, interval time.Duration) (*TenantFailoverRound, error) {
	api, err := f.API()
	if err != nil {
		return nil, err
	}
	tn := &fsm.Tenant{ID: tenant, HomeRegion: from, Mirrors: []string{to}, Tables: []fsm.TenantTable{{Name: "orders", PIIColumns: []string{"email"}}},
		Failover: &fsm.FailoverPolicy{Mode: fsm.FailoverAuto, RPOBudgetMS: 60000}}
	if _, err := api.PutTenant(ctx, tn, nil); err != nil {
		return nil, err
	}
	if err := eventually(ctx, 2*time.Minute, func() error { return f.TenantMirrorStreams(ctx, tenant, to) }); err != nil {
		return nil, err
	}
	w := f.StartWriter(ctx, tenant, tenant+"-", interval)
	stopped := false
	defer func() {
		if !stopped {
			w.Stop()
		}
	}()
	since := time.Now()
	if err := eventually(ctx, 30*time.Second, func() error {
		if w.FirstAckedIn(from, since).IsZero() {
			return fmt.Errorf("no write of %s acknowledged at %s through the edge", tenant, from)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	r := &TenantFailoverRound{Tenant: tenant, From: from, To: to}
	// The home is lost: its PostgreSQL and its agent, at once.
	if err := f.Agents[from].Kill9(); err != nil {
		return nil, err
	}
	if err := f.PG[from].Kill(); err != nil {
		return nil, err
	}
	killed := time.Now()
	if err := eventually(ctx, 2*time.Minute, func() error {
		if at := w.FirstAckedIn(to, killed); !at.IsZero() {
			r.KillToWrite = at.Sub(killed)
			return nil
		}
		return fmt.Errorf("no write of %s acknowledged at %s since the kill", tenant, to)
	}); err != nil {
		return r, err
	}
	w.Stop()
	stopped = true
	if err := eventually(ctx, time.Minute, func() error {
		api, err := f.API()
		if err != nil {
			return err
		}
		st, _, err := api.Switchover(ctx, tenant, nil)
		if err != nil {
			return err
		}
		if st.Kind != fsm.FailoverKind {
			return fmt.Errorf("%s's last move is a %s", tenant, st.Kind)
		}
		r.KillToStart = time.Duration(st.StartedAt - killed.UnixNano())
		for _, s := range st.Steps {
			if s.Phase == fsm.PhaseCommitted {
				r.KillToCommit = time.Duration(s.At - killed.UnixNano())
				return nil
			}
		}
		return fmt.Errorf("%s's failover at %s", tenant, st.Phase)
	}); err != nil {
		return r, err
	}
	// Every write acknowledged at the new home is there.
	r.Acked, r.Missing, err = missingAt(ctx, f, w, tenant, to)
	if err != nil {
		return r, err
	}
	if r.Missing > 0 {
		return r, fmt.Errorf("%d of the %d writes %s acknowledged are not there", r.Missing, r.Acked, to)
	}
	// The home comes back (crash recovery, agent restarted) for the next
	// round.
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := f.PG[from].Restart(rctx); err != nil {
		return r, err
	}
	if err := f.Agents[from].Restart(); err != nil {
		return r, err
	}
	// Alive again in Serf, as the leader sees it.
	return r, eventually(ctx, time.Minute, func() error {
		api, err := f.API()
		if err != nil {
			return err
		}
		as, _, err := api.Agents(ctx, from, nil)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.Node == f.Agents[from].Node && a.Status == fsm.AgentAlive {
				return nil
			}
		}
		return fmt.Errorf("the agent of %s is not alive again yet", from)
	})
}

// missingAt counts the writes w acknowledged in region and those of them
// not in region's database.
func missingAt(ctx context.Context, f *DataPlaneFed, w *EdgeWriter, tenant, region string) (acked, missing int, err error) {
	ids := map[int64]bool{}
	w.mu.Lock()
	for _, a := range w.Acked {
		if a.Region == region {
			ids[a.ID] = true
		}
	}
	w.mu.Unlock()
	acked = len(ids)
	conn, err := f.PG[region].Connect(ctx, pglocal.Database)
	if err != nil {
		return acked, 0, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT id FROM orders WHERE tenant_id = $1`, tenant)
	if err != nil {
		return acked, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return acked, 0, err
		}
		delete(ids, id)
	}
	return acked, len(ids), rows.Err()
}
