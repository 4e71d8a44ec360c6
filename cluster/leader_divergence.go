package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/fsm"
)

// The old home back after a failover reports, in its tenant-subscriber's
// result (replication/resync.go), how many of its rows it put in
// quarantine. The leader records each new count in the FSM
// (fsm.DivergenceRecord), which is what the divergence API, the audit
// chain and the metric atomfed_tenant_divergent_rows read.

// divergenceTick is how often the leader looks at the subscribers' reports
// even when no change woke it.
const divergenceTick = 5 * time.Second

// DivergenceRecords returns the divergence records the leader should
// write: one for each resync subscriber (spec resync, ensure present) of a
// live tenant whose result reports reconciled rows with some in
// quarantine, and whose counts the FSM does not hold yet for that tenant,
// region and epoch. It is a pure function of the state.
func DivergenceRecords(s *fsm.State) []fsm.DivergenceRecord {
	var out []fsm.DivergenceRecord
	for _, t := range s.SortedTasks() {
		// Cheap checks first: this runs on every change of the state.
		if t.Type != fsm.TaskTypeTenantSubscriber || len(t.Result) == 0 || !bytes.Contains(t.Spec, []byte(`"resync":true`)) ||
			!bytes.Contains(t.Result, []byte(`"resync":`)) {
			continue
		}
		var spec fsm.SubscriberSpec
		var res fsm.SubscriberResult
		if json.Unmarshal(t.Spec, &spec) != nil || !spec.Resync || spec.Ensure != fsm.EnsurePresent || json.Unmarshal(t.Result, &res) != nil {
			continue
		}
		r := res.Resync
		tn := s.Tenants[spec.Tenant]
		if r == nil || r.ReconciledAt == 0 || r.DivergentTotal <= 0 || r.Epoch != spec.Epoch || tn == nil || tn.CreateIndex != spec.TenantCreated {
			continue
		}
		rec := fsm.DivergenceRecord{Tenant: spec.Tenant, TenantCreated: spec.TenantCreated, Region: t.Region, Epoch: r.Epoch,
			Tables: r.Divergent, Missing: r.Missing, RowsReconciled: r.Reconciled, Keys: r.Keys, FoundAt: r.ReconciledAt}
		if w := s.Switchovers[spec.Tenant]; w != nil && w.Kind == fsm.FailoverKind && w.NewEpoch == r.Epoch && w.TenantCreated == spec.TenantCreated {
			rec.Failover = w.ID
		}
		if d := s.Divergence(spec.Tenant, t.Region); d != nil && d.TenantCreated == rec.TenantCreated && d.Epoch == rec.Epoch &&
			maps.Equal(d.Tables, rec.Tables) && d.Missing == rec.Missing && d.RowsReconciled == rec.RowsReconciled && slices.Equal(d.Keys, rec.Keys) {
			continue
		}
		out = append(out, rec)
	}
	return out
}

// divergenceRoutine records the old homes' new divergence counts.
func (s *Server) divergenceRoutine(ctx context.Context) error {
	tick := time.NewTicker(divergenceTick)
	defer tick.Stop()
	refused := map[string]bool{} // records the FSM refused, not proposed again
	for {
		watch := s.fsm.WatchCh()
		var recs []fsm.DivergenceRecord
		s.fsm.Read(func(st *fsm.State) { recs = DivergenceRecords(st) })
		for _, rec := range recs {
			key, _ := json.Marshal(rec)
			if refused[string(key)] {
				continue
			}
			rec.At = time.Now().UnixNano()
			res, err := s.Apply(ctx, fsm.DivergenceRecordType, rec)
			switch {
			case err != nil:
				s.logger.Warn("divergence: record not applied", "tenant", rec.Tenant, "region", rec.Region, "error", err)
			case res.Err != nil:
				refused[string(key)] = true
				s.logger.Warn("divergence: record refused", "tenant", rec.Tenant, "region", rec.Region, "reason", res.Err)
			default:
				var rows int64
				for _, n := range rec.Tables {
					rows += n
				}
				s.logger.Warn("divergence: rows of a tenant are in quarantine at its old home; reconcile them", "tenant", rec.Tenant,
					"region", rec.Region, "rows", rows, "index", res.Index)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-watch:
		case <-tick.C:
		}
	}
}

var descDivergentRows = prometheus.NewDesc("atomfed_tenant_divergent_rows",
	"Rows of a tenant that its old home (region) committed after a failover and keeps in quarantine (atomfed_quarantine.divergent_rows there), waiting for a person to reconcile them; 0 once marked reconciled (DELETE /v1/tenants/{id}/divergence/{region}).",
	[]string{"tenant", "region"}, nil)

// divergenceMetrics turns the divergence records of live tenants into
// metrics (exported by the switchover collector, on every server).
func divergenceMetrics(s *fsm.State) []prometheus.Metric {
	var out []prometheus.Metric
	for _, d := range s.SortedDivergences() {
		if t := s.Tenants[d.Tenant]; t == nil || t.CreateIndex != d.TenantCreated {
			continue
		}
		v := float64(d.Total)
		if !d.Open() {
			v = 0
		}
		out = append(out, prometheus.MustNewConstMetric(descDivergentRows, prometheus.GaugeValue, v, d.Tenant, d.Region))
	}
	return out
}
