package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// The executors of a tenant switchover's database steps (the task
// contract is fsm/switchover_tasks.go; the leader runs the phases):
//
//   - tenant-fence, at the old home: FenceTenant (or, with ensure absent,
//     UnfenceTenant) and the home's PII column types, read with the fence
//     in place; a late fence of a rolled-back switchover is undone (see
//     undoLateFence);
//   - tenant-catchup, at each mirror: WaitCaughtUp to the fenced LSN,
//     reporting how far behind it is while it waits; it never gives up on
//     its own (the leader has the deadline);
//   - tenant-promote, at the target mirror: the hand-off record (see
//     handoff_guard.go), PromoteMirror, the tenant's publication made
//     by the tenant-publisher's own code, one hand-off slot per region
//     that will follow the new home (CreateHandOffSlot), before the tenant
//     takes any write there, and last the tenant's fence of an earlier
//     placement lifted, if this database was its home before (a
//     fail-back);
//   - tenant-detach, at every other mirror: the hand-off record, then the
//     subscription to the old home dropped without reaching it, keeping
//     every row.
//
// Each step is idempotent: run again after a crash at any point (or by a
// peer agent the task moved to), it finishes the work or finds it done,
// and reports the same outcome. A step that fails is tried again every
// interval (at most settleInterval) until it succeeds or its task ends.

// errStaleStep means a step's time has passed in this database: its
// placement was handed off here already at a newer one, a later placement
// made the subscription it would detach, or its switchover was rolled
// back here (its fence lifted).
var errStaleStep = errors.New("stale switchover step")

// stepRunner runs one step task: try, report, until done or ctx ends.
type stepRunner struct {
	cfg Config
	db  *localConn
}

func newStepRunner(cfg Config) *stepRunner {
	return &stepRunner{cfg: cfg, db: &localConn{dsn: cfg.DSN}}
}

// run calls try every interval until it reports done; try reports its
// own statuses through report. A failed try reports failing (with the
// issue made from its error) and is tried again soon.
func (r *stepRunner) run(ctx context.Context, report func(structs.TaskStatus), what string,
	try func(ctx context.Context, conn *pgx.Conn) (result any, err error), failed func(is fsm.ReplicationIssue) any) {
	defer r.db.close()
	every(ctx, r.cfg.Interval, func(ctx context.Context) (bool, bool) {
		conn, err := r.db.get(ctx)
		if err != nil {
			if ctx.Err() == nil {
				is := unreachable("region", err)
				report(status([]fsm.ReplicationIssue{is}, false, failed(is)))
			}
			return false, false
		}
		res, err := try(ctx, conn)
		if ctx.Err() != nil {
			return true, true
		}
		if err != nil {
			if !isPgError(err) {
				r.db.drop()
			}
			is := issueFromErr("", what, err)
			if errors.Is(err, errStaleStep) {
				is.Code = fsm.IssueStaleEpoch
			}
			report(status([]fsm.ReplicationIssue{is}, false, failed(is)))
			return false, false
		}
		report(status(nil, true, res))
		return true, true
	})
}

// fenceExec runs tenant-fence tasks.
type fenceExec struct{ cfg Config }

// Type is tenant-fence.
func (e *fenceExec) Type() string { return fsm.TaskTypeTenantFence }

// Run fences the tenant (or lifts its fence) and reports the fenced LSN
// and the home's PII column types, then returns.
func (e *fenceExec) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.FenceSpec
	if err := decodeSpec(t, &spec); err != nil {
		return err
	}
	if !fsm.ValidTenantID(spec.Tenant) || spec.Region != t.Region || (spec.Ensure != fsm.EnsurePresent && spec.Ensure != fsm.EnsureAbsent) {
		return fmt.Errorf("task %s: a tenant-fence spec needs a valid tenant, ensure present or absent, and the task's region (%q, not %q)", t.ID, t.Region, spec.Region)
	}
	if spec.Ensure == fsm.EnsurePresent && (!fsm.ValidRegionName(spec.NewHome) || spec.NewEpoch == 0) {
		return fmt.Errorf("task %s: a fence needs the new home and the new epoch (got %q, %d)", t.ID, spec.NewHome, spec.NewEpoch)
	}
	log := e.cfg.Logger.Named("switchover").With("task", t.ID)
	failed := func(is fsm.ReplicationIssue) any {
		return &fsm.FenceResult{State: fsm.StepStepError, At: time.Now().UnixNano(), Issues: []fsm.ReplicationIssue{is}}
	}
	newStepRunner(e.cfg).run(ctx, report, "fence tenant "+spec.Tenant, func(ctx context.Context, conn *pgx.Conn) (any, error) {
		if spec.Ensure == fsm.EnsureAbsent {
			return unfence(ctx, conn, spec, log)
		}
		lsn, err := FenceTenant(ctx, conn, Fence{Tenant: spec.Tenant, Epoch: spec.NewEpoch, WritesTo: spec.NewHome, Tables: spec.Tables})
		if err != nil {
			return nil, err
		}
		if err := undoLateFence(ctx, conn, spec, log); err != nil {
			return nil, err
		}
		pii, err := HomePIIColumns(ctx, conn, spec.Tables)
		if err != nil {
			return nil, err
		}
		log.Info("tenant fenced", "tenant", spec.Tenant, "fenced_lsn", lsn, "new_home", spec.NewHome, "new_epoch", spec.NewEpoch)
		res := &fsm.FenceResult{State: fsm.StepFenced, FencedLSN: lsn, At: time.Now().UnixNano()}
		for _, c := range pii {
			res.PII = append(res.PII, fsm.PIIColumnType(c))
		}
		return res, nil
	}, failed)
	return nil
}

// unfence lifts the tenant's fence, unless it is a fence of a newer epoch
// than the one being rolled back (a later switchover's or failover's).
func unfence(ctx context.Context, conn *pgx.Conn, spec fsm.FenceSpec, log hclog.Logger) (any, error) {
	cur, err := ReadFence(ctx, conn, spec.Tenant)
	if err != nil {
		return nil, err
	}
	if cur != nil && spec.NewEpoch != 0 && cur.Epoch > spec.NewEpoch {
		return nil, fmt.Errorf("%w: tenant %s is fenced here at epoch %d (writes to %s), newer than the fence of epoch %d being lifted; it is left in place",
			errStaleStep, spec.Tenant, cur.Epoch, cur.WritesTo, spec.NewEpoch)
	}
	// Recorded before the fence goes: see undoLateFence.
	if err := recordFenceLift(ctx, conn, spec.Tenant, spec.Switchover); err != nil {
		return nil, err
	}
	if cur != nil {
		if err := UnfenceTenant(ctx, conn, spec.Tenant); err != nil {
			return nil, err
		}
		log.Info("tenant fence lifted", "tenant", spec.Tenant, "epoch", cur.Epoch)
	}
	return &fsm.FenceResult{State: fsm.StepUnfenced, At: time.Now().UnixNano()}, nil
}

// A fence placed by a run of a switchover's fence step that comes late,
// after the switchover rolled back and lifted its fence (an agent that
// lost the task but still ran it), would leave the tenant with no
// writable home. So lifting a switchover's fence records the switchover
// first (atomfed.tenant_fence_lifts), and a fence step checks it after
// placing its fence and takes the fence away again when its switchover
// was lifted: whichever order the two runs take, no fence of a rolled-back
// switchover stays.

// fenceLiftSchema creates the record of lifted fences (under
// handOffLockKey, 1).
var fenceLiftSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS atomfed`,
	`CREATE TABLE IF NOT EXISTS atomfed.tenant_fence_lifts (
		tenant_id text PRIMARY KEY,
		switchover bigint NOT NULL,
		at timestamptz NOT NULL DEFAULT now())`,
	`REVOKE ALL ON atomfed.tenant_fence_lifts FROM PUBLIC`,
}

// recordFenceLift records that switchover's fence of tenant is being
// lifted here (the newest switchover wins).
func recordFenceLift(ctx context.Context, conn *pgx.Conn, tenant string, switchover uint64) error {
	if switchover == 0 {
		return nil
	}
	stmts := append([]string{`SET LOCAL lock_timeout = '10s'`, fmt.Sprintf(`SELECT pg_advisory_xact_lock(%d, 1)`, handOffLockKey)}, fenceLiftSchema...)
	stmts = append(stmts, fmt.Sprintf(`INSERT INTO atomfed.tenant_fence_lifts (tenant_id, switchover) VALUES (%s, %d)
		ON CONFLICT (tenant_id) DO UPDATE SET switchover = GREATEST(atomfed.tenant_fence_lifts.switchover, EXCLUDED.switchover), at = now()`,
		quoteLiteral(tenant), int64(switchover)))
	if err := execTx(ctx, conn, stmts); err != nil {
		return fmt.Errorf("record the lift of tenant %s's fence: %w", tenant, err)
	}
	return nil
}

// undoLateFence takes the fence just placed away again when its
// switchover's fence was lifted here already, and says so.
func undoLateFence(ctx context.Context, conn *pgx.Conn, spec fsm.FenceSpec, log hclog.Logger) error {
	if spec.Switchover == 0 {
		return nil
	}
	var lifted bool
	err := conn.QueryRow(ctx, `SELECT to_regclass('atomfed.tenant_fence_lifts') IS NOT NULL`).Scan(&lifted)
	if err == nil && lifted {
		err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM atomfed.tenant_fence_lifts WHERE tenant_id = $1 AND switchover >= $2)`,
			spec.Tenant, int64(spec.Switchover)).Scan(&lifted)
	}
	if err != nil || !lifted {
		return err
	}
	if err := UnfenceTenant(ctx, conn, spec.Tenant); err != nil {
		return err
	}
	log.Warn("a late run of a rolled-back switchover's fence step fenced the tenant; the fence is lifted again", "tenant", spec.Tenant, "switchover", spec.Switchover)
	return fmt.Errorf("%w: switchover %d of tenant %s was rolled back here (its fence lifted); this run's fence is lifted again",
		errStaleStep, spec.Switchover, spec.Tenant)
}

// catchUpExec runs tenant-catchup tasks.
type catchUpExec struct{ cfg Config }

// Type is tenant-catchup.
func (e *catchUpExec) Type() string { return fsm.TaskTypeTenantCatchUp }

// Run waits until the mirror's subscription has applied up to the target,
// reporting its progress as it goes, and reports caught_up. It waits as
// long as its task runs: the leader decides when a switchover has waited
// too long.
func (e *catchUpExec) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.CatchUpSpec
	if err := decodeSpec(t, &spec); err != nil {
		return err
	}
	if _, ok := parseLSN(spec.Target); !ok || !fsm.ValidTenantID(spec.Tenant) || spec.Region != t.Region ||
		spec.Subscription != fsm.TenantSubscription(spec.Tenant, spec.Region) {
		return fmt.Errorf("task %s: a tenant-catchup spec needs a valid tenant, the task's region, its subscription %s and a target LSN (got %q, %q, %q)",
			t.ID, fsm.TenantSubscription(spec.Tenant, t.Region), spec.Region, spec.Subscription, spec.Target)
	}
	var home func(ctx context.Context) (*pgx.Conn, error)
	if spec.SourceDB != nil {
		home = func(ctx context.Context) (*pgx.Conn, error) { return ConnectSource(ctx, e.cfg, spec.SourceDB) }
	}
	failed := func(is fsm.ReplicationIssue) any {
		return &fsm.CatchUpResult{State: fsm.StepStepError, Target: spec.Target, BytesBehind: -1, Message: is.Message,
			At: time.Now().UnixNano(), Issues: []fsm.ReplicationIssue{is}}
	}
	newStepRunner(e.cfg).run(ctx, report, "wait for the subscription to catch up", func(ctx context.Context, conn *pgx.Conn) (any, error) {
		// Run again after this switchover's promotion or detach (which
		// come only once every mirror caught up), the subscription is
		// gone: the wait is over.
		if h, err := readHandOff(ctx, conn, spec.Tenant); err != nil {
			return nil, err
		} else if h != nil && h.Switchover == spec.Switchover && h.covers(spec.TenantCreated, spec.Epoch) {
			return &fsm.CatchUpResult{State: fsm.StepCaughtUp, Target: spec.Target, At: time.Now().UnixNano(),
				Message: fmt.Sprintf("the subscription was %s here by switchover %d, after the catch-up", h.Role, h.Switchover)}, nil
		}
		st, err := WaitCaughtUp(ctx, conn, CatchUp{Subscription: spec.Subscription, Target: spec.Target, Home: home,
			Progress: func(st CatchUpStatus) {
				if !st.CaughtUp {
					report(structs.TaskStatus{Status: fsm.TaskRunning, Result: catchUpResult(st)})
				}
			}})
		if err != nil {
			return nil, err
		}
		return catchUpResult(st), nil
	}, failed)
	return nil
}

// catchUpResult is what a look at the catch-up reports.
func catchUpResult(st CatchUpStatus) *fsm.CatchUpResult {
	res := &fsm.CatchUpResult{State: fsm.StepBehind, Target: st.Target, Applied: st.Applied, BytesBehind: st.BytesBehind,
		TablesNotReady: st.TablesNotReady, At: time.Now().UnixNano()}
	if st.CaughtUp {
		res.State = fsm.StepCaughtUp
		return res
	}
	switch {
	case !st.Enabled:
		res.Message = "the subscription is disabled"
	case !st.Running:
		res.Message = "the subscription's apply worker is not running"
	case st.Errors > 0:
		res.Message = fmt.Sprintf("the subscription's workers failed %d times (see the mirror's PostgreSQL log)", st.Errors)
	case len(st.TablesNotReady) > 0:
		res.Message = "tables still copying"
	case st.HomeError != "":
		res.Message = "the old home's slot could not be read: " + st.HomeError
	}
	return res
}

// promoteExec runs tenant-promote tasks.
type promoteExec struct{ cfg Config }

// Type is tenant-promote.
func (e *promoteExec) Type() string { return fsm.TaskTypeTenantPromote }

// Run promotes the mirror, publishes the tenant and makes the hand-off
// slots, then reports what it did and returns.
func (e *promoteExec) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.PromoteSpec
	if err := decodeSpec(t, &spec); err != nil {
		return err
	}
	if err := checkPromoteSpec(t, &spec); err != nil {
		return err
	}
	log := e.cfg.Logger.Named("switchover").With("task", t.ID)
	runner := newStepRunner(e.cfg)
	failed := func(is fsm.ReplicationIssue) any {
		return &fsm.PromoteResult{State: fsm.StepStepError, At: time.Now().UnixNano(), Issues: []fsm.ReplicationIssue{is}}
	}
	runner.run(ctx, report, "promote tenant "+spec.Tenant, func(ctx context.Context, conn *pgx.Conn) (any, error) {
		return e.promote(ctx, conn, runner.db, spec, log)
	}, failed)
	return nil
}

func checkPromoteSpec(t *fsm.Task, spec *fsm.PromoteSpec) error {
	if !fsm.ValidTenantID(spec.Tenant) || spec.Region != t.Region || spec.Subscription != fsm.TenantSubscription(spec.Tenant, spec.Region) ||
		spec.Publication != fsm.TenantPublication(spec.Tenant) || len(spec.Tables) == 0 {
		return fmt.Errorf("task %s: a tenant-promote spec needs a valid tenant with tables, the task's region, its subscription %s and publication %s",
			t.ID, fsm.TenantSubscription(spec.Tenant, t.Region), fsm.TenantPublication(spec.Tenant))
	}
	for _, r := range spec.HandOff {
		if !fsm.ValidRegionName(r) || r == spec.Region {
			return fmt.Errorf("task %s: hand-off region %q must be a valid region other than the new home", t.ID, r)
		}
	}
	return nil
}

// promote is one try of a promotion; every part is idempotent.
func (e *promoteExec) promote(ctx context.Context, conn *pgx.Conn, db *localConn, spec fsm.PromoteSpec, log hclog.Logger) (*fsm.PromoteResult, error) {
	// First, before anything is detached: a subscriber of the ended
	// placement changes nothing here from now on.
	h, err := recordHandOff(ctx, conn, handOff{Placement: fsm.TaskEpoch{Tenant: spec.Tenant, Created: spec.TenantCreated, Epoch: spec.Epoch},
		Switchover: spec.Switchover, Role: handOffPromoted, Subscription: spec.Subscription})
	if err != nil {
		return nil, err
	}
	// PromoteMirror detaches the subscription of that name, whichever it
	// is; only the one the first run found (to the old home) is this
	// promotion's. One made since is a later placement's (this database
	// is a mirror again), and this run is stale.
	if sub, err := readSubscription(ctx, conn, spec.Subscription); err != nil {
		return nil, err
	} else if sub != nil && sub.OID != h.DetachedOID {
		return nil, fmt.Errorf("%w: subscription %s here is not the one switchover %d found when it promoted this database (a later placement made it); it is left alone",
			errStaleStep, spec.Subscription, spec.Switchover)
	}
	// The position applied from the old home, read before the detach
	// (a later run finds no subscription and reports none).
	var applied string
	if sub, err := readSubscription(ctx, conn, spec.Subscription); err == nil && sub != nil {
		var a *string
		if conn.QueryRow(ctx, `SELECT pg_replication_origin_progress($1, true)::text`, fmt.Sprintf("pg_%d", sub.OID)).Scan(&a) == nil && a != nil && *a != "0/0" {
			applied = *a
		}
	}
	p := Promotion{Tenant: spec.Tenant, Subscription: spec.Subscription, Tables: spec.Tables, PIIGuard: spec.PIIGuard, SequenceGap: spec.SequenceGap}
	for _, c := range spec.PII {
		p.PII = append(p.PII, PIIColumn(c))
	}
	if spec.SourceDB != nil {
		p.Home = func(ctx context.Context) (*pgx.Conn, error) { return ConnectSource(ctx, e.cfg, spec.SourceDB) }
	}
	pr, err := PromoteMirror(ctx, conn, p)
	if err != nil {
		return nil, err
	}
	res := &fsm.PromoteResult{State: fsm.StepPromoted, PIIColumnsAdded: pr.PIIColumnsAdded, HomeSlotDropped: pr.SlotDropped,
		HomeSlotError: pr.SlotError, Slots: map[string]string{}, AppliedLSN: applied}
	for _, m := range pr.Sequences {
		res.Sequences = append(res.Sequences, fsm.SequenceMoveResult{Sequence: m.Sequence, Highest: m.Highest, NextAfter: m.NextAfter, Moved: m.Moved})
	}
	if err := e.publish(ctx, conn, db, spec, log); err != nil {
		return nil, err
	}
	regions := slices.Clone(spec.HandOff)
	slices.Sort(regions)
	for _, r := range slices.Compact(regions) {
		if err := dropOlderSlot(ctx, conn, fsm.TenantSubscription(spec.Tenant, r), h.StartedLSN, log); err != nil {
			return nil, err
		}
		lsn, err := CreateHandOffSlot(ctx, conn, spec.Tenant, r)
		if err != nil {
			return nil, err
		}
		res.Slots[r] = lsn
	}
	// Last, once the slots exist: a fence of an older placement here (this
	// database was the tenant's home before, and was fenced when it left)
	// would refuse the application's writes at the new home.
	if f, err := ReadFence(ctx, conn, spec.Tenant); err != nil {
		return nil, err
	} else if f != nil && spec.Epoch != 0 && f.Epoch <= spec.Epoch {
		if err := UnfenceTenant(ctx, conn, spec.Tenant); err != nil {
			return nil, err
		}
		log.Info("lifted the tenant's fence of an earlier placement", "tenant", spec.Tenant, "fence_epoch", f.Epoch)
	}
	// A home confirmation of an earlier time as home, with no fence (the
	// row outlived it), would hold the new home's first writes after a
	// restart of PostgreSQL: the publisher confirms once the move commits.
	if err := ClearHomeConfirmation(ctx, conn, spec.Tenant); err != nil {
		return nil, fmt.Errorf("clear the tenant's home confirmation of an earlier placement: %w", err)
	}
	res.At = time.Now().UnixNano()
	log.Info("tenant promoted", "tenant", spec.Tenant, "pii_columns_added", len(res.PIIColumnsAdded), "slots", len(res.Slots),
		"home_slot_dropped", res.HomeSlotDropped)
	return res, nil
}

// dropOlderSlot drops a slot of a hand-off slot's name that is older
// than this promotion: its confirmed position lies before the position at
// which the promotion started (StartedLSN), so this promotion did not make
// it. It is a slot this database kept from an earlier time as the
// tenant's home (its publisher's teardown had not run), and a subscriber
// streaming from it would get changes from long ago. A slot in use is an
// error: it is not atomfed's to take.
func dropOlderSlot(ctx context.Context, conn *pgx.Conn, slot, started string, log hclog.Logger) error {
	var older, active bool
	err := conn.QueryRow(ctx, `SELECT coalesce(confirmed_flush_lsn, restart_lsn) < $2::pg_lsn, active FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, slot, started).Scan(&older, &active)
	if err == pgx.ErrNoRows || (err == nil && !older) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read slot %s: %w", slot, err)
	}
	if active {
		return fmt.Errorf("slot %s is older than this promotion and in use; it cannot be a hand-off slot (drop it by hand)", slot)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
		return fmt.Errorf("drop slot %s, older than this promotion: %w", slot, err)
	}
	log.Warn("dropped a slot of a hand-off slot's name older than the promotion (left from an earlier time as home)", "slot", slot)
	return nil
}

// publisherSpecAfter is the tenant-publisher spec the new home gets once
// the switchover commits: the promotion publishes exactly that, so the
// publisher finds its publication in place.
func publisherSpecAfter(spec fsm.PromoteSpec) fsm.PublisherSpec {
	subs := make([]string, 0, len(spec.HandOff))
	for _, r := range spec.HandOff {
		subs = append(subs, fsm.TenantSubscription(spec.Tenant, r))
	}
	return fsm.PublisherSpec{Ensure: fsm.EnsurePresent, Kind: fsm.KindTenant, Tenant: spec.Tenant, Region: spec.Region,
		Publication: spec.Publication, Tables: spec.Tables, Subscriptions: subs, SlotPrefix: fsm.TenantSlotPrefix(spec.Tenant)}
}

// publish makes the tenant's publication here with the tenant-publisher's
// code: replica identities, the replication role's grants and row
// policies, and the publication (row filter, no PII column).
func (e *promoteExec) publish(ctx context.Context, conn *pgx.Conn, db *localConn, spec fsm.PromoteSpec, log hclog.Logger) error {
	pub := &publisher{spec: publisherSpecAfter(spec), cfg: e.cfg, db: db, log: e.cfg.Logger.Named("publisher")}
	plan, bad, err := pub.validate(ctx, conn)
	if err != nil {
		return fmt.Errorf("inspect the tenant's tables: %w", err)
	}
	if len(bad) > 0 {
		return fmt.Errorf("the tenant's tables do not validate for a publication here: %s", bad[0].Message)
	}
	if is := pub.apply(ctx, conn, plan); is != nil {
		return errors.New(is.Message)
	}
	log.Info("tenant published at its new home", "tenant", spec.Tenant, "publication", spec.Publication)
	return nil
}

// detachExec runs tenant-detach tasks.
type detachExec struct{ cfg Config }

// Type is tenant-detach.
func (e *detachExec) Type() string { return fsm.TaskTypeTenantDetach }

// Run detaches the mirror's subscription to the old home, keeping every
// row, and returns.
func (e *detachExec) Run(ctx context.Context, t *fsm.Task, report func(structs.TaskStatus)) error {
	var spec fsm.DetachSpec
	if err := decodeSpec(t, &spec); err != nil {
		return err
	}
	if !fsm.ValidTenantID(spec.Tenant) || spec.Region != t.Region || spec.Subscription != fsm.TenantSubscription(spec.Tenant, spec.Region) {
		return fmt.Errorf("task %s: a tenant-detach spec needs a valid tenant, the task's region and its subscription %s",
			t.ID, fsm.TenantSubscription(spec.Tenant, t.Region))
	}
	log := e.cfg.Logger.Named("switchover").With("task", t.ID)
	failed := func(is fsm.ReplicationIssue) any {
		return &fsm.DetachResult{State: fsm.StepStepError, At: time.Now().UnixNano(), Issues: []fsm.ReplicationIssue{is}}
	}
	newStepRunner(e.cfg).run(ctx, report, "detach the subscription "+spec.Subscription, func(ctx context.Context, conn *pgx.Conn) (any, error) {
		h, err := recordHandOff(ctx, conn, handOff{Placement: fsm.TaskEpoch{Tenant: spec.Tenant, Created: spec.TenantCreated, Epoch: spec.Epoch},
			Switchover: spec.Switchover, Role: handOffDetached, Subscription: spec.Subscription})
		if err != nil {
			return nil, err
		}
		// Only the subscription the first run found (to the old home): one
		// of that name made since is the hand-off subscriber's, which a
		// late run must not take away.
		sub, err := readSubscription(ctx, conn, spec.Subscription)
		if err != nil {
			return nil, err
		}
		if sub != nil && sub.OID == h.DetachedOID {
			if _, err := detachSubscription(ctx, conn, spec.Subscription); err != nil {
				return nil, err
			}
			log.Info("subscription to the old home detached; the tenant's rows stay", "subscription", spec.Subscription)
		}
		return &fsm.DetachResult{State: fsm.StepDetached, At: time.Now().UnixNano()}, nil
	}, failed)
	return nil
}
