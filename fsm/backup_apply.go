package fsm

import (
	"fmt"
	"slices"
	"strings"
)

// Codes of backup refusals.
const (
	CodeBackupInProgress = "backup_in_progress"
	CodeBackupStale      = "backup_record_stale"
)

// BackupPolicySet stores a region's backup policy (an operator's PUT).
type BackupPolicySet struct {
	Policy BackupPolicy `json:"policy"`
	At     int64        `json:"at"`
}

func applyBackupPolicySet(s *State, e *Entry) (any, error) {
	cmd := body[BackupPolicySet](e)
	p := cmd.Policy
	p.Default = false
	if err := ValidateBackupPolicy(&p); err != nil {
		return nil, err
	}
	if s.Regions[p.Region] == nil {
		return nil, notFoundf("region_not_found", "region %q is not registered", p.Region)
	}
	p.CreateIndex, p.ModifyIndex = e.Index, e.Index
	if old := s.BackupPolicies[p.Region]; old != nil {
		p.CreateIndex = old.CreateIndex
	}
	s.BackupPolicies[p.Region] = &p
	s.touch(TableBackupPolicies, e.Index)
	return &p, nil
}

// BackupRequest asks for a backup of a region: the leader's schedule, or
// an operator (manual). It is refused while a backup of the region is
// asked for and not done.
type BackupRequest struct {
	Region      string `json:"region"`
	Type        string `json:"type"`
	Reason      string `json:"reason"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

func applyBackupRequest(s *State, e *Entry) (any, error) {
	cmd := body[BackupRequest](e)
	switch {
	case cmd.Type != BackupFull && cmd.Type != BackupIncr:
		return nil, invalidf("invalid_backup_type", "backup type %q must be full or incr", cmd.Type)
	case cmd.Reason != BackupReasonSchedule && cmd.Reason != BackupReasonManual:
		return nil, invalidf("invalid_backup_reason", "backup reason %q must be schedule or manual", cmd.Reason)
	case s.Regions[cmd.Region] == nil:
		return nil, notFoundf("region_not_found", "region %q is not registered", cmd.Region)
	}
	if run := s.BackupRuns[cmd.Region]; run != nil {
		return nil, preconditionf(CodeBackupInProgress, "backup %s of region %s is already %s; wait for it (atomfed backup status %s)",
			run.ID, cmd.Region, run.Status, run.ID)
	}
	b := &Backup{ID: fmt.Sprintf("%s-%d", cmd.Region, e.Index), Region: cmd.Region, Type: cmd.Type, Reason: cmd.Reason,
		Status: BackupPending, RequestedBy: cmd.RequestedBy, RequestedAt: cmd.At, CreateIndex: e.Index, ModifyIndex: e.Index}
	s.BackupRuns[cmd.Region] = b
	s.touch(TableBackups, e.Index)
	return b, nil
}

// BackupRecord records the outcome of a backup task in the catalog. The
// leader issues it from the task's final result, naming the task's
// generation and agent: a result of an assignment that has been replaced
// (the task moved to a peer) is refused, so only the current one counts.
type BackupRecord struct {
	Backup     string       `json:"backup"`
	Region     string       `json:"region"`
	Generation uint64       `json:"generation"`
	Agent      string       `json:"agent"`
	Failed     bool         `json:"failed,omitempty"`
	Result     BackupResult `json:"result"`
	At         int64        `json:"at"`
}

func applyBackupRecord(s *State, e *Entry) (any, error) {
	cmd := body[BackupRecord](e)
	run := s.BackupRuns[cmd.Region]
	if run == nil || run.ID != cmd.Backup {
		return nil, preconditionf(CodeBackupStale, "backup %s of region %s is not running", cmd.Backup, cmd.Region)
	}
	t := s.Tasks[BackupTaskID(cmd.Region)]
	if t == nil || t.Generation != cmd.Generation || t.Agent != cmd.Agent || cmd.Agent == "" {
		return nil, preconditionf(CodeBackupStale, "the backup task of region %s is no longer at generation %d on %s", cmd.Region, cmd.Generation, cmd.Agent)
	}
	res := cmd.Result
	b := *run
	b.Status, b.Agent, b.BackupResult, b.RecordedAt, b.ModifyIndex = BackupSucceeded, cmd.Agent, &res, cmd.At, e.Index
	if cmd.Failed {
		b.Status = BackupFailed
	}
	// pgBackRest takes a full backup when an incremental one has nothing
	// to build on: the label says which it took.
	switch {
	case strings.HasSuffix(res.Label, "F"):
		b.Type = BackupFull
	case strings.HasSuffix(res.Label, "I"):
		b.Type = BackupIncr
	}
	delete(s.BackupRuns, cmd.Region)
	s.Backups[b.ID] = &b
	if !cmd.Failed && len(res.InRepo) > 0 {
		expireBackups(s, &b, res.InRepo, e.Index)
	}
	res.InRepo = nil // used once, not kept in every entry
	trimBackups(s, cmd.Region)
	s.touch(TableBackups, e.Index)
	return &b, nil
}

// expireBackups marks the region's backups in the same repository that
// the repository no longer holds (pgBackRest's retention removed them).
func expireBackups(s *State, latest *Backup, inRepo []string, index uint64) {
	for id, b := range s.Backups {
		if b.Region != latest.Region || b.Status != BackupSucceeded || b.BackupResult == nil || b.Label == "" ||
			b.Repo != latest.Repo || slices.Contains(inRepo, b.Label) {
			continue
		}
		c := *b
		c.Status, c.ModifyIndex = BackupExpired, index
		s.Backups[id] = &c
	}
}

// trimBackups forgets the oldest catalog entries of a region over
// MaxBackupsPerRegion.
func trimBackups(s *State, region string) {
	all := s.BackupsOf(region)
	for _, b := range all[min(len(all), MaxBackupsPerRegion):] {
		delete(s.Backups, b.ID)
	}
}
