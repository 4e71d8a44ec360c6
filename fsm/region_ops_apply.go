package fsm

import (
	"fmt"
	"slices"
)

// Drain actions of a RegionMaintenanceSet.
const (
	DrainStart = "start"
	DrainStop  = "stop"
)

// RegionMaintenanceSet turns a region's maintenance on or off (an
// operator's request), or starts or stops its drain (Drain "start" puts
// the region in maintenance too; "stop" leaves it in maintenance and lets
// the switchover running at that moment end on its own).
type RegionMaintenanceSet struct {
	Region      string `json:"region"`
	Maintenance bool   `json:"maintenance"`
	Drain       string `json:"drain,omitempty"`
	Reason      string `json:"reason,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

// Drain advance actions (RegionDrainAdvance.Action).
const (
	DrainActStart  = "start"  // start Tenant's switchover onto To
	DrainActMoved  = "moved"  // its switchover committed
	DrainActFailed = "failed" // it cannot move, or its switchover aborted
	DrainActGone   = "gone"   // deleted, or no longer homed in the region
)

// RegionDrainAdvance records a drain's next step (the leader issues it):
// start the switchover of the next tenant, or record how the current
// one ended. It applies only to the running drain ID of Region.
type RegionDrainAdvance struct {
	Region string `json:"region"`
	ID     uint64 `json:"id"`
	Tenant string `json:"tenant"`
	Action string `json:"action"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
	At     int64  `json:"at"`
}

// RegionMaintenanceCheck is what a RegionMaintenanceSet is refused for,
// checked against s: the API runs it before logging, the FSM at apply.
func RegionMaintenanceCheck(s *State, cmd *RegionMaintenanceSet) error {
	if !ValidRegionName(cmd.Region) {
		return invalidf("invalid_region", "region %q must be a region name (a DNS label)", cmd.Region)
	}
	if s.Regions[cmd.Region] == nil {
		return notFoundf("region_not_found", "region %q is not registered", cmd.Region)
	}
	if len(cmd.Reason) > 512 {
		return invalidf("invalid_reason", "reason is longer than 512 bytes")
	}
	var d *Drain
	if o := s.RegionOps[cmd.Region]; o != nil {
		d = o.Drain
	}
	switch cmd.Drain {
	case "":
		if !cmd.Maintenance && d.Running() {
			return preconditionf(CodeDrainInProgress, "region %s is being drained (%d of %d tenants left): stop the drain first (`atomfed region drain %s --stop`), then turn maintenance off",
				cmd.Region, d.Remaining(), len(d.Tenants), cmd.Region)
		}
	case DrainStart:
		if d.Running() {
			return preconditionf(CodeDrainInProgress, "region %s is already being drained (started at index %d by %s, %d of %d tenants left): follow it with `atomfed region drain %s --status`",
				cmd.Region, d.ID, orUnknown(d.RequestedBy), d.Remaining(), len(d.Tenants), cmd.Region)
		}
	case DrainStop:
		if !d.Running() {
			return notFoundf(CodeNoDrain, "region %s has no drain running", cmd.Region)
		}
	default:
		return invalidf("invalid_drain", "drain %q must be %q or %q", cmd.Drain, DrainStart, DrainStop)
	}
	return nil
}

func applyRegionMaintenanceSet(s *State, e *Entry) (any, error) {
	cmd := body[RegionMaintenanceSet](e)
	if err := RegionMaintenanceCheck(s, cmd); err != nil {
		return nil, err
	}
	o := RegionOps{Region: cmd.Region}
	if old := s.RegionOps[cmd.Region]; old != nil {
		o = *old
	}
	o.ModifyIndex = e.Index
	by := orUnknown(cmd.RequestedBy)
	switch cmd.Drain {
	case "":
		if cmd.Maintenance && !o.Maintenance {
			o.MaintenanceBy, o.MaintenanceSince = cmd.RequestedBy, cmd.At
		}
		if !cmd.Maintenance {
			o.MaintenanceBy, o.MaintenanceSince = "", 0
		}
		o.Maintenance = cmd.Maintenance
		state := "off"
		if cmd.Maintenance {
			state = "on"
		}
		s.auditNote = fmt.Sprintf("region %s maintenance %s by %s", cmd.Region, state, by)
	case DrainStart:
		if !o.Maintenance {
			o.Maintenance, o.MaintenanceBy, o.MaintenanceSince = true, cmd.RequestedBy, cmd.At
		}
		d := &Drain{ID: e.Index, Region: cmd.Region, State: DrainRunning, RequestedBy: cmd.RequestedBy, StartedAt: cmd.At, UpdatedAt: cmd.At}
		for _, t := range s.SortedTenants() {
			if t.HomeRegion != cmd.Region {
				continue
			}
			dt := DrainTenant{Tenant: t.ID, State: DrainTenantPending}
			if len(t.Mirrors) == 0 {
				dt.State, dt.Reason = DrainTenantFailed, NoMirrorReason
			}
			d.Tenants = append(d.Tenants, dt)
		}
		endIfDrained(d, cmd.At)
		o.Drain = d
		s.auditNote = fmt.Sprintf("region %s drain started by %s (%d tenants homed there; maintenance on)", cmd.Region, by, len(d.Tenants))
	case DrainStop:
		d := *o.Drain
		d.State, d.Reason, d.UpdatedAt, d.EndedAt = DrainStopped, "stopped by "+by, cmd.At, cmd.At
		if cmd.Reason != "" {
			d.Reason += ": " + cmd.Reason
		}
		o.Drain = &d
		s.auditNote = fmt.Sprintf("region %s drain stopped by %s (%d of %d tenants moved)", cmd.Region, by, d.Count(DrainTenantMoved), len(d.Tenants))
	}
	s.RegionOps[cmd.Region] = &o
	s.touch(TableRegionOps, e.Index)
	return &o, nil
}

// endIfDrained ends d once none of its tenants is left to move.
func endIfDrained(d *Drain, at int64) {
	if d.Remaining() > 0 {
		return
	}
	d.State, d.EndedAt, d.Current = DrainDone, at, ""
	if d.Count(DrainTenantFailed) > 0 {
		d.State = DrainPartial
	}
}

func applyRegionDrainAdvance(s *State, e *Entry) (any, error) {
	cmd := body[RegionDrainAdvance](e)
	o := s.RegionOps[cmd.Region]
	if o == nil || o.Drain == nil || o.Drain.ID != cmd.ID || !o.Drain.Running() {
		return nil, preconditionf("drain_changed", "region %s has no running drain %d", cmd.Region, cmd.ID)
	}
	if len(cmd.Reason) > 1024 {
		return nil, invalidf("invalid_reason", "reason is longer than 1024 bytes")
	}
	d := *o.Drain
	d.Tenants = slices.Clone(o.Drain.Tenants)
	dt := d.tenant(cmd.Tenant)
	switch {
	case dt == nil:
		return nil, preconditionf("drain_changed", "tenant %q is not part of region %s's drain", cmd.Tenant, cmd.Region)
	case cmd.Action == DrainActStart && (dt.State != DrainTenantPending || d.Current != ""):
		return nil, preconditionf("drain_changed", "drain of %s: tenant %s is %s (current %q), not the next to start", cmd.Region, cmd.Tenant, dt.State, d.Current)
	case cmd.Action == DrainActMoved && dt.State != DrainTenantSwitching:
		return nil, preconditionf("drain_changed", "drain of %s: tenant %s is %s, not switching", cmd.Region, cmd.Tenant, dt.State)
	case (cmd.Action == DrainActFailed || cmd.Action == DrainActGone) && dt.State != DrainTenantSwitching && dt.State != DrainTenantPending:
		return nil, preconditionf("drain_changed", "drain of %s: tenant %s has already ended (%s)", cmd.Region, cmd.Tenant, dt.State)
	}
	switch cmd.Action {
	case DrainActStart:
		sc := SwitchoverStart{Tenant: cmd.Tenant, To: cmd.To, RequestedBy: DrainedBy(cmd.Region), At: cmd.At}
		err := SwitchoverStartCheck(s, &sc)
		if err == nil && s.InMaintenance(cmd.To) {
			err = preconditionf(CodeRegionInMaintenance, "region %s is in maintenance", cmd.To)
		}
		if err != nil {
			// Recorded, not refused: the drain goes on with the next tenant.
			dt.State, dt.To, dt.Reason = DrainTenantFailed, cmd.To, "cannot move to "+cmd.To+": "+errMessage(err)
			s.auditNote = fmt.Sprintf("region %s drain: tenant %s cannot move to %s", cmd.Region, cmd.Tenant, cmd.To)
			break
		}
		w := startSwitchover(s, e, &sc)
		s.touch(TableSwitchovers, e.Index)
		dt.State, dt.To, dt.Switchover, dt.Reason = DrainTenantSwitching, cmd.To, w.ID, ""
		d.Current = cmd.Tenant
		s.auditNote = fmt.Sprintf("region %s drain: %s", cmd.Region, s.auditNote)
	case DrainActMoved, DrainActFailed, DrainActGone:
		st := map[string]string{DrainActMoved: DrainTenantMoved, DrainActFailed: DrainTenantFailed, DrainActGone: DrainTenantGone}[cmd.Action]
		dt.State, dt.Reason = st, cmd.Reason
		if d.Current == cmd.Tenant {
			d.Current = ""
		}
		if cmd.Action == DrainActFailed {
			s.auditNote = fmt.Sprintf("region %s drain: tenant %s failed to move: %s", cmd.Region, cmd.Tenant, cmd.Reason)
		}
	default:
		return nil, invalidf("invalid_action", "drain action %q must be %s, %s, %s or %s", cmd.Action, DrainActStart, DrainActMoved, DrainActFailed, DrainActGone)
	}
	d.UpdatedAt = cmd.At
	endIfDrained(&d, cmd.At)
	if d.State != DrainRunning {
		s.auditNote = fmt.Sprintf("region %s drain ended %s: %d moved, %d could not move of %d", cmd.Region, d.State, d.Count(DrainTenantMoved), d.Count(DrainTenantFailed), len(d.Tenants))
	}
	no := *o
	no.Drain, no.ModifyIndex = &d, e.Index
	s.RegionOps[cmd.Region] = &no
	s.touch(TableRegionOps, e.Index)
	return &no, nil
}

// errMessage is err's message without the code (an *Error's Message).
func errMessage(err error) string {
	if fe, ok := err.(*Error); ok {
		return fe.Message
	}
	return err.Error()
}

// readRegionOpsSnapshot restores the regions' operational states of a
// snapshot.
func readRegionOpsSnapshot(doc *snapshotDoc, s *State) error {
	for _, o := range doc.RegionOps {
		if o == nil {
			return fmt.Errorf("snapshot holds a null region ops record")
		}
		if err := validateRegionOps(o); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		if s.RegionOps[o.Region] != nil {
			return fmt.Errorf("snapshot holds two records of region %s's operations", o.Region)
		}
		s.RegionOps[o.Region] = o
	}
	return nil
}
