package wire

import "github.com/atomcloud/atomfed/fsm"

// RebuildRunRequest is the body of POST /v1/regions/{name}/rebuild.
type RebuildRunRequest struct {
	// ToTime is the point in time to recover to (RFC 3339); empty: the
	// end of the archived WAL.
	ToTime string `json:"to_time,omitempty"`
	// Backup is the catalog id of the backup to restore; empty: the
	// newest verified one that ended before ToTime.
	Backup string `json:"backup,omitempty"`
	// Force lets the agent empty a data directory that is not empty.
	Force bool `json:"force,omitempty"`
}

// RebuildStatus is GET /v1/regions/{name}/rebuild: the region's newest
// rebuild, with its phase and, while it runs, the agent's progress.
type RebuildStatus struct {
	*fsm.Rebuild
	// Phase is pending (no agent has it yet), restoring, starting,
	// recovering, resuming, done or failed.
	Phase string `json:"phase"`
	// Agent runs it; Generation is the task's.
	Agent      string `json:"agent,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
	// Progress is the agent's last report: bytes and files restored of
	// the total, percent, ETA.
	Progress *fsm.RebuildProgress `json:"progress,omitempty"`
	// TaskError is the agent's last error while it retries.
	TaskError string `json:"task_error,omitempty"`
}
