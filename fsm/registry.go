package fsm

// Region tiers.
const (
	TierStaging    = "staging"
	TierProduction = "production"
)

// Region statuses an operator can set. Health (healthy, degraded, down) is
// derived from agents and probes and is reported separately.
const (
	RegionActive      = "active"
	RegionMaintenance = "maintenance"
	RegionDraining    = "draining"
)

// Location is a region's position, used for placement and reports.
type Location struct {
	Lat float64 `json:"lat"`
	Lon float64 `json:"lon"`
}

// Region is one registered region of the federation. Values stored in the
// FSM are never mutated: an update stores a new *Region.
type Region struct {
	Name string `json:"name"`
	// URL is the region's atomfed API endpoint.
	URL string `json:"url"`
	// AppURL is the endpoint of the tenant-facing application in the
	// region, where GET /v1/route sends a tenant's requests; optional.
	// https, or http when URL is http too (ValidateRegion). Stored only
	// under RulesTrustBound: an older server drops it.
	AppURL      string            `json:"app_url,omitempty"`
	Tier        string            `json:"tier"`
	Location    Location          `json:"location"`
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels,omitempty"`
	CreatedAt   int64             `json:"created_at"`   // unix nanoseconds, stamped by the leader
	UpdatedAt   int64             `json:"updated_at"`   // unix nanoseconds, stamped by the leader
	CreateIndex uint64            `json:"create_index"` // raft index that created it
	ModifyIndex uint64            `json:"modify_index"` // raft index that last changed it
}

// TenantTable is one table of a tenant and the columns that hold personal
// data; those columns never leave the tenant's home region.
type TenantTable struct {
	Name       string   `json:"name"`
	PIIColumns []string `json:"pii_columns,omitempty"`
}

// Tenant is a tenant's placement: where its data lives and where it is
// mirrored. Values stored in the FSM are never mutated.
type Tenant struct {
	ID         string            `json:"id"`
	HomeRegion string            `json:"home_region"`
	Mirrors    []string          `json:"mirrors,omitempty"`
	Tables     []TenantTable     `json:"tables,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// SyncMode is "async" (the default when empty) or "sync": in sync
	// mode a commit in the home region returns only once a mirror has it
	// (a quorum synchronous_standby_names, ANY 1 of the mirrors).
	SyncMode string `json:"sync_mode,omitempty"`
	// SyncFallback says what a sync tenant's home does when every mirror
	// is down: "degrade" (the default) switches it to async after
	// SyncDegradeAfterMS and records that in the audit chain; "wait"
	// keeps commits waiting until a mirror is back.
	SyncFallback string `json:"sync_fallback,omitempty"`
	// SyncDegradeAfterMS bounds how long commits wait with every mirror
	// down before a "degrade" tenant goes async (default 10000).
	SyncDegradeAfterMS int `json:"sync_degrade_after_ms,omitempty"`
	// Epoch is the tenant's placement epoch, set by the FSM and never by
	// a write: 1 when the tenant is created, one more with every change of
	// its home, in the same entry, and changed by nothing else. Every
	// replication task of the tenant carries it (with CreateIndex, which
	// tells incarnations of one id apart), and an agent acts on the tenant
	// only for the newest epoch it has seen, so that a stale view can
	// never act as the home of an epoch that has ended. 0 (absent) is a
	// tenant created before epochs (rules before RulesTrustBound), until
	// its home changes.
	Epoch uint64 `json:"epoch,omitempty"`
	// Failover is the tenant's unplanned-failover policy (nil: manual,
	// every failover needs the "failover" approval).
	Failover    *FailoverPolicy `json:"failover,omitempty"`
	CreatedAt   int64           `json:"created_at"`
	UpdatedAt   int64           `json:"updated_at"`
	CreateIndex uint64          `json:"create_index"`
	ModifyIndex uint64          `json:"modify_index"`
}
