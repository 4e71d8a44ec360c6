package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Control-plane snapshots shipped to the repository (G.1.6): the catalog,
// the policy, a shipment now, and a restore from the repository through
// the approval-gated restore of PUT /v1/snapshot.

// listShipped answers GET /v1/snapshots (blocking on the catalog).
func (a *API) listShipped(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return wire.ShippedSnapshots{Policy: s.SnapshotPolicyOf(), Snapshots: s.ShippedSorted(),
			Health: s.SnapshotShipHealthAt(a.now().UnixNano()), Removed: s.Snapshots.Removed}, s.TableIndex(fsm.TableSnapshots), nil
	})
}

func (a *API) getSnapshotPolicy(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		return s.SnapshotPolicyOf(), s.TableIndex(fsm.TableSnapshots), nil
	})
}

// putSnapshotPolicy stores the snapshot policy.
func (a *API) putSnapshotPolicy(w http.ResponseWriter, r *http.Request) {
	var in fsm.SnapshotPolicy
	body, _, err := decodeWrite(w, r, &in)
	if err != nil {
		writeError(w, err)
		return
	}
	in.Default, in.ModifyIndex = false, 0
	if err := fsm.ValidateSnapshotPolicy(&in); err != nil {
		writeError(w, err)
		return
	}
	a.write(w, r, body, fsm.SnapshotPolicySetType, fsm.SnapshotPolicySet{Policy: in, At: a.stamp()}, func(res *fsm.ApplyResult) {
		writeJSON(w, http.StatusOK, res.Value)
	})
}

// shipNow answers POST /v1/snapshots: the leader ships a snapshot now and
// answers its catalog entry (or the error, which is also recorded).
func (a *API) shipNow(w http.ResponseWriter, r *http.Request) {
	extendDeadlines(w, snapshotDeadline)
	body, err := readBody(w, r, MaxBodyBytes)
	if err != nil {
		writeError(w, err)
		return
	}
	if !a.c.IsLeader() {
		a.forward(w, r, body, true)
		return
	}
	sn, err := a.c.ShipSnapshot(r.Context())
	if err != nil {
		writeError(w, shipError(err))
		return
	}
	writeJSON(w, http.StatusOK, sn)
}

// shipError gives a repository failure a code of its own (the cluster's
// coded errors keep theirs).
func shipError(err error) error {
	if _, code := statusFor(err); code != "internal" {
		return err
	}
	return unavailable("snapshot_repository_error", "snapshot not shipped: "+err.Error())
}

// restoreFromRepo answers POST /v1/snapshots/restore {"from": "latest"|id}:
// the leader reads the shipped archive from the repository, checks it
// against the catalog's digest, and restores it exactly as PUT
// /v1/snapshot would: 202 with the approval it needs first (bound to the
// archive's digest, the shipped snapshot named in its summary), 200 once
// restored.
func (a *API) restoreFromRepo(w http.ResponseWriter, r *http.Request) {
	extendDeadlines(w, snapshotDeadline)
	var in wire.SnapshotRestoreFromRepo
	body, err := readBody(w, r, MaxBodyBytes)
	if err == nil {
		err = decodeStrict(body, &in)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	if in.From == "" {
		writeError(w, badRequest("missing_from", `name the shipped snapshot to restore: {"from": "latest"} or its id (atomfed snapshot list)`))
		return
	}
	if in.From != "latest" && !fsm.ValidShippedID(in.From) {
		writeError(w, badRequest("invalid_snapshot_id", "snapshot id "+quote(in.From)+" is not a shipped snapshot's id (atomfed snapshot list)"))
		return
	}
	if !a.c.IsLeader() {
		a.forward(w, r, body, true)
		return
	}
	var sn *fsm.ShippedSnapshot
	a.c.FSM().Read(func(s *fsm.State) { sn = s.ShippedByID(in.From) })
	if sn == nil {
		msg := "no shipped snapshot " + quote(in.From) + " in the catalog (atomfed snapshot list)"
		if in.From == "latest" {
			msg = "no snapshot has been shipped to the repository yet (atomfed snapshot ship)"
		}
		writeError(w, notFound("snapshot_not_found", msg))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	data, err := a.c.FetchShipped(ctx, sn)
	if err != nil {
		writeError(w, err)
		return
	}
	meta, err := a.c.RestoreSnapshot(bytes.NewReader(data), identityOf(r).Accessor)
	if errors.Is(err, structs.ErrRestoreNeedsApproval) {
		a.requestRestore(w, r, meta, fmt.Sprintf(", shipped snapshot %s (%s, shipped %s)", sn.ID, sn.Location, time.Unix(0, sn.At).UTC().Format(time.RFC3339)))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.SnapshotRestoredFromRepo{Snapshot: sn, Restored: meta})
}

// drStatus answers GET /v1/dr/status: every region's last verified backup
// and last passed drill against their bounds, what runs, and the control
// plane's shipped snapshots; stale and missing say what is not ready.
func (a *API) drStatus(w http.ResponseWriter, r *http.Request) {
	a.read(w, r, func(s *view) (any, uint64, error) {
		idx := maxIndex(backupIndex(s), s.TableIndex(fsm.TableSnapshots))
		return s.DRStatusAt(a.now().UnixNano()), idx, nil
	})
}
