package fsm

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// SwitchoverStart starts the planned switchover of a tenant's home onto
// one of its mirrors (an operator's request).
type SwitchoverStart struct {
	Tenant string `json:"tenant"`
	To     string `json:"to"`
	// TimeoutMS bounds fencing and catching up (0: the default).
	TimeoutMS   int64  `json:"timeout_ms,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

// SwitchoverAdvance moves a switchover to its next phase with the data of
// the step that ended (the leader issues it from the steps' results). It
// applies only while the switchover is ID and in phase From: a duplicate
// or late advance is refused and changes nothing.
type SwitchoverAdvance struct {
	Tenant string `json:"tenant"`
	ID     uint64 `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	// FencedLSN and PII: the fence step's result (to catching_up).
	FencedLSN string          `json:"fenced_lsn,omitempty"`
	PII       []PIIColumnType `json:"pii,omitempty"`
	// Slots: the promotion's hand-off slots (to committed).
	Slots map[string]string `json:"slots,omitempty"`
	// AppliedLSN: a failover's promotion's applied position (to
	// committed).
	AppliedLSN string `json:"applied_lsn,omitempty"`
	Detail     string `json:"detail,omitempty"`
	At         int64  `json:"at"`
}

// SwitchoverAbort rolls a switchover back (an operator's request); refused
// once the promotion started.
type SwitchoverAbort struct {
	Tenant      string `json:"tenant"`
	Reason      string `json:"reason,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

// SwitchoverStartCheck is what a SwitchoverStart is refused for, checked
// against s: the API runs it before logging, the FSM again at apply.
func SwitchoverStartCheck(s *State, cmd *SwitchoverStart) error {
	t := s.Tenants[cmd.Tenant]
	switch {
	case !ValidTenantID(cmd.Tenant):
		return invalidf("invalid_tenant", "tenant %q is not a tenant id", cmd.Tenant)
	case t == nil:
		return notFoundf("tenant_not_found", "tenant %q does not exist", cmd.Tenant)
	case cmd.To == "":
		return invalidf("missing_to", "give the region to switch tenant %s over to: {\"to\": \"<one of its mirrors>\"}", cmd.Tenant)
	case !ValidRegionName(cmd.To):
		return invalidf("invalid_region", "to %q must be a region name (a DNS label)", cmd.To)
	case s.Regions[cmd.To] == nil:
		return invalidf("unknown_region", "region %q is not registered: switch tenant %s over to one of its mirrors (%s)", cmd.To, cmd.Tenant, mirrorList(t))
	case cmd.TimeoutMS != 0 && (cmd.TimeoutMS < MinSwitchoverTimeoutMS || cmd.TimeoutMS > MaxSwitchoverTimeoutMS):
		return invalidf("invalid_timeout", "timeout_ms %d must be between %d and %d (or left out for %d)", cmd.TimeoutMS, MinSwitchoverTimeoutMS, MaxSwitchoverTimeoutMS, DefaultSwitchoverTimeoutMS)
	}
	// A committed switchover does not hold the tenant: the next one may
	// start while its hand-off subscribers are still setting up (one that
	// never streams, its region lost, must not stop the tenant from moving
	// on); it replaces the record.
	if w := s.SwitchoverInFlight(cmd.Tenant); w != nil {
		return preconditionf(CodeSwitchoverInProgress, "tenant %s is already switching over from %s to %s (phase %s, started at index %d): wait for it to end (`atomfed tenant switchover-status %s`)%s",
			cmd.Tenant, w.From, w.To, w.Phase, w.ID, cmd.Tenant, abortHint(w))
	}
	switch {
	case t.HomeRegion == cmd.To:
		return invalidf(CodeSwitchoverNoop, "region %s is already the home of tenant %s: nothing to switch over", cmd.To, cmd.Tenant)
	case !slices.Contains(t.Mirrors, cmd.To):
		return preconditionf(CodeNotAMirror, "region %s does not mirror tenant %s (its mirrors: %s): a switchover moves the home onto a caught-up mirror; add %s to the mirrors first and wait until it streams",
			cmd.To, cmd.Tenant, mirrorList(t), cmd.To)
	case len(t.Tables) == 0:
		return preconditionf(CodeNotReplicated, "tenant %s has no tables, so nothing of it is replicated: change its home_region with PATCH /v1/tenants/%s instead", cmd.Tenant, cmd.Tenant)
	case s.Regions[t.HomeRegion] == nil:
		return preconditionf("unknown_region", "the home region %s of tenant %s is not registered", t.HomeRegion, cmd.Tenant)
	}
	return nil
}

func mirrorList(t *Tenant) string {
	if len(t.Mirrors) == 0 {
		return "none"
	}
	return strings.Join(t.Mirrors, ", ")
}

func applySwitchoverStart(s *State, e *Entry) (any, error) {
	cmd := body[SwitchoverStart](e)
	if err := SwitchoverStartCheck(s, cmd); err != nil {
		return nil, err
	}
	t := s.Tenants[cmd.Tenant]
	timeout := cmd.TimeoutMS
	if timeout == 0 {
		timeout = DefaultSwitchoverTimeoutMS
	}
	var others, former []string
	for _, m := range t.Mirrors {
		if m == cmd.To {
			continue
		}
		others = append(others, m)
		if isFormerHomeSubscriber(s.Tasks[TenantSubscriberTaskID(t.ID, m)]) {
			former = append(former, m)
		}
	}
	w := &Switchover{
		ID: e.Index, Tenant: t.ID, Kind: SwitchoverKind, From: t.HomeRegion, To: cmd.To, Others: others, FormerHomes: former,
		TenantCreated: t.CreateIndex, FromEpoch: t.Epoch, NewEpoch: t.Epoch + 1, Phase: PhaseFencing,
		Steps:       []SwitchoverStep{{Phase: PhaseFencing, At: cmd.At, Index: e.Index, Detail: "fencing the tenant's writes at " + t.HomeRegion}},
		RequestedBy: cmd.RequestedBy, TimeoutMS: timeout, StartedAt: cmd.At, UpdatedAt: cmd.At, ModifyIndex: e.Index,
	}
	s.Switchovers[t.ID] = w
	s.touch(TableSwitchovers, e.Index)
	s.auditNote = fmt.Sprintf("switchover of tenant %s from %s to %s started (epoch %d -> %d)", t.ID, w.From, w.To, w.FromEpoch, w.NewEpoch)
	return w, nil
}

func applySwitchoverAdvance(s *State, e *Entry) (any, error) {
	cmd := body[SwitchoverAdvance](e)
	old := s.Switchovers[cmd.Tenant]
	switch {
	case old == nil:
		return nil, notFoundf(CodeNoSwitchover, "tenant %q has no switchover", cmd.Tenant)
	case old.ID != cmd.ID:
		return nil, preconditionf("switchover_changed", "tenant %s's switchover is %d, not %d", cmd.Tenant, old.ID, cmd.ID)
	case old.Phase != cmd.From:
		return nil, preconditionf("switchover_changed", "tenant %s's switchover is at %s, not %s", cmd.Tenant, old.Phase, cmd.From)
	case !nextPhaseAllowed(cmd.From, cmd.To):
		return nil, invalidf("invalid_phase", "a switchover does not go from %s to %s", cmd.From, cmd.To)
	case cmd.To == PhaseCatchingUp && !validLSN(cmd.FencedLSN):
		return nil, invalidf("invalid_lsn", "fenced LSN %q is not a PostgreSQL LSN", cmd.FencedLSN)
	case len(cmd.Detail) > 1024:
		return nil, invalidf("invalid_detail", "detail is longer than 1024 bytes")
	case cmd.AppliedLSN != "" && !validLSN(cmd.AppliedLSN):
		return nil, invalidf("invalid_lsn", "applied LSN %q is not a PostgreSQL LSN", cmd.AppliedLSN)
	}
	w := *old
	w.Steps = append(slices.Clone(old.Steps), SwitchoverStep{Phase: cmd.To, At: cmd.At, Index: e.Index, Detail: cmd.Detail})
	w.Phase, w.UpdatedAt, w.ModifyIndex = cmd.To, cmd.At, e.Index
	switch cmd.To {
	case PhaseCatchingUp:
		w.FencedLSN, w.PII = cmd.FencedLSN, cmd.PII
	case PhaseRollingBack:
		w.Error = cmd.Detail
	case PhaseCommitted:
		if err := commitSwitchover(s, e, &w, cmd); err != nil {
			return nil, err
		}
	case PhaseDone, PhaseAborted:
		w.Outcome, w.EndedAt = cmd.To, cmd.At
		s.auditNote = fmt.Sprintf("%s of tenant %s from %s to %s %s", w.Kind, w.Tenant, w.From, w.To, cmd.To)
		if w.Kind == FailoverKind {
			recordFailover(s, e, &w)
		}
	}
	s.Switchovers[w.Tenant] = &w
	s.touch(TableSwitchovers, e.Index)
	return &w, nil
}

// commitSwitchover makes the target the tenant's home in this entry: home
// To, mirrors the others and the old home, the next epoch.
func commitSwitchover(s *State, e *Entry, w *Switchover, cmd *SwitchoverAdvance) error {
	t := s.Tenants[w.Tenant]
	switch {
	case t == nil || t.CreateIndex != w.TenantCreated:
		return preconditionf("tenant_changed", "tenant %s is not the one the switchover started with", w.Tenant)
	case t.HomeRegion != w.From || t.Epoch != w.FromEpoch:
		return preconditionf("tenant_changed", "tenant %s's placement changed during its switchover (home %s epoch %d)", w.Tenant, t.HomeRegion, t.Epoch)
	}
	for _, r := range w.HandOff() { // none for a failover
		if _, ok := cmd.Slots[r]; !ok {
			return invalidf("missing_slot", "the promotion reports no hand-off slot for %s", r)
		}
	}
	nt := *t
	nt.HomeRegion = w.To
	nt.Mirrors = nil
	for _, m := range t.Mirrors {
		if m == w.To {
			m = w.From
		}
		nt.Mirrors = append(nt.Mirrors, m)
	}
	slices.Sort(nt.Mirrors) // as NormalizeTenant keeps them
	nt.Epoch, nt.ModifyIndex, nt.UpdatedAt = w.NewEpoch, e.Index, cmd.At
	s.Tenants[nt.ID] = &nt
	s.indexTenant(nt.ID)
	s.touch(TableTenants, e.Index)
	w.Slots = cmd.Slots
	if w.Kind == FailoverKind {
		w.AppliedLSN = cmd.AppliedLSN
		s.auditNote = fmt.Sprintf("tenant %s failed over (%s%s): home %s -> %s, epoch %d -> %d, old home not fenced (presumed lost); %s had applied up to LSN %s of %s",
			w.Tenant, w.Mode, forcedNote(w.Forced), w.From, w.To, w.FromEpoch, w.NewEpoch, w.To, orUnknownLSN(w.AppliedLSN), w.From)
		return nil
	}
	s.auditNote = fmt.Sprintf("tenant %s switched over: home %s -> %s, epoch %d -> %d, old home fenced at LSN %s",
		w.Tenant, w.From, w.To, w.FromEpoch, w.NewEpoch, w.FencedLSN)
	return nil
}

func applySwitchoverAbort(s *State, e *Entry) (any, error) {
	cmd := body[SwitchoverAbort](e)
	old := s.Switchovers[cmd.Tenant]
	switch {
	case len(cmd.Reason) > 512:
		return nil, invalidf("invalid_reason", "reason is longer than 512 bytes")
	case s.Tenants[cmd.Tenant] == nil && old == nil:
		return nil, notFoundf("tenant_not_found", "tenant %q does not exist", cmd.Tenant)
	case old == nil || !old.Active():
		return nil, notFoundf(CodeNoSwitchover, "tenant %s has no switchover in progress", cmd.Tenant)
	case old.Phase == PhaseRollingBack:
		return nil, preconditionf(CodeNotAbortable, "tenant %s's switchover is already rolling back", cmd.Tenant)
	case old.Promoted():
		return nil, preconditionf(CodeNotAbortable, "tenant %s's switchover is at %s: once the promotion of %s started it only goes forward (it resumes after any crash); wait for it to end",
			cmd.Tenant, old.Phase, old.To)
	}
	detail := "aborted by " + orUnknown(cmd.RequestedBy)
	if cmd.Reason != "" {
		detail += ": " + cmd.Reason
	}
	w := *old
	w.Steps = append(slices.Clone(old.Steps), SwitchoverStep{Phase: PhaseRollingBack, At: cmd.At, Index: e.Index, Detail: detail})
	w.Phase, w.Error, w.UpdatedAt, w.ModifyIndex = PhaseRollingBack, detail, cmd.At, e.Index
	s.Switchovers[w.Tenant] = &w
	s.touch(TableSwitchovers, e.Index)
	return &w, nil
}

// isFormerHomeSubscriber reports whether t is a tenant subscriber that
// follows the tenant's home as a former home (its spec says so).
func isFormerHomeSubscriber(t *Task) bool {
	if t == nil {
		return false
	}
	var spec SubscriberSpec
	return json.Unmarshal(t.Spec, &spec) == nil && spec.Ensure == EnsurePresent && spec.FormerHome
}

func orUnknown(s string) string {
	if s == "" {
		return "an operator"
	}
	return s
}

// validLSN reports whether s reads as a PostgreSQL LSN, "16/B374D848".
func validLSN(s string) bool {
	hi, lo, ok := strings.Cut(s, "/")
	return ok && len(hi) >= 1 && len(hi) <= 8 && len(lo) >= 1 && len(lo) <= 8 && isHex(hi) && isHex(lo)
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// readSwitchoverSnapshot restores the switchovers of a snapshot.
func readSwitchoverSnapshot(doc *snapshotDoc, s *State) error {
	for _, w := range doc.Switchovers {
		if w == nil {
			return fmt.Errorf("snapshot holds a null switchover")
		}
		if err := validateSwitchover(w); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		if s.Switchovers[w.Tenant] != nil {
			return fmt.Errorf("snapshot holds two switchovers of tenant %s", w.Tenant)
		}
		s.Switchovers[w.Tenant] = w
	}
	return nil
}
