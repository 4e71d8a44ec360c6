package replication

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// The hand-off record. A switchover's promotion (at the new home) and
// detach (at every other mirror) end the tenant's subscription to the old
// home in that database. For a moment afterwards a peer agent may still
// run the tenant-subscriber task of the ended placement there (the
// leader removed it, the agent has not seen that yet). Left alone it
// would do a mirror's work: at the new home purge the tenant's rows and
// copy them again from the fenced old home, clear the PII columns the
// promotion brought back; at another mirror purge and copy, and make a
// subscription to the old home that the hand-off subscriber then finds in
// its way.
//
// So the step writes, before it detaches anything, a record in the
// database itself (atomfed.tenant_handoffs: the tenant, the placement
// that ended, the step, and the OID of the subscription it found), and
// every tenant-subscriber looks at it under a per-tenant advisory lock
// for its whole step: a subscriber of that placement or an older one
// changes nothing (its teardown only drops that subscription, keeping
// every row); a subscriber of a newer placement (the hand-off subscriber,
// or any later one) works as usual. The lock makes the check and what the
// subscriber does one step: the record cannot be written between them.
// The OID tells the subscription the step detaches from one of the same
// name made since by a newer placement, which a late run of the step
// leaves alone.

// Hand-off record roles.
const (
	handOffPromoted = "promoted"
	handOffDetached = "detached"
)

// handOffSchema creates the record table. It runs under handOffLockKey.
var handOffSchema = []string{
	`CREATE SCHEMA IF NOT EXISTS atomfed`,
	`CREATE TABLE IF NOT EXISTS atomfed.tenant_handoffs (
		tenant_id text PRIMARY KEY,
		tenant_created bigint NOT NULL,
		epoch bigint NOT NULL,
		switchover bigint NOT NULL,
		role text NOT NULL,
		subscription text NOT NULL,
		detached_oid bigint NOT NULL DEFAULT 0,
		started_lsn pg_lsn NOT NULL,
		at timestamptz NOT NULL DEFAULT now())`,
	`REVOKE ALL ON atomfed.tenant_handoffs FROM PUBLIC`,
}

// handOffLockKey is the first key of the advisory locks of hand-off
// records: (key, 0) serializes creating the table, (key, hashtext(tenant))
// a tenant's record against its subscriber's step.
const handOffLockKey = 0x61666864 // "afhd"

// handOff is a tenant's hand-off record in one database.
type handOff struct {
	Placement    fsm.TaskEpoch // the placement that ended (the step's)
	Switchover   uint64
	Role         string
	Subscription string
	// DetachedOID is the subscription the step found when it first wrote
	// the record (0 when there was none): the subscription to the old home
	// that it detaches. A subscription of that name made later (another
	// OID) is a newer placement's, even with the same source (after a
	// fail-back the former home subscribes to the same region again).
	DetachedOID uint32
	// StartedLSN is this database's WAL insert position when the step
	// first wrote the record: a slot made by the step starts after it.
	StartedLSN string
	At         time.Time
}

// covers reports whether the record ends the placement of a task spec:
// the spec's placement is the record's or an older one.
func (h *handOff) covers(created, epoch uint64) bool {
	spec := fsm.TaskEpoch{Tenant: h.Placement.Tenant, Created: created, Epoch: epoch}
	return !h.Placement.Older(spec)
}

// recordHandOff writes the hand-off record of a step, waiting for the
// tenant's subscriber to finish its step, and returns the record as it
// stands: one of the same step written by an earlier run is kept as it
// is. A record of a newer placement is kept, and the step refused: it is
// stale.
func recordHandOff(ctx context.Context, conn *pgx.Conn, h handOff) (*handOff, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	stmts := append([]string{`SET LOCAL lock_timeout = '10s'`, `SELECT pg_advisory_xact_lock(` + strconv.Itoa(handOffLockKey) + `, 0)`}, handOffSchema...)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("hand-off record of tenant %s: %w", h.Placement.Tenant, err)
		}
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, handOffLockKey, h.Placement.Tenant); err != nil {
		return nil, fmt.Errorf("hand-off record of tenant %s: wait for its subscriber's step: %w", h.Placement.Tenant, err)
	}
	cur, err := readHandOff(ctx, tx, h.Placement.Tenant)
	if err != nil {
		return nil, err
	}
	if cur != nil && h.Placement.Older(cur.Placement) {
		return nil, fmt.Errorf("%w: tenant %s was handed off here at %s (switchover %d); this step is of %s",
			errStaleStep, h.Placement.Tenant, cur.Placement, cur.Switchover, h.Placement)
	}
	if cur != nil && cur.Placement == h.Placement && cur.Role == h.Role && cur.Switchover == h.Switchover {
		return cur, tx.Commit(ctx)
	}
	err = tx.QueryRow(ctx, `SELECT coalesce((SELECT oid FROM pg_subscription WHERE subname = $1
		AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())), 0)`, h.Subscription).Scan(&h.DetachedOID)
	if err != nil {
		return nil, fmt.Errorf("hand-off record of tenant %s: read subscription %s: %w", h.Placement.Tenant, h.Subscription, err)
	}
	err = tx.QueryRow(ctx, `INSERT INTO atomfed.tenant_handoffs (tenant_id, tenant_created, epoch, switchover, role, subscription, detached_oid, started_lsn, at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, pg_current_wal_insert_lsn(), now())
		ON CONFLICT (tenant_id) DO UPDATE SET tenant_created = EXCLUDED.tenant_created, epoch = EXCLUDED.epoch,
			switchover = EXCLUDED.switchover, role = EXCLUDED.role, subscription = EXCLUDED.subscription,
			detached_oid = EXCLUDED.detached_oid, started_lsn = EXCLUDED.started_lsn, at = EXCLUDED.at
		RETURNING started_lsn::text`,
		h.Placement.Tenant, int64(h.Placement.Created), int64(h.Placement.Epoch), int64(h.Switchover), h.Role, h.Subscription, int64(h.DetachedOID)).
		Scan(&h.StartedLSN)
	if err != nil {
		return nil, fmt.Errorf("hand-off record of tenant %s: %w", h.Placement.Tenant, err)
	}
	return &h, tx.Commit(ctx)
}

// readHandOff returns tenant's hand-off record, or nil when there is none
// (or no record table yet).
func readHandOff(ctx context.Context, q querier, tenant string) (*handOff, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('atomfed.tenant_handoffs') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	h := handOff{Placement: fsm.TaskEpoch{Tenant: tenant}}
	var created, epoch, sw, oid int64
	err := q.QueryRow(ctx, `SELECT tenant_created, epoch, switchover, role, subscription, detached_oid, started_lsn::text, at
		FROM atomfed.tenant_handoffs WHERE tenant_id = $1`,
		tenant).Scan(&created, &epoch, &sw, &h.Role, &h.Subscription, &oid, &h.StartedLSN, &h.At)
	if err == pgx.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the hand-off record of tenant %s: %w", tenant, err)
	}
	h.Placement.Created, h.Placement.Epoch, h.Switchover, h.DetachedOID = uint64(created), uint64(epoch), uint64(sw), uint32(oid)
	return &h, nil
}

// lockTenantStep takes the tenant's hand-off lock on the session of conn
// (see the top of this file) and returns its release. The wait is
// bounded: a session left behind by a lost connection may hold the lock
// until the server notices, and the step should say so, not hang. The
// lock is the session's, so it outlives the transaction that waits for
// it.
func lockTenantStep(ctx context.Context, conn *pgx.Conn, tenant string) (func(), error) {
	err := execTx(ctx, conn, []string{`SET LOCAL lock_timeout = '10s'`,
		fmt.Sprintf(`SELECT pg_advisory_lock(%d, hashtext(%s))`, handOffLockKey, quoteLiteral(tenant))})
	if err != nil {
		return nil, fmt.Errorf("wait for tenant %s's switchover step lock: %w", tenant, err)
	}
	return func() {
		if conn.IsClosed() {
			return // the lock went with the session
		}
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, handOffLockKey, tenant)
	}, nil
}

// handedOff is the step of a tenant-subscriber whose placement a hand-off
// record ends (see the top of this file): present, it changes nothing and
// says why; absent, it only drops the subscription the step found (the
// ended placement's, to the old home), without reaching it and keeping
// every row, and is done. A subscription of that name made since is a
// newer placement's (the hand-off subscriber's): it stays.
func (s *subscriber) handedOff(ctx context.Context, conn *pgx.Conn, res *fsm.SubscriberResult, h *handOff) (*fsm.SubscriberResult, bool) {
	why := fmt.Sprintf("tenant %s was %s in this database by switchover %d, which ended %s; this subscriber task is of that placement",
		s.spec.Tenant, h.Role, h.Switchover, h.Placement)
	if s.spec.Ensure == fsm.EnsureAbsent {
		sub, err := readSubscription(ctx, conn, s.spec.Subscription)
		if err == nil && sub != nil && sub.OID == h.DetachedOID {
			_, err = detachSubscription(ctx, conn, s.spec.Subscription)
		}
		if err != nil {
			res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "drop the subscription", err)}
			return res, false
		}
		s.log.Info("subscriber of a handed-off placement torn down; the tenant's rows stay", "reason", why)
		res.State = fsm.ReplRemoved
		return res, true
	}
	res.State = fsm.ReplStaleEpoch
	res.Issues = []fsm.ReplicationIssue{{Code: fsm.IssueStaleEpoch, At: time.Now().UnixNano(),
		Message: why + ", so it changes nothing here (no subscription, no purge, no PII column touched)"}}
	return res, false
}

// teardownUnlessPromoted tears a tenant's publication down, unless the
// tenant was promoted here at this task's placement or a newer one (see
// the top of this file): then the publication and the hand-off slots here
// are the promotion's, which the new home's publisher keeps, and the
// teardown of an older placement (a home the tenant left and came back
// to before its teardown ran) changes nothing and is done.
func (p *publisher) teardownUnlessPromoted(ctx context.Context, conn *pgx.Conn, res *fsm.PublisherResult) (*fsm.PublisherResult, bool) {
	unlock, err := lockTenantStep(ctx, conn, p.spec.Tenant)
	if err != nil {
		p.db.drop()
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "take the tenant's step lock", err)}
		return res, false
	}
	defer unlock()
	h, err := readHandOff(ctx, conn, p.spec.Tenant)
	if err != nil {
		res.State, res.Issues = fsm.ReplError, []fsm.ReplicationIssue{issueFromErr("", "read the tenant's hand-off record", err)}
		return res, false
	}
	if h != nil && h.Role == handOffPromoted && h.covers(p.spec.TenantCreated, p.spec.Epoch) {
		p.log.Info("not tearing down the publication: the tenant was promoted here since", "tenant", p.spec.Tenant, "switchover", h.Switchover)
		res.State = fsm.ReplRemoved
		return res, true
	}
	return p.teardown(ctx, conn, res)
}
