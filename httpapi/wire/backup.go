package wire

import "github.com/atomcloud/atomfed/fsm"

// BackupRunRequest is the body of POST /v1/regions/{name}/backups.
type BackupRunRequest struct {
	// Type is full or incr (default full).
	Type string `json:"type,omitempty"`
}

// BackupStatus is a backup asked for and not done (pending, or running
// on an agent), with its progress.
type BackupStatus struct {
	*fsm.Backup
	// Agent runs it (empty while pending); Generation is the task's.
	Agent      string `json:"agent,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	// Progress is the agent's last report: phase, bytes, percent.
	Progress *fsm.BackupProgress `json:"progress,omitempty"`
	// TaskError is the agent's last error while it retries.
	TaskError string `json:"task_error,omitempty"`
}

// BackupList is GET /v1/backups: the catalog (newest first), the backups
// running, and each region's backup health against its policy.
type BackupList struct {
	Backups []*fsm.Backup      `json:"backups"`
	Running []BackupStatus     `json:"running"`
	Regions []fsm.BackupHealth `json:"regions"`
}

// DrillStatus is a restore drill asked for and not done, with its
// progress.
type DrillStatus struct {
	*fsm.Drill
	Agent      string             `json:"agent,omitempty"`
	Generation uint64             `json:"generation,omitempty"`
	Progress   *fsm.DrillProgress `json:"progress,omitempty"`
	TaskError  string             `json:"task_error,omitempty"`
}

// DrillList is GET /v1/regions/{name}/drills: the region's drills, newest
// first, and the one running, if any.
type DrillList struct {
	Drills  []*fsm.Drill `json:"drills"`
	Running *DrillStatus `json:"running,omitempty"`
}
