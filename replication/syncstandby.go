package replication

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// syncExec runs sync-standby tasks: the one owner of a home cluster's
// synchronous_standby_names.
//
// PostgreSQL has one synchronous_standby_names per cluster, so the sync
// tenants homed in a region share one quorum: ANY 1 of all their mirrors'
// subscriptions. A tenant's mirrors are in it while the tenant is "sync" or
// "waiting", and out while it is "pending" (no mirror has streamed yet, so
// commits do not block on a mirror that does not exist) or "degraded".
//
// When every mirror of a sync tenant is down, commits on the home wait.
// With fallback "degrade" the controller takes the tenant's mirrors out of
// the quorum once they have all been down for the tenant's bound
// (sync_degrade_after_ms), which releases the waiting commits; the degrade
// happens within the bound plus syncInterval plus a configuration reload,
// and the leader records it in the audit chain from this task's report.
// With fallback "wait" the commits wait until a mirror returns, as the
// tenant asked; the controller itself never waits (its session commits
// with synchronous_commit = local and ALTER SYSTEM is not transactional).
type syncExec struct {
	cfg Config
	m   *metrics
}

// Type is sync-standby.
func (e *syncExec) Type() string { return fsm.TaskTypeSyncStandby }

// Run keeps synchronous_standby_names in line with the sync tenants'
// mirrors until ctx ends, or resets it and returns when the spec is absent.
func (e *syncExec) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.SyncStandbySpec
	if err := decodeSpec(t, &spec); err != nil {
		return err
	}
	c := &syncController{spec: spec, db: &localConn{dsn: e.cfg.DSN}, log: e.cfg.Logger.Named("sync").With("task", t.ID),
		states: map[string]*fsm.SyncTenantStatus{}, applied: "\x00unknown"}
	defer c.db.close()
	defer e.m.forget(t.ID)
	now := time.Now().UnixNano()
	for _, st := range spec.Tenants {
		s := &fsm.SyncTenantStatus{Tenant: st.Tenant, State: "pending", Since: now}
		if st.Recorded != "" {
			s.State, s.Reason = st.Recorded, "as the federation recorded it"
		}
		c.states[st.Tenant] = s
	}
	last := ""
	every(ctx, syncInterval, func(ctx context.Context) (bool, bool) {
		res, done := c.step(ctx)
		if ctx.Err() != nil {
			return true, true
		}
		e.m.observeIssues(t.ID, fsm.KindTenant, "", spec.Region, res.Issues)
		// Report at once on a change; otherwise every interval of the
		// other executors is plenty.
		key := res.StandbyNames
		for _, s := range res.Tenants {
			key += "|" + s.State
		}
		if key != last || done || len(res.Issues) > 0 || time.Since(c.lastReport) >= e.cfg.Interval {
			report(status(res.Issues, done, res))
			last, c.lastReport = key, time.Now()
		}
		return done, true
	})
	return nil
}

type syncController struct {
	spec       fsm.SyncStandbySpec
	db         *localConn
	log        hclog.Logger
	states     map[string]*fsm.SyncTenantStatus
	applied    string // the value this controller last set
	lastReport time.Time
}

func (c *syncController) step(ctx context.Context) (*fsm.SyncStandbyResult, bool) {
	res := &fsm.SyncStandbyResult{At: time.Now().UnixNano()}
	conn, err := c.db.get(ctx)
	if err != nil {
		res.Issues = []fsm.ReplicationIssue{unreachable("region", err)}
		return res, false
	}
	if c.applied == "\x00unknown" {
		if err := conn.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&c.applied); err != nil {
			c.db.drop()
			res.Issues = []fsm.ReplicationIssue{issueFromErr("", "read synchronous_standby_names", err)}
			return res, false
		}
	}
	if c.spec.Ensure == fsm.EnsureAbsent {
		if err := c.set(ctx, conn, ""); err != nil {
			res.Issues = []fsm.ReplicationIssue{issueFromErr("", "reset synchronous_standby_names", err)}
			return res, false
		}
		return res, true
	}
	streaming, err := streamingStandbys(ctx, conn)
	if err != nil {
		c.db.drop()
		res.Issues = []fsm.ReplicationIssue{issueFromErr("", "read pg_stat_replication", err)}
		return res, false
	}
	var names []string
	for _, st := range c.spec.Tenants {
		s := c.advance(st, streaming, time.Now())
		if s.State == fsm.SyncStateSync || s.State == "waiting" {
			names = append(names, st.Standbys...)
		}
		res.Tenants = append(res.Tenants, *s)
	}
	res.StandbyNames = standbyNames(names)
	if err := c.set(ctx, conn, res.StandbyNames); err != nil {
		res.Issues = []fsm.ReplicationIssue{issueFromErr("", "set synchronous_standby_names", err)}
	}
	return res, false
}

// advance moves one tenant's state given which standbys stream now.
func (c *syncController) advance(st fsm.SyncTenant, streaming map[string]bool, now time.Time) *fsm.SyncTenantStatus {
	s := c.states[st.Tenant]
	var up []string
	for _, n := range st.Standbys {
		if streaming[n] {
			up = append(up, n)
		}
	}
	s.MirrorsUp = up
	move := func(state, reason string) {
		if s.State != state {
			c.log.Info("tenant sync state", "tenant", st.Tenant, "from", s.State, "to", state, "reason", reason)
		}
		s.State, s.Since, s.Reason = state, now.UnixNano(), reason
	}
	switch {
	case len(up) > 0 && s.State != fsm.SyncStateSync:
		move(fsm.SyncStateSync, "mirror subscription "+up[0]+" streams")
	case len(up) > 0:
	case s.State == fsm.SyncStateSync:
		move("waiting", "every mirror is down; commits wait for one")
	case s.State == "waiting" && st.Fallback == fsm.SyncFallbackDegrade &&
		now.Sub(time.Unix(0, s.Since)) >= time.Duration(st.DegradeAfterMS)*time.Millisecond:
		move(fsm.SyncStateDegraded, fmt.Sprintf("every mirror was down for %s (sync_degrade_after_ms): async until one streams again",
			time.Duration(st.DegradeAfterMS)*time.Millisecond))
	}
	return s
}

// set changes synchronous_standby_names when it differs from what this
// controller last set, and reloads the configuration.
func (c *syncController) set(ctx context.Context, conn *pgx.Conn, value string) error {
	if value == c.applied {
		return nil
	}
	stmt := "ALTER SYSTEM SET synchronous_standby_names = " + quoteLiteral(value)
	if value == "" {
		stmt = "ALTER SYSTEM RESET synchronous_standby_names"
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	c.log.Info("synchronous_standby_names set", "value", value)
	c.applied = value
	return nil
}

// standbyNames renders the quorum: ANY 1 of the names, quoted.
func standbyNames(names []string) string {
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = `"` + n + `"`
	}
	return "ANY 1 (" + strings.Join(q, ", ") + ")"
}

func streamingStandbys(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	rows, err := conn.Query(ctx, `SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out[n] = true
	}
	return out, rows.Err()
}
