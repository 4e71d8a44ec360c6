package fsm

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Restore drills (G.1.6): an agent restores a region's newest verified
// backup into a scratch PostgreSQL on its machine, starts it, reads every
// table, and reports; the leader schedules them (a drill a day by
// default) and records the verdict in the drill catalog and on the
// backup's catalog entry.

// TaskTypeDrill is the task that runs a restore drill.
const TaskTypeDrill = "restore-drill"

// DrillTaskID is the id of a region's drill task.
func DrillTaskID(region string) string { return "drill/" + region }

// Drill statuses.
const (
	DrillPending = "pending"
	DrillRunning = "running"
	DrillPassed  = "passed"
	DrillFailed  = "failed"
)

// DefaultDrillEverySeconds is how often a region's newest verified backup
// is restored in a drill when its policy does not say.
const DefaultDrillEverySeconds = 24 * 3600

// DrillEvery returns the policy's drill interval.
func (p *BackupPolicy) DrillEvery() time.Duration {
	if p.DrillEverySeconds > 0 {
		return time.Duration(p.DrillEverySeconds) * time.Second
	}
	return DefaultDrillEverySeconds * time.Second
}

// Drill is one restore drill: asked for (State.DrillRuns) or done
// (State.Drills).
type Drill struct {
	// ID is "<region>-d<index>".
	ID     string `json:"id"`
	Region string `json:"region"`
	// Backup is the catalog id of the backup restored, Label its
	// pgBackRest label.
	Backup      string `json:"backup"`
	Label       string `json:"label"`
	Reason      string `json:"reason"`
	Status      string `json:"status"`
	RequestedBy string `json:"requested_by,omitempty"`
	RequestedAt int64  `json:"requested_at"`
	Agent       string `json:"agent,omitempty"`
	*DrillResult
	RecordedAt  int64  `json:"recorded_at,omitempty"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// DrillSpec is the spec of a drill task.
type DrillSpec struct {
	Drill      string     `json:"drill"`
	Region     string     `json:"region"`
	Stanza     string     `json:"stanza"`
	Backup     string     `json:"backup"`
	Label      string     `json:"label"`
	Repository BackupRepo `json:"repository"`
}

// DrillTable is one table read in a restored database: its row count and
// an order-independent checksum of its rows (the sum of the first 64 bits
// of each row's md5, as numeric).
type DrillTable struct {
	Database string `json:"database"`
	Name     string `json:"name"`
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum"`
}

// DrillResult is what an agent reports about a drill.
type DrillResult struct {
	Label string `json:"label,omitempty"`
	// Phase is configure, restore, start, check or done; where it stopped
	// when Error is set.
	Phase string `json:"phase,omitempty"`
	Error string `json:"error,omitempty"`
	// RestoreMS is how long pgbackrest restore took, StartMS the start and
	// recovery of the scratch server, DurationMS the whole drill.
	RestoreMS  int64 `json:"restore_ms,omitempty"`
	StartMS    int64 `json:"start_ms,omitempty"`
	DurationMS int64 `json:"duration_ms,omitempty"`
	// TablesRead counts every table read; Tables lists them (at most
	// MaxDrillTables).
	TablesRead int          `json:"tables_read"`
	Tables     []DrillTable `json:"tables,omitempty"`
	// RestorePoint is the named point on the source the copy was
	// recovered to (RestoreLSN its WAL position); TablesCompared counts
	// the tables of the source's database whose rows matched the source
	// at that point exactly (recovery/drill_point.go).
	RestorePoint   string `json:"restore_point,omitempty"`
	RestoreLSN     string `json:"restore_lsn,omitempty"`
	TablesCompared int    `json:"tables_compared"`
	// Verdict is passed or failed.
	Verdict string `json:"verdict"`
}

// MaxDrillTables bounds the tables a drill result lists.
const MaxDrillTables = 100

// DrillProgress is a running drill task's result.
type DrillProgress struct {
	Drill     string       `json:"drill"`
	Phase     string       `json:"phase"`
	StartedAt int64        `json:"started_at"`
	At        int64        `json:"at"`
	Done      bool         `json:"done,omitempty"`
	Result    *DrillResult `json:"result,omitempty"`
}

// DrillSummary is a drill's verdict on the catalog entry of the backup it
// restored.
type DrillSummary struct {
	ID      string `json:"id"`
	Verdict string `json:"verdict"`
	At      int64  `json:"at"`
}

// LatestVerifiedBackup returns the region's newest succeeded, verified
// backup, or nil.
func (s *State) LatestVerifiedBackup(region string) *Backup {
	for _, b := range s.BackupsOf(region) {
		if b.Status == BackupSucceeded && b.BackupResult != nil && b.Verified && b.Label != "" {
			return b
		}
	}
	return nil
}

// DrillsOf returns a region's drills ("" for every region), newest first.
func (s *State) DrillsOf(region string) []*Drill {
	var out []*Drill
	for _, d := range s.Drills {
		if region == "" || d.Region == region {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreateIndex != out[j].CreateIndex {
			return out[i].CreateIndex > out[j].CreateIndex
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// SortedDrillRuns returns the drills asked for and not done, by region.
func (s *State) SortedDrillRuns() []*Drill {
	out := make([]*Drill, 0, len(s.DrillRuns))
	for _, d := range s.DrillRuns {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// DrillDue reports whether a region is due a scheduled drill at now
// (unix ns): it has a verified backup, no drill or backup is running,
// its policy is not disabled, and its last drill is older than the
// policy's drill interval (a failed one: than retryAfter), or there is
// none.
func (s *State) DrillDue(region string, now int64, retryAfter time.Duration) bool {
	p := s.BackupPolicyOf(region)
	if p.Disabled || s.DrillRuns[region] != nil || s.BackupRuns[region] != nil || s.LatestVerifiedBackup(region) == nil {
		return false
	}
	ds := s.DrillsOf(region)
	if len(ds) == 0 {
		return true
	}
	last := ds[0]
	wait := p.DrillEvery()
	if last.Status == DrillFailed {
		wait = min(wait, retryAfter)
	}
	return now-last.RecordedAt >= int64(wait)
}

// DrillRequest asks for a restore drill of a region's newest verified
// backup (the schedule, or an operator).
type DrillRequest struct {
	Region      string `json:"region"`
	Reason      string `json:"reason"`
	RequestedBy string `json:"requested_by,omitempty"`
	At          int64  `json:"at"`
}

// Codes of drill refusals.
const (
	CodeDrillInProgress  = "drill_in_progress"
	CodeNoVerifiedBackup = "no_verified_backup"
	CodeDrillStale       = "drill_record_stale"
)

func applyDrillRequest(s *State, e *Entry) (any, error) {
	cmd := body[DrillRequest](e)
	switch {
	case cmd.Reason != BackupReasonSchedule && cmd.Reason != BackupReasonManual:
		return nil, invalidf("invalid_drill_reason", "drill reason %q must be schedule or manual", cmd.Reason)
	case s.Regions[cmd.Region] == nil:
		return nil, notFoundf("region_not_found", "region %q is not registered", cmd.Region)
	}
	if run := s.DrillRuns[cmd.Region]; run != nil {
		return nil, preconditionf(CodeDrillInProgress, "drill %s of region %s is already %s; wait for it (atomfed backup drills --region %s)", run.ID, cmd.Region, run.Status, cmd.Region)
	}
	b := s.LatestVerifiedBackup(cmd.Region)
	if b == nil {
		return nil, preconditionf(CodeNoVerifiedBackup, "region %s has no verified backup to restore: take one first (atomfed backup run --region %s)", cmd.Region, cmd.Region)
	}
	d := &Drill{ID: fmt.Sprintf("%s-d%d", cmd.Region, e.Index), Region: cmd.Region, Backup: b.ID, Label: b.Label, Reason: cmd.Reason,
		Status: DrillPending, RequestedBy: cmd.RequestedBy, RequestedAt: cmd.At, CreateIndex: e.Index, ModifyIndex: e.Index}
	s.DrillRuns[cmd.Region] = d
	s.touch(TableBackups, e.Index)
	return d, nil
}

// DrillRecord records a drill task's final result; like BackupRecord it
// names the task's generation and agent, and only the current one counts.
type DrillRecord struct {
	Drill      string      `json:"drill"`
	Region     string      `json:"region"`
	Generation uint64      `json:"generation"`
	Agent      string      `json:"agent"`
	Result     DrillResult `json:"result"`
	At         int64       `json:"at"`
}

func applyDrillRecord(s *State, e *Entry) (any, error) {
	cmd := body[DrillRecord](e)
	run := s.DrillRuns[cmd.Region]
	if run == nil || run.ID != cmd.Drill {
		return nil, preconditionf(CodeDrillStale, "drill %s of region %s is not running", cmd.Drill, cmd.Region)
	}
	t := s.Tasks[DrillTaskID(cmd.Region)]
	if t == nil || t.Generation != cmd.Generation || t.Agent != cmd.Agent || cmd.Agent == "" {
		return nil, preconditionf(CodeDrillStale, "the drill task of region %s is no longer at generation %d on %s", cmd.Region, cmd.Generation, cmd.Agent)
	}
	res := cmd.Result
	if len(res.Tables) > MaxDrillTables {
		res.Tables = res.Tables[:MaxDrillTables]
	}
	d := *run
	d.Status, d.Agent, d.DrillResult, d.RecordedAt, d.ModifyIndex = DrillFailed, cmd.Agent, &res, cmd.At, e.Index
	if res.Verdict == DrillPassed && res.Error == "" {
		d.Status = DrillPassed
	}
	delete(s.DrillRuns, cmd.Region)
	s.Drills[d.ID] = &d
	if b := s.Backups[d.Backup]; b != nil {
		c := *b
		c.Drill, c.ModifyIndex = &DrillSummary{ID: d.ID, Verdict: d.Status, At: cmd.At}, e.Index
		s.Backups[c.ID] = &c
	}
	all := s.DrillsOf(cmd.Region)
	for _, old := range all[min(len(all), MaxBackupsPerRegion):] {
		delete(s.Drills, old.ID)
	}
	s.touch(TableBackups, e.Index)
	return &d, nil
}

// validSnapshotDrill checks a drill read from a snapshot.
func validSnapshotDrill(d *Drill) error {
	if d == nil || !ValidRegionName(d.Region) || !strings.HasPrefix(d.ID, d.Region+"-d") {
		return fmt.Errorf("invalid drill id or region")
	}
	switch d.Status {
	case DrillPending, DrillRunning, DrillPassed, DrillFailed:
		return nil
	}
	return fmt.Errorf("drill %s: invalid status", d.ID)
}
