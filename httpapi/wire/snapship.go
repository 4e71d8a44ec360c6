package wire

import (
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// ShippedSnapshots is GET /v1/snapshots: the control-plane snapshots
// shipped to the repository (newest first), the policy and whether they
// are shipped on schedule.
type ShippedSnapshots struct {
	Policy    *fsm.SnapshotPolicy    `json:"policy"`
	Snapshots []*fsm.ShippedSnapshot `json:"snapshots"`
	Health    fsm.SnapshotShipHealth `json:"health"`
	Removed   int                    `json:"removed"`
}

// SnapshotRestoreFromRepo is the body of POST /v1/snapshots/restore.
type SnapshotRestoreFromRepo struct {
	// From is a shipped snapshot's id, or "latest".
	From string `json:"from"`
}

// SnapshotRestoredFromRepo answers a restore from the repository that
// was carried out (200).
type SnapshotRestoredFromRepo struct {
	Snapshot *fsm.ShippedSnapshot `json:"snapshot"`
	Restored *structs.ArchiveMeta `json:"restored"`
}
