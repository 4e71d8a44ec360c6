package fsm

import (
	"fmt"
	"slices"
	"sort"
)

// Region operations: maintenance and drain. An operator puts a region in
// maintenance (RegionMaintenanceSet): from then on no write places a
// tenant in it, as home or mirror, while the tenants already there stay.
// A drain puts the region in maintenance and switches every tenant homed
// there onto its best mirror, one at a time, with the planned switchover:
// the leader picks the next tenant and its target (cluster/leader_drain.go)
// and records it with a RegionDrainAdvance, whose apply starts that
// tenant's switchover in the same entry, so the drain's progress and the
// switchovers it started never disagree.

// TableRegionOps is the table of the regions' maintenance flags and drains.
const TableRegionOps = "region_ops"

// Drain states, of a drain and of each of its tenants.
const (
	DrainRunning = "running"
	DrainDone    = "done"    // every tenant moved
	DrainPartial = "partial" // ended with tenants that could not move
	DrainStopped = "stopped" // stopped by an operator

	DrainTenantPending   = "pending"
	DrainTenantSwitching = "switching"
	DrainTenantMoved     = "moved"
	DrainTenantFailed    = "failed"
	DrainTenantGone      = "gone" // deleted, or no longer homed in the region
)

// DrainedBy is the requested_by of the switchovers a drain of region
// starts.
func DrainedBy(region string) string { return "drain:" + region }

// Codes of the region operations' refusals.
const (
	CodeRegionInMaintenance = "region_in_maintenance"
	CodeDrainInProgress     = "drain_in_progress"
	CodeNoDrain             = "no_drain"
)

// NoMirrorReason is why a drained tenant without a mirror stays.
const NoMirrorReason = "cannot move: no mirror"

// RegionOps is a region's operational state: its maintenance flag and its
// running or last drain.
type RegionOps struct {
	Region      string `json:"region"`
	Maintenance bool   `json:"maintenance"`
	// MaintenanceBy and MaintenanceSince: who turned maintenance on, and
	// when (unix ns); kept while it is on.
	MaintenanceBy    string `json:"maintenance_by,omitempty"`
	MaintenanceSince int64  `json:"maintenance_since,omitempty"`
	Drain            *Drain `json:"drain,omitempty"`
	ModifyIndex      uint64 `json:"modify_index"`
}

// Drain is a region drain: the tenants homed in the region when it
// started, each moved onto its best mirror in turn.
type Drain struct {
	// ID is the index of the entry that started it.
	ID          uint64 `json:"id"`
	Region      string `json:"region"`
	State       string `json:"state"`
	RequestedBy string `json:"requested_by,omitempty"`
	// Tenants in the order the drain moves them (by id).
	Tenants []DrainTenant `json:"tenants"`
	// Current is the tenant whose switchover runs now ("" between two).
	Current   string `json:"current,omitempty"`
	StartedAt int64  `json:"started_at"`
	UpdatedAt int64  `json:"updated_at"`
	EndedAt   int64  `json:"ended_at,omitempty"`
	Reason    string `json:"reason,omitempty"` // why it was stopped
}

// DrainTenant is one tenant of a drain.
type DrainTenant struct {
	Tenant string `json:"tenant"`
	State  string `json:"state"`
	// To is the mirror it is switched to; Switchover the switchover's id.
	To         string `json:"to,omitempty"`
	Switchover uint64 `json:"switchover,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// Count returns how many of the drain's tenants are in state st.
func (d *Drain) Count(st string) int {
	n := 0
	for _, t := range d.Tenants {
		if t.State == st {
			n++
		}
	}
	return n
}

// Remaining returns how many tenants the drain has still to move (pending
// or switching).
func (d *Drain) Remaining() int { return d.Count(DrainTenantPending) + d.Count(DrainTenantSwitching) }

// Running reports whether the drain has not ended.
func (d *Drain) Running() bool { return d != nil && d.State == DrainRunning }

// tenant returns the drain's entry of tenant id, or nil.
func (d *Drain) tenant(id string) *DrainTenant {
	for i := range d.Tenants {
		if d.Tenants[i].Tenant == id {
			return &d.Tenants[i]
		}
	}
	return nil
}

// InMaintenance reports whether no new placement may go to region: an
// operator put it in maintenance (RegionMaintenanceSet, or a drain), or the
// region registered itself with status maintenance or draining.
func (s *State) InMaintenance(region string) bool {
	if o := s.RegionOps[region]; o != nil && o.Maintenance {
		return true
	}
	if r := s.Regions[region]; r != nil && (r.Status == RegionMaintenance || r.Status == RegionDraining) {
		return true
	}
	return false
}

// SortedRegionOps returns the regions' operational states by region.
func (s *State) SortedRegionOps() []*RegionOps {
	out := make([]*RegionOps, 0, len(s.RegionOps))
	for _, o := range s.RegionOps {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// RunningDrains returns the drains that have not ended, by region.
func (s *State) RunningDrains() []*Drain {
	var out []*Drain
	for _, o := range s.SortedRegionOps() {
		if o.Drain.Running() {
			out = append(out, o.Drain)
		}
	}
	return out
}

// placementMaintenanceCheck refuses a tenant write that places t in a
// region in maintenance where old did not have it (as home or mirror): new
// placements wait until maintenance is over, the ones there stay.
func placementMaintenanceCheck(s *State, old, t *Tenant) error {
	had := func(r string) bool {
		return old != nil && (old.HomeRegion == r || slices.Contains(old.Mirrors, r))
	}
	for _, r := range append([]string{t.HomeRegion}, t.Mirrors...) {
		if had(r) || !s.InMaintenance(r) {
			continue
		}
		role := "mirror"
		if r == t.HomeRegion {
			role = "home"
		}
		return preconditionf(CodeRegionInMaintenance, "region %s is in maintenance: no new tenant placement goes there (tenant %s as %s); choose another region, or wait until `atomfed region maintenance %s off`",
			r, t.ID, role, r)
	}
	return nil
}

// validateRegionOps checks a region's operational state read from a
// snapshot.
func validateRegionOps(o *RegionOps) error {
	if !ValidRegionName(o.Region) {
		return fmt.Errorf("region ops of an invalid region %q", o.Region)
	}
	d := o.Drain
	if d == nil {
		return nil
	}
	switch {
	case d.Region != o.Region:
		return fmt.Errorf("drain of region %s is filed under %s", d.Region, o.Region)
	case d.ID == 0:
		return fmt.Errorf("drain of region %s has no id", d.Region)
	case d.State != DrainRunning && d.State != DrainDone && d.State != DrainPartial && d.State != DrainStopped:
		return fmt.Errorf("drain of region %s: unknown state %q", d.Region, d.State)
	case d.State == DrainRunning && !o.Maintenance:
		return fmt.Errorf("drain of region %s runs while the region is not in maintenance", d.Region)
	}
	seen := map[string]bool{}
	switching := 0
	for _, t := range d.Tenants {
		switch {
		case !ValidTenantID(t.Tenant) || seen[t.Tenant]:
			return fmt.Errorf("drain of region %s: invalid or duplicate tenant %q", d.Region, t.Tenant)
		case t.State == DrainTenantSwitching:
			switching++
		case t.State != DrainTenantPending && t.State != DrainTenantMoved && t.State != DrainTenantFailed && t.State != DrainTenantGone:
			return fmt.Errorf("drain of region %s: tenant %s in unknown state %q", d.Region, t.Tenant, t.State)
		}
		seen[t.Tenant] = true
	}
	if switching > 1 || (switching == 1) != (d.Current != "") || d.Current != "" && !seen[d.Current] {
		return fmt.Errorf("drain of region %s: current tenant %q does not match its switching tenants", d.Region, d.Current)
	}
	return nil
}
