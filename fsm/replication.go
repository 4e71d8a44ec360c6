package fsm

import (
	"regexp"
	"sort"
)

func init() {
	registerCommand(RegionDatabaseType, applyRegionDatabase)
	registerCommand(TenantSyncStateType, applyTenantSyncState)
	registerCommand(GlobalTableUpsertType, applyGlobalTableUpsert)
	registerCommand(GlobalTableDeleteType, applyGlobalTableDelete)
}

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

// RegionDatabaseReport is an agent's report of its region's database
// endpoint. Only an agent of the region may make it, signed with its own
// key like its other reports.
type RegionDatabaseReport struct {
	Region   string           `json:"region"`
	Endpoint DatabaseEndpoint `json:"endpoint"`
	Node     string           `json:"node"`
	At       int64            `json:"at"`
	// Auth is the agent's signature (agent-to-server writes are signed).
	Auth *SignedAuth `json:"auth,omitempty"`
}

// TenantSyncStateSet records a sync tenant's move between sync and
// degraded. The leader issues it from the home controller's report.
type TenantSyncStateSet struct {
	Tenant string `json:"tenant"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Since  int64  `json:"since"`
	At     int64  `json:"at"`
}

// GlobalTableUpsert creates or replaces a global table.
type GlobalTableUpsert struct {
	Table GlobalTable `json:"table"`
	CAS   *uint64     `json:"cas,omitempty"`
	At    int64       `json:"at"`
}

// GlobalTableDelete stops replicating a global table.
type GlobalTableDelete struct {
	Name string  `json:"name"`
	CAS  *uint64 `json:"cas,omitempty"`
	At   int64   `json:"at"`
}

var (
	// hostRe admits DNS names and IPv4/IPv6 literals, and nothing that
	// could break out of a libpq connection string (spaces, quotes, '=').
	hostRe     = regexp.MustCompile(`^[A-Za-z0-9:]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?$`)
	dbNameRe   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$`)
	reasonMax  = 512
	syncStates = map[string]bool{SyncStateSync: true, SyncStateDegraded: true}
)

// ValidateEndpoint checks a database endpoint.
func ValidateEndpoint(e *DatabaseEndpoint) error {
	switch {
	case !hostRe.MatchString(e.Host):
		return invalidf("invalid_endpoint", "database host %q must be a DNS name or an IP address", e.Host)
	case e.Port < 1 || e.Port > 65535:
		return invalidf("invalid_endpoint", "database port %d must be between 1 and 65535", e.Port)
	case !dbNameRe.MatchString(e.Database):
		return invalidf("invalid_endpoint", "database name %q must be 1-63 letters, digits, '_' or '-'", e.Database)
	}
	return nil
}

// ValidateGlobalTable checks a global table's user-supplied fields.
func ValidateGlobalTable(g *GlobalTable) error {
	if !tableNameRe.MatchString(g.Name) {
		return invalidf("invalid_table_name", "table name %q must be a lower-case SQL identifier, optionally schema-qualified", g.Name)
	}
	if !ValidRegionName(g.WriterRegion) {
		return invalidf("invalid_writer_region", "writer_region %q must be a region name (a DNS label)", g.WriterRegion)
	}
	return nil
}

func applyRegionDatabase(s *State, e *Entry) (any, error) {
	var cmd RegionDatabaseReport
	e.decode(&cmd)
	if !ValidRegionName(cmd.Region) || !ValidRegionName(cmd.Node) {
		return nil, invalidf("invalid_region_database", "region %q and node %q must be DNS labels", cmd.Region, cmd.Node)
	}
	if err := ValidateEndpoint(&cmd.Endpoint); err != nil {
		return nil, err
	}
	if err := agentSigner(s, cmd.Node, cmd.Auth, cmd.At); err != nil {
		return nil, err
	}
	ag := s.Agents[cmd.Node]
	switch {
	case ag == nil:
		return nil, notFoundf("agent_not_found", "agent %q is not registered", cmd.Node)
	case ag.Region != cmd.Region:
		return nil, forbiddenf("wrong_region", "agent %s serves region %s: it may not report the database of region %s", cmd.Node, ag.Region, cmd.Region)
	}
	recordNonce(s, cmd.Auth, cmd.At)
	d := &RegionDatabase{Region: cmd.Region, Endpoint: cmd.Endpoint, ReportedBy: cmd.Node, UpdatedAt: cmd.At,
		CreateIndex: e.Index, ModifyIndex: e.Index}
	if old := s.Databases[cmd.Region]; old != nil {
		d.CreateIndex = old.CreateIndex
	}
	s.Databases[cmd.Region] = d
	s.touch(TableDatabases, e.Index)
	return d, nil
}

func applyTenantSyncState(s *State, e *Entry) (any, error) {
	var cmd TenantSyncStateSet
	e.decode(&cmd)
	t := s.Tenants[cmd.Tenant]
	switch {
	case t == nil:
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist", cmd.Tenant)
	case !t.IsSync():
		return nil, preconditionf("not_sync", "tenant %q is not in sync mode", cmd.Tenant)
	case !syncStates[cmd.State]:
		return nil, invalidf("invalid_sync_state", "sync state %q must be %q or %q", cmd.State, SyncStateSync, SyncStateDegraded)
	case len(cmd.Reason) > reasonMax:
		return nil, invalidf("invalid_sync_state", "reason is longer than %d bytes", reasonMax)
	case cmd.State == SyncStateDegraded && t.Fallback() != SyncFallbackDegrade:
		return nil, preconditionf("degrade_not_allowed", "tenant %q has sync_fallback %q: its home may not degrade to async", cmd.Tenant, t.Fallback())
	}
	st := &TenantSyncState{Tenant: cmd.Tenant, State: cmd.State, Reason: cmd.Reason, Since: cmd.Since, At: cmd.At, ModifyIndex: e.Index}
	s.SyncStates[cmd.Tenant] = st
	s.touch(TableSyncStates, e.Index)
	return st, nil
}

func applyGlobalTableUpsert(s *State, e *Entry) (any, error) {
	var cmd GlobalTableUpsert
	e.decode(&cmd)
	g := cmd.Table
	if err := ValidateGlobalTable(&g); err != nil {
		return nil, err
	}
	if s.Regions[g.WriterRegion] == nil {
		return nil, invalidf("unknown_region", "writer_region %q is not a registered region", g.WriterRegion)
	}
	old := s.GlobalTables[g.Name]
	var cur uint64
	if old != nil {
		cur = old.ModifyIndex
	}
	if err := checkCAS("global table", g.Name, cmd.CAS, cur); err != nil {
		return nil, err
	}
	g.ModifyIndex, g.UpdatedAt = e.Index, cmd.At
	if old != nil {
		g.CreateIndex, g.CreatedAt = old.CreateIndex, old.CreatedAt
	} else {
		g.CreateIndex, g.CreatedAt = e.Index, cmd.At
	}
	s.GlobalTables[g.Name] = &g
	s.touch(TableGlobalTables, e.Index)
	return &g, nil
}

func applyGlobalTableDelete(s *State, e *Entry) (any, error) {
	var cmd GlobalTableDelete
	e.decode(&cmd)
	old := s.GlobalTables[cmd.Name]
	if old == nil {
		return nil, notFoundf("global_table_not_found", "global table %q does not exist", cmd.Name)
	}
	if err := checkCAS("global table", cmd.Name, cmd.CAS, old.ModifyIndex); err != nil {
		return nil, err
	}
	delete(s.GlobalTables, cmd.Name)
	s.touch(TableGlobalTables, e.Index)
	return &Deleted{Kind: "global_table", Name: cmd.Name, At: cmd.At}, nil
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
