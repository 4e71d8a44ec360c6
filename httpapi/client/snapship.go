package client

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// ShippedSnapshots lists the control-plane snapshots shipped to the
// repository, the policy and the shipping health.
func (c *Client) ShippedSnapshots(ctx context.Context, q *QueryOptions) (*wire.ShippedSnapshots, *Meta, error) {
	var out wire.ShippedSnapshots
	m, err := c.Do(ctx, http.MethodGet, "/v1/snapshots", q.values(nil), nil, &out)
	return &out, m, err
}

// ShipSnapshot has the leader ship a snapshot to the repository now.
func (c *Client) ShipSnapshot(ctx context.Context) (*fsm.ShippedSnapshot, error) {
	var out fsm.ShippedSnapshot
	_, err := c.Do(ctx, http.MethodPost, "/v1/snapshots", nil, nil, &out)
	return &out, err
}

// SnapshotPolicy reads the snapshot policy (the default when none is
// stored).
func (c *Client) SnapshotPolicy(ctx context.Context) (*fsm.SnapshotPolicy, error) {
	var out fsm.SnapshotPolicy
	_, err := c.Do(ctx, http.MethodGet, "/v1/snapshots/policy", nil, nil, &out)
	return &out, err
}

// PutSnapshotPolicy stores the snapshot policy.
func (c *Client) PutSnapshotPolicy(ctx context.Context, p *fsm.SnapshotPolicy) (*fsm.SnapshotPolicy, error) {
	var out fsm.SnapshotPolicy
	_, err := c.Do(ctx, http.MethodPut, "/v1/snapshots/policy", nil, p, &out)
	return &out, err
}

// RestoreFromRepo restores a shipped snapshot (its id, or "latest"): the
// pending approval it needs first, or what was restored.
func (c *Client) RestoreFromRepo(ctx context.Context, from string) (*wire.SnapshotRestoredFromRepo, *fsm.Approval, error) {
	var raw json.RawMessage
	m, err := c.Do(ctx, http.MethodPost, "/v1/snapshots/restore", nil, &wire.SnapshotRestoreFromRepo{From: from}, &raw)
	return gated[wire.SnapshotRestoredFromRepo](c, m, raw, err)
}

// DRStatus reads every region's backup and drill readiness and the
// control plane's shipped snapshots.
func (c *Client) DRStatus(ctx context.Context, q *QueryOptions) (*fsm.DRStatus, *Meta, error) {
	var out fsm.DRStatus
	m, err := c.Do(ctx, http.MethodGet, "/v1/dr/status", q.values(nil), nil, &out)
	return &out, m, err
}
