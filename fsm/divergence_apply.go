package fsm

import (
	"fmt"
	"maps"
	"slices"
)

// DivergenceRecord records what an old home's subscriber reported of its
// quarantined rows (the leader issues it from the task's result), or, with
// Resolve, a person's mark that the rows are reconciled (an operator's
// request; the counts are then left out).
type DivergenceRecord struct {
	Tenant        string `json:"tenant"`
	TenantCreated uint64 `json:"tenant_created,omitempty"`
	Region        string `json:"region"`
	Epoch         uint64 `json:"epoch,omitempty"`
	Failover      uint64 `json:"failover,omitempty"`

	Tables         map[string]int64 `json:"tables,omitempty"`
	Missing        int64            `json:"missing_at_new_home,omitempty"`
	RowsReconciled int64            `json:"rows_reconciled,omitempty"`
	Keys           []DivergentKey   `json:"keys,omitempty"`
	FoundAt        int64            `json:"found_at,omitempty"`

	Resolve     bool   `json:"resolve,omitempty"`
	Note        string `json:"note,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

// Codes of divergence refusals.
const (
	CodeNoDivergence        = "no_divergence"
	CodeDivergenceUnchanged = "divergence_unchanged"
)

func applyDivergenceRecord(s *State, e *Entry) (any, error) {
	cmd := body[DivergenceRecord](e)
	if cmd.Resolve {
		return resolveDivergence(s, e, cmd)
	}
	t := s.Tenants[cmd.Tenant]
	switch {
	case !ValidTenantID(cmd.Tenant):
		return nil, invalidf("invalid_tenant", "tenant %q is not a tenant id", cmd.Tenant)
	case t == nil:
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist", cmd.Tenant)
	case t.CreateIndex != cmd.TenantCreated:
		return nil, preconditionf("tenant_changed", "tenant %s was created at index %d, not %d", cmd.Tenant, t.CreateIndex, cmd.TenantCreated)
	case !ValidRegionName(cmd.Region):
		return nil, invalidf("invalid_region", "region %q is not a region name", cmd.Region)
	}
	d := &Divergence{Tenant: cmd.Tenant, TenantCreated: cmd.TenantCreated, Region: cmd.Region, Epoch: cmd.Epoch, Failover: cmd.Failover,
		Tables: cmd.Tables, Missing: cmd.Missing, RowsReconciled: cmd.RowsReconciled, Keys: cmd.Keys, FoundAt: cmd.FoundAt, CreateIndex: e.Index, ModifyIndex: e.Index}
	for _, n := range cmd.Tables {
		d.Total += n
	}
	if err := validateDivergence(d); err != nil {
		return nil, invalidf("invalid_divergence", "%v", err)
	}
	k := divergenceKey(cmd.Tenant, cmd.Region)
	if old := s.Divergences[k]; old != nil && old.TenantCreated == d.TenantCreated && old.Epoch == d.Epoch {
		if maps.Equal(old.Tables, d.Tables) && old.Missing == d.Missing && old.RowsReconciled == d.RowsReconciled && slices.Equal(old.Keys, d.Keys) {
			return nil, preconditionf(CodeDivergenceUnchanged, "tenant %s's divergence at %s is recorded already", cmd.Tenant, cmd.Region)
		}
		// The same return, counted again: keep when it was found and
		// whether a person resolved it.
		d.CreateIndex, d.FoundAt = old.CreateIndex, old.FoundAt
		d.ResolvedBy, d.ResolvedAt, d.ResolvedNote = old.ResolvedBy, old.ResolvedAt, old.ResolvedNote
	}
	s.Divergences[k] = d
	s.touch(TableDivergence, e.Index)
	s.auditNote = fmt.Sprintf("%d rows of tenant %s committed at %s after the failover are in quarantine at %s (atomfed_quarantine.divergent_rows, %d of them missing at the new home %s): reconcile them",
		d.Total, d.Tenant, d.Region, d.Region, d.Missing, t.HomeRegion)
	return d, nil
}

func resolveDivergence(s *State, e *Entry, cmd *DivergenceRecord) (any, error) {
	old := s.Divergences[divergenceKey(cmd.Tenant, cmd.Region)]
	t := s.Tenants[cmd.Tenant]
	switch {
	case len(cmd.Note) > maxDivergenceNote:
		return nil, invalidf("invalid_note", "note is longer than %d bytes", maxDivergenceNote)
	case t == nil:
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist", cmd.Tenant)
	case old == nil || old.TenantCreated != t.CreateIndex:
		return nil, notFoundf(CodeNoDivergence, "tenant %s has no quarantined rows recorded at region %q (GET /v1/tenants/%s/divergence lists them)", cmd.Tenant, cmd.Region, cmd.Tenant)
	case !old.Open():
		return nil, preconditionf("divergence_resolved", "tenant %s's quarantined rows at %s were marked reconciled by %s already", cmd.Tenant, cmd.Region, old.ResolvedBy)
	}
	d := *old
	d.ResolvedBy, d.ResolvedAt, d.ResolvedNote, d.ModifyIndex = orUnknown(cmd.RequestedBy), cmd.At, cmd.Note, e.Index
	s.Divergences[divergenceKey(d.Tenant, d.Region)] = &d
	s.touch(TableDivergence, e.Index)
	s.auditNote = fmt.Sprintf("%s marked the %d quarantined rows of tenant %s at %s reconciled", d.ResolvedBy, d.Total, d.Tenant, d.Region)
	if cmd.Note != "" {
		s.auditNote += ": " + cmd.Note
	}
	return &d, nil
}

func (d *Divergence) at() int64 {
	if d.ResolvedAt != 0 {
		return d.ResolvedAt
	}
	return d.FoundAt
}
