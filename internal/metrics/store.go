package metrics

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Source is the health of one source of a region's scrape, as the agent
// measured it.
type Source struct {
	// Source is "prometheus" (the region's /federate) or "node".
	Source string `json:"source"`
	// Instance names it: the node, or the Prometheus host:port.
	Instance   string  `json:"instance"`
	Up         bool    `json:"up"`
	DurationMS float64 `json:"duration_ms"`
	Samples    int     `json:"samples"`
	Error      string  `json:"error,omitempty"`
}

// ScrapeStatus is what the agent says of the scrape a snapshot holds; it
// travels in the push's X-Atomfed-Scrape header.
type ScrapeStatus struct {
	ScrapedAt  time.Time `json:"scraped_at"`
	DurationMS float64   `json:"duration_ms"`
	Sources    []Source  `json:"sources"`
}

// MaxScrapeStatusBytes bounds the X-Atomfed-Scrape header.
const MaxScrapeStatusBytes = 16 << 10

// Snapshot is one region's newest pushed scrape, as a server keeps it.
type Snapshot struct {
	Region     string
	Agent      string
	Generation uint64
	// Received is this server's clock when it accepted the push: ages are
	// measured against it, so clock skew between hosts does not matter.
	Received time.Time
	Scrape   ScrapeStatus
	Info     Info
	data     []byte
	// The request counters of the region's previous snapshot, for rates.
	prevOK                   bool
	prevAt                   time.Time
	prevRequests, prevErrors float64
}

// NewSnapshot wraps checked snapshot bytes (see Inspect).
func NewSnapshot(region, agent string, gen uint64, received time.Time, scrape ScrapeStatus, info Info, data []byte) *Snapshot {
	return &Snapshot{Region: region, Agent: agent, Generation: gen, Received: received, Scrape: scrape, Info: info, data: data}
}

// Bytes is the size of the compressed snapshot kept.
func (s *Snapshot) Bytes() int { return len(s.data) }

// ErrOlderGeneration is a push from a generation of the task older than
// the one whose snapshot the server holds.
var ErrOlderGeneration = errors.New("a newer generation of the region's metrics task already pushed")

// Store keeps the newest snapshot of each region, in memory only.
type Store struct {
	mu      sync.RWMutex
	regions map[string]*Snapshot
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{regions: map[string]*Snapshot{}} }

// Put keeps s as its region's snapshot unless the one kept is of a newer
// generation of the task.
func (st *Store) Put(s *Snapshot) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	cur := st.regions[s.Region]
	if cur != nil && cur.Generation > s.Generation {
		return fmt.Errorf("%w (%d > %d)", ErrOlderGeneration, cur.Generation, s.Generation)
	}
	if cur != nil && cur.Info.Sum.HasRequests {
		s.prevOK, s.prevAt, s.prevRequests, s.prevErrors = true, cur.Received, cur.Info.Sum.Requests, cur.Info.Sum.Errors
	}
	st.regions[s.Region] = s
	return nil
}

// Snapshots returns the snapshots of the given regions (registered
// regions: the others are forgotten), by region.
func (st *Store) Snapshots(regions []string) map[string]*Snapshot {
	keep := make(map[string]bool, len(regions))
	for _, r := range regions {
		keep[r] = true
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]*Snapshot, len(regions))
	for r, s := range st.regions {
		if !keep[r] {
			delete(st.regions, r)
			continue
		}
		out[r] = s
	}
	return out
}

// RegionStatus is one region's scrape status on this server.
type RegionStatus struct {
	Region string `json:"region"`
	// Status is "ok" (a snapshot within max_age), "stale" (older) or
	// "missing" (none since this server started).
	Status     string       `json:"status"`
	Agent      string       `json:"agent,omitempty"`
	Generation uint64       `json:"generation,omitempty"`
	ReceivedAt *time.Time   `json:"received_at,omitempty"`
	AgeSeconds *float64     `json:"age_seconds,omitempty"`
	Families   int          `json:"families"`
	Series     int          `json:"series"`
	Bytes      int          `json:"bytes"`
	Scrape     ScrapeStatus `json:"scrape"`
}

// Statuses returns every region's status, sorted by region.
func Statuses(regions []string, snaps map[string]*Snapshot, now time.Time, maxAge time.Duration) []RegionStatus {
	out := make([]RegionStatus, 0, len(regions))
	for _, r := range sortedCopy(regions) {
		st := RegionStatus{Region: r, Status: "missing", Scrape: ScrapeStatus{Sources: []Source{}}}
		if s := snaps[r]; s != nil {
			age := now.Sub(s.Received).Seconds()
			rec := s.Received
			st.Agent, st.Generation, st.ReceivedAt, st.AgeSeconds = s.Agent, s.Generation, &rec, &age
			st.Families, st.Series, st.Bytes, st.Scrape = s.Info.Families, s.Info.Series, len(s.data), s.Scrape
			st.Status = "ok"
			if now.Sub(s.Received) > maxAge {
				st.Status = "stale"
			}
		}
		out = append(out, st)
	}
	return out
}

func sortedCopy(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}
