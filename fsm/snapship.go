package fsm

import (
	"fmt"
	"regexp"
	"sort"
	"time"
)

// Control-plane snapshots shipped to a repository (G.1.6): the leader
// takes the Raft state archive (the GET /v1/snapshot format) on the
// schedule of the snapshot policy and ships it to the servers' snapshot
// repository (a directory, or S3), deleting the oldest objects beyond the
// policy's keep. The catalog records every shipment (what and where,
// never a credential), the deletions of retention, and the last failure.
// cluster/leader_snapship.go ships; the recovery/snaprepo package stores.

// TableSnapshots is the table of the snapshot policy and catalog.
const TableSnapshots = "snapshots"

// Limits and defaults of the snapshot policy.
const (
	DefaultSnapshotIntervalSeconds = 15 * 60
	DefaultSnapshotKeep            = 24
	MinSnapshotIntervalSeconds     = 1
	MaxSnapshotIntervalSeconds     = 7 * 24 * 3600
	MaxSnapshotKeep                = 1000
	// MaxShippedSnapshots bounds the catalog: entries retention could not
	// delete stay listed (they are still in the repository) up to this.
	MaxShippedSnapshots = 2 * MaxSnapshotKeep
	// MaxShipErrorLen bounds a recorded failure's message.
	MaxShipErrorLen = 1024
)

// SnapshotPolicy is the schedule and retention of shipped snapshots.
type SnapshotPolicy struct {
	// IntervalSeconds: a snapshot is shipped when the last attempt is
	// older than this.
	IntervalSeconds int64 `json:"interval_seconds"`
	// Keep is how many shipped snapshots the repository keeps.
	Keep int `json:"keep"`
	// Default is set when no policy is stored.
	Default     bool   `json:"default,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
}

// ValidateSnapshotPolicy checks a policy's user-supplied fields.
func ValidateSnapshotPolicy(p *SnapshotPolicy) error {
	if p.IntervalSeconds < MinSnapshotIntervalSeconds || p.IntervalSeconds > MaxSnapshotIntervalSeconds {
		return invalidf("invalid_snapshot_policy", "interval_seconds must be between %d and %d", MinSnapshotIntervalSeconds, MaxSnapshotIntervalSeconds)
	}
	if p.Keep < 1 || p.Keep > MaxSnapshotKeep {
		return invalidf("invalid_snapshot_policy", "keep must be between 1 and %d", MaxSnapshotKeep)
	}
	return nil
}

// ShippedSnapshot is one archive in the repository.
type ShippedSnapshot struct {
	// ID names the snapshot (its object is ID + ".snap").
	ID string `json:"id"`
	// Index is the state index the archive holds.
	Index uint64 `json:"index"`
	// Digest is the sha256 of the archive object, checked when it is
	// read back; StateDigest the digest of its state, which a restore's
	// approval names.
	Digest      string `json:"digest"`
	StateDigest string `json:"state_digest"`
	AuditHead   string `json:"audit_head,omitempty"`
	Size        int64  `json:"size_bytes"`
	// At is when it was shipped (leader clock, unix ns); Duration how
	// long taking and storing it took.
	At         int64 `json:"at"`
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Location is the object's path or s3://bucket/key: never a
	// credential.
	Location string `json:"location"`
	Node     string `json:"node,omitempty"`
}

// SnapshotShipFailure is a shipment that failed.
type SnapshotShipFailure struct {
	At       int64  `json:"at"`
	Error    string `json:"error"`
	Location string `json:"location,omitempty"`
	Node     string `json:"node,omitempty"`
}

// SnapshotCatalog is the snapshot policy (nil: the default), the shipped
// snapshots (oldest first) and the last failure since the last success.
// Apply functions replace its slices, never change them in place.
type SnapshotCatalog struct {
	Policy      *SnapshotPolicy      `json:"policy,omitempty"`
	Shipped     []*ShippedSnapshot   `json:"shipped,omitempty"`
	LastFailure *SnapshotShipFailure `json:"last_failure,omitempty"`
	// Failures counts failed shipments since the last success.
	Failures int `json:"failures,omitempty"`
	// Removed counts the snapshots retention deleted.
	Removed int `json:"removed,omitempty"`
}

func (c *SnapshotCatalog) empty() bool {
	return c.Policy == nil && len(c.Shipped) == 0 && c.LastFailure == nil && c.Failures == 0 && c.Removed == 0
}

// SnapshotPolicyOf returns the stored policy, else the default.
func (s *State) SnapshotPolicyOf() *SnapshotPolicy {
	if p := s.Snapshots.Policy; p != nil {
		return p
	}
	return &SnapshotPolicy{IntervalSeconds: DefaultSnapshotIntervalSeconds, Keep: DefaultSnapshotKeep, Default: true}
}

// LatestShipped is the newest shipped snapshot, nil when none.
func (s *State) LatestShipped() *ShippedSnapshot {
	if n := len(s.Snapshots.Shipped); n > 0 {
		return s.Snapshots.Shipped[n-1]
	}
	return nil
}

// ShippedByID finds a shipped snapshot; "latest" names the newest.
func (s *State) ShippedByID(id string) *ShippedSnapshot {
	if id == "latest" {
		return s.LatestShipped()
	}
	for _, sn := range s.Snapshots.Shipped {
		if sn.ID == id {
			return sn
		}
	}
	return nil
}

// SnapshotShipDue says whether the leader should ship a snapshot at now:
// the last attempt (success or failure) is at least the policy's interval
// old, or there was none.
func (s *State) SnapshotShipDue(now int64) bool {
	last := int64(0)
	if l := s.LatestShipped(); l != nil {
		last = l.At
	}
	if f := s.Snapshots.LastFailure; f != nil && f.At > last {
		last = f.At
	}
	return last == 0 || now-last >= s.SnapshotPolicyOf().IntervalSeconds*int64(time.Second)
}

// SnapshotShipHealth is the control plane's shipped-snapshot health.
type SnapshotShipHealth struct {
	Policy *SnapshotPolicy  `json:"policy"`
	Last   *ShippedSnapshot `json:"last,omitempty"`
	// AgeSeconds is the last shipment's age (absent without one).
	AgeSeconds *int64 `json:"age_seconds,omitempty"`
	// Stale: no shipment younger than twice the interval.
	Stale       bool                 `json:"stale"`
	Warning     string               `json:"warning,omitempty"`
	LastFailure *SnapshotShipFailure `json:"last_failure,omitempty"`
	Failures    int                  `json:"failures,omitempty"`
	Count       int                  `json:"count"`
}

// SnapshotShipHealthAt says whether snapshots are shipped on schedule:
// the last shipment must be younger than twice the policy's interval.
func (s *State) SnapshotShipHealthAt(now int64) SnapshotShipHealth {
	p := s.SnapshotPolicyOf()
	h := SnapshotShipHealth{Policy: p, Last: s.LatestShipped(), LastFailure: s.Snapshots.LastFailure,
		Failures: s.Snapshots.Failures, Count: len(s.Snapshots.Shipped)}
	bound := 2 * p.IntervalSeconds
	switch {
	case h.Last == nil:
		h.Stale = true
		h.Warning = "no control-plane snapshot shipped to the repository yet"
	default:
		age := max(0, (now-h.Last.At)/int64(time.Second))
		h.AgeSeconds = &age
		if age >= bound {
			h.Stale = true
			h.Warning = fmt.Sprintf("the last control-plane snapshot (%s) was shipped %ds ago, not within twice the interval (%ds)", h.Last.ID, age, bound)
		}
	}
	if h.Stale && h.LastFailure != nil {
		h.Warning += "; last failure: " + h.LastFailure.Error
	}
	return h
}

var shippedIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidShippedID says whether id can name a shipped snapshot (and its
// object: no path separators).
func ValidShippedID(id string) bool { return shippedIDPattern.MatchString(id) && id != "latest" }

func validShipped(sn *ShippedSnapshot) error {
	switch {
	case sn == nil || !ValidShippedID(sn.ID):
		return invalidf("invalid_snapshot_id", "a shipped snapshot needs an id of letters, digits, '.', '_' and '-' (not \"latest\")")
	case !isSHA256Hex(sn.Digest) || !isSHA256Hex(sn.StateDigest):
		return invalidf("invalid_snapshot_digest", "shipped snapshot %s: digest and state_digest must be sha256 hex", sn.ID)
	case sn.Size <= 0 || sn.At <= 0 || sn.Location == "" || len(sn.Location) > 1024 || !printable(sn.Location):
		return invalidf("invalid_shipped_snapshot", "shipped snapshot %s needs a size, a time and a location", sn.ID)
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// snapshotCatalogDoc is the snapshot form of the catalog: nil while empty,
// so that a snapshot of a federation that never shipped one is unchanged.
func snapshotCatalogDoc(c SnapshotCatalog) *SnapshotCatalog {
	if c.empty() {
		return nil
	}
	return &c
}

func readSnapshotCatalog(doc *snapshotDoc, s *State) error {
	c := doc.SnapshotCatalog
	if c == nil {
		return nil
	}
	if c.Policy != nil && ValidateSnapshotPolicy(c.Policy) != nil {
		return fmt.Errorf("snapshot holds an invalid snapshot policy")
	}
	if len(c.Shipped) > MaxShippedSnapshots || c.Failures < 0 || c.Removed < 0 {
		return fmt.Errorf("snapshot holds an invalid snapshot catalog")
	}
	seen := map[string]bool{}
	for i, sn := range c.Shipped {
		if validShipped(sn) != nil || seen[sn.ID] || (i > 0 && sn.At < c.Shipped[i-1].At) {
			return fmt.Errorf("snapshot holds an invalid, duplicate or unordered shipped snapshot")
		}
		seen[sn.ID] = true
	}
	if f := c.LastFailure; f != nil && (f.Error == "" || len(f.Error) > MaxShipErrorLen) {
		return fmt.Errorf("snapshot holds an invalid snapshot shipment failure")
	}
	s.Snapshots = *c
	return nil
}

// carrySnapshotCatalog keeps the live catalog in a restored state: what
// the repository holds does not change with a restore (fsm.PrepareRestore).
func carrySnapshotCatalog(s, cur *State) {
	s.Snapshots = cur.Snapshots
}

// ShippedSorted returns the shipped snapshots newest first.
func (s *State) ShippedSorted() []*ShippedSnapshot {
	out := append([]*ShippedSnapshot(nil), s.Snapshots.Shipped...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].At > out[j].At })
	return out
}
