package wire

import (
	"encoding/json"

	"github.com/atomcloud/atomfed/fsm"
)

// FailoverRequest is the body of POST /v1/tenants/{id}/failover and
// POST /v1/regions/{name}/failover.
type FailoverRequest struct {
	// To is the mirror that becomes the tenant's home; left out, the
	// best mirror (for a sync tenant the most advanced one). Not allowed
	// for a region failover (each tenant goes to its best mirror).
	To string `json:"to,omitempty"`
	// Force fails over although the home region is not down (a drill).
	Force bool `json:"force,omitempty"`
	// MaxLagMS refuses a target whose last reported lag is larger.
	MaxLagMS *int64 `json:"max_lag_ms,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// FailoverStarted answers a failover request the policy does not gate
// (202): the failover of each tenant, started.
type FailoverStarted struct {
	Failovers []SwitchoverStatus `json:"failovers"`
	// Skipped are the tenants of a region failover left out, with why.
	Skipped []FailoverSkipped `json:"skipped,omitempty"`
}

// FailoverSkipped is a tenant a region failover leaves out.
type FailoverSkipped struct {
	Tenant string `json:"tenant"`
	Reason string `json:"reason"`
}

// FailoverAnswer is what a client reads from POST .../failover: the
// approval to vote on (the default policy gates failovers; the API
// answers the approval object itself, as for every gated request), or the
// failovers started (FailoverStarted).
type FailoverAnswer struct {
	Approval  *fsm.Approval      `json:"approval,omitempty"`
	Failovers []SwitchoverStatus `json:"failovers,omitempty"`
	Skipped   []FailoverSkipped  `json:"skipped,omitempty"`
}

// FailoverView answers GET /v1/tenants/{id}/failover: the tenant's
// failover policy, its home's health, what a failover would do now (the
// best mirror, its last reported lag, the data at risk and the drill
// precondition), what the automatic policy decides and why, and the last
// failover.
type FailoverView struct {
	Tenant     string             `json:"tenant"`
	Home       string             `json:"home"`
	HomeHealth string             `json:"home_health"`
	Policy     fsm.FailoverPolicy `json:"policy"`
	// Candidate is the mirror a failover would pick (absent: none can).
	Candidate *FailoverCandidate `json:"candidate,omitempty"`
	// Auto is the automatic policy's decision (auto tenants only).
	Auto *fsm.AutoDecision `json:"auto,omitempty"`
	// Hold is the wait the leader recorded in the audit chain (since when,
	// why), while an automatic failover waits with the home down.
	Hold *fsm.FailoverHoldState `json:"hold,omitempty"`
	// Last is the tenant's last failover, if its last move was one.
	Last *SwitchoverStatus `json:"last,omitempty"`
	// History are the tenant's finished failovers still kept.
	History []*fsm.FailoverRecord `json:"history"`
}

// FailoverCandidate is the best mirror of a tenant for a failover.
type FailoverCandidate struct {
	Region     string            `json:"region"`
	State      string            `json:"state"`
	LagMS      int64             `json:"lag_ms"`
	ReportedAt int64             `json:"reported_at,omitempty"`
	AppliedLSN string            `json:"applied_lsn,omitempty"`
	Risk       *fsm.FailoverRisk `json:"risk"`
	DataAtRisk string            `json:"data_at_risk"`
}

// FailoverHistory answers GET /v1/failovers.
type FailoverHistory struct {
	Failovers []*fsm.FailoverRecord `json:"failovers"`
}

// UnmarshalJSON reads either answer: the failovers started, or (a gated
// failover, answered like every gated request) the approval itself.
func (a *FailoverAnswer) UnmarshalJSON(b []byte) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(b, &probe); err != nil {
		return err
	}
	if _, ok := probe["failovers"]; ok {
		var s FailoverStarted
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		a.Failovers, a.Skipped = s.Failovers, s.Skipped
		return nil
	}
	var ap fsm.Approval
	if err := json.Unmarshal(b, &ap); err != nil {
		return err
	}
	a.Approval = &ap
	return nil
}
