package fsm

// Unplanned failover policy of a tenant (the failover itself is a
// Switchover of kind FailoverKind).

// Failover policy modes.
const (
	// FailoverManual: every failover of the tenant needs the "failover"
	// approval (m of n). The default.
	FailoverManual = "manual"
	// FailoverAuto: the leader fails the tenant over by itself when its
	// home region is down for the detection window and the best mirror
	// is within the RPO budget (and its region's last restore drill
	// passed within the policy window); otherwise it waits for an
	// approved failover and says why.
	FailoverAuto = "auto"
)

// MaxRPOBudgetMS bounds a failover policy's rpo_budget_ms (one day).
const MaxRPOBudgetMS = 86400000

// FailoverPolicy is a tenant's unplanned-failover policy.
type FailoverPolicy struct {
	// Mode is "manual" (the default when empty) or "auto".
	Mode string `json:"mode,omitempty"`
	// RPOBudgetMS is the most replication lag, in ms, the best mirror
	// may have for an automatic failover (0: only a mirror that reports
	// no lag).
	RPOBudgetMS int64 `json:"rpo_budget_ms,omitempty"`
}

// FailoverMode returns the tenant's failover mode ("manual" or "auto").
func (t *Tenant) FailoverMode() string {
	if t.Failover == nil || t.Failover.Mode == "" {
		return FailoverManual
	}
	return t.Failover.Mode
}

func validateFailoverPolicy(p *FailoverPolicy) error {
	if p == nil {
		return nil
	}
	switch p.Mode {
	case "", FailoverManual, FailoverAuto:
	default:
		return invalidf("invalid_failover_mode", "failover.mode %q must be %q (the default) or %q", p.Mode, FailoverManual, FailoverAuto)
	}
	if p.RPOBudgetMS < 0 || p.RPOBudgetMS > MaxRPOBudgetMS {
		return invalidf("invalid_rpo_budget", "failover.rpo_budget_ms %d must be between 0 and %d", p.RPOBudgetMS, MaxRPOBudgetMS)
	}
	return nil
}
