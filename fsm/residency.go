package fsm

import "fmt"

// Residency (policy P1): a tenant's PII belongs to one region, its
// residency region (Tenant.ResidencyRegion). The FSM sets it to the home
// when the tenant is created and a switchover never changes it, so after a
// switchover the tenant is at home in a region that is not its residency
// region: a temporary home. What such a home accepts in the tenant's PII
// columns is the tenant's pii_while_away policy: PIIWhileAwayNullOnly (the
// default) makes its database refuse any value but NULL there (the
// promotion puts the guard in place, replication/pii_guard.go);
// PIIWhileAwayKeepLocal accepts the values, which stay in that region (the
// publications never carry PII columns), and is recorded in the audit chain
// as a residency exception.
//
// The rules a tenant write follows (under RulesTrustBound; before, both
// fields are dropped, as an older server would):
//   - at creation, residency_region defaults to the home and may only be
//     the home;
//   - left out of a later write, it keeps its value; a write that changes
//     the home of a tenant without tables (the only home change a write may
//     make) and names no residency moves it along, since such a tenant has
//     no replicated PII anywhere;
//   - a write may change it only to the home region of that write: the
//     tenant must be at home where its PII is to belong;
//   - pii_while_away may change only while the tenant is at home in its
//     residency region: the guard of a temporary home is put in place (or
//     not) when the promotion there runs.

// pii_while_away values.
const (
	PIIWhileAwayNullOnly  = "null_only"
	PIIWhileAwayKeepLocal = "keep_local"
)

// Error codes of the residency rules.
const (
	CodeInvalidResidency    = "invalid_residency_region"
	CodeResidencyNotHome    = "residency_not_home"
	CodeInvalidPIIWhileAway = "invalid_pii_while_away"
	CodeTenantAway          = "tenant_away"
)

// PIIPolicy returns the tenant's pii_while_away policy, the default when
// it is unset.
func (t *Tenant) PIIPolicy() string {
	if t.PIIWhileAway == "" {
		return PIIWhileAwayNullOnly
	}
	return t.PIIWhileAway
}

// Residency returns the tenant's residency region: the recorded one, or
// the home for a tenant created before residency was recorded.
func (t *Tenant) Residency() string {
	if t.ResidencyRegion == "" {
		return t.HomeRegion
	}
	return t.ResidencyRegion
}

// Away reports whether the tenant is at home in a region other than its
// residency region (a temporary home).
func (t *Tenant) Away() bool { return t.HomeRegion != t.Residency() }

// PIIGuard is what a promotion at a temporary home puts in place for the
// tenant's PII columns (PromoteSpec.PIIGuard): its database refuses any
// value but NULL in them, for the tenant's rows, with a message that
// names policy P1, the tenant and ResidencyRegion.
type PIIGuard struct {
	ResidencyRegion string `json:"residency_region"`
	Policy          string `json:"policy"`
}

// PIIGuardAt returns the guard a promotion of t at region must put in
// place, or nil: none when region is the residency region (there the
// guard of an earlier stay is lifted) or when the tenant keeps PII
// locally while away.
func PIIGuardAt(t *Tenant, region string) *PIIGuard {
	if t == nil || region == t.Residency() || t.PIIPolicy() != PIIWhileAwayNullOnly {
		return nil
	}
	return &PIIGuard{ResidencyRegion: t.Residency(), Policy: PIIWhileAwayNullOnly}
}

// validateResidency checks the residency fields of a tenant by themselves.
func validateResidency(t *Tenant) error {
	if t.ResidencyRegion != "" && !ValidRegionName(t.ResidencyRegion) {
		return invalidf(CodeInvalidResidency, "residency_region %q must be a region name (a DNS label)", t.ResidencyRegion)
	}
	switch t.PIIWhileAway {
	case "", PIIWhileAwayNullOnly, PIIWhileAwayKeepLocal:
		return nil
	}
	return invalidf(CodeInvalidPIIWhileAway, "pii_while_away %q must be %q (the default: a temporary home accepts only NULL in the PII columns) or %q (a temporary home keeps the values, a residency exception)",
		t.PIIWhileAway, PIIWhileAwayNullOnly, PIIWhileAwayKeepLocal)
}

// applyResidency sets t's residency fields from the write and old (nil at
// creation) under rules, and returns what the write changes of the
// residency exception for the audit chain ("" when nothing).
func applyResidency(old, t *Tenant, rules int) (string, error) {
	if rules < RulesTrustBound {
		t.ResidencyRegion, t.PIIWhileAway = "", ""
		if old != nil {
			t.ResidencyRegion, t.PIIWhileAway = old.ResidencyRegion, old.PIIWhileAway
		}
		return "", nil
	}
	if t.PIIWhileAway == PIIWhileAwayNullOnly {
		t.PIIWhileAway = "" // the default is stored as absent
	}
	named := t.ResidencyRegion != ""
	switch {
	case old == nil && !named:
		t.ResidencyRegion = t.HomeRegion
	case old != nil && !named && old.HomeRegion != t.HomeRegion:
		// Only a tenant without tables changes its home by a write
		// (HomeChangeCheck): its residency follows.
		t.ResidencyRegion = t.HomeRegion
	case old != nil && !named:
		t.ResidencyRegion = old.Residency()
	}
	if named && t.ResidencyRegion != t.HomeRegion && (old == nil || t.ResidencyRegion != old.Residency()) {
		return "", preconditionf(CodeResidencyNotHome, "residency_region %s is not the home of tenant %s (%s): a tenant's PII may only be made resident where it is at home; switch it over to %s first, or leave residency_region out to keep %s",
			t.ResidencyRegion, t.ID, t.HomeRegion, t.ResidencyRegion, residencyOf(old, t))
	}
	if old == nil {
		if t.PIIWhileAway == PIIWhileAwayKeepLocal {
			return residencyException(t), nil
		}
		return "", nil
	}
	if old.PIIPolicy() == t.PIIPolicy() {
		return "", nil
	}
	if old.Away() {
		return "", preconditionf(CodeTenantAway, "tenant %s is away from its residency region %s (at home in %s): pii_while_away can change only while it is at home there, since the guard of a temporary home is set when the promotion runs; switch it back to %s first",
			t.ID, old.Residency(), old.HomeRegion, old.Residency())
	}
	if t.PIIWhileAway == PIIWhileAwayKeepLocal {
		return residencyException(t), nil
	}
	return fmt.Sprintf("residency exception of tenant %s withdrawn: its PII stays in %s; a temporary home accepts only NULL in its PII columns (pii_while_away: %s)",
		t.ID, t.ResidencyRegion, PIIWhileAwayNullOnly), nil
}

func residencyOf(old, t *Tenant) string {
	if old != nil {
		return old.Residency()
	}
	return t.HomeRegion
}

func residencyException(t *Tenant) string {
	return fmt.Sprintf("residency exception: tenant %s (residency region %s) may keep PII at a temporary home outside %s (pii_while_away: %s)",
		t.ID, t.ResidencyRegion, t.ResidencyRegion, PIIWhileAwayKeepLocal)
}
