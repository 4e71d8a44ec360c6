package replication

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// metrics are an agent's replication gauges, measured by its executors.
type metrics struct {
	lagSeconds, lagBytes             *prometheus.GaugeVec // tenant, mirror
	globalLagSeconds, globalLagBytes *prometheus.GaugeVec // writer, region
	errors                           *prometheus.GaugeVec // kind, name, region, code
	drift                            *prometheus.GaugeVec // kind, name, region, table
	issues                           *prometheus.CounterVec
	foreignSlots                     *prometheus.GaugeVec // region

	mu     sync.Mutex
	series map[string][]seriesRef // task id -> series it set
}

type seriesRef struct {
	vec    *prometheus.GaugeVec
	labels []string
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: structs.MetricReplicationLagSeconds,
			Help: "Replication lag of a tenant's mirror: the home's replay lag for its subscription (0 when caught up), or the time since the mirror last heard from the home while its subscription is down."},
			[]string{"tenant", "mirror"}),
		lagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: structs.MetricReplicationLagBytes,
			Help: "Replication lag of a tenant's mirror in bytes: the home's current WAL position minus its slot's confirmed flush position."},
			[]string{"tenant", "mirror"}),
		globalLagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: structs.MetricGlobalSyncLagSeconds,
			Help: "Replication lag of a region's copy of the global tables written in writer."}, []string{"writer", "region"}),
		globalLagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: structs.MetricGlobalSyncLagBytes,
			Help: "Replication lag in bytes of a region's copy of the global tables written in writer."}, []string{"writer", "region"}),
		errors: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: structs.MetricReplicationError,
			Help: "1 while a replication task reports an issue, by kind (tenant or global), name (tenant or writer region), region and code (conflict, missing_table, permission_denied, subscription_down, ...)."},
			[]string{"kind", "name", "region", "code"}),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: structs.MetricSchemaDrift,
			Help: "1 while a replicated table's schema in region differs from its source's."},
			[]string{"kind", "name", "region", "table"}),
		issues: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "atomfed_replication_issues_total",
			Help: "Issues reported by replication executors, by kind and code."}, []string{"kind", "code"}),
		foreignSlots: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "atomfed_replication_foreign_slots",
			Help: "Logical replication slots in a region's database that are not atomfed's (an output plugin other than pgoutput, or a pgoutput slot atomfed did not name), as its publishers last found them: each can decode the database's changes, PII included."},
			[]string{"region"}),
		series: map[string][]seriesRef{},
	}
	if reg != nil {
		reg.MustRegister(m.lagSeconds, m.lagBytes, m.globalLagSeconds, m.globalLagBytes, m.errors, m.drift, m.issues, m.foreignSlots)
	}
	return m
}

// observeSubscriber replaces a subscriber task's series with its result.
func (m *metrics) observeSubscriber(taskID string, spec *fsm.SubscriberSpec, r *fsm.SubscriberResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clearLocked(taskID)
	name := spec.Tenant
	lagS, lagB := m.lagSeconds, m.lagBytes
	if spec.Kind == fsm.KindGlobal {
		name, lagS, lagB = spec.Source, m.globalLagSeconds, m.globalLagBytes
	}
	m.setLocked(taskID, lagS, r.LagSeconds, name, spec.Region)
	m.setLocked(taskID, lagB, float64(r.LagBytes), name, spec.Region)
	m.issuesLocked(taskID, spec.Kind, name, spec.Region, r.Issues)
	for _, t := range r.Tables {
		if t.Drift != "" {
			m.setLocked(taskID, m.drift, 1, spec.Kind, name, spec.Region, t.Name)
		}
	}
}

// observeIssues replaces a task's error series.
func (m *metrics) observeIssues(taskID, kind, name, region string, issues []fsm.ReplicationIssue) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clearLocked(taskID)
	m.issuesLocked(taskID, kind, name, region, issues)
}

func (m *metrics) issuesLocked(taskID, kind, name, region string, issues []fsm.ReplicationIssue) {
	seen := map[string]bool{}
	foreign := 0
	for _, is := range issues {
		if is.Code == fsm.IssueForeignLogicalSlot {
			foreign++
		}
		if !seen[is.Code] {
			seen[is.Code] = true
			m.setLocked(taskID, m.errors, 1, kind, name, region, is.Code)
			m.issues.WithLabelValues(kind, is.Code).Inc()
		}
	}
	if foreign > 0 {
		m.setLocked(taskID, m.foreignSlots, float64(foreign), region)
	}
}

func (m *metrics) setLocked(taskID string, vec *prometheus.GaugeVec, v float64, labels ...string) {
	vec.WithLabelValues(labels...).Set(v)
	m.series[taskID] = append(m.series[taskID], seriesRef{vec, labels})
}

func (m *metrics) clearLocked(taskID string) {
	for _, s := range m.series[taskID] {
		s.vec.DeleteLabelValues(s.labels...)
	}
	delete(m.series, taskID)
}

// forget drops a stopped task's series.
func (m *metrics) forget(taskID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clearLocked(taskID)
}
