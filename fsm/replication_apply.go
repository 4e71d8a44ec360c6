package fsm

import "regexp"

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

func applyRegionDatabase(s *State, e *Entry) (any, error) {
	cmd := body[RegionDatabaseReport](e)
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

// TenantSyncStateSet records a sync tenant's move between sync and
// degraded. The leader issues it from the home controller's report.
type TenantSyncStateSet struct {
	Tenant string `json:"tenant"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Since  int64  `json:"since"`
	At     int64  `json:"at"`
}

func applyTenantSyncState(s *State, e *Entry) (any, error) {
	cmd := body[TenantSyncStateSet](e)
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

// GlobalTableUpsert creates or replaces a global table.
type GlobalTableUpsert struct {
	Table GlobalTable `json:"table"`
	CAS   *uint64     `json:"cas,omitempty"`
	At    int64       `json:"at"`
}

func applyGlobalTableUpsert(s *State, e *Entry) (any, error) {
	cmd := body[GlobalTableUpsert](e)
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

// GlobalTableDelete stops replicating a global table.
type GlobalTableDelete struct {
	Name string  `json:"name"`
	CAS  *uint64 `json:"cas,omitempty"`
	At   int64   `json:"at"`
}

func applyGlobalTableDelete(s *State, e *Entry) (any, error) {
	cmd := body[GlobalTableDelete](e)
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
