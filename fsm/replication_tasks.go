package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// Replication task types. The leader derives them from tenant specs and
// global tables; executors in the replication package run them on agents
// next to each region's PostgreSQL.
const (
	TaskTypeTenantPublisher  = "tenant-publisher"
	TaskTypeTenantSubscriber = "tenant-subscriber"
	TaskTypeSyncStandby      = "sync-standby"
	TaskTypeGlobalPublisher  = "global-publisher"
	TaskTypeGlobalSubscriber = "global-subscriber"
)

// ReplicationTaskTypes lists every replication task type.
func ReplicationTaskTypes() []string {
	return []string{TaskTypeGlobalPublisher, TaskTypeGlobalSubscriber, TaskTypeSyncStandby,
		TaskTypeTenantPublisher, TaskTypeTenantSubscriber}
}

// IsReplicationTask reports whether typ is a replication task type.
func IsReplicationTask(typ string) bool {
	for _, t := range ReplicationTaskTypes() {
		if t == typ {
			return true
		}
	}
	return false
}

// Ensure values of replication specs. A task whose object is gone (tenant
// deleted, mirror removed) is kept with Ensure absent until its executor
// has torn everything down and reported success: that is how deletion
// leaves no publication, subscription or slot behind.
const (
	EnsurePresent = "present"
	EnsureAbsent  = "absent"
)

// Kinds of publications and subscriptions.
const (
	KindTenant = "tenant" // row filter on tenant_id, PII columns left out, RLS on mirrors
	KindGlobal = "global" // whole table, writer region to every region
)

// PublisherSpec is the spec of a tenant-publisher or global-publisher task:
// one publication in the source region.
type PublisherSpec struct {
	Ensure string `json:"ensure"`
	Kind   string `json:"kind"`
	Tenant string `json:"tenant,omitempty"`
	// Region is the tenant's home or the global tables' writer.
	Region      string        `json:"region"`
	Publication string        `json:"publication"`
	Tables      []TenantTable `json:"tables"`
	// TenantCreated and Epoch are the tenant's placement the task was
	// planned for (TaskEpoch); absent for tenants from before epochs.
	TenantCreated uint64 `json:"tenant_created,omitempty"`
	Epoch         uint64 `json:"epoch,omitempty"`
	// Subscriptions are the slot names the subscribers hold; any other
	// slot starting with SlotPrefix is an orphan and is dropped.
	Subscriptions []string `json:"subscriptions,omitempty"`
	SlotPrefix    string   `json:"slot_prefix"`
}

// SubscriberSpec is the spec of a tenant-subscriber or global-subscriber
// task: one subscription in a mirror region.
type SubscriberSpec struct {
	Ensure string `json:"ensure"`
	Kind   string `json:"kind"`
	Tenant string `json:"tenant,omitempty"`
	// Source is the region published from; SourceDB its endpoint (nil
	// while no agent of that region has reported one).
	Source       string            `json:"source"`
	SourceDB     *DatabaseEndpoint `json:"source_db,omitempty"`
	Region       string            `json:"region"`
	Publication  string            `json:"publication"`
	Subscription string            `json:"subscription"`
	Tables       []TenantTable     `json:"tables"`
	// Sync makes the subscription commit synchronously, so that the
	// home's synchronous commits are acknowledged in about a millisecond.
	Sync bool `json:"sync,omitempty"`
	// TenantCreated and Epoch: as in PublisherSpec.
	TenantCreated uint64 `json:"tenant_created,omitempty"`
	Epoch         uint64 `json:"epoch,omitempty"`
	// FormerHome marks the subscriber of a tenant's former home, which
	// mirrors the tenant's new home after a switchover or failover
	// (replication/former_home.go): its tables hold the tenant's rows and
	// PII already, so it never purges the tenant's rows (not before the
	// subscription, not at teardown) and never clears or drops a PII
	// column; it subscribes without an initial copy, from the slot made
	// at the new home before that home took the tenant's writes, and
	// waits while that slot does not exist. Only a tenant-subscriber uses
	// it; omitted (false) for every other subscriber.
	FormerHome bool `json:"former_home,omitempty"`
	// Resync (always with FormerHome) marks the subscriber of a region
	// that was the tenant's home when a failover moved the home away
	// without fencing it (the region was presumed lost): its database may
	// hold rows the new home never received, and nothing stops its
	// application from writing. Before subscribing, the executor must
	// fence the tenant there, quarantine its divergent rows (committed
	// after the new home's last applied position) and reconcile its rows
	// with the new home (no former-home slot was made at the new home,
	// since the region was down at the promotion). The scheduler sets it
	// on the old home's subscriber once a failover commits, and on every
	// former home among the tenant's other mirrors; it runs only when the
	// region's agent is back.
	Resync bool `json:"resync,omitempty"`
	// HandOff marks the subscriber of a mirror that followed its tenant's
	// new home after a switchover (not the former home): its tables hold
	// the tenant's rows already, up to the fence, so it subscribes
	// without an initial copy, from the slot the promotion made at the
	// new home (create_slot false, copy_data false), purges nothing
	// before subscribing, and waits while that slot does not exist. Its
	// teardown and PII handling are a mirror's as usual.
	HandOff bool `json:"hand_off,omitempty"`
}

// SyncStandbySpec is the spec of a region's sync-standby task: the one
// owner of the home cluster's synchronous_standby_names.
type SyncStandbySpec struct {
	Ensure  string       `json:"ensure"`
	Region  string       `json:"region"`
	Tenants []SyncTenant `json:"tenants,omitempty"`
}

// SyncTenant is one sync tenant homed in the region.
type SyncTenant struct {
	Tenant string `json:"tenant"`
	// Standbys are the application names (subscription names) of the
	// tenant's mirrors.
	Standbys       []string `json:"standbys"`
	Fallback       string   `json:"fallback"`
	DegradeAfterMS int      `json:"degrade_after_ms"`
	// Recorded is the committed state ("", sync or degraded), so that a
	// restarted controller neither blocks a degraded tenant again nor
	// silently degrades a "wait" tenant.
	Recorded string `json:"recorded,omitempty"`
}

// Subscriber states reported in SubscriberResult.State.
const (
	ReplStreaming = "streaming" // the apply worker runs and every table is ready
	ReplSyncing   = "syncing"   // initial copy of some table in progress
	ReplWaiting   = "waiting"   // waiting for the publisher or an endpoint; nothing changed
	ReplDown      = "down"      // the subscription exists but does not stream
	ReplError     = "error"     // the executor could not converge
	ReplRemoved   = "removed"   // torn down (ensure absent)
	ReplReady     = "ready"     // publisher: the publication matches the spec
	ReplInvalid   = "invalid_spec"
)

// Issue codes reported by replication executors.
const (
	IssueDatabaseUnreachable  = "database_unreachable"
	IssuePublisherUnreachable = "publisher_unreachable"
	IssueEndpointUnknown      = "endpoint_unknown"
	IssueWaitingForPublisher  = "waiting_for_publisher"
	IssueTableNotFound        = "table_not_found"
	IssueMissingTenantID      = "missing_tenant_id"
	IssueTenantIDType         = "tenant_id_not_text"
	IssueNoReplicaIdentity    = "no_replica_identity"
	IssuePIIInKey             = "pii_in_key"
	IssuePIIColumnNotFound    = "pii_column_not_found"
	IssueSubscriptionDown     = "subscription_down"
	IssueConflict             = "conflict"
	IssueMissingTable         = "missing_table"
	IssueMissingColumn        = "missing_column"
	IssuePermissionDenied     = "permission_denied"
	IssueApplyError           = "apply_error"
	IssueSchemaDrift          = "schema_drift"
	IssueSlotRetained         = "slot_inactive"
	IssueSQL                  = "sql_error"
	// IssueUnsafeType: a source reports a column type the mirror does not
	// have or may not create; the mirror changes nothing.
	IssueUnsafeType = "unsafe_type"
	// IssueForeignLogicalSlot: a home's database holds a logical
	// replication slot that is not one of atomfed's subscriptions' (an
	// output plugin other than pgoutput, or a pgoutput slot under another
	// name). Whoever reads it decodes every change of that database, PII
	// included: policy P1 blocks while it exists. Issue.Slot names it.
	IssueForeignLogicalSlot = "foreign_logical_slot"
)

// ReplicationIssue is one problem an executor reports.
type ReplicationIssue struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Table   string `json:"table,omitempty"`
	At      int64  `json:"at,omitempty"` // agent clock, unix ns
	// Slot is the slot of a foreign_logical_slot issue.
	Slot *ForeignSlot `json:"slot,omitempty"`
}

// ForeignSlot is a logical replication slot of a database that is not
// atomfed's, as a publisher found it in pg_replication_slots.
type ForeignSlot struct {
	Name   string `json:"name"`
	Plugin string `json:"plugin"`
	Active bool   `json:"active"`
}

// TableState is one table as an executor sees it.
type TableState struct {
	Name string `json:"name"`
	// Digest is the schema digest of the local table (the published
	// columns on a publisher), SourceDigest that of what the source
	// publishes: they differ when the schema drifted.
	Digest       string `json:"digest,omitempty"`
	SourceDigest string `json:"source_digest,omitempty"`
	State        string `json:"state,omitempty"`
	Drift        string `json:"drift,omitempty"`
	// DriftSince is when the executor's probe first saw the current drift
	// (agent clock, unix ns).
	DriftSince      int64  `json:"drift_since,omitempty"`
	ReplicaIdentity string `json:"replica_identity,omitempty"`
	// Columns are the columns a tenant publication publishes of the
	// table and RowFilter its row filter, as the publisher read them back
	// from pg_publication_tables (policy P1 checks them against the
	// tenant's PII columns).
	Columns   []string `json:"columns,omitempty"`
	RowFilter string   `json:"row_filter,omitempty"`
	// RLS is a tenant mirror table's row-level security as the
	// subscriber's probe found it (policy P5); nil while the table does
	// not exist in the mirror.
	RLS *RLSState `json:"rls,omitempty"`
}

// TenantPolicyName is the row-level security policy on every tenant
// mirror table: a session sees the rows of the tenant it names in
// app.tenant_id, and none when it names none.
const TenantPolicyName = "atomfed_tenant_isolation"

// RLSState is the row-level security of one tenant mirror table.
type RLSState struct {
	Enabled bool `json:"enabled"`
	Forced  bool `json:"forced"`
	// Policy is the USING expression of the tenant policy as PostgreSQL
	// deparses it ("" when the table has no tenant policy), and PolicyOK
	// whether it is the tenant policy atomfed sets: permissive, for every
	// command and role, on tenant_id = current_setting('app.tenant_id').
	Policy   string `json:"policy,omitempty"`
	PolicyOK bool   `json:"policy_ok"`
	// OtherPolicies are the table's other permissive policies: each one
	// widens what a session sees beyond its tenant.
	OtherPolicies []string `json:"other_policies,omitempty"`
	// RepairedAt is when the subscriber last had to restore the table's
	// row-level security after finding it lost (agent clock, unix ns).
	RepairedAt int64 `json:"repaired_at,omitempty"`
}

// Problems lists what keeps the table's rows from being isolated by
// tenant, or nothing when RLS is enabled, forced and the tenant policy is
// the only permissive one.
func (r *RLSState) Problems() []string {
	var out []string
	if !r.Enabled {
		out = append(out, "row-level security is disabled")
	}
	if !r.Forced {
		out = append(out, "row-level security is not forced (the table owner bypasses it)")
	}
	switch {
	case r.Policy == "" && !r.PolicyOK:
		out = append(out, "the tenant policy "+TenantPolicyName+" is missing")
	case !r.PolicyOK:
		out = append(out, "the tenant policy "+TenantPolicyName+" is not the tenant filter (it is "+r.Policy+")")
	}
	for _, p := range r.OtherPolicies {
		out = append(out, "permissive policy "+p+" widens what a session sees beyond its tenant")
	}
	return out
}

// SlotState is a replication slot on a publisher.
type SlotState struct {
	Name      string `json:"name"`
	Active    bool   `json:"active"`
	LagBytes  int64  `json:"lag_bytes"`
	WALStatus string `json:"wal_status,omitempty"`
}

// PublisherResult is what a publisher task reports.
type PublisherResult struct {
	State       string             `json:"state"`
	Publication string             `json:"publication"`
	Tables      []TableState       `json:"tables,omitempty"`
	Slots       []SlotState        `json:"slots,omitempty"`
	Issues      []ReplicationIssue `json:"issues,omitempty"`
	// PII are the types of a tenant's PII columns at the home, as its
	// catalog describes them: a failover, which cannot read the lost
	// home, promotes a mirror with the last ones reported.
	PII []PIIColumnType `json:"pii,omitempty"`
	At  int64           `json:"at"`
}

// SubscriberResult is what a subscriber task reports.
type SubscriberResult struct {
	State        string             `json:"state"`
	Subscription string             `json:"subscription"`
	LagSeconds   float64            `json:"lag_seconds"`
	LagBytes     int64              `json:"lag_bytes"`
	Tables       []TableState       `json:"tables,omitempty"`
	Issues       []ReplicationIssue `json:"issues,omitempty"`
	// LastError is the last error of the subscription's workers, read
	// from the mirror's PostgreSQL log (or inferred from its counters).
	LastError   *ReplicationIssue `json:"last_error,omitempty"`
	ApplyErrors int64             `json:"apply_errors"`
	SyncErrors  int64             `json:"sync_errors"`
	// AppliedLSN is the source's WAL position up to which the mirror has
	// applied the tenant's transactions (the subscription's replication
	// origin, pg_replication_origin_progress): the end of the last
	// transaction of the tenant applied here. A failover records it as
	// the start of the data at risk.
	AppliedLSN string `json:"applied_lsn,omitempty"`
	// SourcePII are the types of the tenant's PII columns at the source
	// (the home), as the mirror last read them there: a failover, which
	// cannot read the lost home, promotes the mirror with them.
	SourcePII []PIIColumnType `json:"source_pii,omitempty"`
	At        int64           `json:"at"`
	// Resync is the progress of an old home that comes back after a
	// failover (spec Resync): nil for every other subscriber.
	Resync *ResyncStatus `json:"resync,omitempty"`
}

// ResyncStatus is what the subscriber of an old home that comes back
// after a failover reports (replication/resync.go): the phase it is in,
// and once it reconciled, how many of its rows it put in quarantine and
// how many it reconciled with the new home.
type ResyncStatus struct {
	Phase string `json:"phase"`
	// Epoch is the placement the old home comes back into (the spec's).
	Epoch uint64 `json:"epoch"`
	// Divergent counts the rows put in quarantine, per table (only
	// tables with some); DivergentTotal is their sum, Missing the part of
	// it whose key the new home does not have.
	Divergent      map[string]int64 `json:"divergent,omitempty"`
	DivergentTotal int64            `json:"divergent_total"`
	Missing        int64            `json:"missing_at_new_home"`
	// Reconciled counts the rows inserted, updated or deleted here to
	// make the tenant's rows equal the new home's.
	Reconciled   int64  `json:"reconciled"`
	SlotLSN      string `json:"slot_lsn,omitempty"`
	ReconciledAt int64  `json:"reconciled_at,omitempty"`
	// Keys are the quarantined rows' primary keys and reasons, the first
	// MaxDivergentKeys of them (a key holds no PII: a PII column cannot be
	// part of a replicated table's key).
	Keys []DivergentKey `json:"keys,omitempty"`
}

// DivergentKey is one quarantined row: its table, its primary key as
// jsonb text ({"id": 5, "tenant_id": "acme"}) and why it is there.
type DivergentKey struct {
	Table  string `json:"table"`
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// Reasons of a quarantined row, and the bounds of the keys reported.
const (
	ReasonMissingAtNewHome   = "missing_at_new_home"
	ReasonDiffersFromNewHome = "differs_from_new_home"
	MaxDivergentKeys         = 100
	MaxDivergentKeyLen       = 512
)

// Phases of ResyncStatus, in order.
const (
	ResyncFencing     = "fencing"
	ResyncQuarantine  = "quarantining"
	ResyncReconciling = "reconciling"
	ResyncSubscribing = "subscribing"
	ResyncStreaming   = "streaming"
)

// SyncStandbyResult is what a sync-standby task reports.
type SyncStandbyResult struct {
	StandbyNames string             `json:"synchronous_standby_names"`
	Tenants      []SyncTenantStatus `json:"tenants,omitempty"`
	Issues       []ReplicationIssue `json:"issues,omitempty"`
	At           int64              `json:"at"`
}

// SyncTenantStatus is one sync tenant as its home's controller sees it:
// pending (no mirror has streamed yet), sync, waiting (every mirror down,
// commits wait) or degraded (async until a mirror streams again).
type SyncTenantStatus struct {
	Tenant    string   `json:"tenant"`
	State     string   `json:"state"`
	Since     int64    `json:"since"`
	Reason    string   `json:"reason,omitempty"`
	MirrorsUp []string `json:"mirrors_up,omitempty"`
}

// TenantPublisherTaskID is the id of a tenant's publisher in its home. The
// home is part of the id so that moving a tenant tears down the old home's
// publication instead of abandoning it.
func TenantPublisherTaskID(tenant, home string) string { return "tenant-pub/" + tenant + "/" + home }

// TenantSubscriberTaskID is the id of a tenant's subscriber in mirror.
func TenantSubscriberTaskID(tenant, mirror string) string {
	return "tenant-sub/" + tenant + "/" + mirror
}

// SyncStandbyTaskID is the id of a region's sync-standby task.
func SyncStandbyTaskID(region string) string { return "sync/" + region }

// GlobalPublisherTaskID is the id of a writer region's global publisher.
func GlobalPublisherTaskID(writer string) string { return "global-pub/" + writer }

// GlobalSubscriberTaskID is the id of region's subscriber to writer.
func GlobalSubscriberTaskID(writer, region string) string {
	return "global-sub/" + writer + "/" + region
}

// PostgreSQL object names. Identifiers are at most 63 bytes, and tenant
// ids may hold '-' and '_', which both become '_' in an identifier; a hash
// of the exact id keeps names of different tenants apart.

// TenantPublication is the name of a tenant's publication.
func TenantPublication(tenant string) string { return "af_t_" + tenantKey(tenant) }

// TenantSubscription is the name of a tenant's subscription in mirror; it
// is also its slot on the home and its application_name there.
func TenantSubscription(tenant, mirror string) string {
	return TenantPublication(tenant) + "_" + regionKey(mirror)
}

// TenantSlotPrefix is the prefix of every slot of a tenant.
func TenantSlotPrefix(tenant string) string { return TenantPublication(tenant) + "_" }

// GlobalPublication is the name of a writer region's global publication.
func GlobalPublication(writer string) string { return "af_g_" + regionKey(writer) }

// GlobalSubscription is region's subscription to writer's publication.
func GlobalSubscription(writer, region string) string {
	return GlobalPublication(writer) + "_" + regionKey(region)
}

// GlobalSlotPrefix is the prefix of every slot of writer's publication.
func GlobalSlotPrefix(writer string) string { return GlobalPublication(writer) + "_" }

func tenantKey(id string) string {
	s := strings.ReplaceAll(id, "-", "_")
	if len(s) > 20 {
		s = s[:20]
	}
	return s + "_" + shortHash(id)
}

// regionKey maps a region name (a DNS label, so without '_') to an
// identifier part of at most 24 bytes: as is when short, else truncated
// with a hash (and then exactly 24 bytes long, so the two forms never meet).
func regionKey(r string) string {
	s := strings.ReplaceAll(r, "-", "_")
	if len(s) <= 23 {
		return s
	}
	return s[:15] + "_" + shortHash(r)
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:4])
}

// AbsentSpec returns a replication task's spec with ensure set to absent
// (its executor tears down what the task set up), and whether it was
// absent already.
func AbsentSpec(spec json.RawMessage) (json.RawMessage, bool) {
	var m map[string]any
	if json.Unmarshal(spec, &m) != nil || m == nil {
		m = map[string]any{}
	}
	was := m["ensure"] == EnsureAbsent
	m["ensure"] = EnsureAbsent
	b, _ := json.Marshal(m)
	return b, was
}
