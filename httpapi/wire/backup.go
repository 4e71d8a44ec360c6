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
