package wire

import (
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/metrics"
	"github.com/atomcloud/atomfed/internal/structs"
)

// AuditStatus answers GET /v1/status/audit: the audit chain's head and its
// most recent entries.
type AuditStatus struct {
	Head   string           `json:"head"`
	Index  uint64           `json:"index"`
	Recent []fsm.AuditEntry `json:"recent"`
	// Log, asked for with ?commands=true, holds the Raft log entry of
	// every index of Recent, so that a client can recompute each link of
	// the chain from the one before (the operator console does, in the
	// browser).
	Log []AuditLogEntry `json:"log,omitempty"`
}

// AuditLogEntry is the Raft log entry at one index, as the audit chain
// hashes it: each entry's hash is sha256(previous hash || index as 8
// bytes big-endian || type || body) over one of its Commands.
type AuditLogEntry struct {
	Index uint64 `json:"index"`
	// Commands are the commands the entry carries, in order: one, or
	// those of a batch followed by the batch itself (a batch that does
	// not decode is one link over its whole bytes).
	Commands []AuditCommand `json:"commands,omitempty"`
	// Unavailable says why the entry cannot be served: compacted out of
	// the log after a snapshot, or written by a snapshot restore, whose
	// link covers the restore's record rather than a log entry.
	Unavailable string `json:"unavailable,omitempty"`
}

// AuditCommand is one command of a log entry.
type AuditCommand struct {
	Type uint8 `json:"type"`
	// Body is the bytes after the type byte (the codec version and the
	// encoded command), base64 in JSON.
	Body []byte `json:"body,omitempty"`
	// Withheld is true when the caller's role may not read this command
	// (token commands, for any role but operator): Body is left out and
	// the link cannot be recomputed by this caller.
	Withheld bool `json:"withheld,omitempty"`
}

// RaftConfiguration answers GET /v1/operator/raft/configuration.
type RaftConfiguration struct {
	Servers []structs.Peer `json:"servers"`
	Index   uint64         `json:"index"`
}

// GlobalStatus answers GET /global-status: one node's view of the whole
// federation.
type GlobalStatus struct {
	Node      string         `json:"node"`
	Region    string         `json:"region"`
	Leader    string         `json:"leader"`
	Servers   []structs.Peer `json:"servers"`
	Regions   []RegionView   `json:"regions"`
	Agents    int            `json:"agents"`
	Tasks     int            `json:"tasks"`
	Tenants   int            `json:"tenants"`
	Index     uint64         `json:"index"`
	AuditHead string         `json:"audit_head"`
	// Replication is the data plane: global tables per region with their
	// schema digests and drift, and each tenant's replication status.
	Replication *fsm.ReplicationSummary `json:"replication"`
	// ControlPlaneSnapshots is the last control-plane snapshot shipped to
	// the repository, against the snapshot policy's schedule.
	ControlPlaneSnapshots *fsm.SnapshotShipHealth `json:"controlplane_snapshots,omitempty"`
	// SimulationMode and Simulation are this node's.
	SimulationMode bool                `json:"simulation_mode"`
	Simulation     *structs.Simulation `json:"simulation,omitempty"`
	// Metrics is each region's summary from the global metrics view on
	// this server (scrape, request and error rates, replication lag p99,
	// what is stale).
	Metrics []metrics.RegionSummary `json:"metrics"`
}
