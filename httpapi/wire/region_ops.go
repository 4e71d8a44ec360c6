package wire

import "github.com/atomcloud/atomfed/fsm"

// MaintenanceRequest is the body of PUT /v1/regions/{name}/maintenance.
type MaintenanceRequest struct {
	// Maintenance is required: true stops new placements in the region,
	// false lets them in again.
	Maintenance *bool  `json:"maintenance"`
	Reason      string `json:"reason,omitempty"`
}

// RegionOpsStatus is a region's maintenance flag and its running or last
// drain (PUT .../maintenance, POST/GET/DELETE .../drain).
type RegionOpsStatus struct {
	Region      string `json:"region"`
	Maintenance bool   `json:"maintenance"`
	// MaintenanceBy and MaintenanceSince: who turned maintenance on, when
	// (unix ns).
	MaintenanceBy    string     `json:"maintenance_by,omitempty"`
	MaintenanceSince int64      `json:"maintenance_since,omitempty"`
	Drain            *fsm.Drain `json:"drain,omitempty"`
	// Counts of the drain's tenants (0 without a drain).
	Total     int `json:"total"`
	Moved     int `json:"moved"`
	Failed    int `json:"failed"`
	Remaining int `json:"remaining"`
	// Active: the drain has not ended.
	Active bool `json:"active"`
}
