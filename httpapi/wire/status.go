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
	// SimulationMode and Simulation are this node's.
	SimulationMode bool                `json:"simulation_mode"`
	Simulation     *structs.Simulation `json:"simulation,omitempty"`
	// Metrics is each region's summary from the global metrics view on
	// this server (scrape, request and error rates, replication lag p99,
	// what is stale).
	Metrics []metrics.RegionSummary `json:"metrics"`
}
