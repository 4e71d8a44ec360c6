package fsm

import "sort"

// Table names used for per-table indexes. A blocking query on a table wakes
// only when that table's index moves.
const (
	TableRegions = "regions"
	TableTenants = "tenants"
)

// State is the replicated state. The FSM owns it; readers get it only
// through FSM.Read, under the read lock, and must not modify it or anything
// it points to. Stored objects are replaced, never mutated.
type State struct {
	// Index is the raft index of the last command that changed the state.
	Index uint64
	// Indexes holds the last changing index per table.
	Indexes map[string]uint64
	// AuditHead is the head of the audit hash chain.
	AuditHead string
	// Audit holds the most recent audit entries, oldest first.
	Audit []AuditEntry

	Regions map[string]*Region
	Tenants map[string]*Tenant
	Agents  map[string]*Agent
	Tasks   map[string]*Task

	// Databases holds each region's database endpoint, by region.
	Databases map[string]*RegionDatabase
	// SyncStates holds the committed sync state of sync tenants.
	SyncStates map[string]*TenantSyncState
	// GlobalTables holds the federation's global tables, by name.
	GlobalTables map[string]*GlobalTable
	// Switchovers holds each tenant's running or last switchover.
	Switchovers map[string]*Switchover
	// Divergences holds the old homes' quarantined row counts, by
	// tenant/region (divergence.go).
	Divergences map[string]*Divergence
	// FailoverHistory are the last finished failovers, oldest first (at
	// most MaxFailoverHistory; failover_apply.go).
	FailoverHistory []*FailoverRecord
	// FailoverHolds are the automatic failovers that wait, by tenant
	// (failover_auto.go); never changed in place.
	FailoverHolds map[string]*FailoverHoldState

	// BackupPolicies are the stored backup policies, by region (a region
	// without one has DefaultBackupPolicy); BackupRuns the backup each
	// region is asked for and not done, by region; Backups the catalog,
	// by backup id (backup.go).
	BackupPolicies map[string]*BackupPolicy
	BackupRuns     map[string]*Backup
	Backups        map[string]*Backup
	// DrillRuns are the restore drills asked for and not done, by region;
	// Drills the drill catalog, by id (drill.go).
	DrillRuns map[string]*Drill
	Drills    map[string]*Drill
	// Rebuilds holds each region's newest rebuild (rebuild.go).
	Rebuilds map[string]*Rebuild

	Members   map[string]*Member
	Tokens    map[string]*Token // by accessor
	Approvals map[string]*Approval
	Policy    *Policy // nil: DefaultPolicy
	// TrustSeq counts changes to the trusted keys; the trust bundle
	// carries it so that a region can order the bundles it fetches.
	TrustSeq uint64
	// Nonces of signed requests, with the time (unix ns) after which they
	// are forgotten; nonceQueue holds them in insertion order for pruning.
	Nonces     map[string]int64
	nonceQueue []nonceEntry
	// Trust holds the trust facts that only move forward (trust_seal.go).
	Trust TrustFacts

	// RefencePending is set in a state restored from a user's snapshot
	// (MarkRestored) until a TasksRefence command gives every task a
	// generation above anything issued before the restore.
	RefencePending bool

	// applied is the FSM's applied index when the state was captured for a
	// snapshot (and restored from one).
	applied uint64

	// touched collects the tables changed since the FSM last took them
	// (takeTouched), to wake only their watchers. Not state: never copied.
	touched map[string]struct{}

	keyOwners   map[string]string  // key id -> member id (derived)
	tokenHashes map[string]*Token  // secret hash -> token (derived)
	replicated  map[string]*Tenant // tenants with tables (derived)

	// auditNote is what the command being applied adds to its audit
	// entry (FSM.chain takes it); empty for most.
	auditNote string
}

type nonceEntry struct {
	Nonce   string `json:"nonce"`
	Expires int64  `json:"expires"`
}

func newState() *State {
	return &State{
		Indexes:   map[string]uint64{},
		AuditHead: GenesisHash,
		Regions:   map[string]*Region{},
		Tenants:   map[string]*Tenant{},
		Agents:    map[string]*Agent{},
		Tasks:     map[string]*Task{},

		Databases:     map[string]*RegionDatabase{},
		SyncStates:    map[string]*TenantSyncState{},
		GlobalTables:  map[string]*GlobalTable{},
		Switchovers:   map[string]*Switchover{},
		Divergences:   map[string]*Divergence{},
		FailoverHolds: map[string]*FailoverHoldState{},
		Members:       map[string]*Member{},

		BackupPolicies: map[string]*BackupPolicy{},
		BackupRuns:     map[string]*Backup{},
		Backups:        map[string]*Backup{},
		DrillRuns:      map[string]*Drill{},
		Drills:         map[string]*Drill{},
		Rebuilds:       map[string]*Rebuild{},
		Tokens:         map[string]*Token{},
		Approvals:      map[string]*Approval{},
		Nonces:         map[string]int64{},
		keyOwners:      map[string]string{},

		tokenHashes: map[string]*Token{},
		replicated:  map[string]*Tenant{},
	}
}

// ReplicatedTenants returns the tenants that have tables, the ones the
// replication tasks are derived from, keyed by id. Callers must not change
// the map. The scheduler walks it on every change of the state, so it must
// not cost a pass over every tenant.
func (s *State) ReplicatedTenants() map[string]*Tenant { return s.replicated }

// indexTenant keeps the derived tenant indexes in step with s.Tenants[id].
func (s *State) indexTenant(id string) {
	if t := s.Tenants[id]; t != nil && len(t.Tables) > 0 {
		s.replicated[id] = t
	} else {
		delete(s.replicated, id)
	}
}

// Reindex rebuilds the derived indexes of a State built or changed outside
// Apply (tests, tools). Apply and Restore keep them themselves.
func (s *State) Reindex() {
	s.reindexTrust()
	s.reindexTenants()
}

// reindexTenants rebuilds the derived tenant indexes.
func (s *State) reindexTenants() {
	s.replicated = map[string]*Tenant{}
	for id := range s.Tenants {
		s.indexTenant(id)
	}
}

// TableIndex returns the last index that changed table, or 1 when the
// table has never changed. Not the state index: a blocking query on a table
// nobody has written yet must wait for that table's first write, not wake on
// every other table's. Never 0, because index 0 does not block at all.
func (s *State) TableIndex(table string) uint64 {
	if i := s.Indexes[table]; i > 0 {
		return i
	}
	return 1
}

// SortedRegions returns the regions ordered by name.
func (s *State) SortedRegions() []*Region {
	out := make([]*Region, 0, len(s.Regions))
	for _, r := range s.Regions {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SortedTenants returns the tenants ordered by id.
func (s *State) SortedTenants() []*Tenant {
	out := make([]*Tenant, 0, len(s.Tenants))
	for _, t := range s.Tenants {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// clone returns a copy whose maps can be changed without affecting s. The
// objects themselves are shared: they are immutable.
func (s *State) clone() *State {
	c := &State{
		Index:     s.Index,
		Indexes:   make(map[string]uint64, len(s.Indexes)),
		AuditHead: s.AuditHead,
		Audit:     append([]AuditEntry(nil), s.RecentAudit()...),
		Regions:   make(map[string]*Region, len(s.Regions)),
		Tenants:   make(map[string]*Tenant, len(s.Tenants)),
		Agents:    make(map[string]*Agent, len(s.Agents)),
		Tasks:     make(map[string]*Task, len(s.Tasks)),

		Databases:    make(map[string]*RegionDatabase, len(s.Databases)),
		SyncStates:   make(map[string]*TenantSyncState, len(s.SyncStates)),
		GlobalTables: make(map[string]*GlobalTable, len(s.GlobalTables)),
		Switchovers:  make(map[string]*Switchover, len(s.Switchovers)),
		Divergences:  make(map[string]*Divergence, len(s.Divergences)),
		// Never changed in place: every change is a new slice.
		FailoverHistory: s.FailoverHistory,
		FailoverHolds:   s.FailoverHolds,
		Members:         make(map[string]*Member, len(s.Members)),

		BackupPolicies: make(map[string]*BackupPolicy, len(s.BackupPolicies)),
		BackupRuns:     make(map[string]*Backup, len(s.BackupRuns)),
		Backups:        make(map[string]*Backup, len(s.Backups)),
		DrillRuns:      make(map[string]*Drill, len(s.DrillRuns)),
		Drills:         make(map[string]*Drill, len(s.Drills)),
		Rebuilds:       make(map[string]*Rebuild, len(s.Rebuilds)),
		Tokens:         make(map[string]*Token, len(s.Tokens)),
		Approvals:      make(map[string]*Approval, len(s.Approvals)),
		Policy:         s.Policy,
		TrustSeq:       s.TrustSeq,
		Nonces:         make(map[string]int64, len(s.Nonces)),
		Trust:          s.Trust,

		RefencePending: s.RefencePending,

		nonceQueue: append([]nonceEntry(nil), s.nonceQueue...),
	}
	for k, v := range s.Indexes {
		c.Indexes[k] = v
	}
	for k, v := range s.Regions {
		c.Regions[k] = v
	}
	for k, v := range s.Tenants {
		c.Tenants[k] = v
	}
	for k, v := range s.Agents {
		c.Agents[k] = v
	}
	for k, v := range s.Tasks {
		c.Tasks[k] = v
	}
	for k, v := range s.Databases {
		c.Databases[k] = v
	}
	for k, v := range s.SyncStates {
		c.SyncStates[k] = v
	}
	for k, v := range s.GlobalTables {
		c.GlobalTables[k] = v
	}
	for k, v := range s.Switchovers {
		c.Switchovers[k] = v
	}
	for k, v := range s.Divergences {
		c.Divergences[k] = v
	}
	for k, v := range s.Members {
		c.Members[k] = v
	}
	for k, v := range s.BackupPolicies {
		c.BackupPolicies[k] = v
	}
	for k, v := range s.BackupRuns {
		c.BackupRuns[k] = v
	}
	for k, v := range s.Backups {
		c.Backups[k] = v
	}
	for k, v := range s.DrillRuns {
		c.DrillRuns[k] = v
	}
	for k, v := range s.Drills {
		c.Drills[k] = v
	}
	for k, v := range s.Rebuilds {
		c.Rebuilds[k] = v
	}
	for k, v := range s.Tokens {
		c.Tokens[k] = v
	}
	for k, v := range s.Approvals {
		c.Approvals[k] = v
	}
	for k, v := range s.Nonces {
		c.Nonces[k] = v
	}
	c.reindexTrust()
	c.reindexTenants()
	return c
}

// touch records that index changed table.
func (s *State) touch(table string, index uint64) {
	s.Indexes[table] = index
	if s.touched == nil {
		s.touched = map[string]struct{}{}
	}
	s.touched[table] = struct{}{}
}

// takeTouched returns the tables touched since the last call and forgets
// them.
func (s *State) takeTouched() map[string]struct{} {
	t := s.touched
	s.touched = nil
	return t
}
