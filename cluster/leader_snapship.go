package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/recovery/snaprepo"
)

// snapshipTick bounds how late a scheduled shipment starts.
const snapshipTick = time.Second

// shipTimeout bounds one shipment (take, store, retention).
const shipTimeout = 5 * time.Minute

// ErrNoSnapshotRepo is a shipment or a restore from the repository on a
// server that has none.
var ErrNoSnapshotRepo = &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: "no_snapshot_repository",
	Message: "this server has no snapshot repository: start every server with --snapshot-repo DIR, or S3_ENDPOINT and the S3 settings"}

// snapshipRoutine is the leader routine that ships the Raft state archive
// to the snapshot repository when the snapshot policy says it is due (the
// last attempt, success or failure, is an interval old): a failure is
// recorded and retried at the next interval. A server without a
// repository ships nothing (P7 and `atomfed dr status` then say that no
// snapshot is shipped), and so does a leader while a server of the
// cluster is too old to record a shipment (a rolling upgrade). A shipment
// stored but not recorded (leadership lost meanwhile) is not tried again
// before the interval.
func (s *Server) snapshipRoutine(ctx context.Context) error {
	if s.cfg.SnapshotRepo == nil {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(snapshipTick)
	defer tick.Stop()
	var lastTry time.Time
	for {
		var due bool
		var every time.Duration
		s.fsm.Read(func(st *fsm.State) {
			due = st.SnapshotShipDue(time.Now().UnixNano())
			every = time.Duration(st.SnapshotPolicyOf().IntervalSeconds) * time.Second
		})
		if min, _ := s.protocols(); min < commandProtocol[fsm.SnapshotShippedType] {
			due = false
		}
		if due && time.Since(lastTry) >= every {
			lastTry = time.Now()
			if sn, err := s.shipSnapshot(ctx, true); err != nil {
				s.logger.Warn("control-plane snapshot not shipped; retrying at the next interval", "repository", s.cfg.SnapshotRepo.String(), "error", err)
			} else if sn != nil {
				s.logger.Info("control-plane snapshot shipped", "id", sn.ID, "index", sn.Index, "size", sn.Size, "location", sn.Location)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// ShipSnapshot takes the state archive (the GET /v1/snapshot format),
// stores it in the repository, deletes the oldest shipped snapshots beyond
// the policy's keep, and records the shipment (or its failure) in the
// catalog. It runs on the leader, one at a time.
func (s *Server) ShipSnapshot(ctx context.Context) (*fsm.ShippedSnapshot, error) {
	return s.shipSnapshot(ctx, false)
}

// shipSnapshot ships; onlyIfDue (the schedule) ships nothing (nil, nil)
// when, with the lock held, a shipment is no longer due: one asked for
// meanwhile took its place.
func (s *Server) shipSnapshot(ctx context.Context, onlyIfDue bool) (*fsm.ShippedSnapshot, error) {
	repo := s.cfg.SnapshotRepo
	if repo == nil {
		return nil, ErrNoSnapshotRepo
	}
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	s.shipMu.Lock()
	defer s.shipMu.Unlock()
	if onlyIfDue {
		due := false
		s.fsm.Read(func(st *fsm.State) { due = st.SnapshotShipDue(time.Now().UnixNano()) })
		if !due {
			return nil, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, shipTimeout)
	defer cancel()
	start := time.Now()
	sn, removed, err := s.ship(ctx, repo)
	if err != nil {
		if errors.Is(err, ErrNotLeader) || errors.Is(err, structs.ErrShuttingDown) || ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil, err
		}
		msg := err.Error()
		if len(msg) > fsm.MaxShipErrorLen {
			msg = msg[:fsm.MaxShipErrorLen]
		}
		rec := fsm.SnapshotShipped{Error: msg, Location: repo.String(), Node: s.cfg.NodeID, At: time.Now().UnixNano()}
		// Recorded even when the shipment ran out of its time.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer rcancel()
		if rerr := s.applyQuiet(rctx, fsm.SnapshotShippedType, rec); rerr != nil {
			s.logger.Warn("snapshot shipment failure not recorded", "error", rerr)
		}
		return nil, err
	}
	sn.DurationMS = time.Since(start).Milliseconds()
	rec := fsm.SnapshotShipped{Snapshot: sn, Removed: removed, Node: s.cfg.NodeID, At: sn.At}
	if err := s.applyQuiet(ctx, fsm.SnapshotShippedType, rec); err != nil {
		return nil, fmt.Errorf("snapshot %s shipped to %s but not recorded: %w", sn.ID, sn.Location, err)
	}
	return sn, nil
}

// ship stores one archive and applies retention; it returns the new
// catalog entry and the ids retention deleted.
func (s *Server) ship(ctx context.Context, repo snaprepo.Store) (*fsm.ShippedSnapshot, []string, error) {
	var buf bytes.Buffer
	meta, err := s.SaveSnapshot(&buf)
	if err != nil {
		return nil, nil, fmt.Errorf("take snapshot: %w", err)
	}
	at := time.Now().UTC()
	id := fmt.Sprintf("atomfed-%s-%d", at.Format("20060102T150405.000Z"), meta.Index)
	name := id + ".snap"
	if err := repo.Put(ctx, name, buf.Bytes()); err != nil {
		return nil, nil, err
	}
	sn := &fsm.ShippedSnapshot{ID: id, Index: meta.Index, Digest: sha(buf.Bytes()), StateDigest: meta.Digest, AuditHead: meta.AuditHead,
		Size: int64(buf.Len()), At: at.UnixNano(), Location: repo.Location(name), Node: s.cfg.NodeID}
	// Retention: the oldest beyond keep, counting the new one, are
	// deleted before the shipment is recorded; one whose deletion fails
	// stays listed (and is tried again next time).
	var shipped []*fsm.ShippedSnapshot
	var keep int
	s.fsm.Read(func(st *fsm.State) { shipped, keep = st.Snapshots.Shipped, st.SnapshotPolicyOf().Keep })
	var removed []string
	for i := 0; i < len(shipped)+1-keep && i < len(shipped); i++ {
		if err := repo.Delete(ctx, shipped[i].ID+".snap"); err != nil {
			s.logger.Warn("old snapshot not deleted; retrying at the next shipment", "id", shipped[i].ID, "error", err)
			continue
		}
		removed = append(removed, shipped[i].ID)
	}
	return sn, removed, nil
}

// FetchShipped reads a shipped snapshot's archive from the repository and
// checks it against the catalog's digest: a changed or damaged object is
// refused (code snapshot_digest_mismatch) before anything reads it.
func (s *Server) FetchShipped(ctx context.Context, sn *fsm.ShippedSnapshot) ([]byte, error) {
	repo := s.cfg.SnapshotRepo
	if repo == nil {
		return nil, ErrNoSnapshotRepo
	}
	data, err := repo.Get(ctx, sn.ID+".snap", MaxSnapshotSize+archiveSlack)
	if errors.Is(err, snaprepo.ErrNotFound) {
		return nil, &fsm.Error{Kind: fsm.ErrNotFound, Code: "snapshot_object_missing",
			Message: fmt.Sprintf("snapshot %s is in the catalog but not in the repository: %v", sn.ID, err)}
	}
	if err != nil {
		return nil, &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: "snapshot_repository_error", Message: err.Error()}
	}
	if got := sha(data); got != sn.Digest {
		return nil, &fsm.Error{Kind: fsm.ErrFailedPrecondition, Code: "snapshot_digest_mismatch",
			Message: fmt.Sprintf("snapshot %s in the repository (%s) has sha256 %s, the catalog recorded %s when it was shipped: the object was changed or damaged; nothing was restored, pick another (atomfed snapshot list)",
				sn.ID, sn.Location, got, sn.Digest)}
	}
	return data, nil
}
