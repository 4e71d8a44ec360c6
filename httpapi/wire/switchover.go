package wire

import (
	"encoding/json"

	"github.com/atomcloud/atomfed/fsm"
)

// SwitchoverRequest is the body of POST /v1/tenants/{id}/switchover.
type SwitchoverRequest struct {
	// To is the mirror that becomes the tenant's home.
	To string `json:"to"`
	// TimeoutMS bounds fencing and catching up (default 30000): past it
	// the switchover rolls back and the old home takes writes again.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// MaxLagMS is the target's largest last reported replication lag
	// with which the switchover starts (default DefaultSwitchoverMaxLagMS).
	MaxLagMS *int64 `json:"max_lag_ms,omitempty"`
}

// Switchover lag budget bounds (max_lag_ms).
const (
	DefaultSwitchoverMaxLagMS = 10000
	MaxSwitchoverMaxLagMS     = 3600000
)

// SwitchoverStatus answers GET /v1/tenants/{id}/switchover (and the start
// and abort): the tenant's running or last switchover, whether it is
// still running, when its fencing and catch-up time out, and the tasks of
// its current phase as the agents report them.
type SwitchoverStatus struct {
	fsm.Switchover
	Active bool `json:"active"`
	// Deadline is when fencing and catching up time out (unix ns).
	Deadline int64            `json:"deadline"`
	Tasks    []SwitchoverTask `json:"tasks"`
}

// SwitchoverTask is one task of a switchover's current phase: a step
// (fence, catch-up, promote, detach) or, once committed, a hand-off
// subscriber of the new placement.
type SwitchoverTask struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Region     string          `json:"region"`
	Agent      string          `json:"agent,omitempty"`
	Status     string          `json:"status"`
	Error      string          `json:"error,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	ReportedAt int64           `json:"reported_at,omitempty"`
}
