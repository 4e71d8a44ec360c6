package fsm

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Backups of the regions' PostgreSQL (G.1.6): a policy per region, the
// backup each region is due or was asked for (at most one at a time), and
// the catalog of the backups taken. The leader turns a pending backup into
// a backup task on an agent of the region (cluster/scheduler_backup.go),
// and records the task's result in the catalog (BackupRecord). The
// recovery package runs the task with pgBackRest.

// Table names of the backup state.
const (
	TableBackupPolicies = "backup_policies"
	TableBackups        = "backups"
)

// TaskTypeBackup is the task that backs up a region's PostgreSQL.
const TaskTypeBackup = "backup"

// BackupTaskID is the id of a region's backup task.
func BackupTaskID(region string) string { return "backup/" + region }

// Repository kinds.
const (
	RepoPosix = "posix" // a directory on the agents' machines (shared by the region's agents)
	RepoS3    = "s3"    // an S3 bucket; endpoint and credentials from the agents' environment
)

// Backup types (pgBackRest's).
const (
	BackupFull = "full"
	BackupIncr = "incr"
)

// Backup statuses in the catalog.
const (
	BackupPending   = "pending"   // asked for, not placed on an agent yet
	BackupRunning   = "running"   // an agent runs it
	BackupSucceeded = "succeeded" // taken (see Verified for its verification)
	BackupFailed    = "failed"    // the agent could not take it
	BackupExpired   = "expired"   // taken, then removed from the repository by retention
)

// Why a backup was taken.
const (
	BackupReasonSchedule = "schedule"
	BackupReasonManual   = "manual"
)

// BackupRepo is a backup repository without its secrets: what the policy
// asks for and what the catalog records.
type BackupRepo struct {
	// Kind is posix or s3; empty in a policy means the agents' default
	// (s3 when they have S3_ENDPOINT, else their --backup-repo).
	Kind string `json:"kind,omitempty"`
	// Path is the directory (posix) or the path inside the bucket (s3);
	// empty in a policy means the agents' default.
	Path     string `json:"path,omitempty"`
	Bucket   string `json:"bucket,omitempty"`
	Endpoint string `json:"endpoint,omitempty"`
	Region   string `json:"region,omitempty"`
	// Encrypted says that the repository is encrypted (the passphrase is
	// the agents').
	Encrypted bool `json:"encrypted,omitempty"`
}

// BackupPolicy is a region's backup policy. Durations are in seconds.
type BackupPolicy struct {
	Region string `json:"region"`
	// FullEverySeconds: a full backup is due when the newest successful
	// full backup is older than this; IncrEverySeconds: an incremental
	// one when the newest successful backup is.
	FullEverySeconds int64 `json:"full_every_seconds"`
	IncrEverySeconds int64 `json:"incr_every_seconds"`
	// RetentionFull is how many full backups pgBackRest keeps (with
	// their incrementals and the WAL they need).
	RetentionFull int `json:"retention_full"`
	// MaxAgeSeconds is the staleness bound: the newest verified backup
	// must be younger, or the region's backups are reported stale.
	MaxAgeSeconds int64 `json:"max_age_seconds"`
	// DrillEverySeconds is how often the newest verified backup is
	// restored in a drill (0: DefaultDrillEverySeconds).
	DrillEverySeconds int64 `json:"drill_every_seconds,omitempty"`
	// Disabled stops scheduled backups and drills (one asked for still
	// runs).
	Disabled   bool       `json:"disabled,omitempty"`
	Repository BackupRepo `json:"repository"`
	// Default is set on the policy of a region that has none stored.
	Default     bool   `json:"default,omitempty"`
	CreateIndex uint64 `json:"create_index,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
}

// Limits of a backup policy.
const (
	MinBackupEverySeconds = 10
	MaxBackupEverySeconds = 365 * 24 * 3600
	MaxRetentionFull      = 100
	// MaxBackupsPerRegion bounds the catalog: older entries of a region
	// are forgotten (pgBackRest's retention has removed them long before).
	MaxBackupsPerRegion = 50
)

// DefaultBackupPolicy is the policy of a region that has none stored:
// a full backup a day, an incremental every hour, two fulls kept, stale
// after 26 hours, in the agents' default repository. A region's first
// backup is due as soon as an agent with its database is there, so every
// region (every dev region) has one within minutes without setup.
func DefaultBackupPolicy(region string) *BackupPolicy {
	return &BackupPolicy{Region: region, FullEverySeconds: 24 * 3600, IncrEverySeconds: 3600, RetentionFull: 2,
		MaxAgeSeconds: 26 * 3600, Default: true}
}

// ValidateBackupPolicy checks a policy's user-supplied fields.
func ValidateBackupPolicy(p *BackupPolicy) error {
	inRange := func(v int64) bool { return v >= MinBackupEverySeconds && v <= MaxBackupEverySeconds }
	switch {
	case !ValidRegionName(p.Region):
		return invalidf("invalid_region", "region %q must be a DNS label", p.Region)
	case !inRange(p.FullEverySeconds) || !inRange(p.IncrEverySeconds):
		return invalidf("invalid_backup_policy", "full_every_seconds and incr_every_seconds must be between %d and %d", MinBackupEverySeconds, MaxBackupEverySeconds)
	case p.IncrEverySeconds > p.FullEverySeconds:
		return invalidf("invalid_backup_policy", "incr_every_seconds (%d) must not exceed full_every_seconds (%d)", p.IncrEverySeconds, p.FullEverySeconds)
	case p.RetentionFull < 1 || p.RetentionFull > MaxRetentionFull:
		return invalidf("invalid_backup_policy", "retention_full must be between 1 and %d", MaxRetentionFull)
	case p.MaxAgeSeconds < p.IncrEverySeconds || p.MaxAgeSeconds > MaxBackupEverySeconds:
		return invalidf("invalid_backup_policy", "max_age_seconds must be at least incr_every_seconds (%d) and at most %d", p.IncrEverySeconds, MaxBackupEverySeconds)
	case p.DrillEverySeconds != 0 && !inRange(p.DrillEverySeconds):
		return invalidf("invalid_backup_policy", "drill_every_seconds must be 0 (a day) or between %d and %d", MinBackupEverySeconds, MaxBackupEverySeconds)
	}
	return validateBackupRepo(&p.Repository)
}

func validateBackupRepo(r *BackupRepo) error {
	switch r.Kind {
	case "", RepoPosix, RepoS3:
	default:
		return invalidf("invalid_backup_policy", "repository.kind %q must be posix, s3 or empty (the agents' default)", r.Kind)
	}
	if len(r.Path) > 512 || (r.Path != "" && (r.Path[0] != '/' || !printable(r.Path))) {
		return invalidf("invalid_backup_policy", "repository.path %q must be an absolute path of at most 512 printable characters", r.Path)
	}
	if r.Bucket != "" || r.Endpoint != "" || r.Region != "" || r.Encrypted {
		return invalidf("invalid_backup_policy", "repository bucket, endpoint, region and encryption come from the agents' environment (S3_ENDPOINT, S3_BUCKET, ...), never from the policy: leave them out")
	}
	return nil
}

func printable(s string) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// BackupPolicyOf returns the region's policy: the stored one, else the
// default.
func (s *State) BackupPolicyOf(region string) *BackupPolicy {
	if p := s.BackupPolicies[region]; p != nil {
		return p
	}
	return DefaultBackupPolicy(region)
}

// Backup is one backup of a region: asked for (pending or running, in
// State.BackupRuns) or done (in the catalog, State.Backups).
type Backup struct {
	// ID is "<region>-<index>": the index of the entry that asked for it.
	ID     string `json:"id"`
	Region string `json:"region"`
	Type   string `json:"type"`
	Reason string `json:"reason"`
	Status string `json:"status"`
	// RequestedBy is the accessor of the token that asked (manual).
	RequestedBy string `json:"requested_by,omitempty"`
	RequestedAt int64  `json:"requested_at"` // leader clock, unix ns
	// What the agent reported (BackupResult), once done.
	Agent string `json:"agent,omitempty"`
	*BackupResult
	// Drill is the verdict of the last restore drill of this backup.
	Drill       *DrillSummary `json:"drill,omitempty"`
	RecordedAt  int64         `json:"recorded_at,omitempty"`
	CreateIndex uint64        `json:"create_index"`
	ModifyIndex uint64        `json:"modify_index"`
}

// BackupSpec is the spec of a backup task.
type BackupSpec struct {
	Backup     string     `json:"backup"` // the Backup's ID
	Region     string     `json:"region"`
	Type       string     `json:"type"`
	Stanza     string     `json:"stanza"`
	Retention  int        `json:"retention_full"`
	Repository BackupRepo `json:"repository"`
}

// BackupProgress is a running backup task's result: where it is.
type BackupProgress struct {
	Backup string `json:"backup"`
	// Phase is configure, stanza, backup or verify.
	Phase string `json:"phase"`
	// Bytes done of BytesTotal (pgBackRest's count, while copying).
	Bytes      int64   `json:"bytes,omitempty"`
	BytesTotal int64   `json:"bytes_total,omitempty"`
	Percent    float64 `json:"percent,omitempty"`
	StartedAt  int64   `json:"started_at"` // agent clock, unix ns
	At         int64   `json:"at"`
	// Done is set on the last result: the backup succeeded or failed
	// (Result says how).
	Done   bool          `json:"done,omitempty"`
	Result *BackupResult `json:"result,omitempty"`
}

// BackupResult is what an agent reports about a backup it took or failed
// to take.
type BackupResult struct {
	// Label is pgBackRest's backup label (e.g. 20261208-001501F).
	Label    string     `json:"label,omitempty"`
	Repo     BackupRepo `json:"repo"`
	Stanza   string     `json:"stanza,omitempty"`
	Start    int64      `json:"start,omitempty"` // unix seconds (pgBackRest)
	Stop     int64      `json:"stop,omitempty"`
	Size     int64      `json:"size_bytes,omitempty"`      // database size
	RepoSize int64      `json:"repo_size_bytes,omitempty"` // stored (compressed) size
	WALStart string     `json:"wal_start,omitempty"`
	WALStop  string     `json:"wal_stop,omitempty"`
	LSNStart string     `json:"lsn_start,omitempty"`
	LSNStop  string     `json:"lsn_stop,omitempty"`
	// Prior is the backup an incremental builds on.
	Prior string `json:"prior,omitempty"`
	// Verified: pgBackRest verify found the repository sound after the
	// backup; VerifyError says what it found otherwise.
	Verified    bool   `json:"verified"`
	VerifyError string `json:"verify_error,omitempty"`
	VerifiedAt  int64  `json:"verified_at,omitempty"` // agent clock, unix ns
	// Error is why the backup failed; Phase where.
	Error string `json:"error,omitempty"`
	Phase string `json:"phase,omitempty"`
	// Archiving is what the agent set up: archive_command, stanza.
	Archiving string `json:"archiving,omitempty"`
	// InRepo are the labels the repository still holds after retention.
	InRepo []string `json:"in_repo,omitempty"`
}

// BackupsOf returns a region's catalog ("" for every region), newest
// first (by the index that asked for them).
func (s *State) BackupsOf(region string) []*Backup {
	var out []*Backup
	for _, b := range s.Backups {
		if region == "" || b.Region == region {
			out = append(out, b)
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

// SortedBackupRuns returns the backups asked for and not done, by region.
func (s *State) SortedBackupRuns() []*Backup {
	out := make([]*Backup, 0, len(s.BackupRuns))
	for _, b := range s.BackupRuns {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// SortedBackupPolicies returns the stored policies by region.
func (s *State) SortedBackupPolicies() []*BackupPolicy {
	out := make([]*BackupPolicy, 0, len(s.BackupPolicies))
	for _, p := range s.BackupPolicies {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// BackupDue says which backup a region is due at now (unix ns) under its
// policy, "" when none: a full one when no successful full backup is
// younger than FullEverySeconds, else an incremental one when no
// successful backup is younger than IncrEverySeconds. After a failed
// attempt it waits retryAfter before the next. Nothing is due while a
// backup of the region is asked for, or the policy is disabled.
func (s *State) BackupDue(region string, now int64, retryAfter time.Duration) string {
	p := s.BackupPolicyOf(region)
	if p.Disabled || s.BackupRuns[region] != nil {
		return ""
	}
	var lastFull, lastAny, lastAttempt int64
	for _, b := range s.Backups {
		if b.Region != region {
			continue
		}
		lastAttempt = max(lastAttempt, b.RecordedAt)
		if b.Status != BackupSucceeded && b.Status != BackupExpired {
			continue
		}
		lastAny = max(lastAny, b.RecordedAt)
		if b.Type == BackupFull {
			lastFull = max(lastFull, b.RecordedAt)
		}
	}
	if lastAttempt > lastAny && now-lastAttempt < int64(retryAfter) {
		return ""
	}
	switch {
	case lastFull == 0 || now-lastFull >= p.FullEverySeconds*int64(time.Second):
		return BackupFull
	case now-lastAny >= p.IncrEverySeconds*int64(time.Second):
		return BackupIncr
	}
	return ""
}

// BackupHealth is a region's backup state against its policy.
type BackupHealth struct {
	Region string `json:"region"`
	// LastVerified is the newest verified backup; AgeSeconds its age.
	LastVerified *Backup `json:"last_verified,omitempty"`
	AgeSeconds   int64   `json:"age_seconds,omitempty"`
	// Stale is set when there is no verified backup younger than the
	// policy's max_age_seconds; Warning says so in words.
	Stale   bool   `json:"stale"`
	Warning string `json:"warning,omitempty"`
	// Running is the backup asked for and not done, if any.
	Running *Backup `json:"running,omitempty"`
	// Simulated: no agent has reported the region's database, so no
	// backup of it is taken (its database is simulated).
	Simulated bool `json:"simulated,omitempty"`
	// LastDrill is the region's newest recorded restore drill,
	// LastPassedDrill its newest passed one; DrillStale is set when no
	// drill passed within twice the policy's drill interval.
	LastDrill       *DrillSummary `json:"last_drill,omitempty"`
	LastPassedDrill *DrillSummary `json:"last_passed_drill,omitempty"`
	DrillStale      bool          `json:"drill_stale"`
}

// BackupHealthOf evaluates region's backups at now (unix ns).
func (s *State) BackupHealthOf(region string, now int64) BackupHealth {
	h := BackupHealth{Region: region, Running: s.BackupRuns[region]}
	p := s.BackupPolicyOf(region)
	for _, d := range s.DrillsOf(region) {
		sum := &DrillSummary{ID: d.ID, Verdict: d.Status, At: d.RecordedAt}
		if h.LastDrill == nil {
			h.LastDrill = sum
		}
		if d.Status == DrillPassed {
			h.LastPassedDrill = sum
			break
		}
	}
	h.DrillStale = h.LastPassedDrill == nil || now-h.LastPassedDrill.At > 2*int64(p.DrillEvery())
	for _, b := range s.BackupsOf(region) {
		if b.Status == BackupSucceeded && b.BackupResult != nil && b.Verified {
			h.LastVerified = b
			break
		}
	}
	if h.LastVerified == nil {
		h.Stale, h.Warning = true, "region "+region+" has no verified backup"
		if s.Databases[region] == nil {
			h.Simulated = true
			h.Warning += ": no agent has reported its database, so none is taken (simulated region)"
		}
		return h
	}
	h.AgeSeconds = (now - h.LastVerified.RecordedAt) / int64(time.Second)
	if h.AgeSeconds > p.MaxAgeSeconds {
		h.Stale = true
		h.Warning = "the newest verified backup of region " + region + " (" + h.LastVerified.ID + ") is " +
			(time.Duration(h.AgeSeconds) * time.Second).String() + " old, over the policy's max age of " +
			(time.Duration(p.MaxAgeSeconds) * time.Second).String()
	}
	return h
}

// readBackupSnapshot checks and restores the backup policies, runs and
// catalog of a snapshot.
func readBackupSnapshot(doc *snapshotDoc, s *State) error {
	for _, p := range doc.BackupPolicies {
		if p == nil || ValidateBackupPolicy(p) != nil || s.BackupPolicies[p.Region] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate backup policy")
		}
		s.BackupPolicies[p.Region] = p
	}
	for _, b := range doc.BackupRuns {
		if validSnapshotBackup(b) != nil || s.BackupRuns[b.Region] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate backup run")
		}
		s.BackupRuns[b.Region] = b
	}
	for _, b := range doc.Backups {
		if validSnapshotBackup(b) != nil || s.Backups[b.ID] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate backup")
		}
		s.Backups[b.ID] = b
	}
	for _, d := range doc.DrillRuns {
		if validSnapshotDrill(d) != nil || s.DrillRuns[d.Region] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate drill run")
		}
		s.DrillRuns[d.Region] = d
	}
	for _, d := range doc.Drills {
		if validSnapshotDrill(d) != nil || s.Drills[d.ID] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate drill")
		}
		s.Drills[d.ID] = d
	}
	for _, r := range doc.Rebuilds {
		if validSnapshotRebuild(r) != nil || s.Rebuilds[r.Region] != nil {
			return fmt.Errorf("snapshot holds an invalid or duplicate rebuild")
		}
		s.Rebuilds[r.Region] = r
	}
	return nil
}

func validSnapshotBackup(b *Backup) error {
	switch {
	case b == nil || !ValidRegionName(b.Region) || !strings.HasPrefix(b.ID, b.Region+"-"):
		return fmt.Errorf("invalid backup id or region")
	case b.Type != BackupFull && b.Type != BackupIncr:
		return fmt.Errorf("backup %s: invalid type", b.ID)
	}
	switch b.Status {
	case BackupPending, BackupRunning, BackupSucceeded, BackupFailed, BackupExpired:
		return nil
	}
	return fmt.Errorf("backup %s: invalid status", b.ID)
}
