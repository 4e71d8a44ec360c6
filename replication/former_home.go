package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/atomcloud/atomfed/fsm"
)

// The former home: after a switchover (or a failover, once the old home
// comes back), the tenant's old home A becomes a mirror of its new home B.
// A is not an ordinary mirror. Its tables hold every row of the tenant and
// every PII value, which B never had (PII does not leave its home), so A
// must keep them: an ordinary subscriber purges the tenant's rows before
// its initial copy and clears the PII columns of a shared table, which at
// A would destroy the tenant's PII. A former home therefore (spec flag
// fsm.SubscriberSpec.FormerHome):
//   - never purges the tenant's rows and never clears or drops a PII
//     column (see purge and removePII in subscriber.go);
//   - copies nothing (copy_data = false): A has the rows already;
//   - streams from a slot created at B before B took any of the tenant's
//     writes, so that it misses none.
//
// B's publication publishes no PII column. PostgreSQL's apply of an
// UPDATE sets only the columns the message carries, so A's PII values
// stay as they are when B updates a row; a row B inserts gets NULL (the
// column default) in A's PII columns. The subscription's apply worker
// runs with session_replication_role = replica, so the tenant's fence at
// A (fence.go), which refuses the application's writes, does not fire
// for it.
//
// Why no write is lost or applied twice. The switchover runs, in order:
//  1. FenceTenant at A: from its commit on, no write of the tenant commits
//     at A, and every one that did lies below the fenced LSN F.
//  2. B's subscription to A applies up to F: B now holds A's tenant rows
//     (their published columns) exactly as of F, and A will not change
//     them again.
//  3. B is promoted: its subscription to A is detached (nothing more can
//     come from A anyway), its PII columns come back, and it publishes
//     the tenant (the publication must exist before the slot is used).
//  4. CreateFormerHomeSlot at B, before B accepts the tenant's writes: the
//     slot's consistent point S lies after every change B applied from A
//     and before B's first own write of the tenant, so the slot holds
//     exactly B's own writes. At S, B's tenant rows equal A's at F.
//  5. B takes the tenant's writes (routing flips at the commit).
//  6. SubscribeFormerHome at A with copy_data = false from that slot: A
//     starts from its rows as of F (= B's as of S) and applies every
//     change after S, once.
//
// Between 1 and 4 nobody writes the tenant: A refuses (the fence), B
// does not accept yet (routing sends the tenant's writes to B only from
// the commit on; a caller that wants this enforced in B's database too
// can fence the tenant at B until the slot exists, since the fence lets
// subscription apply through). A slot made later than 5 would miss the
// writes in between, which is why SubscribeFormerHome never creates one:
// it waits for the switchover's. A slot made before the publication
// exists would fail at the first change it decodes (pgoutput looks the
// publication up as of each change), hence the order of 3 and 4.
//
// Every other mirror C of the tenant follows B the same way: C applied up
// to F too, so at S its tenant rows equal B's; its subscription to A is
// detached (DISABLE, slot_name = NONE, DROP, keeping every row: the
// tenant-detach step), B makes a slot for C in step 4 as well, and C's
// tenant-subscriber in hand-off mode (fsm.SubscriberSpec.HandOff)
// subscribes from it with copy_data = false and purges nothing first.
// Otherwise C is an ordinary mirror: its teardown purges the tenant's
// rows, and its PII columns stay cleared or dropped. The switchover's
// executors are in switchover_exec.go.

// Errors of hand-off slots.
var (
	// ErrNoFormerHomeSlot means the slot a former home subscribes from does
	// not exist at the new home (or is not a usable logical slot there).
	ErrNoFormerHomeSlot = errors.New("no former-home slot at the new home")
	// ErrNoHandOffSlot means the slot a mirror that follows the tenant's
	// new home (a hand-off subscriber) subscribes from does not exist there.
	ErrNoHandOffSlot = errors.New("no hand-off slot at the new home")
)

// CreateFormerHomeSlot is CreateHandOffSlot for the tenant's former home.
func CreateFormerHomeSlot(ctx context.Context, newHome *pgx.Conn, tenant, formerHome string) (string, error) {
	return CreateHandOffSlot(ctx, newHome, tenant, formerHome)
}

// CreateHandOffSlot creates, in the database of newHome (the tenant's new
// home), the logical replication slot that region (the tenant's former
// home, or another of its mirrors) will subscribe from, and returns its
// consistent point as PostgreSQL prints an LSN. It must run while the
// tenant is fenced at the former home and before the new home accepts any
// of the tenant's writes (see the top of this file), and after the
// tenant's publication exists at the new home: decoding a change needs
// the publication, as of the change. The slot is named like region's
// subscription (fsm.TenantSubscription), so the new home's publisher
// keeps it as long as it lists that subscription. It is idempotent: when
// the slot exists already (as a logical pgoutput slot of this database),
// it is left as it is and its confirmed position returned; it is never
// re-created, which would skip the writes made since.
func CreateHandOffSlot(ctx context.Context, newHome *pgx.Conn, tenant, region string) (string, error) {
	if !fsm.ValidTenantID(tenant) || !fsm.ValidRegionName(region) {
		return "", fmt.Errorf("hand-off slot: tenant %q and region %q must be valid", tenant, region)
	}
	slot := fsm.TenantSubscription(tenant, region)
	pub := fsm.TenantPublication(tenant)
	exists, _, err := readPublication(ctx, newHome, pub)
	if err != nil {
		return "", fmt.Errorf("hand-off slot %s: read publication %s: %w", slot, pub, err)
	}
	if !exists {
		return "", fmt.Errorf("hand-off slot %s: publication %s does not exist in this database yet; publish the tenant here first", slot, pub)
	}
	lsn, err := handOffSlot(ctx, newHome, slot, ErrNoHandOffSlot)
	if err == nil || !errors.Is(err, ErrNoHandOffSlot) {
		return lsn, err
	}
	err = newHome.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&lsn)
	if err != nil {
		return "", fmt.Errorf("hand-off slot %s: create: %w", slot, err)
	}
	return lsn, nil
}

// handOffSlot returns the confirmed position of an existing hand-off
// slot, or missing (wrapped) when there is none. A slot of that name that
// is not a logical pgoutput slot of this database is an error of its own:
// nothing can subscribe from it, and it is not atomfed's to drop.
func handOffSlot(ctx context.Context, db *pgx.Conn, slot string, missing error) (string, error) {
	var kind, plugin, dbname, lsn string
	err := db.QueryRow(ctx, `SELECT slot_type, coalesce(plugin::text, ''), coalesce(database::text, ''), coalesce(confirmed_flush_lsn::text, '')
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&kind, &plugin, &dbname, &lsn)
	if err == pgx.ErrNoRows {
		return "", fmt.Errorf("%w: slot %s does not exist", missing, slot)
	}
	if err != nil {
		return "", fmt.Errorf("hand-off slot %s: %w", slot, err)
	}
	var cur string
	if err := db.QueryRow(ctx, `SELECT current_database()`).Scan(&cur); err != nil {
		return "", err
	}
	if kind != "logical" || plugin != "pgoutput" || dbname != cur {
		return "", fmt.Errorf("slot %s is a %s slot (plugin %q) of database %q, not a pgoutput slot of %q; drop it by hand",
			slot, kind, plugin, dbname, cur)
	}
	return lsn, nil
}

// SubscribeFormerHome makes the database of conn, the tenant's former
// home, subscribe to the tenant's publication at the new home (src, the
// database of spec.SourceDB) without copying anything, from the slot
// CreateFormerHomeSlot made (named spec.Subscription). It removes and
// clears nothing here. It refuses, with ErrNoFormerHomeSlot, while that
// slot does not exist: making one now could miss writes the new home took
// already. It is idempotent: a subscription of that name to the same
// source is left as it is (and enabled); one to another source is an
// error, not replaced (dropping it would drop its slot).
func SubscribeFormerHome(ctx context.Context, conn, src *pgx.Conn, cfg Config, spec fsm.SubscriberSpec) error {
	cfg.defaults()
	if spec.Kind != fsm.KindTenant || spec.Subscription == "" || spec.Publication == "" || spec.SourceDB == nil {
		return fmt.Errorf("former-home subscription: the spec needs a tenant kind, a subscription, a publication and the source's endpoint")
	}
	s := &subscriber{spec: spec, cfg: cfg}
	return s.subscribeFormerHome(ctx, conn, src)
}

func (s *subscriber) subscribeFormerHome(ctx context.Context, conn, src *pgx.Conn) error {
	name := s.spec.Subscription
	sub, err := readSubscription(ctx, conn, name)
	if err != nil {
		return fmt.Errorf("read subscription %s: %w", name, err)
	}
	if sub != nil {
		if !sameSource(sub.ConnInfo, s.connInfo()) {
			return fmt.Errorf("subscription %s exists here with another source; drop it by hand if it is stale", name)
		}
		if !sub.Enabled {
			if _, err := conn.Exec(ctx, "ALTER SUBSCRIPTION "+ident(name)+" ENABLE"); err != nil {
				return fmt.Errorf("enable subscription %s: %w", name, err)
			}
		}
		return nil
	}
	what, missing := "the former home", ErrNoFormerHomeSlot
	if !s.spec.FormerHome {
		what, missing = "a hand-off mirror", ErrNoHandOffSlot
	}
	if _, err := handOffSlot(ctx, src, name, missing); err != nil {
		return fmt.Errorf("subscribe %s of tenant %s to region %s: %w", what, s.spec.Tenant, s.spec.Source, err)
	}
	ok, why, err := s.publicationReady(ctx, src)
	if err != nil {
		return fmt.Errorf("read publication %s at region %s: %w", s.spec.Publication, s.spec.Source, err)
	}
	if !ok {
		return errors.New(why)
	}
	for _, tt := range s.spec.Tables {
		ti, err := inspectTable(ctx, conn, parseTable(tt.Name))
		if err != nil {
			return err
		}
		if !ti.Exists {
			return fmt.Errorf("table %s does not exist in this database: %s holds the tenant's tables", tt.Name, what)
		}
	}
	// copy_data = false: the rows are here already (the fence froze them
	// as the new home got them); create_slot = false: the slot is the
	// switchover's, older than the new home's first write.
	_, err = conn.Exec(ctx, "CREATE SUBSCRIPTION "+ident(name)+" CONNECTION "+quoteLiteral(s.connInfo())+
		" PUBLICATION "+ident(s.spec.Publication)+" WITH (copy_data = false, create_slot = false, slot_name = "+quoteLiteral(name)+
		", synchronous_commit = '"+s.syncCommit()+"')")
	if err != nil {
		return fmt.Errorf("create subscription %s: %w", name, err)
	}
	if s.log != nil {
		s.log.Info("subscribed without a copy from the switchover's slot", "subscription", name, "source", s.spec.Source, "former_home", s.spec.FormerHome)
	}
	return nil
}

// handOffIssue turns subscribeFormerHome's error into what the subscriber
// reports: waiting, while the switchover has not made the slot or the
// publication is not ready; an error otherwise.
func (s *subscriber) handOffIssue(err error) *fsm.ReplicationIssue {
	what := "subscribe the former home"
	if !s.spec.FormerHome {
		what = "subscribe the hand-off mirror"
	}
	is := issueFromErr("", what, err)
	if errors.Is(err, ErrNoFormerHomeSlot) || errors.Is(err, ErrNoHandOffSlot) {
		is = fsm.ReplicationIssue{Code: fsm.IssueWaitingForPublisher, At: time.Now().UnixNano(),
			Message: err.Error() + " (it subscribes only from the slot the switchover creates at the new home before it takes writes; nothing is changed here)"}
	}
	return &is
}
