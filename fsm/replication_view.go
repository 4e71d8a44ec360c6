package fsm

import (
	"encoding/json"
	"sort"
	"strings"
)

// Overall statuses of a replication view.
const (
	ReplStatusOK       = "ok"
	ReplStatusPending  = "pending"  // not running yet (no agent, or starting)
	ReplStatusDegraded = "degraded" // running with issues, drift or a degrade
	ReplStatusError    = "error"    // a bad spec, or nothing replicates
)

// TenantReplication answers GET /v1/tenants/{id}/replication: the home's
// publication and every mirror's subscription, from the tasks' reports.
type TenantReplication struct {
	Tenant    string         `json:"tenant"`
	Home      string         `json:"home_region"`
	SyncMode  string         `json:"sync_mode"`
	Status    string         `json:"status"`
	Reasons   []string       `json:"reasons,omitempty"`
	Sync      *SyncView      `json:"sync,omitempty"`
	Publisher *PublisherView `json:"publisher,omitempty"`
	Mirrors   []MirrorView   `json:"mirrors"`
}

// TaskView is the task part of a view.
type TaskView struct {
	Task       string `json:"task"`
	Agent      string `json:"agent,omitempty"`
	TaskStatus string `json:"task_status"`
	Ensure     string `json:"ensure"`
	ReportedAt int64  `json:"reported_at,omitempty"`
}

// PublisherView is the home's side.
type PublisherView struct {
	TaskView
	State       string             `json:"state"`
	Publication string             `json:"publication"`
	Tables      []TableState       `json:"tables,omitempty"`
	Slots       []SlotState        `json:"slots,omitempty"`
	Issues      []ReplicationIssue `json:"issues,omitempty"`
}

// MirrorView is one mirror's side.
type MirrorView struct {
	Region string `json:"region"`
	TaskView
	State        string             `json:"state"`
	Subscription string             `json:"subscription"`
	LagSeconds   float64            `json:"lag_seconds"`
	LagBytes     int64              `json:"lag_bytes"`
	LastError    *ReplicationIssue  `json:"last_error,omitempty"`
	Issues       []ReplicationIssue `json:"issues,omitempty"`
	Tables       []TableState       `json:"tables,omitempty"`
}

// SyncView is a sync tenant's synchronous replication state: the recorded
// one (on the audit chain) and what the home's controller reports now.
type SyncView struct {
	Fallback       string `json:"fallback"`
	DegradeAfterMS int    `json:"degrade_after_ms"`
	Recorded       string `json:"recorded,omitempty"`
	RecordedReason string `json:"recorded_reason,omitempty"`
	RecordedAt     int64  `json:"recorded_at,omitempty"`
	RecordedIndex  uint64 `json:"recorded_index,omitempty"`
	Current        string `json:"current,omitempty"`
	Since          int64  `json:"since,omitempty"`
	Reason         string `json:"reason,omitempty"`
	StandbyNames   string `json:"synchronous_standby_names,omitempty"`
}

func taskView(t *Task) TaskView {
	v := TaskView{Task: t.ID, Agent: t.Agent, TaskStatus: t.Status, Ensure: EnsurePresent, ReportedAt: t.ReportedAt}
	var e struct {
		Ensure string `json:"ensure"`
	}
	if json.Unmarshal(t.Spec, &e) == nil && e.Ensure != "" {
		v.Ensure = e.Ensure
	}
	return v
}

// noAgent explains a task that no agent runs.
func noAgent(t *Task) ReplicationIssue {
	return ReplicationIssue{Code: "no_agent", Message: "no alive agent of region " + t.Region + " runs " + t.Type +
		" tasks (an agent needs POSTGRES_DSN; without it replication there is simulated)"}
}

// TenantReplicationView builds a tenant's replication view; ok is false
// when the tenant does not exist and no task of it is left.
func (s *State) TenantReplicationView(id string) (*TenantReplication, bool) {
	t := s.Tenants[id]
	v := &TenantReplication{Tenant: id, Mirrors: []MirrorView{}, SyncMode: SyncModeAsync}
	if t != nil {
		v.Home = t.HomeRegion
		if t.IsSync() {
			v.SyncMode = SyncModeSync
		}
	}
	found := t != nil
	for _, task := range s.SortedTasks() {
		switch {
		case task.Type == TaskTypeTenantPublisher && strings.HasPrefix(task.ID, "tenant-pub/"+id+"/"):
			if t == nil || task.Region == t.HomeRegion || v.Publisher == nil {
				v.Publisher = publisherView(task)
			}
			found = true
		case task.Type == TaskTypeTenantSubscriber && strings.HasPrefix(task.ID, "tenant-sub/"+id+"/"):
			v.Mirrors = append(v.Mirrors, mirrorView(task))
			found = true
		}
	}
	if !found {
		return nil, false
	}
	if t != nil && t.IsSync() {
		v.Sync = s.syncView(t)
	}
	v.Status, v.Reasons = tenantStatus(t, v)
	return v, true
}

func publisherView(task *Task) *PublisherView {
	p := &PublisherView{TaskView: taskView(task), State: ReplStatusPending}
	var r PublisherResult
	if len(task.Result) > 0 && json.Unmarshal(task.Result, &r) == nil {
		p.State, p.Publication, p.Tables, p.Slots, p.Issues = r.State, r.Publication, r.Tables, r.Slots, r.Issues
	}
	if task.Agent == "" {
		p.Issues = append(p.Issues, noAgent(task))
	}
	return p
}

func mirrorView(task *Task) MirrorView {
	m := MirrorView{Region: task.Region, TaskView: taskView(task), State: ReplStatusPending}
	var r SubscriberResult
	if len(task.Result) > 0 && json.Unmarshal(task.Result, &r) == nil {
		m.State, m.Subscription, m.LagSeconds, m.LagBytes = r.State, r.Subscription, r.LagSeconds, r.LagBytes
		m.LastError, m.Issues, m.Tables = r.LastError, r.Issues, r.Tables
	}
	if task.Agent == "" {
		m.Issues = append(m.Issues, noAgent(task))
	}
	if m.LastError == nil && len(m.Issues) > 0 {
		is := m.Issues[0]
		m.LastError = &is
	}
	return m
}

func (s *State) syncView(t *Tenant) *SyncView {
	sv := &SyncView{Fallback: t.Fallback(), DegradeAfterMS: t.DegradeAfterMS()}
	if r := s.SyncStates[t.ID]; r != nil {
		sv.Recorded, sv.RecordedReason, sv.RecordedAt, sv.RecordedIndex = r.State, r.Reason, r.At, r.ModifyIndex
	}
	if task := s.Tasks[SyncStandbyTaskID(t.HomeRegion)]; task != nil && len(task.Result) > 0 {
		var r SyncStandbyResult
		if json.Unmarshal(task.Result, &r) == nil {
			sv.StandbyNames = r.StandbyNames
			for _, st := range r.Tenants {
				if st.Tenant == t.ID {
					sv.Current, sv.Since, sv.Reason = st.State, st.Since, st.Reason
				}
			}
		}
	}
	return sv
}

func tenantStatus(t *Tenant, v *TenantReplication) (string, []string) {
	var reasons []string
	status := ReplStatusOK
	worse := func(st string) {
		rank := map[string]int{ReplStatusOK: 0, ReplStatusPending: 1, ReplStatusDegraded: 2, ReplStatusError: 3}
		if rank[st] > rank[status] {
			status = st
		}
	}
	if t == nil {
		return ReplStatusPending, []string{"the tenant is deleted; its replication is being torn down"}
	}
	if len(t.Tables) == 0 && v.Publisher == nil && len(v.Mirrors) == 0 {
		return ReplStatusOK, []string{"the tenant lists no tables: nothing to replicate"}
	}
	if p := v.Publisher; p == nil || p.State == ReplStatusPending {
		worse(ReplStatusPending)
		reasons = append(reasons, "the home's publisher has not reported yet")
	} else if p.State == ReplInvalid || p.State == ReplError || p.State == ReplStaleEpoch {
		worse(ReplStatusError)
		for _, is := range p.Issues {
			reasons = append(reasons, "home "+t.HomeRegion+": "+is.Message)
		}
	}
	for _, m := range v.Mirrors {
		switch {
		case m.Ensure == EnsureAbsent:
			reasons = append(reasons, "mirror "+m.Region+" is being torn down")
		case m.State == ReplStatusPending:
			worse(ReplStatusPending)
			reasons = append(reasons, "mirror "+m.Region+" has not reported yet")
		case len(m.Issues) > 0:
			worse(ReplStatusDegraded)
			reasons = append(reasons, "mirror "+m.Region+": "+m.Issues[0].Message)
		case m.State != ReplStreaming:
			worse(ReplStatusDegraded)
			reasons = append(reasons, "mirror "+m.Region+" is "+m.State)
		}
	}
	if v.Sync != nil && (v.Sync.Current == SyncStateDegraded || v.Sync.Current == "waiting") {
		worse(ReplStatusDegraded)
		reasons = append(reasons, "sync replication is "+v.Sync.Current+": "+v.Sync.Reason)
	}
	return status, reasons
}

// GlobalTableView is one global table's federation sync state.
type GlobalTableView struct {
	Name         string             `json:"name"`
	Writer       string             `json:"writer_region"`
	Status       string             `json:"status"`
	Reasons      []string           `json:"reasons,omitempty"`
	WriterDigest string             `json:"writer_digest,omitempty"`
	Regions      []GlobalRegionView `json:"regions"`
}

// GlobalRegionView is one region's copy of a global table.
type GlobalRegionView struct {
	Region     string             `json:"region"`
	State      string             `json:"state"`
	Digest     string             `json:"digest,omitempty"`
	Drift      string             `json:"drift,omitempty"`
	LagSeconds float64            `json:"lag_seconds"`
	LagBytes   int64              `json:"lag_bytes"`
	Issues     []ReplicationIssue `json:"issues,omitempty"`
}

// DriftView is one table whose schema in a region differs from its
// source's.
type DriftView struct {
	Kind         string `json:"kind"`
	Name         string `json:"name"` // tenant id or writer region
	Table        string `json:"table"`
	Region       string `json:"region"`
	Source       string `json:"source_region"`
	Digest       string `json:"digest"`
	SourceDigest string `json:"source_digest"`
	Reason       string `json:"reason"`
	Since        int64  `json:"since,omitempty"`
}

// TenantSummary is one tenant's replication in the federation summary.
type TenantSummary struct {
	Tenant    string   `json:"tenant"`
	Home      string   `json:"home_region"`
	Status    string   `json:"status"`
	SyncState string   `json:"sync_state,omitempty"`
	Reasons   []string `json:"reasons,omitempty"`
}

// ReplicationSummary is the replication section of /global-status.
type ReplicationSummary struct {
	Status       string            `json:"status"`
	GlobalTables []GlobalTableView `json:"global_tables"`
	Tenants      []TenantSummary   `json:"tenants"`
	Drift        []DriftView       `json:"drift"`
}

// GlobalTableViews builds the federation sync view of every global table.
func (s *State) GlobalTableViews() []GlobalTableView {
	out := []GlobalTableView{}
	for _, g := range s.SortedGlobalTables() {
		v := GlobalTableView{Name: g.Name, Writer: g.WriterRegion, Status: ReplStatusOK, Regions: []GlobalRegionView{}}
		short := parseTableName(g.Name)
		if pub := s.Tasks[GlobalPublisherTaskID(g.WriterRegion)]; pub == nil || len(pub.Result) == 0 {
			v.Status, v.Reasons = ReplStatusPending, append(v.Reasons, "the writer's publisher has not reported yet")
		} else {
			var r PublisherResult
			_ = json.Unmarshal(pub.Result, &r)
			for _, ts := range r.Tables {
				if ts.Name == short {
					v.WriterDigest = ts.Digest
				}
			}
			for _, is := range r.Issues {
				if is.Table == "" || is.Table == short || is.Table == g.Name {
					v.Status = ReplStatusError
					v.Reasons = append(v.Reasons, "writer "+g.WriterRegion+": "+is.Message)
				}
			}
		}
		for _, r := range s.SortedRegions() {
			if r.Name == g.WriterRegion {
				continue
			}
			rv := GlobalRegionView{Region: r.Name, State: ReplStatusPending}
			task := s.Tasks[GlobalSubscriberTaskID(g.WriterRegion, r.Name)]
			var res SubscriberResult
			if task != nil && len(task.Result) > 0 && json.Unmarshal(task.Result, &res) == nil {
				rv.State, rv.LagSeconds, rv.LagBytes, rv.Issues = res.State, res.LagSeconds, res.LagBytes, res.Issues
				for _, ts := range res.Tables {
					if ts.Name == short {
						rv.Digest, rv.Drift = ts.Digest, ts.Drift
					}
				}
			} else if task != nil && task.Agent == "" {
				rv.Issues = []ReplicationIssue{noAgent(task)}
			}
			switch {
			case rv.Drift != "" || (v.WriterDigest != "" && rv.Digest != "" && rv.Digest != v.WriterDigest):
				v.Status = worst(v.Status, ReplStatusDegraded)
				reason := rv.Drift
				if reason == "" {
					reason = "digest " + rv.Digest + " differs from the writer's " + v.WriterDigest
				}
				v.Reasons = append(v.Reasons, "schema drift in "+r.Name+": "+reason)
			case rv.State == ReplStatusPending:
				v.Status = worst(v.Status, ReplStatusPending)
				if len(rv.Issues) > 0 {
					v.Reasons = append(v.Reasons, r.Name+": "+rv.Issues[0].Message)
				}
			case len(rv.Issues) > 0:
				v.Status = worst(v.Status, ReplStatusDegraded)
				v.Reasons = append(v.Reasons, r.Name+": "+rv.Issues[0].Message)
			}
			v.Regions = append(v.Regions, rv)
		}
		out = append(out, v)
	}
	return out
}

func worst(a, b string) string {
	rank := map[string]int{ReplStatusOK: 0, ReplStatusPending: 1, ReplStatusDegraded: 2, ReplStatusError: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// parseTableName drops the public. prefix, as executors name tables.
func parseTableName(n string) string { return strings.TrimPrefix(n, "public.") }

// Drift lists every replicated table whose schema drifted, from the
// subscribers' reports.
func (s *State) Drift() []DriftView {
	out := []DriftView{}
	for _, task := range s.SortedTasks() {
		if task.Type != TaskTypeTenantSubscriber && task.Type != TaskTypeGlobalSubscriber || len(task.Result) == 0 {
			continue
		}
		var spec SubscriberSpec
		var res SubscriberResult
		if json.Unmarshal(task.Spec, &spec) != nil || json.Unmarshal(task.Result, &res) != nil || spec.Ensure == EnsureAbsent {
			continue
		}
		name := spec.Tenant
		if spec.Kind == KindGlobal {
			name = spec.Source
		}
		for _, ts := range res.Tables {
			if ts.Drift != "" {
				out = append(out, DriftView{Kind: spec.Kind, Name: name, Table: ts.Name, Region: spec.Region, Source: spec.Source,
					Digest: ts.Digest, SourceDigest: ts.SourceDigest, Reason: ts.Drift, Since: ts.DriftSince})
			}
		}
	}
	return out
}

// ReplicationSummary builds the replication section of /global-status.
func (s *State) ReplicationSummary() *ReplicationSummary {
	sum := &ReplicationSummary{Status: ReplStatusOK, GlobalTables: s.GlobalTableViews(), Tenants: []TenantSummary{}, Drift: s.Drift()}
	for _, g := range sum.GlobalTables {
		sum.Status = worst(sum.Status, g.Status)
	}
	for _, t := range s.SortedTenants() {
		if len(t.Tables) == 0 {
			continue
		}
		v, ok := s.TenantReplicationView(t.ID)
		if !ok {
			continue
		}
		ts := TenantSummary{Tenant: t.ID, Home: t.HomeRegion, Status: v.Status, Reasons: v.Reasons}
		if v.Sync != nil {
			ts.SyncState = v.Sync.Current
		}
		sum.Tenants = append(sum.Tenants, ts)
		sum.Status = worst(sum.Status, v.Status)
	}
	sort.Slice(sum.Drift, func(i, j int) bool {
		return sum.Drift[i].Region+sum.Drift[i].Table < sum.Drift[j].Region+sum.Drift[j].Table
	})
	return sum
}
