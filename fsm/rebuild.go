package fsm

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Rebuilds of a lost region (G.1.6): an operator asks for one
// (RebuildRequest), the leader places a region-rebuild task on one agent
// of the region (cluster/scheduler_rebuild.go), the agent restores the
// region's PostgreSQL from a verified backup onto an empty data directory
// it manages, recovers it to the end of the archived WAL or to a point in
// time, starts it, and reports; the leader records the result
// (RebuildRecord). State.Rebuilds holds each region's newest rebuild.

// TaskTypeRebuild is the task that rebuilds a region's PostgreSQL.
const TaskTypeRebuild = "region-rebuild"

// RebuildTaskID is the id of a region's rebuild task.
func RebuildTaskID(region string) string { return "rebuild/" + region }

// TableRebuilds is the table of the rebuild state (blocking queries).
const TableRebuilds = "rebuilds"

// Rebuild statuses.
const (
	RebuildPending = "pending" // asked for; the task is placed or waits for an agent
	RebuildDone    = "done"
	RebuildFailed  = "failed"
)

// Codes of rebuild refusals.
const (
	CodeRebuildInProgress = "rebuild_in_progress"
	CodeRebuildStale      = "rebuild_record_stale"
	CodeInvalidTargetTime = "invalid_target_time"
)

// Rebuild is a region's rebuild: asked for, or done.
type Rebuild struct {
	// ID is "<region>-r<index>".
	ID     string `json:"id"`
	Region string `json:"region"`
	// Backup is the catalog id of the backup restored, Label its
	// pgBackRest label, BackupStop when it ended (unix seconds).
	Backup     string `json:"backup"`
	Label      string `json:"label"`
	BackupStop int64  `json:"backup_stop"`
	// BytesTotal is the backup's database size.
	BytesTotal int64 `json:"bytes_total,omitempty"`
	// TargetTime is the point in time to recover to (unix ns); 0: the end
	// of the archived WAL.
	TargetTime int64 `json:"target_time,omitempty"`
	// Force lets the agent empty a data directory that is not empty.
	Force       bool   `json:"force,omitempty"`
	Status      string `json:"status"`
	RequestedBy string `json:"requested_by,omitempty"`
	RequestedAt int64  `json:"requested_at"`
	Agent       string `json:"agent,omitempty"`
	*RebuildResult
	RecordedAt  int64  `json:"recorded_at,omitempty"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// Active reports whether the rebuild is asked for and not done.
func (r *Rebuild) Active() bool { return r != nil && r.Status == RebuildPending }

// RebuildSpec is the spec of a region-rebuild task.
type RebuildSpec struct {
	Rebuild    string     `json:"rebuild"`
	Region     string     `json:"region"`
	Stanza     string     `json:"stanza"`
	Backup     string     `json:"backup"`
	Label      string     `json:"label"`
	BackupStop int64      `json:"backup_stop"`
	BytesTotal int64      `json:"bytes_total,omitempty"`
	TargetTime int64      `json:"target_time,omitempty"`
	Force      bool       `json:"force,omitempty"`
	Repository BackupRepo `json:"repository"`
}

// Rebuild phases.
const (
	RebuildPhaseConfigure  = "configure"
	RebuildPhaseRestoring  = "restoring"
	RebuildPhaseStarting   = "starting"
	RebuildPhaseRecovering = "recovering"
	RebuildPhaseResuming   = "resuming"
	RebuildPhaseDone       = "done"
	RebuildPhaseFailed     = "failed"
)

// RebuildProgress is a running rebuild task's result: where it is.
type RebuildProgress struct {
	Rebuild string `json:"rebuild"`
	Phase   string `json:"phase"`
	// Bytes restored of BytesTotal, Files of FilesTotal (pgBackRest's
	// log; FilesTotal from the backup's manifest when the agent can read
	// it: a filesystem repository without encryption).
	Bytes      int64   `json:"bytes,omitempty"`
	BytesTotal int64   `json:"bytes_total,omitempty"`
	Files      int64   `json:"files,omitempty"`
	FilesTotal int64   `json:"files_total,omitempty"`
	Percent    float64 `json:"percent,omitempty"`
	ETASeconds int64   `json:"eta_seconds,omitempty"`
	StartedAt  int64   `json:"started_at"` // agent clock, unix ns
	At         int64   `json:"at"`
	// Done is set on the last report; Result says how it ended.
	Done   bool           `json:"done,omitempty"`
	Result *RebuildResult `json:"result,omitempty"`
}

// RebuildResult is what an agent reports about a rebuild.
type RebuildResult struct {
	// Phase is where it stopped (done, or the phase that failed).
	Phase string `json:"phase,omitempty"`
	Error string `json:"error,omitempty"`
	// DataDir is the data directory restored into.
	DataDir    string `json:"data_dir,omitempty"`
	Bytes      int64  `json:"bytes,omitempty"`
	Files      int64  `json:"files,omitempty"`
	RestoreMS  int64  `json:"restore_ms,omitempty"`
	RecoveryMS int64  `json:"recovery_ms,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	// Timeline is the rebuilt server's timeline after promotion.
	Timeline  int64 `json:"timeline,omitempty"`
	StartedAt int64 `json:"started_at,omitempty"` // agent clock, unix ns
	EndedAt   int64 `json:"ended_at,omitempty"`
}

// MaxRebuildTargetSkew is how far into the future (leader clock) a
// target time may be: none, beyond clock noise.
const MaxRebuildTargetSkew = time.Second

// RebuildRequest asks for a rebuild of a region (an operator).
type RebuildRequest struct {
	Region string `json:"region"`
	// Backup is the catalog id to restore ("": the newest verified backup
	// that ended before TargetTime, or the newest verified one).
	Backup      string `json:"backup,omitempty"`
	TargetTime  int64  `json:"target_time,omitempty"`
	Force       bool   `json:"force,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

// chooseRebuildBackup picks the backup a rebuild restores.
func (s *State) chooseRebuildBackup(cmd *RebuildRequest) (*Backup, error) {
	if cmd.Backup != "" {
		b := s.Backups[cmd.Backup]
		if b == nil || b.Region != cmd.Region {
			return nil, notFoundf("backup_not_found", "backup %q of region %s is not in the catalog (atomfed backup list --region %s)", cmd.Backup, cmd.Region, cmd.Region)
		}
		if b.Status != BackupSucceeded || b.BackupResult == nil || !b.Verified || b.Label == "" {
			return nil, preconditionf(CodeNoVerifiedBackup, "backup %s is %s and not verified: pick a verified one (atomfed backup list --region %s)", b.ID, b.Status, cmd.Region)
		}
		if cmd.TargetTime != 0 && cmd.TargetTime < b.Stop*int64(time.Second) {
			return nil, invalidf(CodeInvalidTargetTime, "target time %s is before backup %s ended (%s): pick an earlier backup or a later time",
				time.Unix(0, cmd.TargetTime).UTC().Format(time.RFC3339Nano), b.ID, time.Unix(b.Stop, 0).UTC().Format(time.RFC3339))
		}
		return b, nil
	}
	var newest *Backup
	for _, b := range s.BackupsOf(cmd.Region) {
		if b.Status != BackupSucceeded || b.BackupResult == nil || !b.Verified || b.Label == "" {
			continue
		}
		if newest == nil {
			newest = b
		}
		if cmd.TargetTime == 0 || b.Stop*int64(time.Second) <= cmd.TargetTime {
			return b, nil
		}
	}
	if newest == nil {
		return nil, preconditionf(CodeNoVerifiedBackup, "region %s has no verified backup to rebuild from: a region is rebuilt from its backups (atomfed backup list --region %s)", cmd.Region, cmd.Region)
	}
	return nil, invalidf(CodeInvalidTargetTime, "target time %s is before every verified backup of region %s ended (the oldest verified one kept in the catalog cannot go back that far)",
		time.Unix(0, cmd.TargetTime).UTC().Format(time.RFC3339Nano), cmd.Region)
}

func applyRebuildRequest(s *State, e *Entry) (any, error) {
	cmd := body[RebuildRequest](e)
	switch {
	case s.Regions[cmd.Region] == nil:
		return nil, notFoundf("region_not_found", "region %q is not registered", cmd.Region)
	case cmd.TargetTime < 0 || (cmd.TargetTime != 0 && cmd.TargetTime > cmd.At+int64(MaxRebuildTargetSkew)):
		return nil, invalidf(CodeInvalidTargetTime, "target time %s is in the future: a region is recovered to a point it has passed",
			time.Unix(0, cmd.TargetTime).UTC().Format(time.RFC3339Nano))
	}
	if r := s.Rebuilds[cmd.Region]; r.Active() {
		return nil, preconditionf(CodeRebuildInProgress, "rebuild %s of region %s is already running; follow it (atomfed dr rebuild --region %s --status)", r.ID, cmd.Region, cmd.Region)
	}
	b, err := s.chooseRebuildBackup(cmd)
	if err != nil {
		return nil, err
	}
	r := &Rebuild{ID: fmt.Sprintf("%s-r%d", cmd.Region, e.Index), Region: cmd.Region, Backup: b.ID, Label: b.Label, BackupStop: b.Stop,
		BytesTotal: b.Size, TargetTime: cmd.TargetTime, Force: cmd.Force, Status: RebuildPending, RequestedBy: cmd.RequestedBy,
		RequestedAt: cmd.At, CreateIndex: e.Index, ModifyIndex: e.Index}
	s.Rebuilds[cmd.Region] = r
	s.touch(TableRebuilds, e.Index)
	return r, nil
}

// RebuildRecord records a rebuild task's final result; like BackupRecord
// it names the task's generation and agent, and only the current one
// counts.
type RebuildRecord struct {
	Rebuild    string        `json:"rebuild"`
	Region     string        `json:"region"`
	Generation uint64        `json:"generation"`
	Agent      string        `json:"agent"`
	Failed     bool          `json:"failed,omitempty"`
	Result     RebuildResult `json:"result"`
	At         int64         `json:"at"`
}

func applyRebuildRecord(s *State, e *Entry) (any, error) {
	cmd := body[RebuildRecord](e)
	run := s.Rebuilds[cmd.Region]
	if !run.Active() || run.ID != cmd.Rebuild {
		return nil, preconditionf(CodeRebuildStale, "rebuild %s of region %s is not running", cmd.Rebuild, cmd.Region)
	}
	t := s.Tasks[RebuildTaskID(cmd.Region)]
	if t == nil || t.Generation != cmd.Generation || t.Agent != cmd.Agent || cmd.Agent == "" {
		return nil, preconditionf(CodeRebuildStale, "the rebuild task of region %s is no longer at generation %d on %s", cmd.Region, cmd.Generation, cmd.Agent)
	}
	res := cmd.Result
	r := *run
	r.Status, r.Agent, r.RebuildResult, r.RecordedAt, r.ModifyIndex = RebuildDone, cmd.Agent, &res, cmd.At, e.Index
	if cmd.Failed || res.Error != "" {
		r.Status = RebuildFailed
	}
	s.Rebuilds[cmd.Region] = &r
	s.touch(TableRebuilds, e.Index)
	return &r, nil
}

// SortedRebuilds returns every region's newest rebuild, by region.
func (s *State) SortedRebuilds() []*Rebuild {
	out := make([]*Rebuild, 0, len(s.Rebuilds))
	for _, r := range s.Rebuilds {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

func validSnapshotRebuild(r *Rebuild) error {
	switch {
	case r == nil || !ValidRegionName(r.Region) || !strings.HasPrefix(r.ID, r.Region+"-r"):
		return fmt.Errorf("invalid rebuild id or region")
	case r.Status != RebuildPending && r.Status != RebuildDone && r.Status != RebuildFailed:
		return fmt.Errorf("rebuild %s: invalid status", r.ID)
	}
	return nil
}
