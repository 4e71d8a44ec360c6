package cluster

import (
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

var (
	descReplLagSeconds = prometheus.NewDesc(structs.MetricReplicationLagSeconds,
		"Replication lag of a tenant's mirror, as its agent last reported it (seconds; 0 when caught up).", []string{"tenant", "mirror"}, nil)
	descReplLagBytes = prometheus.NewDesc(structs.MetricReplicationLagBytes,
		"Replication lag of a tenant's mirror in bytes of the home's WAL, as its agent last reported it.", []string{"tenant", "mirror"}, nil)
	descGlobalLagSeconds = prometheus.NewDesc(structs.MetricGlobalSyncLagSeconds,
		"Replication lag of a region's copy of the global tables written in writer, as reported.", []string{"writer", "region"}, nil)
	descGlobalLagBytes = prometheus.NewDesc(structs.MetricGlobalSyncLagBytes,
		"Replication lag in bytes of a region's copy of the global tables written in writer, as reported.", []string{"writer", "region"}, nil)
	descReplError = prometheus.NewDesc(structs.MetricReplicationError,
		"1 while a replication task reports an issue, by kind (tenant or global), name (tenant or writer region), region and code.",
		[]string{"kind", "name", "region", "code"}, nil)
	descSchemaDrift = prometheus.NewDesc(structs.MetricSchemaDrift,
		"1 while a replicated table's schema in region differs from its source's.", []string{"kind", "name", "region", "table"}, nil)
)

// replicationCollector exports the replication metrics the agents report
// in their task results, so every server's /metrics shows the whole
// federation's lag and errors, including those of agents that are gone.
type replicationCollector struct{ f *fsm.FSM }

func (c *replicationCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReplLagSeconds, descReplLagBytes, descGlobalLagSeconds, descGlobalLagBytes, descReplError, descSchemaDrift} {
		ch <- d
	}
}

func (c *replicationCollector) Collect(ch chan<- prometheus.Metric) {
	var metrics []prometheus.Metric
	c.f.Read(func(s *fsm.State) { metrics = replicationMetrics(s) })
	for _, m := range metrics {
		ch <- m
	}
}

// replicationMetrics turns the replication tasks' results into metrics.
func replicationMetrics(s *fsm.State) []prometheus.Metric {
	var out []prometheus.Metric
	seen := map[string]bool{}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		key := d.String()
		for _, l := range labels {
			key += "\x00" + l
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
		}
	}
	for _, t := range s.SortedTasks() {
		if !fsm.IsReplicationTask(t.Type) || len(t.Result) == 0 {
			continue
		}
		kind, name := fsm.KindTenant, ""
		var issues []fsm.ReplicationIssue
		switch t.Type {
		case fsm.TaskTypeTenantSubscriber, fsm.TaskTypeGlobalSubscriber:
			var spec fsm.SubscriberSpec
			var r fsm.SubscriberResult
			if json.Unmarshal(t.Spec, &spec) != nil || json.Unmarshal(t.Result, &r) != nil || spec.Ensure == fsm.EnsureAbsent {
				continue
			}
			kind, name, issues = spec.Kind, spec.Tenant, r.Issues
			if spec.Kind == fsm.KindGlobal {
				name = spec.Source
				gauge(descGlobalLagSeconds, r.LagSeconds, spec.Source, spec.Region)
				gauge(descGlobalLagBytes, float64(r.LagBytes), spec.Source, spec.Region)
			} else {
				gauge(descReplLagSeconds, r.LagSeconds, spec.Tenant, spec.Region)
				gauge(descReplLagBytes, float64(r.LagBytes), spec.Tenant, spec.Region)
			}
			for _, ts := range r.Tables {
				if ts.Drift != "" {
					gauge(descSchemaDrift, 1, kind, name, spec.Region, ts.Name)
				}
			}
		case fsm.TaskTypeTenantPublisher, fsm.TaskTypeGlobalPublisher:
			var spec fsm.PublisherSpec
			var r fsm.PublisherResult
			if json.Unmarshal(t.Spec, &spec) != nil || json.Unmarshal(t.Result, &r) != nil {
				continue
			}
			kind, name, issues = spec.Kind, spec.Tenant, r.Issues
			if spec.Kind == fsm.KindGlobal {
				name = spec.Region
			}
		case fsm.TaskTypeSyncStandby:
			var r fsm.SyncStandbyResult
			if json.Unmarshal(t.Result, &r) != nil {
				continue
			}
			issues = r.Issues
		}
		for _, is := range issues {
			gauge(descReplError, 1, kind, name, t.Region, is.Code)
		}
	}
	return out
}
