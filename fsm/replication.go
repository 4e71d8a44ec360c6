package fsm

import "sort"

// Table names of the replication state.
const (
	TableDatabases    = "databases"
	TableSyncStates   = "sync_states"
	TableGlobalTables = "global_tables"
)

// Synchronous replication settings of a tenant.
const (
	SyncModeAsync       = "async"
	SyncModeSync        = "sync"
	SyncFallbackDegrade = "degrade"
	SyncFallbackWait    = "wait"

	// DefaultSyncDegradeAfterMS is how long commits of a "degrade" tenant
	// wait with every mirror down before its home goes async.
	DefaultSyncDegradeAfterMS = 10000
	MinSyncDegradeAfterMS     = 1000
	MaxSyncDegradeAfterMS     = 600000
)

// IsSync reports whether the tenant asks for synchronous replication.
func (t *Tenant) IsSync() bool { return t.SyncMode == SyncModeSync }

// Fallback returns the tenant's effective sync fallback.
func (t *Tenant) Fallback() string {
	if t.SyncFallback == "" {
		return SyncFallbackDegrade
	}
	return t.SyncFallback
}

// DegradeAfterMS returns the tenant's effective degrade bound.
func (t *Tenant) DegradeAfterMS() int {
	if t.SyncDegradeAfterMS == 0 {
		return DefaultSyncDegradeAfterMS
	}
	return t.SyncDegradeAfterMS
}

// DatabaseEndpoint is where a region's PostgreSQL listens. It holds no
// credential: agents keep those in their own configuration, so nothing
// secret ever enters the Raft log, a snapshot or an API answer.
type DatabaseEndpoint struct {
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Database string `json:"database"`
}

// RegionDatabase is the endpoint an agent of the region reported.
type RegionDatabase struct {
	Region      string           `json:"region"`
	Endpoint    DatabaseEndpoint `json:"endpoint"`
	ReportedBy  string           `json:"reported_by"`
	UpdatedAt   int64            `json:"updated_at"`
	CreateIndex uint64           `json:"create_index"`
	ModifyIndex uint64           `json:"modify_index"`
}

// GlobalTable is a table that is not tenant data: it is written in one
// region (the writer) and replicated to every other region.
type GlobalTable struct {
	Name         string `json:"name"`
	WriterRegion string `json:"writer_region"`
	CreatedAt    int64  `json:"created_at"`
	UpdatedAt    int64  `json:"updated_at"`
	CreateIndex  uint64 `json:"create_index"`
	ModifyIndex  uint64 `json:"modify_index"`
}

// Recorded sync states of a tenant. The controller on the home region also
// reports the transient states "pending" (no mirror has streamed yet) and
// "waiting" (every mirror is down and commits wait); only the transitions
// between sync and degraded are committed, so each lands in the audit chain.
const (
	SyncStateSync     = "sync"
	SyncStateDegraded = "degraded"
)

// TenantSyncState is the committed synchronous replication state of a sync
// tenant's home.
type TenantSyncState struct {
	Tenant string `json:"tenant"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	// Since is when the home's controller saw the change (agent clock,
	// unix ns); At is when the leader committed it.
	Since       int64  `json:"since"`
	At          int64  `json:"at"`
	ModifyIndex uint64 `json:"modify_index"`
}

// SortedGlobalTables returns the global tables ordered by name.
func (s *State) SortedGlobalTables() []*GlobalTable {
	out := make([]*GlobalTable, 0, len(s.GlobalTables))
	for _, g := range s.GlobalTables {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SortedDatabases returns the region databases ordered by region.
func (s *State) SortedDatabases() []*RegionDatabase {
	out := make([]*RegionDatabase, 0, len(s.Databases))
	for _, d := range s.Databases {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// SortedSyncStates returns the recorded sync states ordered by tenant.
func (s *State) SortedSyncStates() []*TenantSyncState {
	out := make([]*TenantSyncState, 0, len(s.SyncStates))
	for _, d := range s.SyncStates {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out
}
