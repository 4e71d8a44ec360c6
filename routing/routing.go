// Package routing decides where a tenant's requests go: the read side of
// the edge controller (GET /v1/route). It is a pure function of what the
// servers know — the tenant's placement, each region's registration and
// health, each mirror's last reported replication lag, and how near each
// region is to the caller — so every server answers the same from the
// same state, and the ranking is tested without a cluster.
//
// The rules (docs/api.md "Routing"):
//   - a write goes to the tenant's home, always: it is the only writable
//     copy;
//   - a read goes to the nearest region that may serve it: the home, or a
//     mirror that streams (or streamed and stopped) with every table copied
//     and whose last reported lag is within the staleness budget;
//   - nearest is by Serf RTT from the caller's region where both ends have
//     coordinates, then by great-circle distance from the caller's
//     location, then the home before mirrors, then by name;
//   - a region that is down, or in maintenance, serves no read; when no
//     region may serve a read, the home is answered anyway with the
//     reasons, since it holds the only authoritative copy.
package routing

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
)

// Operations a route is asked for.
const (
	OpRead  = "read"
	OpWrite = "write"
)

// DefaultMaxStalenessMS is the staleness budget of a read that names none:
// a mirror whose last reported lag is at most one second serves it. Lag is
// reported every few seconds, so a tighter default would flap between the
// home and the mirror on every report. A budget of 0 means no staleness
// at all: the home only (a reported lag of 0 is a past sample, never a
// promise).
const DefaultMaxStalenessMS = 1000

// MaxStalenessMS bounds the budget a caller may ask for (a day).
const MaxStalenessMS = 24 * 60 * 60 * 1000

// Candidate is one region holding the tenant's data: its home or a mirror.
type Candidate struct {
	Region string
	AppURL string
	Home   bool
	// Status is the operator's (active, maintenance, draining); Health
	// and HealthReason are derived from agents and probes (fsm.RegionHealth).
	Status       string
	Health       string
	HealthReason string
	// Mirrors only: the state its agent last reported ("" when none has),
	// whether every table finished its initial copy, and the lag.
	MirrorState string
	TablesReady bool
	LagMS       float64
	// RTTMS is the estimated round trip from the caller (-1: unknown);
	// DistanceKM the great-circle distance from the caller (-1: unknown).
	RTTMS      float64
	DistanceKM float64
}

// Request is what a route is decided from.
type Request struct {
	Op             string
	MaxStalenessMS int64
	Candidates     []Candidate
}

// Decide ranks the candidates and picks the region for the request. The
// answer's alternatives are the other regions in order: for a read, the
// ones that may serve it (the next to try) before the ones that may not,
// each with its reason; for a write, none (the home is the only writable
// copy).
func Decide(req Request) wire.RouteDecision {
	cands := append([]Candidate(nil), req.Candidates...)
	sort.SliceStable(cands, func(i, j int) bool { return nearer(&cands[i], &cands[j]) })
	if req.Op == OpWrite {
		for i := range cands {
			if cands[i].Home {
				c := &cands[i]
				return wire.RouteDecision{Region: c.Region, AppURL: c.AppURL, Reason: withAppURL(c, writeReason(c)), Alternatives: []wire.RouteChoice{}}
			}
		}
		return wire.RouteDecision{Alternatives: []wire.RouteChoice{}}
	}
	var ok, skipped []wire.RouteChoice
	for i := range cands {
		c := &cands[i]
		why, eligible := readEligible(c, req.MaxStalenessMS)
		ch := choice(c, eligible, why)
		if eligible {
			ok = append(ok, ch)
		} else {
			skipped = append(skipped, ch)
		}
	}
	if len(ok) == 0 {
		// Nothing may serve the read: the home holds the only authoritative
		// copy, so it is the answer, with why nothing else is.
		for i, s := range skipped {
			if s.Home {
				d := wire.RouteDecision{Region: s.Region, AppURL: s.AppURL, Alternatives: append(append([]wire.RouteChoice{}, skipped[:i]...), skipped[i+1:]...)}
				d.Reason = withAppURL(&cands[indexOf(cands, s.Region)], "home, though "+strings.TrimSuffix(s.Reason, noAppURL)+
					"; no region may serve the read"+skippedNote(skipped[:i]))
				return d
			}
		}
		return wire.RouteDecision{Alternatives: skipped}
	}
	first := ok[0]
	c := &cands[indexOf(cands, first.Region)]
	var nearerSkipped []wire.RouteChoice
	for _, s := range skipped {
		if nearer(&cands[indexOf(cands, s.Region)], c) {
			nearerSkipped = append(nearerSkipped, s)
		}
	}
	why := "nearest " + strings.TrimSuffix(first.Reason, noAppURL)
	if c.Home {
		why = "home"
		if len(nearerSkipped) == 0 {
			why = "home, the nearest region"
		}
	}
	d := wire.RouteDecision{Region: first.Region, AppURL: first.AppURL, Alternatives: append(append([]wire.RouteChoice{}, ok[1:]...), skipped...)}
	d.Reason = withAppURL(c, why+skippedNote(nearerSkipped))
	return d
}

// readEligible says whether c may serve a read within the budget, and why.
func readEligible(c *Candidate, budget int64) (string, bool) {
	switch {
	case c.Health == fsm.HealthDown:
		return "region is down: " + c.HealthReason, false
	case c.Status == fsm.RegionMaintenance:
		return "region is in maintenance", false
	case c.Home:
		return "home", true
	case budget == 0:
		return "staleness budget 0 ms: only the home serves it", false
	case c.MirrorState == "":
		return "mirror has reported no replication status yet", false
	case c.MirrorState != fsm.ReplStreaming && (c.MirrorState != fsm.ReplDown || !c.TablesReady):
		return "mirror is " + c.MirrorState + ", not a complete copy", false
	case c.LagMS > float64(budget):
		return fmt.Sprintf("lag %s > budget %d ms", fmtMS(c.LagMS), budget), false
	}
	state := ""
	if c.MirrorState == fsm.ReplDown {
		state = ", not streaming now"
	}
	return fmt.Sprintf("mirror within staleness budget (lag %s ≤ %d ms%s)", fmtMS(c.LagMS), budget, state), true
}

func writeReason(c *Candidate) string {
	switch {
	case c.Health == fsm.HealthDown:
		return "home (the only writable copy), though region is down: " + c.HealthReason + "; writes fail until it is back"
	case c.Status == fsm.RegionMaintenance:
		return "home (the only writable copy), though region is in maintenance"
	}
	return "home (the only writable copy)"
}

func choice(c *Candidate, eligible bool, why string) wire.RouteChoice {
	ch := wire.RouteChoice{Region: c.Region, AppURL: c.AppURL, Home: c.Home, Eligible: eligible, Reason: withAppURL(c, why)}
	if !c.Home && c.MirrorState != "" {
		lag := c.LagMS
		ch.LagMS = &lag
	}
	if c.RTTMS >= 0 {
		v := c.RTTMS
		ch.RTTMS = &v
	}
	if c.DistanceKM >= 0 {
		v := math.Round(c.DistanceKM)
		ch.DistanceKM = &v
	}
	return ch
}

// nearer orders regions by RTT where known, then by distance, then the
// home first (the freshest copy), then by name.
func nearer(a, b *Candidate) bool {
	if ak, bk := a.RTTMS >= 0, b.RTTMS >= 0; ak != bk {
		return ak
	} else if ak && a.RTTMS != b.RTTMS {
		return a.RTTMS < b.RTTMS
	}
	if ak, bk := a.DistanceKM >= 0, b.DistanceKM >= 0; ak != bk {
		return ak
	} else if ak && a.DistanceKM != b.DistanceKM {
		return a.DistanceKM < b.DistanceKM
	}
	if a.Home != b.Home {
		return a.Home
	}
	return a.Region < b.Region
}

func skippedNote(skipped []wire.RouteChoice) string {
	if len(skipped) == 0 {
		return ""
	}
	parts := make([]string, len(skipped))
	for i, s := range skipped {
		parts[i] = s.Region + ": " + strings.TrimSuffix(s.Reason, noAppURL)
	}
	return "; nearer skipped: " + strings.Join(parts, "; ")
}

// noAppURL ends the reason of a region without an application URL: it is
// still routable (the region is the answer; an edge may map it to a URL
// of its own), but says so.
const noAppURL = " (no app_url registered: set one with atomfed region register --app-url)"

func withAppURL(c *Candidate, reason string) string {
	if c.AppURL == "" && !strings.HasSuffix(reason, noAppURL) {
		return reason + noAppURL
	}
	return reason
}

func indexOf(cands []Candidate, region string) int {
	for i := range cands {
		if cands[i].Region == region {
			return i
		}
	}
	return -1
}

func fmtMS(ms float64) string {
	if ms < 10 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// DistanceKM is the great-circle distance between two locations.
func DistanceKM(a, b fsm.Location) float64 {
	const earthKM = 6371.0
	rad := math.Pi / 180
	dLat, dLon := (b.Lat-a.Lat)*rad, (b.Lon-a.Lon)*rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(a.Lat*rad)*math.Cos(b.Lat*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthKM * math.Asin(math.Min(1, math.Sqrt(h)))
}

// KnownLocation reports whether a region registered a location: 0,0 is
// what one registered without --lat/--lon has.
func KnownLocation(l fsm.Location) bool { return l.Lat != 0 || l.Lon != 0 }
