package fsm

import (
	"fmt"
	"slices"
	"sort"
)

// A planned switchover moves a replicated tenant's home onto one of its
// mirrors without losing a row: fence the old home, wait until the mirrors
// have applied everything up to the fence, promote the target, then commit
// the new home and epoch in one entry (routing flips at that index). Each
// phase is derived into database steps (switchover_tasks.go) that agents
// run; the leader records each step's outcome with a SwitchoverAdvance,
// which compares the phase it expects, so a duplicate or late advance
// changes nothing. Before the promotion starts a switchover can roll back
// (lift the fence); from then on it only goes forward.

// TableSwitchovers is the table of the tenants' switchovers.
const TableSwitchovers = "switchovers"

// SwitchoverKind is the kind of a planned switchover; FailoverKind that of
// an unplanned failover (failover.go): the old home is presumed lost, so
// there is no fence and no catch-up, the record starts at promoting.
const (
	SwitchoverKind = "switchover"
	FailoverKind   = "failover"
)

// Phases of a switchover.
const (
	PhaseFencing     = "fencing"
	PhaseCatchingUp  = "catching_up"
	PhasePromoting   = "promoting"
	PhaseCommitted   = "committed"
	PhaseDone        = "done"
	PhaseRollingBack = "rolling_back"
	PhaseAborted     = "aborted"
)

// Switchover timeouts: how long fencing and catching up may take before the
// switchover rolls back (the request's timeout_ms).
const (
	DefaultSwitchoverTimeoutMS = 30000
	MinSwitchoverTimeoutMS     = 1000
	MaxSwitchoverTimeoutMS     = 3600000
)

// Codes of switchover refusals.
const (
	CodeSwitchoverInProgress = "switchover_in_progress"
	CodeNotAMirror           = "not_a_mirror"
	CodeSwitchoverNoop       = "switchover_noop"
	CodeNotReplicated        = "not_replicated"
	CodeNotAbortable         = "switchover_not_abortable"
	CodeNoSwitchover         = "no_switchover"
)

// switchoverNext are the phase changes a SwitchoverAdvance may make.
var switchoverNext = map[string][]string{
	PhaseFencing:     {PhaseCatchingUp, PhaseRollingBack},
	PhaseCatchingUp:  {PhasePromoting, PhaseRollingBack},
	PhasePromoting:   {PhaseCommitted},
	PhaseCommitted:   {PhaseDone},
	PhaseRollingBack: {PhaseAborted},
}

// SwitchoverStep is one phase a switchover entered.
type SwitchoverStep struct {
	Phase  string `json:"phase"`
	At     int64  `json:"at"` // leader clock, unix ns
	Index  uint64 `json:"index"`
	Detail string `json:"detail,omitempty"`
}

// Switchover is a tenant's switchover, the running one or the last one
// (kept after it ends, as its history).
type Switchover struct {
	// ID is the index of the entry that started it.
	ID     uint64 `json:"id"`
	Tenant string `json:"tenant"`
	Kind   string `json:"kind"`
	// From is the home at the start, To the mirror that becomes the home,
	// Others the tenant's other mirrors, which follow the new home.
	From   string   `json:"from"`
	To     string   `json:"to"`
	Others []string `json:"others,omitempty"`
	// FormerHomes are the other mirrors that are former homes of the
	// tenant (their subscriber keeps the PII written while they were its
	// home): they follow the new home as former homes again, never as
	// plain mirrors, which would clear that PII.
	FormerHomes []string `json:"former_homes,omitempty"`
	// TenantCreated is the tenant's incarnation; FromEpoch its epoch at
	// the start and NewEpoch the one the commit gives it.
	TenantCreated uint64 `json:"tenant_created"`
	FromEpoch     uint64 `json:"from_epoch"`
	NewEpoch      uint64 `json:"new_epoch"`
	Phase         string `json:"phase"`
	// FencedLSN is the old home's WAL position with the fence in place;
	// PII the home's PII column types (from the fence step).
	FencedLSN string          `json:"fenced_lsn,omitempty"`
	PII       []PIIColumnType `json:"pii,omitempty"`
	// Slots are the hand-off slots the promotion made at the new home,
	// region to the slot's consistent LSN.
	Slots       map[string]string `json:"slots,omitempty"`
	Steps       []SwitchoverStep  `json:"steps"`
	RequestedBy string            `json:"requested_by,omitempty"`
	// TimeoutMS bounds fencing and catching up, from StartedAt: past it
	// the switchover rolls back.
	TimeoutMS int64 `json:"timeout_ms"`
	StartedAt int64 `json:"started_at"`
	UpdatedAt int64 `json:"updated_at"`
	EndedAt   int64 `json:"ended_at,omitempty"`
	// Outcome is "done" or "aborted" once it ended; Error says why it
	// rolled back.
	Outcome string `json:"outcome,omitempty"`
	Error   string `json:"error,omitempty"`
	// Failover only (Kind failover): Mode is "manual" (approved) or
	// "auto" (the leader's automatic policy); Forced that it ran while
	// the old home was up (a drill); Risk the data at risk as the target
	// last reported it at the start; AppliedLSN the old home's position
	// the target had applied when the promotion detached it (exact).
	Mode        string        `json:"mode,omitempty"`
	Forced      bool          `json:"forced,omitempty"`
	Risk        *FailoverRisk `json:"risk,omitempty"`
	AppliedLSN  string        `json:"applied_lsn,omitempty"`
	ModifyIndex uint64        `json:"modify_index"`
}

// Active reports whether the switchover has not ended.
func (w *Switchover) Active() bool { return w.Phase != PhaseDone && w.Phase != PhaseAborted }

// InFlight reports whether the tenant's placement is held by the
// switchover: from the fence until the commit, or until the fence is
// lifted again. Writes of the tenant are refused (the old home is
// fenced), and so are changes of its placement.
func (w *Switchover) InFlight() bool {
	switch w.Phase {
	case PhaseFencing, PhaseCatchingUp, PhasePromoting, PhaseRollingBack:
		return true
	}
	return false
}

// Promoted reports whether the switchover reached the promotion: it can no
// longer roll back, and the target no longer follows the old home.
func (w *Switchover) Promoted() bool {
	switch w.Phase {
	case PhasePromoting, PhaseCommitted, PhaseDone:
		return true
	}
	return false
}

// Deadline is when fencing and catching up time out (leader clock, unix ns).
func (w *Switchover) Deadline() int64 { return w.StartedAt + w.TimeoutMS*1e6 }

// HandOff are the regions that subscribe to the new home from a slot the
// promotion makes there: the old home, then the other mirrors.
// A failover makes none: the old home is lost and the other mirrors copy
// the tenant afresh from the new home.
func (w *Switchover) HandOff() []string {
	if w.Kind == FailoverKind {
		return nil
	}
	return append([]string{w.From}, w.Others...)
}

// Switchover returns the tenant's running or last switchover, or nil.
func (s *State) Switchover(tenant string) *Switchover { return s.Switchovers[tenant] }

// SwitchoverInFlight returns the tenant's switchover if it holds the
// tenant's placement (InFlight).
func (s *State) SwitchoverInFlight(tenant string) *Switchover {
	if w := s.Switchovers[tenant]; w != nil && w.InFlight() {
		return w
	}
	return nil
}

// SortedSwitchovers returns the switchovers ordered by tenant.
func (s *State) SortedSwitchovers() []*Switchover {
	out := make([]*Switchover, 0, len(s.Switchovers))
	for _, w := range s.Switchovers {
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out
}

// switchoverHold refuses a write of tenant id's placement (upsert, patch,
// delete) while a switchover holds it.
func switchoverHold(s *State, id string) error {
	w := s.Switchovers[id]
	if w == nil || !w.InFlight() {
		return nil
	}
	return preconditionf(CodeSwitchoverInProgress,
		"tenant %s is switching over from %s to %s (phase %s): its placement cannot change until the switchover ends; "+
			"follow it with `atomfed tenant switchover-status %s` (GET /v1/tenants/%s/switchover)%s",
		id, w.From, w.To, w.Phase, id, id, abortHint(w))
}

func abortHint(w *Switchover) string {
	if w.Phase == PhaseFencing || w.Phase == PhaseCatchingUp {
		return fmt.Sprintf(", or abort it with `atomfed tenant switchover-abort %s`", w.Tenant)
	}
	return ""
}

// validateSwitchover checks a switchover read from a snapshot.
func validateSwitchover(w *Switchover) error {
	_, known := switchoverNext[w.Phase]
	switch {
	case w.ID == 0 || !ValidTenantID(w.Tenant) || (w.Kind != SwitchoverKind && w.Kind != FailoverKind):
		return fmt.Errorf("switchover of %q: bad id, tenant or kind", w.Tenant)
	case !ValidRegionName(w.From) || !ValidRegionName(w.To) || w.From == w.To:
		return fmt.Errorf("switchover of %s: bad regions %q -> %q", w.Tenant, w.From, w.To)
	case !known && w.Phase != PhaseDone && w.Phase != PhaseAborted:
		return fmt.Errorf("switchover of %s: unknown phase %q", w.Tenant, w.Phase)
	case w.NewEpoch != w.FromEpoch+1:
		return fmt.Errorf("switchover of %s: new epoch %d does not follow %d", w.Tenant, w.NewEpoch, w.FromEpoch)
	case len(w.Steps) == 0:
		return fmt.Errorf("switchover of %s: no steps", w.Tenant)
	case w.Kind == FailoverKind && (w.Phase == PhaseFencing || w.Phase == PhaseCatchingUp || w.Phase == PhaseRollingBack || w.Phase == PhaseAborted):
		return fmt.Errorf("failover of %s: phase %s is not a failover's", w.Tenant, w.Phase)
	case w.Kind == FailoverKind && w.Mode != FailoverManual && w.Mode != FailoverAuto:
		return fmt.Errorf("failover of %s: unknown mode %q", w.Tenant, w.Mode)
	case w.AppliedLSN != "" && !validLSN(w.AppliedLSN):
		return fmt.Errorf("switchover of %s: bad applied LSN %q", w.Tenant, w.AppliedLSN)
	}
	for _, o := range w.Others {
		if !ValidRegionName(o) || o == w.From || o == w.To {
			return fmt.Errorf("switchover of %s: bad other mirror %q", w.Tenant, o)
		}
	}
	for _, o := range w.FormerHomes {
		if !slices.Contains(w.Others, o) {
			return fmt.Errorf("switchover of %s: former home %q is not one of the other mirrors", w.Tenant, o)
		}
	}
	return nil
}

// nextPhaseAllowed reports whether a switchover may move from one phase to
// another.
func nextPhaseAllowed(from, to string) bool { return slices.Contains(switchoverNext[from], to) }

func (w *Switchover) at() int64 { return w.UpdatedAt }
