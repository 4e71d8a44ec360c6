package replication

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// The second database step of a switchover: at the mirror that becomes
// the home, wait until the tenant's subscription has applied everything
// the fenced old home holds of the tenant, that is everything up to the
// fenced LSN (FenceTenant).
//
// Which position says "applied" (PostgreSQL 15):
//
//   - pg_stat_subscription.received_lsn and latest_end_lsn are what the
//     apply worker last received (a change, or a keepalive from the
//     sender). They are memory only (NULL while the worker is down), and
//     say nothing of whether the local commits are durable: the tenant's
//     subscriptions commit asynchronously unless the tenant is in sync
//     mode. They are not used.
//   - The subscription's replication origin (pg_<subscription oid>) holds
//     the end LSN at the home of the last transaction the worker applied
//     (pg_replication_origin_status.remote_lsn).
//     pg_replication_origin_progress(origin, true) returns it after
//     flushing the local WAL up to that commit, so it is durable. It is
//     exact, but it moves only when a transaction of the tenant is
//     applied: PostgreSQL 15 sends no transaction whose changes the row
//     filter drops, and the fence itself writes nothing of the tenant. For
//     a tenant idle at the fence the origin stays below the fenced LSN
//     forever, so it alone cannot end the wait. And the origin moves
//     inside the worker's commit, a moment before the commit is visible
//     to other sessions: it counts only once the worker, looked at after
//     the origin, holds no transaction id (pg_stat_activity.backend_xid).
//     The slot has no such gap: the worker confirms a commit only after
//     it has completed.
//   - The slot at the home (pg_replication_slots.confirmed_flush_lsn) is
//     the position the mirror reported as flushed. The apply worker
//     reports the end of each applied transaction once its local commit is
//     flushed, and, with nothing pending, the last position it received,
//     keepalives included; it applies what it receives one message at a
//     time, in order. So a confirmed position at or past the target means
//     every transaction of the tenant that committed before it is applied
//     and durable at the mirror. It moves with keepalives too: a walsender
//     in PostgreSQL 15 that has sent past what the receiver confirmed
//     pings it before waiting for more WAL, and the reply confirms. The
//     fence's own commit record lies past the fenced LSN, so the slot
//     passes the target soon after the fence even if the tenant writes
//     nothing.
//
// The wait ends when either position is at or past the target and every
// table of the subscription is ready (pg_subscription_rel state r): while
// a table is still being copied, the apply worker skips its changes and
// confirms past them; they are the table-sync worker's.

// CatchUp is what WaitCaughtUp waits for.
type CatchUp struct {
	// Subscription is the tenant's subscription in the mirror's database
	// (fsm.TenantSubscription).
	Subscription string
	// Target is the position at the home to reach, as PostgreSQL writes
	// an LSN ("0/16B3748"): the fenced LSN FenceTenant returned.
	Target string
	// Home connects to the home's database (ConnectSource), to read the
	// subscription's slot there; it is called again after a failure.
	// Without it, or while the home cannot be reached, only the origin
	// counts, and an idle tenant is never seen caught up.
	Home func(ctx context.Context) (*pgx.Conn, error)
	// Poll is the time between two looks (default 200 ms).
	Poll time.Duration
	// Progress, when set, gets every status the wait sees.
	Progress func(CatchUpStatus)
}

// CatchUpStatus is one look at a subscription's progress towards a
// target.
type CatchUpStatus struct {
	Subscription string `json:"subscription"`
	Target       string `json:"target"`
	// Applied is the furthest position known applied and durable at the
	// mirror (the greater of OriginLSN and SlotLSN), "" when neither is
	// known.
	Applied   string `json:"applied,omitempty"`
	OriginLSN string `json:"origin_lsn,omitempty"`
	SlotLSN   string `json:"slot_lsn,omitempty"`
	// BytesBehind is Target minus Applied, 0 once caught up, -1 when
	// Applied is unknown.
	BytesBehind int64 `json:"bytes_behind"`
	Enabled     bool  `json:"enabled"`
	// Running says whether the subscription's apply worker runs.
	Running bool `json:"running"`
	// TablesNotReady are the subscription's tables still being copied.
	TablesNotReady []string `json:"tables_not_ready,omitempty"`
	// Errors counts the subscription's apply and table-sync failures
	// (pg_stat_subscription_stats); the messages are in the mirror's log.
	Errors int64 `json:"errors,omitempty"`
	// HomeError says why the slot at the home could not be read.
	HomeError string `json:"home_error,omitempty"`
	CaughtUp  bool   `json:"caught_up"`
}

// Errors of WaitCaughtUp.
var (
	// ErrNoSubscription: the mirror has no subscription of that name, or
	// one detached from its slot, so nothing will ever catch up there.
	ErrNoSubscription = errors.New("no subscription to catch up")
	// ErrNotCaughtUp: the wait ended (its context) before the
	// subscription had applied up to the target.
	ErrNotCaughtUp = errors.New("subscription not caught up")
)

// WaitCaughtUp waits until the subscription c.Subscription in the mirror's
// database has applied, durably, everything up to c.Target of its home
// (see the top of this file for how that is told), and returns the last
// status. It looks every c.Poll and reports each look to c.Progress.
//
// A subscription that is disabled, whose worker is down or whose tables
// are still copying is waited for (the subscriber may bring it back);
// when ctx ends first, the error wraps ErrNotCaughtUp and ctx's error and
// says what holds it back. A missing subscription, or one detached from
// its slot, fails at once with ErrNoSubscription. Errors of the mirror's connection end the wait.
func WaitCaughtUp(ctx context.Context, mirror *pgx.Conn, c CatchUp) (CatchUpStatus, error) {
	target, ok := parseLSN(c.Target)
	if !ok || c.Subscription == "" {
		return CatchUpStatus{}, fmt.Errorf("wait for catch-up: subscription %q and target LSN %q must be set (an LSN reads like 0/16B3748)", c.Subscription, c.Target)
	}
	if c.Poll <= 0 {
		c.Poll = 200 * time.Millisecond
	}
	w := &catchUpWait{c: c, target: target}
	defer w.closeHome()
	for {
		st, err := w.look(ctx, mirror)
		if err != nil {
			if ctx.Err() != nil {
				return w.last, w.notCaughtUp(ctx, w.last)
			}
			return st, fmt.Errorf("wait for subscription %s to catch up: %w", c.Subscription, err)
		}
		if c.Progress != nil {
			c.Progress(st)
		}
		if st.CaughtUp {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, w.notCaughtUp(ctx, st)
		case <-time.After(c.Poll):
		}
	}
}

type catchUpWait struct {
	c      CatchUp
	target uint64
	home   *pgx.Conn
	last   CatchUpStatus
}

func (w *catchUpWait) closeHome() {
	if w.home != nil {
		_ = w.home.Close(context.Background())
		w.home = nil
	}
}

// look reads the subscription's state at the mirror and its slot at the
// home.
func (w *catchUpWait) look(ctx context.Context, mirror *pgx.Conn) (CatchUpStatus, error) {
	st := CatchUpStatus{Subscription: w.c.Subscription, Target: w.c.Target, BytesBehind: -1}
	var oid uint32
	var slot *string
	err := mirror.QueryRow(ctx, `SELECT s.oid, s.subenabled, s.subslotname::text,
			EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL),
			coalesce((SELECT apply_error_count + sync_error_count FROM pg_stat_subscription_stats WHERE subid = s.oid), 0),
			array(SELECT n.nspname || '.' || c.relname FROM pg_subscription_rel r JOIN pg_class c ON c.oid = r.srrelid
				JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.srsubid = s.oid AND r.srsubstate <> 'r' ORDER BY 1)
		FROM pg_subscription s
		WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, w.c.Subscription).
		Scan(&oid, &st.Enabled, &slot, &st.Running, &st.Errors, &st.TablesNotReady)
	if err == pgx.ErrNoRows {
		return st, fmt.Errorf("%w: %s in this database (the mirror was torn down, or already promoted)", ErrNoSubscription, w.c.Subscription)
	}
	if err != nil {
		return st, err
	}
	var origin *string
	if err := mirror.QueryRow(ctx, `SELECT pg_replication_origin_progress($1, true)::text`, fmt.Sprintf("pg_%d", oid)).Scan(&origin); err != nil {
		return st, fmt.Errorf("read the progress of the subscription's origin: %w", err)
	}
	// See the top of this file: the origin counts once the worker holds
	// no transaction id.
	var inTxn bool
	if err := mirror.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_subscription w JOIN pg_stat_activity a ON a.pid = w.pid
		WHERE w.subid = $1 AND a.backend_xid IS NOT NULL)`, oid).Scan(&inTxn); err != nil {
		return st, fmt.Errorf("read the subscription's workers: %w", err)
	}
	applied := w.maxLSN(&st.OriginLSN, origin, 0)
	if inTxn {
		applied = 0
	}
	if slot == nil {
		st.HomeError = "the subscription has no slot (slot_name = NONE): it was detached"
	} else {
		lsn, err := w.slotLSN(ctx, *slot)
		if err != nil {
			st.HomeError = err.Error()
		}
		applied = w.maxLSN(&st.SlotLSN, lsn, applied)
	}
	if applied > 0 {
		st.Applied = formatLSN(applied)
		st.BytesBehind = max(int64(w.target)-int64(applied), 0)
	}
	st.CaughtUp = applied >= w.target && len(st.TablesNotReady) == 0
	w.last = st
	if slot == nil && !st.CaughtUp {
		return st, fmt.Errorf("%w: %s was detached from its slot (slot_name = NONE, as a promotion does), so nothing more is applied through it", ErrNoSubscription, w.c.Subscription)
	}
	return st, nil
}

// maxLSN stores a position read as text into *field and returns the greater
// of it and cur.
func (w *catchUpWait) maxLSN(field *string, lsn *string, cur uint64) uint64 {
	if lsn == nil {
		return cur
	}
	*field = *lsn
	if v, ok := parseLSN(*lsn); ok && v > cur {
		return v
	}
	return cur
}

// slotLSN reads the slot's confirmed position at the home, connecting
// first when needed.
func (w *catchUpWait) slotLSN(ctx context.Context, slot string) (*string, error) {
	if w.c.Home == nil {
		return nil, errors.New("no connection to the home was given")
	}
	if w.home == nil || w.home.IsClosed() {
		cctx, cancel := context.WithTimeout(ctx, connectTimeout)
		conn, err := w.c.Home(cctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("cannot reach the home's database: %s", pgMessage(err))
		}
		w.home = conn
	}
	var lsn *string
	err := w.home.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, slot).Scan(&lsn)
	if err == pgx.ErrNoRows {
		return nil, fmt.Errorf("the home has no slot %s", slot)
	}
	if err != nil {
		w.closeHome()
		return nil, fmt.Errorf("read slot %s at the home: %s", slot, pgMessage(err))
	}
	return lsn, nil
}

// notCaughtUp says what held the subscription back when ctx ended.
func (w *catchUpWait) notCaughtUp(ctx context.Context, st CatchUpStatus) error {
	var why []string
	switch {
	case st.Subscription == "":
		why = append(why, "its state could not be read")
	case st.Applied == "":
		why = append(why, "no applied position is known yet")
	default:
		why = append(why, fmt.Sprintf("applied up to %s, %d bytes behind", st.Applied, st.BytesBehind))
	}
	if st.Subscription != "" && !st.Enabled {
		why = append(why, "the subscription is disabled (ALTER SUBSCRIPTION ... ENABLE, or let its subscriber converge)")
	} else if st.Subscription != "" && !st.Running {
		why = append(why, "its apply worker is not running")
	}
	if st.Errors > 0 {
		why = append(why, fmt.Sprintf("its workers failed %d times (see the mirror's PostgreSQL log)", st.Errors))
	}
	if len(st.TablesNotReady) > 0 {
		why = append(why, "tables still copying: "+strings.Join(st.TablesNotReady, ", "))
	}
	if st.HomeError != "" {
		why = append(why, "the home's slot could not be read: "+st.HomeError)
	}
	return fmt.Errorf("%w: subscription %s had not applied up to the home's %s when the wait ended: %s: %w",
		ErrNotCaughtUp, w.c.Subscription, w.c.Target, strings.Join(why, "; "), ctx.Err())
}

// formatLSN writes an LSN as PostgreSQL does.
func formatLSN(v uint64) string { return fmt.Sprintf("%X/%X", v>>32, uint32(v)) }

// ConnectSource connects to another region's database as the replication
// role, over TLS with the server verified (sslmode=verify-full against
// cfg.ReplicationCA), the way a subscription does: what a mirror's agent
// uses to read a home's slots, or drop one (DropHomeSlot).
func ConnectSource(ctx context.Context, cfg Config, ep *fsm.DatabaseEndpoint) (*pgx.Conn, error) {
	cfg.defaults()
	return connectSource(ctx, ep, &cfg)
}
