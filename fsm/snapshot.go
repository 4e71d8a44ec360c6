package fsm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// snapshotVersion is the version of the snapshot document. Restore refuses
// versions it does not know.
const snapshotVersion = 1

// snapshotDoc is the persisted form of a State. Slices are sorted so that
// equal states persist to equal bytes.
type snapshotDoc struct {
	Version   int               `json:"version"`
	Index     uint64            `json:"index"`
	Indexes   map[string]uint64 `json:"indexes"`
	AuditHead string            `json:"audit_head"`
	Audit     []AuditEntry      `json:"audit"`
	Regions   []*Region         `json:"regions"`
	Tenants   []*Tenant         `json:"tenants"`
	Agents    []*Agent          `json:"agents,omitempty"`
	Tasks     []*Task           `json:"tasks,omitempty"`
	Members   []*Member         `json:"members,omitempty"`
	Tokens    []*Token          `json:"tokens,omitempty"`
	Approvals []*Approval       `json:"approvals,omitempty"`
	Policy    *Policy           `json:"policy,omitempty"`
	TrustSeq  uint64            `json:"trust_seq,omitempty"`
	Nonces    []nonceEntry      `json:"nonces,omitempty"`
	Trust     *TrustFacts       `json:"trust,omitempty"`
	Applied   uint64            `json:"applied_index,omitempty"`
	// RefencePending: see State.RefencePending.
	RefencePending bool `json:"refence_pending,omitempty"`

	Databases    []*RegionDatabase  `json:"databases,omitempty"`
	SyncStates   []*TenantSyncState `json:"sync_states,omitempty"`
	GlobalTables []*GlobalTable     `json:"global_tables,omitempty"`
	Switchovers  []*Switchover      `json:"switchovers,omitempty"`
	Divergences  []*Divergence      `json:"divergences,omitempty"`
	// FailoverHistory: State.FailoverHistory.
	FailoverHistory []*FailoverRecord `json:"failover_history,omitempty"`
	// FailoverHolds: State.FailoverHolds.
	FailoverHolds []*FailoverHoldState `json:"failover_holds,omitempty"`

	BackupPolicies []*BackupPolicy `json:"backup_policies,omitempty"`
	BackupRuns     []*Backup       `json:"backup_runs,omitempty"`
	Backups        []*Backup       `json:"backups,omitempty"`
	DrillRuns      []*Drill        `json:"drill_runs,omitempty"`
	Drills         []*Drill        `json:"drills,omitempty"`
	Rebuilds       []*Rebuild      `json:"rebuilds,omitempty"`
}

type fsmSnapshot struct {
	state   *State
	metrics *metrics
}

// Persist writes the captured state to sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	if err := WriteSnapshot(sink, s.state); err != nil {
		_ = sink.Cancel()
		return err
	}
	s.metrics.persist.Observe(time.Since(start).Seconds())
	return sink.Close()
}

// Release is a no-op: the captured state is garbage collected.
func (s *fsmSnapshot) Release() {}

// WriteSnapshot writes s in the snapshot format.
func WriteSnapshot(w io.Writer, s *State) error {
	doc := snapshotDoc{
		Version:   snapshotVersion,
		Index:     s.Index,
		Indexes:   s.Indexes,
		AuditHead: s.AuditHead,
		Audit:     s.RecentAudit(),
		Regions:   s.SortedRegions(),
		Tenants:   s.SortedTenants(),
		Agents:    s.SortedAgents(),
		Tasks:     s.SortedTasks(),
		Members:   s.SortedMembers(),
		Tokens:    s.SortedTokens(),
		Approvals: s.SortedApprovals(),
		Policy:    s.Policy,
		TrustSeq:  s.TrustSeq,
		Nonces:    s.liveNonces(),
		Trust:     trustFactsDoc(s.Trust),
		Applied:   s.applied,

		RefencePending: s.RefencePending,

		Databases:       s.SortedDatabases(),
		SyncStates:      s.SortedSyncStates(),
		GlobalTables:    s.SortedGlobalTables(),
		Switchovers:     s.SortedSwitchovers(),
		FailoverHistory: s.FailoverHistory,
		FailoverHolds:   s.SortedFailoverHolds(),
		Divergences:     s.SortedDivergences(),

		BackupPolicies: s.SortedBackupPolicies(),
		BackupRuns:     s.SortedBackupRuns(),
		Backups:        s.BackupsOf(""),
		DrillRuns:      s.SortedDrillRuns(),
		Drills:         s.DrillsOf(""),
		Rebuilds:       s.SortedRebuilds(),
	}
	bw := bufio.NewWriter(w)
	if err := json.NewEncoder(bw).Encode(&doc); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return bw.Flush()
}

// ReadSnapshot decodes and checks a snapshot. Every object is validated, so
// a corrupt or hand-edited snapshot is refused instead of restored.
func ReadSnapshot(r io.Reader) (*State, error) {
	var doc snapshotDoc
	dec := json.NewDecoder(bufio.NewReader(r))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	if doc.Version != snapshotVersion {
		return nil, fmt.Errorf("snapshot version %d is not supported (want %d)", doc.Version, snapshotVersion)
	}
	s := newState()
	s.Index, s.AuditHead, s.Audit, s.applied = doc.Index, doc.AuditHead, doc.Audit, doc.Applied
	s.RefencePending = doc.RefencePending
	if len(s.AuditHead) != 64 {
		return nil, fmt.Errorf("snapshot audit head %q is not a sha256", s.AuditHead)
	}
	for k, v := range doc.Indexes {
		s.Indexes[k] = v
	}
	for _, r := range doc.Regions {
		if r == nil || ValidateRegion(r) != nil || s.Regions[r.Name] != nil {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate region")
		}
		s.Regions[r.Name] = r
	}
	for _, t := range doc.Tenants {
		if t == nil || ValidateTenant(t) != nil || s.Tenants[t.ID] != nil {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate tenant")
		}
		s.Tenants[t.ID] = t
	}
	for _, a := range doc.Agents {
		if a == nil || ValidateAgent(a) != nil || s.Agents[a.Node] != nil {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate agent")
		}
		s.Agents[a.Node] = a
	}
	for _, t := range doc.Tasks {
		if t == nil || t.ID == "" || s.Tasks[t.ID] != nil {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate task")
		}
		s.Tasks[t.ID] = t
	}
	for _, m := range doc.Members {
		if m == nil || validateMember(m) != nil || s.Members[m.ID] != nil {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate member")
		}
		s.Members[m.ID] = m
	}
	for _, t := range doc.Tokens {
		if t == nil || t.Accessor == "" || len(t.SecretHash) != 64 || !ValidRole(t.Role) || s.Tokens[t.Accessor] != nil {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate token")
		}
		if (t.Node != "" || t.Region != "") && validateTokenBinding(t) != nil {
			return nil, fmt.Errorf("snapshot holds token %s with an invalid binding", t.Accessor)
		}
		s.Tokens[t.Accessor] = t
	}
	for _, a := range doc.Approvals {
		if a == nil || a.ID == "" || s.Approvals[a.ID] != nil {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate approval")
		}
		s.Approvals[a.ID] = a
	}
	if doc.Policy != nil {
		if err := validatePolicy(doc.Policy, RulesTrustBound); err != nil {
			return nil, fmt.Errorf("snapshot policy: %w", err)
		}
	}
	s.Policy, s.TrustSeq = doc.Policy, doc.TrustSeq
	for _, n := range doc.Nonces {
		if n.Nonce == "" || s.Nonces[n.Nonce] != 0 {
			return nil, fmt.Errorf("snapshot holds an invalid or duplicate nonce")
		}
		s.Nonces[n.Nonce] = n.Expires
		s.nonceQueue = append(s.nonceQueue, n)
	}
	if doc.Trust != nil {
		for _, g := range doc.Trust.RestoreGrants {
			if len(g.Digest) != 64 || g.Approval == "" {
				return nil, fmt.Errorf("snapshot holds an invalid restore grant")
			}
		}
		s.Trust = *doc.Trust
	}
	s.reindexTrust()
	s.reindexTenants()
	if err := readReplicationSnapshot(&doc, s); err != nil {
		return nil, err
	}
	if err := readFailoverSnapshot(&doc, s); err != nil {
		return nil, err
	}
	if err := readFailoverHoldSnapshot(&doc, s); err != nil {
		return nil, err
	}
	if err := readSwitchoverSnapshot(&doc, s); err != nil {
		return s, err
	}
	if err := readDivergenceSnapshot(&doc, s); err != nil {
		return s, err
	}
	return s, readBackupSnapshot(&doc, s)
}

// trustFactsDoc is the snapshot form of f: omitted while it is empty, so
// that a snapshot of a federation that never used them is unchanged.
func trustFactsDoc(f TrustFacts) *TrustFacts {
	if !f.Sealed && !f.BootstrapRetired && len(f.RestoreGrants) == 0 {
		return nil
	}
	return &f
}

// readReplicationSnapshot checks and restores the replication objects.
func readReplicationSnapshot(doc *snapshotDoc, s *State) error {
	for _, d := range doc.Databases {
		if d == nil || !ValidRegionName(d.Region) || ValidateEndpoint(&d.Endpoint) != nil || s.Databases[d.Region] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate region database")
		}
		s.Databases[d.Region] = d
	}
	for _, st := range doc.SyncStates {
		if st == nil || !ValidTenantID(st.Tenant) || !syncStates[st.State] || s.SyncStates[st.Tenant] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate sync state")
		}
		s.SyncStates[st.Tenant] = st
	}
	for _, g := range doc.GlobalTables {
		if g == nil || ValidateGlobalTable(g) != nil || s.GlobalTables[g.Name] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate global table")
		}
		s.GlobalTables[g.Name] = g
	}
	return nil
}

// MarkRestored returns the snapshot in the form in which a user's snapshot
// is restored into a running federation whose state is now cur:
//
//   - RefencePending is set: the snapshot's tasks carry generations from
//     when it was saved, below what the agents have seen since; the
//     leader's TasksRefence raises them all (cluster.Server.RestoreSnapshot).
//   - Every replication task that cur has and the snapshot does not (a
//     mirror added after the save) is carried over to be torn down
//     (ensure absent, unassigned): restoring the placement must not leave
//     its subscription, publication or slot behind, where a slot would
//     hold the home's WAL for ever. The scheduler drops it once its
//     executor reports the teardown done.
func MarkRestored(snapshot []byte, cur *State) ([]byte, error) {
	s, err := ReadSnapshot(bytes.NewReader(snapshot))
	if err != nil {
		return nil, err
	}
	s.RefencePending = true
	if cur != nil {
		for _, t := range cur.SortedTasks() {
			if !IsReplicationTask(t.Type) || s.Tasks[t.ID] != nil || s.Regions[t.Region] == nil {
				continue
			}
			spec, _ := AbsentSpec(t.Spec)
			s.Tasks[t.ID] = &Task{ID: t.ID, Type: t.Type, Region: t.Region, Spec: spec, Status: TaskPending,
				Generation: t.Generation, Term: t.Term, CreateIndex: t.CreateIndex, ModifyIndex: t.ModifyIndex}
		}
	}
	var b bytes.Buffer
	if err := WriteSnapshot(&b, s); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
