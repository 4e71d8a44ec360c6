package fsm

// The database steps of a tenant's switchover, each a task run by an agent
// of the region it names. The leader derives them from the switchover's
// phase (cluster/scheduler_switchover.go) and records each step's result
// in the FSM when the step reports success; the executors are in the
// replication package. Every step is idempotent: a task moved to a peer
// agent, or run again after a restart, finishes the work or finds it done.
//
// Every spec carries the tenant's placement (Tenant, TenantCreated, Epoch:
// TaskEpoch), so that an agent never runs a step of an ended epoch, and
// the switchover's id, so that a second attempt is a new task.
const (
	// TaskTypeTenantFence runs at the tenant's home: with Ensure present
	// it fences the tenant's application writes and reports the fenced
	// LSN and the home's PII column types; with Ensure absent it lifts
	// the fence (a switchover rolled back before the promotion).
	TaskTypeTenantFence = "tenant-fence"
	// TaskTypeTenantCatchUp runs at a mirror: it waits until the
	// mirror's subscription has applied, durably, everything up to the
	// fenced LSN.
	TaskTypeTenantCatchUp = "tenant-catchup"
	// TaskTypeTenantPromote runs at the target mirror: it detaches its
	// subscription without needing the old home, brings back the PII
	// columns (nullable), moves every sequence past the tenant's highest
	// value, publishes the tenant there and makes, before the tenant
	// takes any write there, the slot each hand-off region will
	// subscribe from.
	TaskTypeTenantPromote = "tenant-promote"
	// TaskTypeTenantDetach runs at every other mirror: it detaches the
	// mirror's subscription from the old home, keeping every row, so that
	// it can follow the new home from its hand-off slot.
	TaskTypeTenantDetach = "tenant-detach"
)

// SwitchoverTaskTypes lists the step task types of a switchover.
func SwitchoverTaskTypes() []string {
	return []string{TaskTypeTenantCatchUp, TaskTypeTenantDetach, TaskTypeTenantFence, TaskTypeTenantPromote}
}

// IsSwitchoverTask reports whether typ is a switchover step task type.
func IsSwitchoverTask(typ string) bool {
	for _, t := range SwitchoverTaskTypes() {
		if t == typ {
			return true
		}
	}
	return false
}

// SwitchoverTaskID is the id of a switchover step of tenant in region,
// e.g. tenant-fence/acme/us-east.
func SwitchoverTaskID(typ, tenant, region string) string { return typ + "/" + tenant + "/" + region }

// Step states reported in the step results' State.
const (
	StepFenced    = "fenced"
	StepUnfenced  = "unfenced"
	StepCaughtUp  = "caught_up"
	StepBehind    = "behind"
	StepPromoted  = "promoted"
	StepDetached  = "detached"
	StepStepError = "error"
)

// PIIColumnType is one PII column as the home's catalog describes it: the
// type is only a name the promoted mirror looks up in its own catalog,
// never SQL.
type PIIColumnType struct {
	Table  string `json:"table"` // schema.table
	Column string `json:"column"`
	Type   string `json:"type"` // format_type at the home
	TypMod int32  `json:"typmod"`
}

// FenceSpec is the spec of a tenant-fence task.
type FenceSpec struct {
	// Ensure present fences the tenant; absent lifts the fence.
	Ensure string `json:"ensure"`
	Tenant string `json:"tenant"`
	// Region is the home being fenced.
	Region string        `json:"region"`
	Tables []TenantTable `json:"tables"`
	// NewHome and NewEpoch are what the fence's error tells the
	// application: where the tenant's writes go now, from which epoch.
	NewHome  string `json:"new_home"`
	NewEpoch uint64 `json:"new_epoch"`
	// Switchover is the switchover's id.
	Switchover    uint64 `json:"switchover"`
	TenantCreated uint64 `json:"tenant_created,omitempty"`
	Epoch         uint64 `json:"epoch,omitempty"`
}

// FenceResult is what a tenant-fence task reports.
type FenceResult struct {
	State string `json:"state"` // fenced, unfenced or error
	// FencedLSN is the home's WAL insert position with the fence in place
	// ("0/16B3748"): every write of the tenant at the home lies before it.
	FencedLSN string `json:"fenced_lsn,omitempty"`
	// PII are the types of the tenant's PII columns at the home, read
	// with the fence in place, for the promotion.
	PII    []PIIColumnType    `json:"pii,omitempty"`
	At     int64              `json:"at,omitempty"` // agent clock, unix ns
	Issues []ReplicationIssue `json:"issues,omitempty"`
}

// CatchUpSpec is the spec of a tenant-catchup task.
type CatchUpSpec struct {
	Tenant string `json:"tenant"`
	// Region is the mirror; Subscription its subscription (and its slot
	// at the source).
	Region       string `json:"region"`
	Subscription string `json:"subscription"`
	// Source is the old home, SourceDB its endpoint (to read the slot).
	Source   string            `json:"source"`
	SourceDB *DatabaseEndpoint `json:"source_db,omitempty"`
	// Target is the fenced LSN to reach.
	Target        string `json:"target"`
	Switchover    uint64 `json:"switchover"`
	TenantCreated uint64 `json:"tenant_created,omitempty"`
	Epoch         uint64 `json:"epoch,omitempty"`
}

// CatchUpResult is what a tenant-catchup task reports, while it waits
// (State behind, with the progress) and once done (caught_up).
type CatchUpResult struct {
	State          string             `json:"state"`
	Target         string             `json:"target"`
	Applied        string             `json:"applied,omitempty"`
	BytesBehind    int64              `json:"bytes_behind"`
	TablesNotReady []string           `json:"tables_not_ready,omitempty"`
	Message        string             `json:"message,omitempty"`
	At             int64              `json:"at,omitempty"`
	Issues         []ReplicationIssue `json:"issues,omitempty"`
}

// PromoteSpec is the spec of a tenant-promote task.
type PromoteSpec struct {
	Tenant string `json:"tenant"`
	// Region is the mirror being promoted (the new home).
	Region string `json:"region"`
	// Subscription is its subscription to the old home, detached here.
	Subscription string `json:"subscription"`
	// Source is the old home; SourceDB its endpoint, to drop the slot
	// there when it can be reached (nil: the slot is left to the old
	// home's publisher).
	Source   string            `json:"source"`
	SourceDB *DatabaseEndpoint `json:"source_db,omitempty"`
	// Publication is the tenant's publication, made here.
	Publication string        `json:"publication"`
	Tables      []TenantTable `json:"tables"`
	// PII are the home's PII column types (FenceResult.PII).
	PII []PIIColumnType `json:"pii,omitempty"`
	// HandOff are the regions that will subscribe to the new home from a
	// slot made here before the tenant takes writes here: the old home
	// and every other mirror (slot TenantSubscription(tenant, region)).
	HandOff       []string `json:"hand_off"`
	Switchover    uint64   `json:"switchover"`
	TenantCreated uint64   `json:"tenant_created,omitempty"`
	Epoch         uint64   `json:"epoch,omitempty"`
}

// SequenceMoveResult is one sequence a promotion moved past the tenant's
// highest value.
type SequenceMoveResult struct {
	Sequence  string `json:"sequence"`
	Highest   int64  `json:"highest"`
	NextAfter int64  `json:"next_after"`
	Moved     bool   `json:"moved"`
}

// PromoteResult is what a tenant-promote task reports.
type PromoteResult struct {
	State           string               `json:"state"` // promoted or error
	PIIColumnsAdded []string             `json:"pii_columns_added,omitempty"`
	Sequences       []SequenceMoveResult `json:"sequences,omitempty"`
	// Slots are the hand-off slots, region to the slot's consistent LSN.
	Slots map[string]string `json:"slots,omitempty"`
	// HomeSlotDropped: the old home's slot of this subscription was
	// dropped; HomeSlotError says why it may still be there.
	HomeSlotDropped bool `json:"home_slot_dropped"`
	// AppliedLSN is the old home's WAL position the mirror had applied
	// when the promotion detached its subscription (its replication
	// origin), read by the run that detached it: after a failover,
	// every transaction of the tenant committed at the old home past it
	// is not at the new home.
	AppliedLSN    string             `json:"applied_lsn,omitempty"`
	HomeSlotError string             `json:"home_slot_error,omitempty"`
	At            int64              `json:"at,omitempty"`
	Issues        []ReplicationIssue `json:"issues,omitempty"`
}

// DetachSpec is the spec of a tenant-detach task.
type DetachSpec struct {
	Tenant string `json:"tenant"`
	// Region is the mirror; Subscription its subscription to the old
	// home, detached (DISABLE, slot_name NONE, DROP) with every row kept.
	Region        string `json:"region"`
	Subscription  string `json:"subscription"`
	Switchover    uint64 `json:"switchover"`
	TenantCreated uint64 `json:"tenant_created,omitempty"`
	Epoch         uint64 `json:"epoch,omitempty"`
}

// DetachResult is what a tenant-detach task reports.
type DetachResult struct {
	State  string             `json:"state"` // detached or error
	At     int64              `json:"at,omitempty"`
	Issues []ReplicationIssue `json:"issues,omitempty"`
}
