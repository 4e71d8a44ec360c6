package metrics

import (
	"math"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// Series a server summarises per region when it takes a snapshot (for
// /global-status).
const (
	metricHTTPRequests   = "atomfed_http_requests_total"
	metricReplicationLag = "atomfed_replication_lag_seconds"
)

// Summary is what a server reads from a region's snapshot as it checks it:
// the API requests its atomfed nodes served (all, and 5xx) and the
// replication lag of the tenant mirrors in the region.
type Summary struct {
	Requests, Errors float64
	HasRequests      bool
	lags             []float64
}

func (s *Summary) add(f *dto.MetricFamily, region string) {
	switch f.GetName() {
	case metricHTTPRequests:
		for _, m := range f.Metric {
			v := m.GetCounter().GetValue()
			s.Requests += v
			s.HasRequests = true
			if strings.HasPrefix(labelValue("", m, "code"), "5") {
				s.Errors += v
			}
		}
	case metricReplicationLag:
		// Every server exports every mirror's lag: one value per tenant
		// whose mirror is this region.
		seen := map[string]bool{}
		for _, m := range f.Metric {
			tenant := labelValue("", m, "tenant")
			if labelValue("", m, "mirror") != region || seen[tenant] {
				continue
			}
			seen[tenant] = true
			s.lags = append(s.lags, m.GetGauge().GetValue())
		}
	}
}

// lagP99 is the 99th percentile of the mirrors' lags (nearest rank), nil
// without any.
func (s *Summary) lagP99() *float64 {
	if len(s.lags) == 0 {
		return nil
	}
	l := append([]float64(nil), s.lags...)
	sort.Float64s(l)
	v := l[int(math.Ceil(0.99*float64(len(l))))-1]
	return &v
}

// Value names of a RegionSummary, as its Stale list names them.
const (
	ValueRequests = "requests_per_second"
	ValueErrors   = "errors_per_second"
	ValueLagP99   = "replication_lag_p99_seconds"
	// ValueBackupAge is stale when the region has no verified backup
	// within its policy's max age.
	ValueBackupAge = "backup_age_seconds"
)

// RegionSummary is a region's line in /global-status: its scrape, the
// request and error rates of its atomfed nodes (between its last two
// snapshots), its mirrors' replication lag p99, and which of these are
// stale (from a snapshot older than max_age) or unknown.
type RegionSummary struct {
	Region                   string   `json:"region"`
	Scrape                   string   `json:"scrape"`
	AgeSeconds               *float64 `json:"age_seconds,omitempty"`
	RequestsPerSecond        *float64 `json:"requests_per_second,omitempty"`
	ErrorsPerSecond          *float64 `json:"errors_per_second,omitempty"`
	ReplicationLagP99Seconds *float64 `json:"replication_lag_p99_seconds,omitempty"`
	// BackupAgeSeconds is the age of the region's newest verified backup,
	// from the backup catalog (the server fills it in: the catalog is
	// state, not metrics); absent while it has none.
	BackupAgeSeconds *float64 `json:"backup_age_seconds,omitempty"`
	// Stale names the values above that are stale or unknown.
	Stale []string `json:"stale"`
}

// Summaries returns every registered region's summary, sorted by region.
func Summaries(regions []string, snaps map[string]*Snapshot, now time.Time, maxAge time.Duration) []RegionSummary {
	out := make([]RegionSummary, 0, len(regions))
	for _, st := range Statuses(regions, snaps, now, maxAge) {
		rs := RegionSummary{Region: st.Region, Scrape: st.Status, AgeSeconds: st.AgeSeconds, Stale: []string{}}
		if s := snaps[st.Region]; s != nil {
			if dt := s.Received.Sub(s.prevAt).Seconds(); s.Info.Sum.HasRequests && s.prevOK && dt > 0 && s.Info.Sum.Requests >= s.prevRequests {
				req := (s.Info.Sum.Requests - s.prevRequests) / dt
				errs := math.Max(0, s.Info.Sum.Errors-s.prevErrors) / dt
				rs.RequestsPerSecond, rs.ErrorsPerSecond = &req, &errs
			}
			rs.ReplicationLagP99Seconds = s.Info.Sum.lagP99()
		}
		for name, v := range map[string]*float64{ValueRequests: rs.RequestsPerSecond, ValueErrors: rs.ErrorsPerSecond, ValueLagP99: rs.ReplicationLagP99Seconds} {
			if v == nil || st.Status != "ok" {
				rs.Stale = append(rs.Stale, name)
			}
		}
		sort.Strings(rs.Stale)
		out = append(out, rs)
	}
	return out
}
