package wire

import "github.com/atomcloud/atomfed/internal/metrics"

// MetricsRegions answers GET /v1/metrics/regions: each registered region's
// metrics scrape status on the server that answered.
type MetricsRegions struct {
	Regions       []metrics.RegionStatus `json:"regions"`
	MaxAgeSeconds float64                `json:"max_age_seconds"`
}
